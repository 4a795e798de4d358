"""Lossless chunk codecs of shards.

Lossless chunk codecs of shards: a name (``capture record --compression``) -> how each modality is
stored: h5py ``create_dataset`` options, a predictor (:mod:`clipcore.predictors`) and the same
compression made without HDF5 (:meth:`Storage.encode`), which the writer runs in a thread pool and
stores with HDF5's direct chunk write. Readers need no codec name: HDF5 filters describe themselves
(Blosc ones need ``hdf5plugin`` imported: importing this module, as :mod:`clipcore.shards` does,
registers them) and each image dataset names its predictor.

Readers decode most chunks through HDF5, and the chunks of byte-shuffled wide elements (depth
codes) without it (:func:`read_frames`): HDF5 decodes a chunk into its chunk cache and copies it
out, and hdf5plugin's build unshuffles with SSE2 only, while python-blosc decodes straight into
the destination and unshuffles with AVX2 where the CPU has it; a 256x512 depth frame reads in
about three quarters of the time (``benchmarks/loader.py``'s decode floor). Blosc's LZ4 in
python-blosc is slower than the plugin's on the long runs of 8-bit images, which stay with HDF5.
"""

from __future__ import annotations

import dataclasses
import zlib
from typing import Any

import blosc
import h5py
import hdf5plugin
import numpy as np

from clipcore.predictors import NONE, ROW_DELTA, ROW_PAIRS

#: Codec names; ``lz4hc`` (the default) writes a 1600x900 frame in a third of a PNG folder's time
#: on two cores and reads fastest at no more than a PNG folder's size (docs/format.md).
CODECS = ("lz4hc", "lz4hc+zstd", "zstd", "lz4", "gzip", "lzf", "none")

_BIT, _BYTE, _NO = hdf5plugin.Blosc.BITSHUFFLE, hdf5plugin.Blosc.SHUFFLE, hdf5plugin.Blosc.NOSHUFFLE

# python-blosc bundles the c-blosc 1 that hdf5plugin's filter (id 32001) decodes: its chunks are
# the filter's. One thread per call: the writer's pool compresses several chunks at once, each
# call without the GIL.
blosc.set_releasegil(True)
blosc.set_nthreads(1)


def _blosc_codec(
    cname: str, level: int, depth: tuple[str, int] | None = None, depth_predictor: str = ROW_DELTA
) -> dict[str, tuple[str, int, int, str]]:
    """One Blosc codec's table.

    One Blosc codec's table: ``cname`` at ``level`` for the 8-bit images, ``depth`` (compressor,
    level; default the same) with ``depth_predictor`` for depth codes.
    """
    depth_cname, depth_level = depth or (cname, level)
    return {
        "rgb": (cname, level, _BIT, ROW_PAIRS),
        "semantic": (cname, level, _NO, NONE),
        "depth": (depth_cname, depth_level, _BYTE, depth_predictor),
    }


#: Blosc (compressor, level, shuffle, predictor) per modality of each Blosc codec; chosen by
#: ``benchmarks/storage.py`` (size and single-core read time on CARLA-like images) and
#: ``benchmarks/write.py`` (write time): ``lz4hc`` level 3 writes 2.3x faster than level 9 at
#: about 1 % more bytes. RGB's shuffle and predictor adapt to the clip's first frame
#: (:func:`storage`).
_BLOSC = {
    "lz4hc": _blosc_codec("lz4hc", 3, depth_predictor=NONE),
    "lz4hc+zstd": _blosc_codec("lz4hc", 9, depth=("zstd", 5)),
    "zstd": _blosc_codec("zstd", 5),
    "lz4": _blosc_codec("lz4", 5),
}
#: Frames of more pixels than this (above 1024x512) store ``lz4hc`` at Blosc level 2, LZ4HC's
#: fast mode: at 1600x900 its RGB encodes about 7x faster than at level 3 for about 9 % more
#: bytes, which lets the writer keep up with a 20 Hz HD camera on 2 cores
#: (``benchmarks/write.py``); smaller frames keep level 3 and the read goal's size.
LARGE_FRAME_PIXELS = 1024 * 512
_BLOSC_LARGE = {"lz4hc": _blosc_codec("lz4hc", 2, depth_predictor=NONE)}
_GZIP_LEVEL = 4
#: HDF5's own filters (any HDF5 reader has them); :func:`storage` adds depth's row-delta.
_BUILTIN = {
    "gzip": {"compression": "gzip", "compression_opts": _GZIP_LEVEL, "shuffle": True},
    "lzf": {"compression": "lzf", "shuffle": True},
}


@dataclasses.dataclass(frozen=True)
class Storage:
    """How one modality of a clip is stored."""

    options: dict[str, Any]  # h5py create_dataset keyword arguments (filters)
    predictor: str = NONE  # clipcore.predictors name, the dataset's ``predictor`` attribute
    blosc: tuple[str, int, int] | None = None  # Blosc (compressor, level, shuffle), if Blosc

    def encode(self, stored: np.ndarray) -> bytes | None:
        """Compress one chunk without HDF5.

        One chunk (``stored``: one frame after the predictor) compressed as the dataset's
        HDF5 filters compress it, made without HDF5 (Blosc and zlib release the GIL), for
        HDF5's direct chunk write; None where only HDF5 makes it (``lzf``).
        """
        flat = np.ascontiguousarray(stored).reshape(-1).view(np.uint8)
        if self.blosc is not None:
            cname, level, shuffle = self.blosc
            return blosc.compress(flat, stored.dtype.itemsize, level, shuffle, cname)
        if not self.options:
            return flat.tobytes()
        if self.options.get("compression") == "gzip":  # HDF5's byte shuffle, then deflate
            size = stored.dtype.itemsize
            shuffled = flat.reshape(-1, size).T.copy() if size > 1 else flat
            return zlib.compress(shuffled, self.options["compression_opts"])
        return None


