"""Shard format v3: round trip, chunking, depth code, optional modalities, validation on write,
refusals on read."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest

from carla_capture.backends.synthetic import SyntheticBackend
from carla_capture.config import CaptureConfig, load_town
from clipcore.codecs import CODECS
from clipcore.errors import ClipValidationError, ShardFormatError
from clipcore.geometry import FAR_PLANE_M
from clipcore.predictors import PREDICTORS, predict, unpredict
from clipcore.records import Clip
from clipcore.schema import DEPTH_CODE_MAX, DEPTH_SCALE_M, decode_depth, encode_depth
from clipcore.shards import FORMAT_VERSION, ShardReader, ShardWriter


@pytest.fixture(scope="module")
def clip(tiny_towns) -> Clip:
    cfg = CaptureConfig(backend="synthetic", town="Town02", frames=5, town_dir=tiny_towns)
    return SyntheticBackend(cfg, load_town("Town02", tiny_towns)).record_clip(0)


@pytest.mark.parametrize("codec", CODECS)
def test_round_trip_is_lossless(tmp_path, clip, codec):
    with ShardWriter(tmp_path / "Town02-00001.h5", "Town02", codec) as writer:
        writer.add(clip)
    with ShardReader(tmp_path / "Town02-00001.h5") as reader:
        assert reader.clip_ids() == [clip.clip_id]
        back = reader.read_clip(clip.clip_id)
    for name in ("rgb", "semantic", "cam_to_world", "carla_transform", "frame", "timestamp"):
        assert np.array_equal(back.stack(name), clip.stack(name)), name
    # depth is stored as CARLA's 24-bit code: the simulator's float depth within half a code
    assert (
        np.abs(back.stack("depth").astype(np.float64) - clip.stack("depth")).max()
        <= DEPTH_SCALE_M / 2 + 1e-6
    )
    assert np.array_equal(back.intrinsics, clip.intrinsics)
    assert back.weather == clip.weather and back.camera == clip.camera and back.seed == clip.seed


def test_carla_depth_is_stored_exactly(tmp_path, clip):
    """Depth decoded from CARLA's 24-bit code (all CARLA data) comes back bit for bit."""
    codes = np.random.default_rng(0).integers(
        1, DEPTH_CODE_MAX + 1, size=(len(clip), *clip.frames[0].size)
    )
    codes[:, 0, :4] = [1, 2**23, 2**24 - 2, DEPTH_CODE_MAX]  # near, middle and far-plane codes
    carla = dataclasses.replace(
        clip,
        frames=tuple(
            dataclasses.replace(f, depth=decode_depth(c))
            for f, c in zip(clip.frames, codes, strict=True)
        ),
    )
    with ShardWriter(tmp_path / "Town02-00001.h5", "Town02") as writer:
        writer.add(carla)
    with ShardReader(tmp_path / "Town02-00001.h5") as reader:
        back = reader.read_clip(clip.clip_id)
    assert np.array_equal(back.stack("depth"), carla.stack("depth"))


def test_depth_code_round_trip_covers_every_code():
    codes = np.arange(1, DEPTH_CODE_MAX + 1, dtype=np.uint32)
    metres = decode_depth(codes)
    assert np.array_equal(decode_depth(encode_depth(metres)), metres)
    assert metres[-1] == FAR_PLANE_M and np.all(np.diff(metres) >= 0)


def test_layout_attrs_and_chunks(tmp_path, clip):
    path = tmp_path / "Town02-00001.h5"
    with ShardWriter(path, "Town02") as writer:
        writer.add(clip)
    with h5py.File(path, "r") as h5:
        assert h5.attrs["format"] == "carla-clips" and h5.attrs["format_version"] == FORMAT_VERSION
        assert h5.attrs["semantic_schema"] == "carla-0.9.16" and h5.attrs["town"] == "Town02"
        g = h5["clips"][clip.clip_id]
        t, hgt, wid = len(clip), *clip.frames[0].size
        assert g["rgb"].shape == (t, hgt, wid, 3) and g["rgb"].chunks == (1, hgt, wid, 3)
        assert g["semantic"].chunks == (1, hgt, wid) and g["depth"].chunks == (1, hgt, wid)
        assert g["depth"].dtype == np.uint32 and g["depth"].attrs["encoding"] == "carla-24bit"
        assert {g[n].attrs["predictor"] for n in ("rgb", "semantic", "depth")} <= set(PREDICTORS)
        assert g["cam_to_world"].dtype == np.float64 and g["depth_valid"][()].all()
        assert g["frame"].dtype == np.int64 and g["carla_transform"].shape == (t, 6)
        assert g.attrs["complete"] and g.attrs["fps"] == clip.fps


