"""Depth chunks decoded without HDF5 (``clipcore.codecs.read_frames``): the values HDF5's own
filter pipeline gives for every codec that stores them byte-shuffled, chunks Blosc stored as they
are, frames without a chunk; a damaged chunk is refused before anything is written beyond its
frame."""

from __future__ import annotations

from pathlib import Path

import blosc
import h5py
import numpy as np
import pytest

from clipcore.codecs import CODECS, decodes_directly, read_frames, storage
from clipcore.errors import ShardFormatError
from clipcore.schema import DEPTH_CODE_MAX
from clipcore.shards import ShardReader

SHAPE = (6, 24, 40)  # frames, height, width


def _codes() -> np.ndarray:
    """Depth codes like a camera's: smooth ramps, plus one frame of noise Blosc cannot shrink."""
    rng = np.random.default_rng(0)
    ramp = np.linspace(1000, 900_000, SHAPE[1] * SHAPE[2]).reshape(SHAPE[1:])
    codes = np.stack([ramp * (1 + 0.1 * t) for t in range(SHAPE[0])]).astype(np.uint32)
    codes[2] = rng.integers(1, 2**32, SHAPE[1:], dtype=np.uint32)  # incompressible
    return codes


def _dataset(path: Path, codec: str, frames: int = SHAPE[0]) -> h5py.Dataset:
    """A depth dataset stored as ``codec`` stores depth, its first ``frames`` frames written."""
    with h5py.File(path, "w") as f:
        ds = f.create_dataset(
            "depth", SHAPE, np.uint32, chunks=(1, *SHAPE[1:]), **storage(codec, "depth").options
        )
        ds[:frames] = _codes()[:frames]
    return h5py.File(path, "r")["depth"]


@pytest.mark.parametrize("codec", CODECS)
def test_depth_decoded_directly_is_what_hdf5_decodes(tmp_path, codec):
    ds = _dataset(tmp_path / "d.h5", codec)
    blosc_codec = codec not in ("gzip", "lzf", "none")
    assert decodes_directly(ds) == blosc_codec  # the others always read through HDF5
    if not blosc_codec:
        return
    assert ds.id.read_direct_chunk((2, 0, 0))[0] & 1  # the noise frame is stored unfiltered
    out = np.full((4, *SHAPE[1:]), 7, np.uint32)
    assert read_frames(ds, range(1, 5), out) is out
    assert np.array_equal(out, ds[1:5]) and np.array_equal(out, _codes()[1:5])


@pytest.mark.parametrize("codec", ["lz4hc", "zstd"])
def test_eight_bit_images_keep_reading_through_hdf5(tmp_path, codec):
    with h5py.File(tmp_path / "i.h5", "w") as f:
        for name in ("rgb", "semantic"):
            f.create_dataset(
                name, (2, 8, 8), np.uint8, chunks=(1, 8, 8), **storage(codec, name).options
            )
        assert not any(decodes_directly(f[name]) for name in ("rgb", "semantic"))


def test_a_frame_without_a_chunk_reads_as_hdf5_fills_it(tmp_path):
    ds = _dataset(tmp_path / "d.h5", "lz4hc", frames=4)  # frames 4 and 5 never written
    out = np.full((3, *SHAPE[1:]), 7, np.uint32)
    read_frames(ds, range(3, 6), out)
    assert np.array_equal(out[0], _codes()[3]) and not out[1:].any()


def test_reading_into_an_array_of_another_layout_is_refused(tmp_path):
    ds = _dataset(tmp_path / "d.h5", "lz4hc")
    for wrong in (
        np.zeros((2, *SHAPE[1:]), np.uint32),  # fewer frames than asked for
        np.zeros((3, *SHAPE[1:]), np.float32),
        np.zeros((3, SHAPE[2], SHAPE[1]), np.uint32).transpose(0, 2, 1),  # not C-contiguous
    ):
        with pytest.raises(ValueError, match="out "):
            read_frames(ds, range(0, 3), wrong)


def _damage(path: Path, frame: int, chunk: bytes) -> None:
    with h5py.File(path, "r+") as f:
        f["depth"].id.write_direct_chunk((frame, 0, 0), chunk)


def test_a_damaged_chunk_is_refused_without_writing_beyond_its_frame(tmp_path):
    path = tmp_path / "d.h5"
    _dataset(path, "lz4hc").file.close()
    bigger = blosc.compress(np.zeros(2 * np.prod(SHAPE[1:]), np.uint32).tobytes(), 4)
    for frame, chunk in ((1, b"\x02\x01\x13\x04" + bytes(60)), (3, bigger)):
        _damage(path, frame, chunk)
    ds = h5py.File(path, "r")["depth"]
    guard = np.full((3, *SHAPE[1:]), 7, np.uint32)
    for frames in (range(1, 2), range(3, 4)):
        with pytest.raises(ValueError, match=f"frame {frames.start}'s Blosc chunk is damaged"):
            read_frames(ds, frames, guard[:1])
    assert (guard[1:] == 7).all()  # what lies after the frame is untouched


def test_a_shard_with_a_damaged_depth_chunk_names_the_clip(tmp_path, tiny_dataset):
    shard = next(tiny_dataset.rglob("*.h5"))
    copy = tmp_path / shard.name
    copy.write_bytes(shard.read_bytes())
    with ShardReader(copy) as reader:
        clip_id = reader.clip_ids()[0]
    with h5py.File(copy, "r+") as f:
        f["clips"][clip_id]["depth"].id.write_direct_chunk((0, 0, 0), bytes(64))
    with ShardReader(copy) as reader, ShardReader(shard) as intact:
        with pytest.raises(ShardFormatError, match=f"clip {clip_id}.*frame 0's Blosc chunk"):
            reader.read_arrays(clip_id, 0, 2)
        got, want = (r.read_arrays(clip_id, 1, 3, depth_codes=True) for r in (reader, intact))
        assert np.array_equal(got["depth"], want["depth"])  # the other frames still read
        assert 0 < got["depth"].min() and got["depth"].max() <= DEPTH_CODE_MAX