def _blosc_storage(cname: str, level: int, shuffle: int, predictor: str) -> Storage:
    options = dict(hdf5plugin.Blosc(cname=cname, clevel=level, shuffle=shuffle))
    return Storage(options, predictor, (cname, level, shuffle))


def choices(name: str, modality: str = "rgb", pixels: int = 0) -> tuple[Storage, ...]:
    """The ways a named lossless codec may store one modality of frames of ``pixels`` pixels.

    The default (:func:`storage`) comes last; the writer stores a clip's RGB the way that packs
    its first frame smallest (:func:`clipcore.chunks.choose_rgb`).

    Blosc shuffles bits of RGB (the noisy low bits of real images stop spoiling the rest), leaves
    semantic tags unshuffled (long runs of one tag) and shuffles bytes of depth codes (their
    always-zero top byte compresses away). RGB of a Blosc codec may be stored unshuffled,
    bit-shuffled, or bit-shuffled with the ``row-pairs`` predictor: textured, camera-like images
    pack smallest bit-shuffled with row pairs, flat-shaded ones (the embedded simulator's)
    unshuffled without, and then also decode 3x faster (HDF5's own gzip and lzf never predict
    RGB). ``lz4hc`` stores depth codes as they are: their ``row-delta`` predictor halves them but
    its running sum costs more read time than the bytes it saves; every other codec but ``none``
    uses it. See ``benchmarks/storage.py``. Frames of more than :data:`LARGE_FRAME_PIXELS` pixels
    store ``lz4hc`` at its fast level (0: size unknown, the small frames' level).
    """
    if name in _BLOSC:
        table = (
            _BLOSC_LARGE.get(name, _BLOSC[name]) if pixels > LARGE_FRAME_PIXELS else _BLOSC[name]
        )
        cname, level, shuffle, predictor = table.get(modality, table["rgb"])
        if modality not in table:  # poses: RGB's compressor, no predictor
            predictor = NONE
        if modality == "rgb":
            variants = ((_NO, NONE), (_BIT, NONE), (_BIT, predictor))
            return tuple(_blosc_storage(cname, level, *v) for v in variants)
        return (_blosc_storage(cname, level, shuffle, predictor),)
    if name in _BUILTIN:
        return (Storage(dict(_BUILTIN[name]), ROW_DELTA if modality == "depth" else NONE),)
    if name == "none":
        return (Storage({}),)
    raise ValueError(f"unknown codec {name!r}; choose one of {', '.join(CODECS)}")


def storage(name: str, modality: str = "rgb", pixels: int = 0) -> Storage:
    """How a named lossless codec stores one modality by default (:func:`choices`)."""
    return choices(name, modality, pixels)[-1]


#: HDF5's id of the Blosc filter (hdf5plugin registers it).
BLOSC_FILTER = 32001


def decodes_directly(dataset: h5py.Dataset) -> bool:
    """Whether :func:`read_frames` decodes ``dataset`` without HDF5.

    Only one frame per chunk, Blosc the only filter, byte-shuffled elements of several bytes.
    """
    if dataset.chunks != (1, *dataset.shape[1:]):
        return False
    plist = dataset.id.get_create_plist()
    if plist.get_nfilters() != 1:
        return False
    code, _, values, _ = plist.get_filter(0)
    return code == BLOSC_FILTER and len(values) >= 6 and values[2] > 1 and values[5] == _BYTE


def read_frames(dataset: h5py.Dataset, frames: range, out: np.ndarray) -> np.ndarray:
    """Frames ``frames`` of ``dataset`` (:func:`decodes_directly`) decoded into ``out``.

    ``out``: a C-contiguous (len(frames), *frame shape) array of the dataset's dtype (checked:
    decoding writes to its memory by address). Each chunk is read as stored and decoded by
    python-blosc into its frame of ``out``; a chunk stored unfiltered (Blosc could not shrink it)
    is copied. A frame without a chunk (HDF5's fill value) reads through HDF5. A damaged chunk
    raises ValueError.
    """
    if out.shape != (len(frames), *dataset.shape[1:]) or out.dtype != dataset.dtype:
        raise ValueError(f"out is {out.dtype} {out.shape}, frames {frames} need {dataset.dtype}")
    if not out.flags.c_contiguous or not out.flags.writeable:
        raise ValueError("out must be a writeable C-contiguous array")
    tail = (0,) * (dataset.ndim - 1)
    frame_bytes = out[0].nbytes if len(out) else 0
    address = out.ctypes.data
    for k, index in enumerate(frames):
        try:
            mask, raw = dataset.id.read_direct_chunk((index, *tail))
        except RuntimeError:  # not allocated
            dataset.read_direct(out, np.s_[frames.start : frames.stop])
            return out
        if mask & 1:  # Blosc skipped: stored as it is
            stored = np.frombuffer(raw, np.uint8)
            if stored.size != frame_bytes:
                raise ValueError(
                    f"frame {index} is stored in {stored.size} bytes, not {frame_bytes}"
                )
            out[k].reshape(-1).view(np.uint8)[:] = stored
            continue
        try:
            nbytes, cbytes, _ = blosc.get_cbuffer_sizes(raw)
            if nbytes != frame_bytes or cbytes != len(raw):  # it would write beyond the frame
                raise ValueError
            blosc.decompress_ptr(raw, address + k * frame_bytes)
        except (ValueError, blosc.blosc_extension.error):
            raise ValueError(f"frame {index}'s Blosc chunk is damaged") from None
    return out