@pytest.mark.parametrize("dtype", [np.uint8, np.uint32])
@pytest.mark.parametrize("predictor", PREDICTORS)
@pytest.mark.parametrize("shape", [(2, 7, 5), (3, 6, 4, 3), (1, 1, 3)])
def test_predictors_are_exact_and_undone_in_place(predictor, dtype, shape):
    values = np.random.default_rng(0).integers(0, np.iinfo(dtype).max, shape, endpoint=True)
    values = values.astype(dtype)
    stored = predict(values, predictor)
    assert stored.dtype == values.dtype and stored is not values
    back = unpredict(stored, predictor)
    assert back is stored and np.array_equal(back, values)


def test_predictors_store_what_docs_format_md_says():
    x = np.array([[[5, 7, 6], [9, 9, 250], [1, 2, 3]]], np.uint8)  # (T=1, H=3, W=3)
    assert predict(x, "row-pairs").tolist() == [[[5, 7, 6], [4, 2, 244], [1, 2, 3]]]
    assert predict(x, "row-delta").tolist() == [[[5, 2, 255], [9, 0, 241], [1, 1, 1]]]


@pytest.mark.parametrize("codec", CODECS)
def test_stored_values_through_the_predictor_are_the_values(tmp_path, clip, codec):
    """Any HDF5 reader that undoes the named predictor gets the images and depth codes."""
    path = tmp_path / "Town02-00001.h5"
    with ShardWriter(path, "Town02", codec) as writer:
        writer.add(clip)
    with h5py.File(path, "r") as h5:
        g = h5["clips"][clip.clip_id]
        for name, want in (
            ("rgb", clip.stack("rgb")),
            ("semantic", clip.stack("semantic")),
            ("depth", encode_depth(clip.stack("depth"))),
        ):
            assert np.array_equal(unpredict(g[name][()], g[name].attrs["predictor"]), want)
        if codec == "none":
            assert all(g[n].attrs["predictor"] == "none" for n in ("rgb", "semantic", "depth"))


