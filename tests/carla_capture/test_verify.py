"""capture verify: synthetic clips pass; each kind of corruption fails; quarantine moves shards."""

from __future__ import annotations

import dataclasses
import json
import shutil

import h5py
import numpy as np
import pytest

from carla_capture.backends.synthetic import SyntheticBackend
from carla_capture.config import CaptureConfig, VerifyConfig, load_town
from carla_capture.verify import verify_clip
from tests.videos import assert_h264


@pytest.fixture(scope="module")
def clip(small_towns):
    cfg = CaptureConfig(backend="synthetic", town="Town03", frames=6, town_dir=small_towns)
    return SyntheticBackend(cfg, load_town("Town03", small_towns)).record_clip(1)


def _lag(frames, field):
    return [
        dataclasses.replace(f, **{field: getattr(frames[max(i - 1, 0)], field)})
        for i, f in enumerate(frames)
    ]


CORRUPTIONS = {
    "shuffled_frames": lambda F: [F[i] for i in (0, 2, 1, 3, 5, 4)],
    "flipped_world_axis": lambda F: [
        dataclasses.replace(f, cam_to_world=np.diag([1, -1, 1, 1.0]) @ f.cam_to_world) for f in F
    ],
    "camera_rolled_180": lambda F: [
        dataclasses.replace(f, cam_to_world=f.cam_to_world @ np.diag([-1, -1, 1, 1.0])) for f in F
    ],
    "depth_in_cm": lambda F: [dataclasses.replace(f, depth=f.depth * 100) for f in F],
    "depth_in_km": lambda F: [dataclasses.replace(f, depth=f.depth / 1000) for f in F],
    "depth_one_frame_late": lambda F: _lag(F, "depth"),
    "semantic_one_frame_late": lambda F: _lag(F, "semantic"),
    "frozen_rgb": lambda F: [
        dataclasses.replace(f, rgb=F[2].rgb) if i == 3 else f for i, f in enumerate(F)
    ],
    "frames_reordered_with_their_poses": lambda F: [
        dataclasses.replace(F[j], frame=F[i].frame, timestamp=F[i].timestamp)
        for i, j in enumerate((0, 1, 3, 2, 4, 5))
    ],
    "black_rgb": lambda F: [
        dataclasses.replace(f, rgb=np.zeros_like(f.rgb)) if i == 4 else f for i, f in enumerate(F)
    ],
}


def test_the_camera_path_is_checked_in_time_order(clip):
    swapped = CORRUPTIONS["frames_reordered_with_their_poses"](list(clip.frames))
    report = verify_clip(dataclasses.replace(clip, frames=tuple(swapped)), "x.h5", VerifyConfig())
    assert any("the camera turns back at frames [2, 3]" in f for f in report.failures), report
    assert not any(f.startswith(("geometry", "timestamp steps", "frame")) for f in report.failures)
    # a camera that stands (steps under trajectory_min_step_m) is not judged
    still = verify_clip(
        dataclasses.replace(clip, frames=tuple(swapped)),
        "x.h5",
        VerifyConfig(trajectory_min_step_m=100.0),
    )
    assert not any("trajectory" in f for f in still.failures)


def test_synthetic_clip_passes_with_high_agreement(clip):
    report = verify_clip(clip, "x.h5", VerifyConfig())
    assert report.passed, report.failures
    assert report.metrics["depth_agree"] > 0.95 and report.metrics["label_agree"] > 0.98
    assert report.metrics["sky_far_iou_min"] == 1.0 and report.metrics["geometry_pairs"] == 5
    assert abs(sum(report.class_histogram.values()) - 1) < 1e-3


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_corruption_fails(clip, name):
    broken = dataclasses.replace(clip, frames=tuple(CORRUPTIONS[name](list(clip.frames))))
    report = verify_clip(broken, "x.h5", VerifyConfig())
    assert not report.passed, name


@pytest.mark.parametrize("width,height", [(64, 32), (128, 64), (512, 256), (1600, 900)])
def test_a_clean_recording_passes_at_every_resolution(cli, tmp_path, towns_of_size, width, height):
    """The geometry check leaves out pixels on edges, whose share grows as the resolution falls:
    what it measures does not depend on the resolution."""
    out, towns = tmp_path / "data", towns_of_size(width, height)
    args = ("--backend", "synthetic", "--town", "Town02", "--clips", "1", "--frames", "3")
    assert cli.capture("record", *args, "--out", out, "--town-dir", towns).exit_code == 0
    result = cli.capture("verify", out)
    assert result.exit_code == 0, result.stdout
    (clip,) = json.loads((out / "verify-report.json").read_text())["clips"]
    assert clip["metrics"]["geometry_pairs"] == 2 and clip["metrics"]["depth_agree"] > 0.98


