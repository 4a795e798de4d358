"""The corruption suite: each kind of damaged shard is made from a good one; the reader refuses it
with a message naming the clip and the fault, and verify flags it, quarantines it and carries on."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from carla_capture.backends.synthetic import SyntheticBackend
from carla_capture.cli import main
from carla_capture.config import CaptureConfig, VerifyConfig, load_town
from carla_capture.verify import verify_shard
from clipcore.errors import ShardFormatError
from clipcore.predictors import predict, unpredict
from clipcore.shards import ShardReader, ShardWriter

CLIP = "Town02-0-000000"


def _replace(group: h5py.Group, name: str, data: np.ndarray, **kwargs: object) -> None:
    attrs = dict(group[name].attrs)
    del group[name]
    group.create_dataset(name, data=data, **kwargs)
    group[name].attrs.update(attrs)


def _edit(name: str, change: Callable[[np.ndarray], np.ndarray]) -> Callable[[h5py.Group], None]:
    def edit(group: h5py.Group) -> None:
        data = group[name][()]
        group[name][...] = change(data)

    return edit


def _values(group: h5py.Group, name: str) -> np.ndarray:
    """An image dataset's values (depth codes), whatever its predictor."""
    return unpredict(group[name][()], group[name].attrs["predictor"])


def _edit_values(
    name: str, change: Callable[[np.ndarray], np.ndarray]
) -> Callable[[h5py.Group], None]:
    """Change an image dataset's values (not what its predictor stores)."""

    def edit(group: h5py.Group) -> None:
        group[name][...] = predict(change(_values(group, name)), group[name].attrs["predictor"])

    return edit


def _to_v1_with_nan_depth(group: h5py.Group) -> None:
    depth = (_values(group, "depth") * group["depth"].attrs["scale_m"]).astype(np.float32)
    depth[3, 5, 7] = np.nan
    del group["depth"]
    group.create_dataset("depth", data=depth, chunks=(1, *depth.shape[1:]))
    for name in [n for n in group if n.endswith("_valid")]:
        del group[name]
    for name in ("rgb", "semantic"):
        _replace(group, name, _values(group, name), chunks=group[name].chunks)
        group[name].attrs["predictor"] = "none"
    group.file.attrs["format_version"] = 1


def _scaled_pose(p: np.ndarray) -> np.ndarray:
    p[2, :3, :3] *= 1.1
    return p


def _flipped_pose(p: np.ndarray) -> np.ndarray:
    p[2, :3, 1] *= -1
    return p


def _last_row(p: np.ndarray) -> np.ndarray:
    p[4, 3, 0] = 0.5
    return p


def _swap(values: np.ndarray) -> np.ndarray:
    values[[1, 2]] = values[[2, 1]]
    return values


def _at(index: tuple, value: float) -> Callable[[np.ndarray], np.ndarray]:
    def change(data: np.ndarray) -> np.ndarray:
        data[index] = value
        return data

    return change