def test_textured_rgb_is_stored_as_row_pairs_and_flat_rgb_is_not(tmp_path, clip):
    rng = np.random.default_rng(0)
    height, width = clip.frames[0].size
    smooth = cv2.resize(rng.normal(0, 20, (height // 4, width // 4)), (width, height))
    noisy = tuple(
        dataclasses.replace(
            f,
            rgb=np.clip(f.rgb + smooth[..., None] + rng.normal(0, 2, f.rgb.shape), 0, 255).astype(
                np.uint8
            ),
        )
        for f in clip.frames
    )
    path = tmp_path / "Town02-00001.h5"
    with ShardWriter(path, "Town02") as writer:
        writer.add(clip)
        writer.add(dataclasses.replace(clip, clip_id="Town02-0-000001", frames=noisy))
    with h5py.File(path, "r") as h5:
        assert h5["clips"][clip.clip_id]["rgb"].attrs["predictor"] == "none"
        assert h5["clips"]["Town02-0-000001"]["rgb"].attrs["predictor"] == "row-pairs"


def _format_2_shard(path: Path, clip: Clip) -> None:
    """A format 2 shard: no predictor attributes, no checksums (made from one of codec none,
    whose images are stored as they are, as format 2 stored them)."""
    with ShardWriter(path, "Town02", "none") as writer:
        writer.add(clip)
    with h5py.File(path, "a") as h5:
        h5.attrs["format_version"] = 2
        group = h5["clips"][clip.clip_id]
        del group["crc32"]
        for name in ("rgb", "semantic", "depth"):
            del group[name].attrs["predictor"]


def test_format_2_shards_stay_readable(tmp_path, clip):
    path = tmp_path / "Town02-00001.h5"
    _format_2_shard(path, clip)
    with ShardReader(path) as reader:
        back = reader.read_clip(clip.clip_id)
    assert np.array_equal(back.stack("rgb"), clip.stack("rgb"))
    assert np.array_equal(back.stack("depth"), decode_depth(encode_depth(clip.stack("depth"))))


def test_copying_a_format_2_clip_writes_it_anew_in_format_3(tmp_path, clip):
    """A clip staged by an older release (resuming a recording across an upgrade)."""
    old = tmp_path / "old.h5"
    _format_2_shard(old, clip)
    new = tmp_path / "Town02-00001.h5"
    with ShardReader(old) as reader, ShardWriter(new, "Town02") as writer:
        writer.add_copy(reader, clip.clip_id)
    with ShardReader(new) as reader:
        assert reader.faults(clip.clip_id) == [] and reader.checksum_faults(clip.clip_id) == []
        assert np.array_equal(reader.read_clip(clip.clip_id).stack("rgb"), clip.stack("rgb"))


def test_the_reader_module_alone_reads_blosc_shards(tmp_path, clip):
    """clipcore.shard_reader registers the HDF5 filters it needs itself."""
    path = tmp_path / "Town02-00001.h5"
    with ShardWriter(path, "Town02", "lz4hc") as writer:
        writer.add(clip)
    code = (
        "import sys; from clipcore.shard_reader import ShardReader\n"
        "with ShardReader(sys.argv[1]) as r:\n"
        "    c = r.clip_ids()[0]; print(r.read_arrays(c)['rgb'].shape, r.checksum_faults(c))"
    )
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True)
    assert out.returncode == 0 and "[]" in out.stdout, out.stderr


def test_empty_window_reads_as_no_frames(tmp_path, clip):
    path = tmp_path / "Town02-00001.h5"
    with ShardWriter(path, "Town02") as writer:
        writer.add(clip)
    with ShardReader(path) as reader:
        assert len(reader.read_arrays(clip.clip_id, 2, 2)["rgb"]) == 0


def test_a_predictor_in_a_format_2_shard_is_refused(tmp_path, clip):
    path = tmp_path / "Town02-00001.h5"
    with ShardWriter(path, "Town02", "zstd") as writer:
        writer.add(clip)
    with h5py.File(path, "a") as h5:
        h5.attrs["format_version"] = 2
    with ShardReader(path) as reader, pytest.raises(ShardFormatError, match="format 2"):
        reader.read_clip(clip.clip_id)


def test_partial_window_reads_only_those_frames(tmp_path, clip):
    path = tmp_path / "Town02-00001.h5"
    with ShardWriter(path, "Town02") as writer:
        writer.add(clip)
    with ShardReader(path) as reader:
        window = reader.read_clip(clip.clip_id, 1, 4)
    assert [f.frame for f in window.frames] == [f.frame for f in clip.frames[1:4]]


@pytest.mark.parametrize("codec", ["lz4hc", "gzip", "none"])
def test_reading_into_given_arrays_reads_the_same_values_there(tmp_path, clip, codec):
    path = tmp_path / "Town02-00001.h5"
    with ShardWriter(path, "Town02", codec) as writer:
        writer.add(clip)
    with ShardReader(path) as reader:
        want = reader.read_arrays(clip.clip_id, 1, 4, depth_codes=True)
        layout = reader.frame_layout(clip.clip_id)
        out = {name: np.full((3, *shape), 7, dtype) for name, (shape, dtype) in layout.items()}
        got = reader.read_arrays(clip.clip_id, 1, 4, depth_codes=True, out=out)
    assert list(layout) == ["rgb", "semantic", "depth"]
    for name, target in out.items():
        assert got[name] is target and np.array_equal(target, want[name]), name
    assert np.array_equal(got["cam_to_world"], want["cam_to_world"])


def test_reading_into_arrays_of_another_shape_or_type_is_refused(tmp_path, clip):
    path = tmp_path / "Town02-00001.h5"
    with ShardWriter(path, "Town02") as writer:
        writer.add(clip)
    with ShardReader(path) as reader:
        (shape, dtype) = reader.frame_layout(clip.clip_id)["rgb"]
        for wrong in (np.zeros((2, *shape), dtype), np.zeros((3, *shape), np.float32)):
            with pytest.raises(ValueError, match="needs uint8"):
                reader.read_arrays(clip.clip_id, 1, 4, out={"rgb": wrong})
        depth_shape, depth_dtype = reader.frame_layout(clip.clip_id)["depth"]
        codes = np.zeros((3, *depth_shape), depth_dtype)
        with pytest.raises(ValueError, match="depth_codes=True"):
            reader.read_arrays(clip.clip_id, 1, 4, out={"depth": codes})


def _broken(clip: Clip, **changes) -> Clip:
    frames = list(clip.frames)
    frames[1] = dataclasses.replace(frames[1], **changes)
    return dataclasses.replace(clip, frames=tuple(frames))


@pytest.mark.parametrize(
    "change",
    [
        {"depth": "nan"},
        {"depth": "zero"},
        {"semantic": "tag_29"},
        {"frame": "repeat"},
        {"cam_to_world": "mirrored"},
        {"rgb": "wrong_shape"},
    ],
)
def test_writer_refuses_invalid_clips(tmp_path, clip, change):
    ((field, how),) = change.items()
    f = clip.frames[1]
    value = {
        "nan": np.where(f.depth > 0, np.nan, f.depth),
        "zero": np.zeros_like(f.depth),
        "tag_29": np.full_like(f.semantic, 29),
        "repeat": clip.frames[0].frame,
        "mirrored": f.cam_to_world @ np.diag([1.0, -1.0, 1.0, 1.0]),
        "wrong_shape": f.rgb[:-1],
    }[how]
    path = tmp_path / "Town02-00001.h5"
    with pytest.raises(ClipValidationError):
        with ShardWriter(path, "Town02") as writer:
            writer.add(_broken(clip, **{field: value}))
    assert not path.exists() and not list(tmp_path.iterdir())


def test_never_overwrites_a_shard(tmp_path, clip):
    path = tmp_path / "Town02-00001.h5"
    with ShardWriter(path, "Town02") as writer:
        writer.add(clip)
    before = path.read_bytes()
    with pytest.raises(FileExistsError):
        ShardWriter(path, "Town02")
    assert path.read_bytes() == before


def test_reader_refuses_other_versions_and_foreign_files(tmp_path, clip):
    path = tmp_path / "Town02-00001.h5"
    with ShardWriter(path, "Town02") as writer:
        writer.add(clip)
    with h5py.File(path, "a") as h5:
        h5.attrs["format_version"] = 4
    with pytest.raises(ShardFormatError, match="format_version 4"):
        ShardReader(path)
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as h5:
        h5["x"] = np.arange(3)
    with pytest.raises(ShardFormatError, match="not a carla-clips shard"):
        ShardReader(foreign)


def test_reader_refuses_truncated_file(tmp_path, clip):
    path = tmp_path / "Town02-00001.h5"
    with ShardWriter(path, "Town02") as writer:
        writer.add(clip)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(ShardFormatError, match="truncated"):
        with ShardReader(path) as reader:
            reader.read_clip(reader.clip_ids()[0])


def test_rgb_shuffle_adapts_to_the_images(tmp_path, clip):
    """Flat-shaded frames are stored unshuffled, camera-like noisy ones bit-shuffled; both exact."""
    noise = np.random.default_rng(0).integers(0, 8, clip.frames[0].rgb.shape, dtype=np.uint8)
    noisy = dataclasses.replace(
        clip,
        clip_id="noisy",
        frames=tuple(dataclasses.replace(f, rgb=f.rgb // 2 + noise) for f in clip.frames),
    )
    path = tmp_path / "a.h5"
    with ShardWriter(path, "Town02", "lz4hc+zstd") as writer:
        writer.add(clip)
        writer.add(noisy)
    with ShardReader(path) as reader:
        shuffle = {c: reader.group(c)["rgb"]._filters["32001"][5] for c in (clip.clip_id, "noisy")}
        for c in (clip, noisy):
            assert np.array_equal(
                reader.read_arrays(c.clip_id)["rgb"], np.stack([f.rgb for f in c.frames])
            )
    assert shuffle == {clip.clip_id: 0, "noisy": 2}  # Blosc: 0 no shuffle, 2 bit shuffle
