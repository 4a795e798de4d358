"""The writer's chunk pipeline: chunks encoded in a thread pool and stored with HDF5's direct
chunk write are the chunks HDF5's own filters store, other HDF5 readers read them, the frames in
flight are bounded, and an encoding failure fails the write without leaving a file."""

from __future__ import annotations

import io
import multiprocessing as mp
import os
import re
import shutil
import subprocess
import threading
import time

import cv2
import h5py
import hdf5plugin
import numpy as np
import pytest

from carla_capture.backends.synthetic import SyntheticBackend
from carla_capture.config import CaptureConfig, VerifyConfig, load_town
from carla_capture.verify import verify_shard
from clipcore import chunks
from clipcore.chunks import SAMPLE_BYTES, choose_rgb, rgb_sample
from clipcore.codecs import CODECS, choices
from clipcore.predictors import predict
from clipcore.records import Clip
from clipcore.schema import decode_depth, encode_depth
from clipcore.shards import ShardReader, ShardWriter


@pytest.fixture(scope="module")
def clip(tiny_towns) -> Clip:
    cfg = CaptureConfig(backend="synthetic", town="Town02", frames=6, town_dir=tiny_towns)
    return SyntheticBackend(cfg, load_town("Town02", tiny_towns)).record_clip(0)


def _filters(how, shape: tuple[int, ...], dtype: type) -> dict:
    """The HDF5 filters h5py sets on a dataset created with ``how``'s options."""
    with h5py.File(io.BytesIO(), "w") as h5:
        data = h5.create_dataset("x", shape=shape, dtype=dtype, chunks=shape, **how.options)
        return data._filters


@pytest.mark.parametrize("codec", CODECS)
def test_direct_chunks_are_what_hdf5s_filters_store(tmp_path, clip, codec):
    """Each image dataset has the filters HDF5 would compress it with, every chunk went through
    them (none stored raw beside them) and they decode it to the values through its predictor:
    any reader with the filters reads the file as it read those HDF5 wrote itself."""
    path = tmp_path / "Town02-00001.h5"
    with ShardWriter(path, "Town02", codec) as writer:
        writer.add(clip)
    with h5py.File(path, "r") as h5:
        group = h5["clips"][clip.clip_id]
        for name in ("rgb", "semantic", "depth"):
            data = group[name]
            frame = (1, *data.shape[1:])
            ways = [
                how
                for how in choices(codec, name)
                if how.predictor == data.attrs["predictor"]
                and _filters(how, frame, data.dtype) == data._filters
            ]
            assert ways, (name, data._filters)
            values = clip.stack(name) if name != "depth" else encode_depth(clip.stack("depth"))
            assert np.array_equal(data[()], predict(values, ways[0].predictor)), name
            for k in range(len(clip)):
                mask, chunk = data.id.read_direct_chunk((k,) + (0,) * (data.ndim - 1))
                assert mask == 0, (name, k)
                if codec != "none":
                    assert len(chunk) < data[k].nbytes, (name, k)