#: name -> (edit of the clip group (or None for file-level damage), words the refusal must contain)
CLIP_CORRUPTIONS: dict[str, tuple[Callable[[h5py.Group], None], str]] = {
    "rgb_half_height": (lambda g: _replace(g, "rgb", g["rgb"][:, ::2], chunks=True), "shape"),
    "rgb_four_channels": (
        lambda g: _replace(
            g, "rgb", np.concatenate([g["rgb"][()], g["rgb"][..., :1]], -1), chunks=(1, 48, 96, 4)
        ),
        "rgb has shape",
    ),
    "depth_fewer_frames": (
        lambda g: _replace(g, "depth", g["depth"][:-1], chunks=(1, 48, 96)),
        "depth has shape",
    ),
    "depth_float_in_v2": (
        lambda g: _replace(g, "depth", g["depth"][()].astype(np.float32), chunks=(1, 48, 96)),
        "dtype",
    ),
    "depth_zero": (_edit_values("depth", _at((2, 10, 10), 0)), "depth outside"),
    "depth_beyond_far_plane": (_edit_values("depth", _at((4, 0, 0), 2**24)), "depth outside"),
    "depth_unknown_encoding": (
        lambda g: g["depth"].attrs.__setitem__("encoding", "png"),
        "no encoding='carla-24bit'",
    ),
    "unknown_predictor": (
        lambda g: g["rgb"].attrs.__setitem__("predictor", "paeth"),
        "rgb has predictor 'paeth'",
    ),
    "nan_depth_v1": (_to_v1_with_nan_depth, "NaN"),
    "pose_not_orthonormal": (_edit("cam_to_world", _scaled_pose), "not orthonormal"),
    "pose_flipped_axis": (_edit("cam_to_world", _flipped_pose), "determinant"),
    "pose_last_row": (_edit("cam_to_world", _last_row), "last row"),
    "pose_nan": (_edit("cam_to_world", _at((1, 0, 3), np.nan)), "NaN"),
    "frames_out_of_order": (_edit("frame", _swap), "frame does not increase"),
    "timestamp_repeated": (_edit("timestamp", _at((3,), 0.0)), "timestamp does not increase"),
    "tag_out_of_range": (_edit_values("semantic", _at((1, 0, 0), 200)), "tag above"),
    "valid_mask_missing": (lambda g: g.__delitem__("depth_valid"), "depth_valid"),
    "contiguous_rgb": (lambda g: _replace(g, "rgb", g["rgb"][()]), "chunked"),
    "frame_count_attr": (lambda g: g.attrs.__setitem__("num_frames", 7), "num_frames"),
    "timestamp_missing": (lambda g: g.__delitem__("timestamp"), "missing dataset"),
    "intrinsics_not_pinhole": (_edit("intrinsics", lambda k: k * 2), "intrinsics"),
    "no_completion_marker": (lambda g: g.attrs.__setitem__("complete", False), "completion marker"),
    "depth_lost": (lambda g: g.__delitem__("depth"), "depth is missing"),
    "poses_lost": (
        lambda g: [g.__delitem__(n) for n in ("cam_to_world", "cam_to_world_valid")],
        "cam_to_world listed",
    ),
    "intrinsics_lost": (lambda g: g.__delitem__("intrinsics"), "intrinsics listed"),
    "predictor_lost": (
        lambda g: g["rgb"].attrs.__delitem__("predictor"),
        "rgb has no predictor attribute",
    ),
    "checksums_lost": (lambda g: g.__delitem__("crc32"), "missing dataset(s) crc32"),
    "checksums_a_group": (
        lambda g: (g.__delitem__("crc32"), g.create_group("crc32")),
        "unreadable",
    ),
}


def _swap_predictor(group: h5py.Group) -> None:
    rgb = group["rgb"].attrs
    rgb["predictor"] = "none" if rgb["predictor"] == "row-pairs" else "row-pairs"


def _plus_one(index: tuple) -> Callable[[np.ndarray], np.ndarray]:
    def change(data: np.ndarray) -> np.ndarray:
        data[index] += 1
        return data

    return change


#: Damage no value check can see (every value is still a valid pixel, tag or depth): only the
#: CRC-32 of each frame, which verify compares, finds it.
CHECKSUM_CORRUPTIONS: dict[str, tuple[Callable[[h5py.Group], None], str]] = {
    "predictor_swapped": (_swap_predictor, "rgb of frames"),
    "rgb_pixel_changed": (_edit_values("rgb", _plus_one((2, 5, 5, 1))), "rgb of frame 2 "),
    "depth_code_changed": (_edit_values("depth", _plus_one((4, 20, 30))), "depth of frame 4 "),
    "labels_dropped": (_edit("semantic_valid", _at((3,), False)), "semantic of frame 3 "),
}


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _set_root(key: str, value: object) -> Callable[[Path], None]:
    def edit(path: Path) -> None:
        with h5py.File(path, "a") as h5:
            if value is None:
                del h5.attrs[key]
            else:
                h5.attrs[key] = value

    return edit


