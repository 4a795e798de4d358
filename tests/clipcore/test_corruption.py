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
    "camera_attr_missing": (lambda g: g.attrs.__delitem__("camera"), "attribute camera is missing"),
    "camera_attr_not_json": (
        lambda g: g.attrs.__setitem__("camera", "{width: 96"),
        "attribute camera is not a JSON object",
    ),
    "weather_attr_a_list": (
        lambda g: g.attrs.__setitem__("weather", "[1, 2]"),
        "attribute weather is not a JSON object",
    ),
    "fps_zero": (lambda g: g.attrs.__setitem__("fps", 0.0), "attribute fps is 0.0"),
    "frame_stride_fraction": (
        lambda g: g.attrs.__setitem__("frame_stride", 1.5),
        "attribute frame_stride is 1.5",
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


def _swap_frames_with_poses(group: h5py.Group) -> None:
    """Frames 1 and 2 swapped in every per-frame dataset but frame and timestamp: images, masks,
    poses and checksums move together, so every value and CRC-32 is still right."""
    for name in group:
        if name not in ("frame", "timestamp", "intrinsics") and group[name].ndim >= 1:
            group[name][...] = _swap(group[name][()])


#: Damage no value check can see (every value is still a valid pixel, tag or depth): only the
#: CRC-32 of each frame, which verify compares, the camera path in time order or the clip's town
#: against its shard's finds it.
CHECKSUM_CORRUPTIONS: dict[str, tuple[Callable[[h5py.Group], None], str]] = {
    "predictor_swapped": (_swap_predictor, "rgb of frames"),
    "rgb_pixel_changed": (_edit_values("rgb", _plus_one((2, 5, 5, 1))), "rgb of frame 2 "),
    "depth_code_changed": (_edit_values("depth", _plus_one((4, 20, 30))), "depth of frame 4 "),
    "labels_dropped": (_edit("semantic_valid", _at((3,), False)), "semantic of frame 3 "),
    "clip_of_another_town": (
        lambda g: g.attrs.__setitem__("town", "Town05"),
        "clip town attribute is Town05, the shard holds Town02",
    ),
    "frames_swapped_with_poses_and_checksums": (
        _swap_frames_with_poses,
        "trajectory out of time order: the camera turns back at frames [1, 2]",
    ),
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
    """One clip of 6 frames in ``<tmp>/Town02/Town02-00001.h5`` (a town folder, as recorded)."""
    cfg = CaptureConfig(backend="synthetic", town="Town02", frames=6, town_dir=tiny_towns)
    clip = SyntheticBackend(cfg, load_town("Town02", tiny_towns)).record_clip(0)
    path = tmp_path_factory.mktemp("good") / "Town02" / "Town02-00001.h5"
    path.parent.mkdir()
    with ShardWriter(path, "Town02") as writer:
        writer.add(clip)
    return path


def corrupt(good: Path, folder: Path, name: str) -> tuple[Path, str]:
    """A copy of ``good`` in ``folder/Town02/`` with corruption ``name``; returns it and the
    expected words."""
    path = folder / "Town02" / good.name
    path.parent.mkdir(parents=True, exist_ok=True)
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
    (data / "good" / "Town02").mkdir(parents=True)
    shutil.copy(good_shard, data / "good" / "Town02" / good_shard.name)
    with h5py.File(data / "good" / "Town02" / good_shard.name, "a") as h5:
        h5["clips"].move(CLIP, "Town02-0-000001")  # not one more copy of the damaged clips' id
    result = CliRunner().invoke(main, ["verify", str(data), "--quarantine"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    report = json.loads((data / "verify-report.json").read_text())
    quarantined = sorted(Path(rel).parts[0] for rel in report["quarantined"])
    assert quarantined == sorted(VERIFY_FINDS)
    assert (data / "good" / "Town02" / good_shard.name).exists()
    for name in VERIFY_FINDS:
        rel = Path(name) / "Town02" / good_shard.name
        assert (data / "quarantine" / rel).exists() and not (data / rel).exists()
    assert report["passed"] == 1 and report["failed"] >= len(VERIFY_FINDS)


def _copied_shard(good: Path, data: Path) -> Path:
    shutil.copy(good, data / "Town02" / "Town02-00002.h5")
    return data / "Town02" / "Town02-00002.h5"


def _other_towns_shard(good: Path, data: Path) -> Path:
    (data / "Town01").mkdir()
    shutil.copy(good, data / "Town01" / "Town01-00001.h5")
    with h5py.File(data / "Town01" / "Town01-00001.h5", "a") as h5:  # its clip id: no copy
        h5["clips"].move(CLIP, "Town02-0-000007")
    return data / "Town01" / "Town01-00001.h5"


def _no_town_attribute(good: Path, data: Path) -> Path:
    path = data / "Town02" / "Town02-00001.h5"
    _set_root("town", None)(path)
    return path


#: Damage of the dataset as a whole (every clip on its own is sound): a function that damages
#: ``data`` (which holds ``good`` as ``Town02/Town02-00001.h5``) and returns the shard at fault,
#: and the words of verify's failure
DATASET_CORRUPTIONS: dict[str, tuple[Callable[[Path, Path], Path], str]] = {
    "copied_shard": (_copied_shard, "the same clip id is in Town02/Town02-00001.h5"),
    "shard_of_another_town": (_other_towns_shard, "a shard of Town02 in folder Town01/"),
    "no_town_attribute": (_no_town_attribute, "the shard has no town attribute"),
}


@pytest.mark.parametrize("name", sorted(DATASET_CORRUPTIONS))
def test_verify_finds_damage_of_the_dataset_and_quarantines_the_shard_at_fault(
    tmp_path, good_shard, name
):
    data = tmp_path / "data"
    (data / "Town02").mkdir(parents=True)
    shutil.copy(good_shard, data / "Town02" / good_shard.name)
    damage, words = DATASET_CORRUPTIONS[name]
    bad = damage(good_shard, data)
    untouched = {p: p.read_bytes() for p in data.rglob("*.h5") if p != bad}
    result = CliRunner().invoke(main, ["verify", str(data), "--quarantine"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert words in result.stdout, result.stdout
    report = json.loads((data / "verify-report.json").read_text())
    assert report["quarantined"] == [str(bad.relative_to(data))]
    assert {p: p.read_bytes() for p in untouched} == untouched
    if untouched:  # what is left is sound
        assert CliRunner().invoke(main, ["verify", str(data)]).exit_code == 0


@pytest.mark.parametrize(
    "name, words",
    [
        ("copied_shard", "is in both"),
        ("no_town_attribute", "town ? is in no split"),
        ("camera_attr_not_json", "attribute camera is not a JSON object"),
        ("fps_zero", "attribute fps is 0.0"),
    ],
)
def test_split_refuses_a_dataset_training_cannot_use(tmp_path, good_shard, name, words):
    """Training reads through split.json: a clip id twice, a shard without a town or a clip whose
    attributes are not values never get there."""
    data = tmp_path / "data"
    if name in DATASET_CORRUPTIONS:
        (data / "Town02").mkdir(parents=True)
        shutil.copy(good_shard, data / "Town02" / good_shard.name)
        DATASET_CORRUPTIONS[name][0](good_shard, data)
    else:
        corrupt(good_shard, data, name)
    result = CliRunner().invoke(main, ["split", str(data)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert words in result.stderr, result.stderr
    assert not (data / "split.json").exists()