def test_verify_cli_report_and_quarantine(cli, tmp_path, tiny_dataset):
    data = tmp_path / "data"
    shutil.copytree(tiny_dataset, data)
    ok = cli.capture("verify", str(data))
    assert ok.exit_code == 0, ok.output
    assert "5 passed, 0 failed" in ok.stdout
    report = json.loads((data / "verify-report.json").read_text())
    assert report["passed"] == 5 and all(c["passed"] for c in report["clips"])
    # corrupt one clip on disk: depth written in centimetres
    bad = data / "Town02" / "Town02-s0-00001.h5"
    with h5py.File(bad, "a") as h5:
        group = next(iter(h5["clips"].values()))
        group["depth"][...] = group["depth"][()] * 100
    untouched = {p: p.read_bytes() for p in data.rglob("*.h5") if p != bad}
    failed = cli.capture("verify", str(data), "--quarantine")
    assert failed.exit_code == 1
    assert "FAIL Town02-0-000000" in failed.stdout and "depth outside" in failed.stdout
    assert not bad.exists() and (data / "quarantine" / "Town02" / "Town02-s0-00001.h5").exists()
    assert {p: p.read_bytes() for p in untouched} == untouched
    # quarantined shards are left out of verify, split and inspect from now on
    assert cli.capture("verify", str(data)).exit_code == 0
    assert json.loads(cli.capture("inspect", str(data), "--json").stdout)["clips"] == 4
    assert cli.capture("split", str(data)).exit_code == 0
    assert json.loads((data / "split.json").read_text())["splits"]["test"]["towns"] == {}


def test_thresholds_from_set(cli, tmp_path, tiny_dataset):
    result = cli.capture(
        "verify",
        str(tiny_dataset),
        "--set",
        "min_depth_agree=1.01",
        "--report",
        str(tmp_path / "r.json"),
    )
    assert result.exit_code == 2 and "min_depth_agree" in result.stderr
    strict = cli.capture(
        "verify",
        str(tiny_dataset),
        "--set",
        "geometry_rel_tol=1e-9",  # below float32 depth precision: nothing agrees
        "--report",
        str(tmp_path / "r.json"),
    )
    assert strict.exit_code == 1 and "reprojected depth agrees" in strict.stdout


def test_inspect_video(cli, tmp_path, tiny_dataset):
    import cv2
    from PIL import Image

    mp4, gif = tmp_path / "clip.mp4", tmp_path / "clip.gif"
    assert cli.capture("inspect", str(tiny_dataset), "--video", str(mp4)).exit_code == 0
    cap = cv2.VideoCapture(str(mp4))
    frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    ok, first = cap.read()
    assert ok and first.shape == (48, 3 * 96, 3) and frames == 6
    assert_h264(mp4)
    assert cli.capture("inspect", str(tiny_dataset), "--video", str(gif)).exit_code == 0
    assert Image.open(gif).n_frames == 6
    bad = cli.capture("inspect", str(tiny_dataset), "--video", str(tmp_path / "clip.avi"))
    assert bad.exit_code == 2 and ".mp4 or .gif" in bad.stderr


def test_verify_of_a_read_only_dataset_prints_its_results(cli, tiny_dataset, read_only_copy):
    data = read_only_copy(tiny_dataset)
    result = cli.capture("verify", data)
    assert "5 passed, 0 failed" in result.stdout  # the results, although the report fails
    cli.error(result, "report was not written", "read-only file system", "--report FILE")
    assert not (data / "verify-report.json").exists()
    elsewhere = cli.capture("verify", data, "--report", data.parent.parent / "r.json")
    assert elsewhere.exit_code == 0 and (data.parent.parent / "r.json").exists()


@pytest.mark.parametrize(
    "option, words",
    [
        (["--clip", "Town09-0-000000"], "--clip Town09-0-000000: no such clip"),
        (["--sheet", "sheet.txt"], "use a .png or .jpg or .jpeg file name"),
        (["--sheet", "missing/sheet.png"], "the folder missing does not exist"),
        (["--video", "clip.avi"], "use a .mp4 or .gif file name"),
        (["--video", "missing/clip.mp4"], "the folder missing does not exist"),
        (["--sheet", "sheet.png", "--clip", "nope"], "--clip nope: no such clip"),
    ],
)
def test_inspect_checks_its_options_before_printing(
    cli, tmp_path, tiny_dataset, monkeypatch, option, words
):
    monkeypatch.chdir(tmp_path)
    result = cli.capture("inspect", tiny_dataset, *option)
    cli.error(result, words)
    assert result.stdout == "" and list(tmp_path.iterdir()) == []
