"""Forecasting stage: index patterns, the geometric warp baseline, the distillation loss, the
forecaster and its ablations trained one step, evaluated against every baseline and predicted."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from pydantic import ValidationError

from clipcore.geometry import invert_pose
from dataset import DataConfig
from models.config import PRESETS
from models.forecast import build_forecaster
from models.segmentation import build_segmentation
from train.cli import main
from train.forecast.config import HORIZONS, ForecastConfig, HorizonConfig
from train.forecast.data import ForecastWindows, forecast_samples
from train.forecast.evaluate import evaluate_forecast, to_markdown
from train.forecast.stage import distillation_loss, forecast_loss
from train.forecast.stage import train as train_forecast
from train.forecast.warp import (
    UNKNOWN,
    extrapolate_motion,
    pose_power,
    se3_exp,
    splat_labels,
    warp_forecast,
)
from train.metrics import ConfusionMatrix


def test_paper_patterns_on_twenty_frame_clips() -> None:
    assert HORIZONS["short"].offsets == (-4, -3, -2, -1)
    assert HORIZONS["mid"].offsets == (-12, -9, -6, -3)
    assert HORIZONS["long"].offsets == (-18, -15, -12, -9)
    assert forecast_samples(20, HORIZONS["long"]) == [((0, 3, 6, 9), 18), ((1, 4, 7, 10), 19)]
    assert ((7, 10, 13, 16), 19) in forecast_samples(20, HORIZONS["mid"])
    assert len(forecast_samples(20, HORIZONS["short"])) == 16


@pytest.mark.parametrize("frames", [1, 5, 13, 19, 20, 37])
def test_every_frame_with_enough_history_is_a_target(frames: int) -> None:
    for horizon in HORIZONS.values():
        samples = forecast_samples(frames, horizon)
        assert [t for _, t in samples] == list(range(horizon.history, frames))
        for inputs, target in samples:
            assert min(inputs) >= 0 and tuple(i - target for i in inputs) == horizon.offsets


def test_bad_patterns_are_refused_with_an_example() -> None:
    with pytest.raises(ValidationError, match="ascending"):
        HorizonConfig(inputs=(3, 2), target=5)
    with pytest.raises(ValidationError, match="before target"):
        HorizonConfig(inputs=(1, 5), target=5)
    with pytest.raises(ValidationError, match="not one of"):
        ForecastConfig(horizon="forever")


def _screw(rng: np.random.Generator) -> np.ndarray:
    return se3_exp(np.concatenate([rng.normal(0, 1.0, 3), rng.normal(0, 0.1, 3)]))


def test_constant_velocity_extrapolation_is_exact_for_a_screw_motion() -> None:
    rng = np.random.default_rng(0)
    m, start = _screw(rng), _screw(rng)
    poses = [start]
    for _ in range(12):
        poses.append(poses[-1] @ m)
    assert np.allclose(pose_power(m, 3.0), m @ m @ m, atol=1e-10)
    prev_to_last = invert_pose(poses[3]) @ poses[6]  # gap 3
    assert np.allclose(
        extrapolate_motion(prev_to_last, 3, 5), invert_pose(poses[6]) @ poses[11], atol=1e-9
    )
    assert np.allclose(extrapolate_motion(prev_to_last, 3, 0), np.eye(4), atol=1e-12)


F_PX, W, H, NEAR, FAR = 32.0, 64, 32, 8.0, 32.0


def _render(camera_x: float) -> tuple[np.ndarray, np.ndarray]:
    """Labels and planar depth of a static scene seen by a camera at (camera_x, 0, 0), along +z:
    a wall strip x in [-2, 2) at 8 m (class 5) in front of a striped background plane at 32 m."""
    u = np.arange(W) + 0.5
    ray = np.broadcast_to((u - W / 2) / F_PX, (H, W))
    near_x = camera_x + ray * NEAR
    wall = (near_x >= -2) & (near_x < 2)
    far_x = camera_x + ray * FAR
    labels = np.where(wall, 5, (np.floor(far_x / 2) % 3).astype(np.int64))
    return labels.astype(np.int64), np.where(wall, NEAR, FAR)


def test_static_scene_with_known_motion_is_forecast_exactly() -> None:
    K = np.array([[F_PX, 0, W / 2], [0, F_PX, H / 2], [0, 0, 1.0]])
    poses = [np.eye(4) for _ in range(10)]
    for t, pose in enumerate(poses):
        pose[0, 3] = 1.0 * t  # 1 m per frame: 1 px per frame at 32 m, 4 px at 8 m
    labels, depth = _render(poses[6][0, 3])
    motion = extrapolate_motion(
        invert_pose(poses[3]) @ poses[6], 3, 3
    )  # mid-like: inputs 0, 3, 6 -> 9
    assert np.allclose(motion, invert_pose(poses[6]) @ poses[9])
    truth, _ = _render(poses[9][0, 3])
    warped = splat_labels(labels, depth, K, motion)
    known = warped != UNKNOWN
    assert (warped[known] == truth[known]).all()
    # unknown: the 3 columns entering on the right, and the background the wall uncovers (12 - 3 px)
    assert (~known).sum(1).tolist() == [3 + 9] * H
    zero_motion_errors = (labels != truth).sum()
    forecast, holes = warp_forecast(labels, depth, K, motion)
    assert (forecast != truth).sum() < zero_motion_errors / 2 and holes == pytest.approx(12 / W)


def test_the_nearest_surface_wins_where_two_land_on_one_pixel() -> None:
    K = np.array([[F_PX, 0, W / 2], [0, F_PX, H / 2], [0, 0, 1.0]])
    labels = np.zeros((H, W), np.int64)
    depth = np.full((H, W), FAR)
    labels[:, 40], depth[:, 40] = (
        7,
        NEAR,
    )  # moving the camera 1 m left: near column lands 4 px right ...
    labels[:, 43] = 2  # ... on the far column that moves 1 px
    motion = np.eye(4)
    motion[0, 3] = -1.0
    warped = splat_labels(labels, depth, K, motion)
    assert (warped[:, 44] == 7).all()


def test_warping_true_labels_beats_zero_motion_on_simulated_clips(split_dataset: Path) -> None:
    horizon = HorizonConfig(inputs=(1, 3), target=5)
    ds = ForecastWindows(DataConfig(root=split_dataset), "train", horizon, size=(48, 96))
    warp, zero = ConfusionMatrix(22), ConfusionMatrix(22)
    for i in range(len(ds)):
        item = ds[i]
        c2w = item["input_cam_to_world"].numpy()
        motion = invert_pose(c2w[-1]) @ item["target_cam_to_world"].numpy()
        last = item["last_labels"].numpy().copy()
        last[last == 255] = 0
        forecast, _ = warp_forecast(
            last, item["last_depth"].numpy(), item["intrinsics"].numpy(), motion
        )
        warp.update(torch.from_numpy(forecast), item["labels"])
        zero.update(torch.from_numpy(last), item["labels"])
    assert warp.result()["pixel_accuracy"] > zero.result()["pixel_accuracy"] + 0.02


def test_distillation_loss() -> None:
    torch.manual_seed(0)
    teacher = torch.randn(2, 5, 4, 6)
    assert float(distillation_loss(teacher.clone(), teacher)) == 0.0
    student = torch.randn(2, 5, 4, 6, requires_grad=True)
    loss = distillation_loss(student, teacher)
    loss.backward()
    closer = (student - 10 * student.grad).detach()
    assert 0 < float(distillation_loss(closer, teacher)) < float(loss.detach())
    labels = torch.randint(0, 5, (2, 4, 6))
    ce, parts = forecast_loss(student, labels, None, 100.0)
    total, parts = forecast_loss(student, labels, teacher, 100.0)
    assert float(total.detach()) == pytest.approx(
        float(ce.detach()) + 100 * parts["distill"], rel=1e-6
    )


@pytest.mark.parametrize("temporal", ["conv3d", "stack"])
def test_an_untrained_forecaster_is_the_zero_motion_model(temporal: str) -> None:
    torch.manual_seed(0)
    cfg = PRESETS["tiny"]
    seg = build_segmentation(cfg).eval()
    net = build_forecaster(cfg, 3, temporal, 8, seg).eval()
    rgb = torch.randn(2, 3, 3, 64, 128)
    out = net(rgb)["seg_logits"]
    assert out.shape == (2, 22, 64, 128)
    assert torch.allclose(out, seg(rgb[:, -1])["seg_logits"], atol=1e-5)
    with pytest.raises(ValueError, match="3 input frames"):
        net(rgb[:, :2])


@pytest.fixture(scope="module")
def forecast_run(
    tmp_path_factory: pytest.TempPathFactory,
    trained_run: Path,
    split_dataset: Path,
    forecast_config,
) -> Path:
    """Stages 1-3 of the session's tiny run, the forecaster and both ablations, one step each."""
    out = tmp_path_factory.mktemp("forecast") / "run"
    shutil.copytree(
        trained_run, out, ignore=shutil.ignore_patterns("epoch-*", "tensorboard", "stage4")
    )
    for extra in ([], ['forecast.temporal="stack"'], ["forecast.distill_weight=0"]):
        train_forecast(forecast_config(split_dataset, out, *extra))
    return out