def test_h5dump_reads_a_depth_chunk(tmp_path, clip):
    """HDF5's own tool, with the plugins the hdf5plugin wheel ships, reads the depth codes of a
    chunk written the new way (docs/format.md, 'Reading the files with other tools')."""
    h5dump = shutil.which("h5dump")
    if h5dump is None:
        pytest.skip("h5dump is not installed (Debian: apt-get install hdf5-tools)")
    path = tmp_path / "Town02-00001.h5"
    with ShardWriter(path, "Town02") as writer:
        writer.add(clip)
    width = clip.frames[0].size[1]
    env = {**os.environ, "HDF5_PLUGIN_PATH": hdf5plugin.PLUGIN_PATH}
    args = ["-y", "-w", "0", "-d", f"/clips/{clip.clip_id}/depth", "-s", "3,10,0", "-c"]
    done = subprocess.run(
        [h5dump, *args, f"1,1,{width}", str(path)], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    data = re.search(r"DATA \{(.*?)\}", done.stdout, re.S)
    assert data is not None, done.stdout
    values = [int(v) for v in data.group(1).replace(",", " ").split()]
    with ShardReader(path) as reader:
        assert reader.version == 3
        predictor = reader.group(clip.clip_id)["depth"].attrs["predictor"]
    assert predictor == "none"  # the default codec stores depth codes as they are
    assert values == encode_depth(clip.frames[3].depth)[10].tolist()


def _textured(height: int, width: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    smooth = cv2.resize(rng.normal(0, 20, (height // 8, width // 8)), (width, height))
    noise = rng.normal(0, 2, (height, width, 3))
    return np.clip(128 + smooth[..., None] + noise, 0, 255).astype(np.uint8)


def _flat(height: int, width: int) -> np.ndarray:
    image = np.zeros((height, width, 3), np.uint8)
    image[: height // 2] = (90, 140, 200)  # sky
    image[height // 2 :] = (70, 70, 70)  # road
    image[height // 3 : height // 2, width // 4 : width // 2] = (150, 90, 60)  # a building
    return image


def test_a_big_first_frame_is_judged_on_its_row_pairs():
    """At 1600x900 RGB's storage is chosen on about a quarter of the frame, in row pairs, and
    chosen as on the whole frame: textured images with row pairs, flat ones unshuffled."""
    textured, flat = _textured(900, 1600), _flat(900, 1600)
    sample = rgb_sample(textured)
    assert textured.nbytes > SAMPLE_BYTES >= sample.nbytes > SAMPLE_BYTES // 2
    assert np.array_equal(sample[:2], textured[:2])  # whole row pairs
    options = choices("lz4hc", "rgb")
    assert choose_rgb(textured, options)[0].predictor == "row-pairs"
    assert choose_rgb(flat, options)[0].blosc[2] == hdf5plugin.Blosc.NOSHUFFLE
    small = textured[:256, :512]
    assert rgb_sample(small) is small  # judged whole, and its chunk is frame 0's


def test_a_writer_holds_at_most_in_flight_frames(tmp_path, clip, monkeypatch):
    """Memory stays bounded: with encoding stalled, the producer is held after ``in_flight``
    frames, and everything it wrote is stored once encoding goes on."""
    gate, encode = threading.Event(), chunks.encode_image

    def stalled(*args, **kwargs):
        gate.wait(30)
        return encode(*args, **kwargs)

    written: list[int] = []
    path = tmp_path / "Town02-00001.h5"
    with ShardWriter(path, "Town02", in_flight=2) as writer:
        height, width = clip.frames[0].size
        group = writer.open_clip(clip.clip_id, len(clip), height, width)
        monkeypatch.setattr(chunks, "encode_image", stalled)

        def produce() -> None:
            for k, frame in enumerate(clip.frames):
                writer.write_frame(group, k, frame)
                written.append(k)

        producer = threading.Thread(target=produce)
        producer.start()
        deadline = time.monotonic() + 10
        while len(written) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)
        assert written == [0, 1] and producer.is_alive()
        gate.set()
        producer.join(30)
        assert written == list(range(len(clip)))
        writer.close_clip(group, clip)
    with ShardReader(path) as reader:
        back = reader.read_clip(clip.clip_id)
        assert reader.checksum_faults(clip.clip_id) == []
    assert np.array_equal(back.stack("rgb"), clip.stack("rgb"))


def test_an_encoding_failure_fails_the_write_and_leaves_no_file(tmp_path, clip, monkeypatch):
    encode = chunks.encode_image

    def failing(name, value, how):
        if name == "depth" and value is clip.frames[3].depth:
            raise MemoryError("no memory for frame 3's depth")
        return encode(name, value, how)

    monkeypatch.setattr(chunks, "encode_image", failing)
    with pytest.raises(MemoryError, match="frame 3"):
        with ShardWriter(tmp_path / "Town02-00001.h5", "Town02") as writer:
            writer.add(clip)
    assert list(tmp_path.iterdir()) == []


def _write_in_child(path: str, clip: Clip, done) -> None:
    with ShardWriter(path, "Town02") as writer:
        writer.add(clip)
    done.put("written")


def test_a_forked_child_writes_with_its_own_pool(tmp_path, clip):
    """The recorder's worker is forked from a parent whose pool threads it does not inherit."""
    with ShardWriter(tmp_path / "parent.h5", "Town02") as writer:
        writer.add(clip)  # the parent's pool exists
    ctx = mp.get_context("fork")
    done = ctx.Queue()
    child = ctx.Process(target=_write_in_child, args=(str(tmp_path / "child.h5"), clip, done))
    child.start()
    child.join(60)
    assert child.exitcode == 0 and done.get(timeout=5) == "written"
    with ShardReader(tmp_path / "child.h5") as reader:
        assert reader.checksum_faults(clip.clip_id) == []


def test_depth_codes_of_carla_depth_and_of_other_floats():
    """CARLA's depth (decoded codes) is stored exactly (near the far plane two codes can decode
    to one float32: either is returned); any other depth as its nearest code (half a step)."""
    rng = np.random.default_rng(0)
    codes = rng.integers(1, 2**24, 5000, dtype=np.uint32)
    other = rng.uniform(0.01, 1000, 5000).astype(np.float32)
    mixed = np.stack([decode_depth(codes), other], 1).reshape(100, 100)
    back = encode_depth(mixed).reshape(-1, 2)
    assert np.array_equal(decode_depth(back[:, 0]), decode_depth(codes))
    step = 1000 / (2**24 - 1)
    assert np.abs(decode_depth(back[:, 1]).astype(np.float64) - other).max() <= step / 2 + 1e-4


def test_an_hd_clip_is_stored_at_lz4hcs_fast_level_and_reads_back_exactly(tmp_path, tiny_towns):
    """Frames above 1024x512 store lz4hc at Blosc level 2 (the writer keeps up with an HD camera),
    smaller ones at level 3; either way the reader returns the frames exactly and verify passes."""
    cfg = CaptureConfig(backend="synthetic", town="Town02", frames=2, town_dir=tiny_towns)
    layout = load_town("Town02", tiny_towns)
    camera = layout.camera.model_copy(update={"width": 1600, "height": 900})
    hd = SyntheticBackend(cfg, layout.model_copy(update={"camera": camera})).record_clip(0)
    (tmp_path / "Town02").mkdir()
    path = tmp_path / "Town02" / "Town02-00001.h5"
    with ShardWriter(path, "Town02", "lz4hc") as writer:
        writer.add(hd)
    with h5py.File(path, "r") as h5:
        group = h5["clips"][hd.clip_id]
        for name in ("rgb", "semantic", "depth"):
            # hdf5plugin's Blosc filter options: (..., level, shuffle, compressor code)
            assert group[name]._filters["32001"][4] == 2, name
    with ShardReader(path) as reader:
        back = reader.read_clip(hd.clip_id)
    for name in ("rgb", "semantic"):
        assert np.array_equal(back.stack(name), hd.stack(name)), name
    assert np.array_equal(encode_depth(back.stack("depth")), encode_depth(hd.stack("depth")))
    reports = verify_shard(path, "Town02/" + path.name, VerifyConfig())
    assert reports and all(report.passed for report in reports), reports
    assert all(how.blosc[1] == 3 for how in choices("lz4hc", "rgb", 1024 * 512))
    assert all(how.blosc[1] == 2 for how in choices("lz4hc", "rgb", 1024 * 512 + 1))
