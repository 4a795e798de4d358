"""``train live``: the dashboard it saves holds every frame the simulator rendered, as rendered,
with the model's predictions and both trajectories; bad options and a missing SDK are one line."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from carla_capture.backends.synthetic import SyntheticBackend
from carla_capture.config import CaptureConfig
from carla_temporal.live import live_town
from clipcore.dashboard import read_rrd, rrd_images, rrd_values
from clipcore.geometry import invert_pose
from dataset.labels import load_label_map

IMAGES = (
    "/camera/rgb",
    "/camera/semantic/truth",
    "/camera/semantic/predicted",
    "/camera/depth/truth",
    "/camera/depth/predicted",
)


@pytest.fixture(scope="module")
def saved(trained_run: Path, tiny_towns: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from click.testing import CliRunner

    from carla_temporal.cli import main

    path = tmp_path_factory.mktemp("live") / "run.rrd"
    result = CliRunner().invoke(
        main,
        [
            "live",
            "--run",
            str(trained_run),
            "--backend",
            "synthetic",
            "--town",
            "Town02",
            "--town-dir",
            str(tiny_towns),
            "--clips",
            "2",
            "--frames",
            "3",
            "--max-frames",
            "5",
            "--save",
            str(path),
        ],
    )
    assert result.exit_code == 0, (result.output, result.exception)
    assert "5 frames in 2 clip(s)" in result.output and "frames/s" in result.output
    return path


def _clips(tiny_towns: Path) -> list:
    """The two clips the live run drove, rendered again by the backend at the model's size."""
    capture = CaptureConfig(backend="synthetic", town="Town02", frames=3, town_dir=tiny_towns)
    backend = SyntheticBackend(capture, live_town(capture, (64, 128)))
    return [backend.record_clip(0), backend.record_clip(1)]


def test_saved_dashboard_has_every_frame_and_entity(saved):
    contents = read_rrd(saved)
    for entity in IMAGES:
        assert contents[entity]["frames"] == [0, 1, 2, 3, 4], entity
        assert contents[entity]["shapes"] == [(64, 128)] * 5, entity
    for name in ("fps", "model_ms", "pixel_accuracy"):
        assert contents[f"/metrics/{name}"]["frames"] == [0, 1, 2, 3, 4]
    assert contents["/clip"]["frames"] == [0, 3]  # the second clip starts at frame 3
    # a trajectory is drawn from each clip's second frame on
    for name in ("true", "estimated"):
        assert contents[f"/world/trajectory/{name}"]["frames"] == [1, 2, 4]
    assert (
        contents["/camera"]["static"]
        and "AnnotationContext:context" in contents["/camera"]["components"]
    )
    assert contents["/config"]["static"]


def test_annotation_context_is_the_label_map(saved):
    label_map = load_label_map("carla22")
    context = rrd_values(saved, "/camera", "AnnotationContext:context")[None][0]
    labels = [c["class_description"]["info"]["label"] for c in context]
    assert tuple(labels) == label_map.class_names
    rgba = [c["class_description"]["info"]["color"] for c in context]
    expected = [
        (int(r) << 24) | (int(g) << 16) | (int(b) << 8) | 255 for r, g, b in label_map.palette
    ]
    assert rgba == expected


def test_saved_images_are_the_rendered_frames(saved, tiny_towns):
    frames = [f for clip in _clips(tiny_towns) for f in clip.frames][:5]
    label_map = load_label_map("carla22")
    rgb, labels = rrd_images(saved, "/camera/rgb"), rrd_images(saved, "/camera/semantic/truth")
    depth = rrd_images(saved, "/camera/depth/truth")
    for k, frame in enumerate(frames):
        assert np.abs(rgb[k].astype(int) - frame.rgb).max() <= 1, (
            k
        )  # through the model's normalisation
        np.testing.assert_array_equal(labels[k], label_map(frame.semantic))
        np.testing.assert_array_equal(depth[k], frame.depth)
    predicted = rrd_images(saved, "/camera/semantic/predicted")
    assert all(p.max() < label_map.num_classes for p in predicted.values())
    pred_depth = rrd_images(saved, "/camera/depth/predicted")
    assert all(np.isfinite(d).all() and (d > 0).all() for d in pred_depth.values())


def test_true_trajectory_starts_at_each_clip(saved, tiny_towns):
    clips = _clips(tiny_towns)
    strips = rrd_values(saved, "/world/trajectory/true", "LineStrips3D:strips")
    first = clips[0].frames[0].cam_to_world
    expected = [(invert_pose(first) @ f.cam_to_world)[:3, 3] for f in clips[0].frames]
    np.testing.assert_allclose(np.array(strips[2][0]), np.array(expected), atol=1e-4)
    second = clips[1].frames
    np.testing.assert_allclose(
        np.array(strips[4][0]),
        [(invert_pose(second[0].cam_to_world) @ f.cam_to_world)[:3, 3] for f in second[:2]],
        atol=1e-4,
    )
    estimated = rrd_values(saved, "/world/trajectory/estimated", "LineStrips3D:strips")
    assert len(estimated[2][0]) == 3 and estimated[2][0][0] == [0.0, 0.0, 0.0]


def test_missing_rerun_is_one_line_naming_the_extra(
    cli, trained_run, tiny_towns, tmp_path, monkeypatch
):
    monkeypatch.setitem(sys.modules, "rerun", None)  # import rerun raises ImportError
    result = cli.train(
        "live",
        "--run",
        trained_run,
        "--town-dir",
        tiny_towns,
        "--frames",
        1,
        "--save",
        tmp_path / "x.rrd",
    )
    cli.error(result, "carla-temporal[live]", "rerun-sdk")
    assert not (tmp_path / "x.rrd").exists()


@pytest.mark.parametrize(
    "args, needle",
    [(["--serve", "--save", "x.rrd"], "choose one of"), (["--save", "x.txt"], ".rrd")],
)
def test_bad_sink_options(cli, trained_run, tmp_path, args, needle):
    cli.error(cli.train("live", "--run", trained_run, "--frames", 1, *args), needle)


def test_run_without_stage4_is_one_line(cli, tmp_path):
    cli.error(
        cli.train("live", "--run", tmp_path, "--frames", 1, "--save", tmp_path / "x.rrd"),
        "config.json",
    )
