"""Lossless chunk codecs of shards: a name (``capture record --compression``) -> h5py
``create_dataset`` options per modality. Readers need no codec name: HDF5 filters describe
themselves (Blosc ones need ``hdf5plugin`` imported: importing this module, as
:mod:`clipcore.shards` does, registers them)."""

from __future__ import annotations

import io
from typing import Any

import h5py
import hdf5plugin
import numpy as np

from clipcore.schema import DEPTH_ENCODING, DEPTH_ROW_DELTA

#: Codec names; ``lz4hc`` (the default) is Blosc lz4hc for every image, ``lz4hc+zstd`` lz4hc for
#: 8-bit images and zstd for depth codes (smaller, slower to read).
CODECS = ("lz4hc", "lz4hc+zstd", "zstd", "lz4", "gzip", "lzf", "none")

_BIT, _BYTE, _NO = hdf5plugin.Blosc.BITSHUFFLE, hdf5plugin.Blosc.SHUFFLE, hdf5plugin.Blosc.NOSHUFFLE
#: Blosc (compressor, level, shuffle) per modality of each Blosc codec; chosen by
#: ``benchmarks/storage.py`` (size and single-core decode time on CARLA-like images).
_BLOSC = {
    "lz4hc": {
        "rgb": ("lz4hc", 9, _BIT),
        "semantic": ("lz4hc", 9, _NO),
        "depth": ("lz4hc", 9, _BYTE),
    },
    "lz4hc+zstd": {
        "rgb": ("lz4hc", 9, _BIT),
        "semantic": ("lz4hc", 9, _NO),
        "depth": ("zstd", 5, _BYTE),
    },
    "zstd": {"rgb": ("zstd", 5, _BIT), "semantic": ("zstd", 5, _NO), "depth": ("zstd", 5, _BYTE)},
    "lz4": {"rgb": ("lz4", 5, _BIT), "semantic": ("lz4", 5, _NO), "depth": ("lz4", 5, _BYTE)},
}


def _packed_size(image: np.ndarray, cname: str, level: int, shuffle: int) -> int:
    """Bytes of one image compressed by Blosc (in an HDF5 file in memory)."""
    with h5py.File(io.BytesIO(), "w") as f:
        data = f.create_dataset(
            "x", data=image, chunks=image.shape, **hdf5plugin.Blosc(cname, level, shuffle)
        )
        return data.id.get_storage_size()


def codec_options(
    name: str, modality: str = "rgb", sample: np.ndarray | None = None
) -> dict[str, Any]:
    """h5py ``create_dataset`` keyword arguments of a named lossless codec for one modality.

    Blosc shuffles bits of RGB (the noisy low bits of real images stop spoiling the rest), leaves
    semantic tags unshuffled (long runs of one tag) and shuffles bytes of depth codes (the
    always-zero top byte of a 24-bit code compresses away). Given a ``sample`` RGB frame, bit
    shuffle is kept only if it packs that frame smaller: flat-shaded images (the embedded
    simulator's) pack smaller and decode 3x faster unshuffled. Depth is stored as row differences
    (:func:`depth_encoding`). ``lz4hc`` decodes every image with lz4hc, about twice as fast as zstd
    for a few per cent more bytes; see ``benchmarks/storage.py``."""
    if name in _BLOSC:
        cname, level, shuffle = _BLOSC[name].get(modality, _BLOSC[name]["rgb"])
        if modality == "rgb" and sample is not None:
            shuffle = min((_BIT, _NO), key=lambda s: _packed_size(sample, cname, level, s))
        return dict(hdf5plugin.Blosc(cname=cname, clevel=level, shuffle=shuffle))
    if name == "gzip":
        return {"compression": "gzip", "compression_opts": 4, "shuffle": True}
    if name == "lzf":
        return {"compression": "lzf", "shuffle": True}
    if name == "none":
        return {}
    raise ValueError(f"unknown codec {name!r}; choose one of {', '.join(CODECS)}")


def depth_encoding(name: str) -> str:
    """How a codec stores depth codes: as row differences (:func:`~clipcore.schema.row_delta`,
    half the bytes after compression) unless it is ``none``, whose shards hold plain codes."""
    return DEPTH_ENCODING if name == "none" else DEPTH_ROW_DELTA