FILE_CORRUPTIONS: dict[str, tuple[Callable[[Path], None], str]] = {
    "truncated": (_truncate, "not a readable HDF5 file"),
    "not_hdf5": (
        lambda p: p.write_bytes(b"PK\x03\x04 this is a zip, not a shard" * 100),
        "not a readable HDF5 file",
    ),
    "foreign_hdf5": (_set_root("format", None), "not a carla-clips shard"),
    "unknown_version": (_set_root("format_version", 99), "format_version 99"),
    "version_not_a_number": (_set_root("format_version", "two"), "format_version 'two'"),
}


@pytest.fixture(scope="module")
def good_shard(tmp_path_factory, tiny_towns) -> Path:
    cfg = CaptureConfig(backend="synthetic", town="Town02", frames=6, town_dir=tiny_towns)
    clip = SyntheticBackend(cfg, load_town("Town02", tiny_towns)).record_clip(0)
    path = tmp_path_factory.mktemp("good") / "Town02-00001.h5"
    with ShardWriter(path, "Town02") as writer:
        writer.add(clip)
    return path


def corrupt(good: Path, folder: Path, name: str) -> tuple[Path, str]:
    """A copy of ``good`` in ``folder`` with corruption ``name``; returns it and the expected
    words."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / good.name
    shutil.copy(good, path)
    if name in FILE_CORRUPTIONS:
        edit, words = FILE_CORRUPTIONS[name]
        edit(path)
        return path, words
    edit, words = {**CLIP_CORRUPTIONS, **CHECKSUM_CORRUPTIONS}[name]
    with h5py.File(path, "a") as h5:
        edit(h5["clips"][CLIP])
    return path, words


ALL = sorted(CLIP_CORRUPTIONS) + sorted(FILE_CORRUPTIONS)
VERIFY_FINDS = ALL + sorted(CHECKSUM_CORRUPTIONS)


def test_good_shard_reads_and_passes(good_shard):
    with ShardReader(good_shard) as reader:
        assert reader.read_arrays(CLIP)["rgb"].shape == (6, 48, 96, 3)
    assert all(r.passed for r in verify_shard(good_shard, good_shard.name, VerifyConfig()))


@pytest.mark.parametrize("name", ALL)
def test_reader_refuses_with_clip_and_fault(tmp_path, good_shard, name):
    path, words = corrupt(good_shard, tmp_path, name)
    with pytest.raises(ShardFormatError) as err:
        with ShardReader(path) as reader:
            reader.read_arrays(CLIP)
    message = str(err.value)
    assert words in message and path.name in message
    if name in CLIP_CORRUPTIONS:
        assert CLIP in message


@pytest.mark.parametrize("name", VERIFY_FINDS)
def test_verify_flags_it(tmp_path, good_shard, name):
    path, words = corrupt(good_shard, tmp_path, name)
    reports = verify_shard(path, path.name, VerifyConfig())
    assert reports and not all(r.passed for r in reports)
    assert any(words in failure for r in reports for failure in r.failures)


def test_verify_quarantines_every_corruption_and_carries_on(tmp_path, good_shard):
    data = tmp_path / "data"
    for name in VERIFY_FINDS:
        corrupt(good_shard, data / name, name)
    (data / "good").mkdir()
    shutil.copy(good_shard, data / "good" / good_shard.name)
    result = CliRunner().invoke(main, ["verify", str(data), "--quarantine"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    report = json.loads((data / "verify-report.json").read_text())
    quarantined = sorted(Path(rel).parent.name for rel in report["quarantined"])
    assert quarantined == sorted(VERIFY_FINDS)
    assert (data / "good" / good_shard.name).exists()
    for name in VERIFY_FINDS:
        assert (data / "quarantine" / name / good_shard.name).exists() and not (
            data / name / good_shard.name
        ).exists()
    assert report["passed"] == 1 and report["failed"] >= len(VERIFY_FINDS)