def test_forecaster_and_ablations_train_one_step(forecast_run: Path) -> None:
    for name in ("forecast-tiny", "forecast-tiny-stack", "forecast-tiny-nodistill"):
        state = torch.load(forecast_run / name / "best.pt", map_location="cpu", weights_only=True)
        train = state["history"][0]["train"]
        assert np.isfinite(train["loss"]) and ("distill" in train) == (
            name != "forecast-tiny-nodistill"
        )


def test_forecast_evaluation_has_every_baseline(forecast_run: Path) -> None:
    report = evaluate_forecast(forecast_run, "test")
    rows = report["horizons"]["tiny"]["rows"]
    assert set(rows) == {
        "forecast-tiny",
        "forecast-tiny-stack",
        "forecast-tiny-nodistill",
        "zero_motion",
        "warp_estimated",
        "warp_true_depth_past_poses",
        "warp_true_depth_true_pose",
        "stage1_on_target",
    }
    assert report["horizons"]["tiny"]["samples"] == 2  # one 6-frame test clip: targets 4 and 5
    for row in rows.values():
        assert 0 <= row["miou"] <= 1 and 0 <= row["pixel_accuracy"] <= 1
    assert 0 <= rows["warp_true_depth_true_pose"]["hole_fraction"] < 0.5
    assert "frames stacked" in to_markdown(report) and "no distillation" in to_markdown(report)


def test_forecast_cli_eval_and_predict(
    forecast_run: Path, split_dataset: Path, tmp_path: Path
) -> None:
    result = CliRunner().invoke(main, ["eval", "forecast", "--run", str(forecast_run)])
    assert result.exit_code == 0, result.output
    assert "zero-motion" in result.output and (forecast_run / "forecast_eval.json").exists()
    result = CliRunner().invoke(
        main,
        [
            "predict",
            "forecast",
            "--run",
            str(forecast_run),
            str(split_dataset / "Town02"),
            "--variant",
            "forecast-tiny-stack",
            "--gif",
            "--out",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    (gif,) = tmp_path.glob("*forecast-tiny-stack.gif")
    from PIL import Image

    assert (
        Image.open(gif).n_frames == 2
    )  # a 6-frame clip: targets 4 and 5 have the pattern's history
    result = CliRunner().invoke(main, ["eval", "forecast", "--run", str(tmp_path)])
    assert result.exit_code != 0 and "train run" in result.output
