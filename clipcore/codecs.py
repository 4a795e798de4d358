"""Lossless chunk codecs of shards: a name (``capture record --compression``) -> how each
modality is stored: h5py ``create_dataset`` options and a predictor (:mod:`clipcore.predictors`).
Readers need no codec name: HDF5 filters describe themselves (Blosc ones need ``hdf5plugin``
imported: importing this module, as :mod:`clipcore.shards` does, registers them) and each image
dataset names its predictor."""

from __future__ import annotations

import dataclasses
import io
from typing import Any

import h5py
import hdf5plugin
import numpy as np

from clipcore.predictors import NONE, ROW_DELTA, ROW_PAIRS, predict

#: Codec names; ``lz4hc`` (the default) reads fastest at no more than a PNG folder's size.
CODECS = ("lz4hc", "lz4hc+zstd", "zstd", "lz4", "gzip", "lzf", "none")

_BIT, _BYTE, _NO = hdf5plugin.Blosc.BITSHUFFLE, hdf5plugin.Blosc.SHUFFLE, hdf5plugin.Blosc.NOSHUFFLE


def _blosc_codec(
    cname: str, level: int, depth: tuple[str, int] | None = None, depth_predictor: str = ROW_DELTA
) -> dict[str, tuple[str, int, int, str]]:
    """One Blosc codec's table: ``cname`` at ``level`` for the 8-bit images, ``depth``
    (compressor, level; default the same) with ``depth_predictor`` for depth codes."""
    depth_cname, depth_level = depth or (cname, level)
    return {
        "rgb": (cname, level, _BIT, ROW_PAIRS),
        "semantic": (cname, level, _NO, NONE),
        "depth": (depth_cname, depth_level, _BYTE, depth_predictor),
    }


#: Blosc (compressor, level, shuffle, predictor) per modality of each Blosc codec; chosen by
#: ``benchmarks/storage.py`` (size and single-core read time on CARLA-like images). RGB's shuffle
#: and predictor adapt to the clip's first frame (:func:`storage`).
_BLOSC = {
    "lz4hc": _blosc_codec("lz4hc", 9, depth_predictor=NONE),
    "lz4hc+zstd": _blosc_codec("lz4hc", 9, depth=("zstd", 5)),
    "zstd": _blosc_codec("zstd", 5),
    "lz4": _blosc_codec("lz4", 5),
}
#: HDF5's own filters (any HDF5 reader has them); :func:`storage` adds depth's row-delta.
_BUILTIN = {
    "gzip": {"compression": "gzip", "compression_opts": 4, "shuffle": True},
    "lzf": {"compression": "lzf", "shuffle": True},
}


@dataclasses.dataclass(frozen=True)
class Storage:
    """How one modality of a clip is stored."""

    options: dict[str, Any]  # h5py create_dataset keyword arguments (filters)
    predictor: str = NONE  # clipcore.predictors name, the dataset's ``predictor`` attribute


def _packed_size(image: np.ndarray, cname: str, level: int, shuffle: int, predictor: str) -> int:
    """Bytes of one image (H, W, C) stored with a Blosc codec and predictor (in memory)."""
    stored = predict(image[None], predictor)[0]
    with h5py.File(io.BytesIO(), "w") as f:
        data = f.create_dataset(
            "x", data=stored, chunks=stored.shape, **hdf5plugin.Blosc(cname, level, shuffle)
        )
        return data.id.get_storage_size()


def storage(name: str, modality: str = "rgb", sample: np.ndarray | None = None) -> Storage:
    """How a named lossless codec stores one modality.

    Blosc shuffles bits of RGB (the noisy low bits of real images stop spoiling the rest), leaves
    semantic tags unshuffled (long runs of one tag) and shuffles bytes of depth codes (their
    always-zero top byte compresses away). Given a ``sample`` RGB frame, RGB is stored unshuffled,
    bit-shuffled, or bit-shuffled with the ``row-pairs`` predictor, whichever packs it smallest:
    textured, camera-like images pack smallest bit-shuffled with row pairs, flat-shaded ones
    (the embedded simulator's) unshuffled without, and then also decode 3x faster (HDF5's own
    gzip and lzf never predict RGB). ``lz4hc`` stores depth codes as they are: their
    ``row-delta`` predictor halves them but its running sum costs more read time than the bytes
    it saves; every other codec but ``none`` uses it. See ``benchmarks/storage.py``."""
    if name in _BLOSC:
        cname, level, shuffle, predictor = _BLOSC[name].get(modality, _BLOSC[name]["rgb"])
        if modality not in _BLOSC[name]:  # poses: RGB's compressor, no predictor
            predictor = NONE
        if modality == "rgb" and sample is not None:
            shuffle, predictor = min(
                ((_NO, NONE), (_BIT, NONE), (_BIT, predictor)),
                key=lambda sp: _packed_size(sample, cname, level, *sp),
            )
        return Storage(
            dict(hdf5plugin.Blosc(cname=cname, clevel=level, shuffle=shuffle)), predictor
        )
    if name in _BUILTIN:
        return Storage(dict(_BUILTIN[name]), ROW_DELTA if modality == "depth" else NONE)
    if name == "none":
        return Storage({})
    raise ValueError(f"unknown codec {name!r}; choose one of {', '.join(CODECS)}")
