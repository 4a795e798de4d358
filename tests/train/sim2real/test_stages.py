"""``train run sim2real`` (stages sim2real-vae, sim2real-tasks), its eval and predict, and the
target-domain reader."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from dataset.target_images import TargetImages

FAST = [
    "model.input_size=[32, 64]",
    'device="cpu"',
    "tensorboard=false",
    *(
        f"stages.{s}.{k}={v}"
        for s in ("sim2real-vae", "sim2real-tasks")
        for k, v in (("epochs", 1), ("max_steps", 2), ("batch_size", 2))
    ),
]


def _sets(*items: str) -> list[str]:
    return [a for item in items for a in ("--set", item)]


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    """Three images of different sizes and formats, one in a subfolder."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "photos"
    (folder / "more").mkdir(parents=True)
    cv2.imwrite(str(folder / "a.png"), rng.integers(0, 255, (40, 90, 3), np.uint8))
    cv2.imwrite(str(folder / "b.JPG"), rng.integers(0, 255, (300, 500, 3), np.uint8))
    cv2.imwrite(str(folder / "more" / "c.jpeg"), rng.integers(0, 255, (20, 20, 3), np.uint8))
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_target_images_any_size_resized(photos):
    ds = TargetImages(photos, (32, 64))
    assert len(ds) == 3
    for i in range(3):
        rgb = ds[i]["rgb"]
        assert rgb.shape == (3, 32, 64) and 0 <= float(rgb.min()) and float(rgb.max()) <= 1


def test_target_shards_are_read_without_labels(split_dataset):
    ds = TargetImages(split_dataset, (32, 64))
    assert len(ds) == 5 * 6  # every frame of the 5 clips
    assert set(ds[0]) == {"rgb"} and ds[0]["rgb"].shape == (3, 32, 64)


def test_target_folder_without_images_is_refused_in_one_line(cli, tmp_path, split_dataset):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images here")
    result = cli.train(
        "run",
        "sim2real",
        "--data",
        split_dataset,
        "--target",
        empty,
        "--out",
        tmp_path / "run",
        *_sets(*FAST),
    )
    cli.error(result, "no JPG/PNG images", str(empty))


def test_both_stages_train_and_save(cli, tmp_path, split_dataset, photos):
    out = tmp_path / "run"
    result = cli.train(
        "run",
        "sim2real",
        "--stage",
        "sim2real-vae",
        "--data",
        split_dataset,
        "--target",
        photos,
        "--out",
        out,
        *_sets(*FAST),
    )
    assert result.exit_code == 0, result.output
    vae = torch.load(out / "sim2real-vae" / "best.pt", weights_only=True)["history"]
    assert {"kl", "vae_recon", "mse_recon", "mmd", "cycle"} <= set(vae[0]["train"])
    # an ablation is a config change: the MMD term switched off (still logged, weighted 0)
    result = cli.train(
        "run",
        "sim2real",
        "--stage",
        "sim2real-tasks",
        "--data",
        split_dataset,
        "--out",
        out,
        *_sets(*FAST, "stages.sim2real-tasks.losses.mmd=0"),
    )
    assert result.exit_code == 0, result.output
    tasks = torch.load(out / "sim2real-tasks" / "best.pt", weights_only=True)["history"]
    row = tasks[0]["train"]
    expected = (
        sum(row[k] for k in ("depth", "seg", "depth_translated", "seg_translated"))
        + 0.01 * row["kl"]
    )
    assert row["loss"] == pytest.approx(expected, rel=1e-4) and row["mmd"] > 0
    # predict: input | translation | reconstruction | depth | segmentation, one row per image
    result = cli.train("predict", "sim2real", "--run", out, split_dataset, "--out", tmp_path / "p")
    assert result.exit_code == 0, result.output
    png = cv2.imread(str(tmp_path / "p" / "sim2real-real.png"))
    scale = png.shape[1] // (5 * 64)
    assert png.shape[:2] == (4 * 32 * scale, 5 * 64 * scale)
    # the paper's protocol on real data: KITTI depth PNGs (metres x 256) named like the images
    (tmp_path / "depth").mkdir()
    gt = np.full((40, 90), 10.0, np.float32)
    gt[:10] = 0  # no measurement
    gt[10:12] = 200.0  # beyond the 80 m cap
    cv2.imwrite(str(tmp_path / "depth" / "a.png"), (gt * 256).astype(np.uint16))
    result = cli.train(
        "eval",
        "sim2real",
        "--run",
        out,
        "--json",
        "--images",
        photos,
        "--depth-png",
        tmp_path / "depth",
    )
    assert result.exit_code == 0, result.output
    kitti = json.loads(result.stdout)["kitti_depth"]
    assert kitti["images"] == 1 and kitti["pixels"] == 28 * 90 and np.isfinite(kitti["abs_rel"])
    saved = json.loads((out / "sim2real-config.json").read_text())
    assert (
        saved["stages"]["sim2real-tasks"]["losses"]["mmd"] == 0
        and saved["model"]["num_classes"] == 12
    )


def test_tasks_stage_needs_the_vae_stage(cli, tmp_path, split_dataset):
    result = cli.train(
        "run",
        "sim2real",
        "--stage",
        "sim2real-tasks",
        "--data",
        split_dataset,
        "--out",
        tmp_path / "run",
        *_sets(*FAST),
    )
    cli.error(result, "sim2real-vae")


def test_a_validated_stage_keeps_its_best_epoch_and_schedules_its_rate(
    tmp_path, split_dataset, photos, sim2real_config
):
    """With validation, a stage scores the val split each epoch (stage 1 with target images too),
    best.pt is its lowest loss and lr_patience lowers the rate: the engine's for every task."""
    from train.sim2real.stage import train

    sets = [f"stages.{s}.{k}={v}" for s in ("sim2real-vae", "sim2real-tasks")
            for k, v in (("epochs", 2), ("validation", "true"), ("lr_patience", 0))]  # fmt: skip
    train(sim2real_config(split_dataset, photos, tmp_path / "run", *sets), "all")
    for stage in ("sim2real-vae", "sim2real-tasks"):
        last = torch.load(tmp_path / "run" / stage / "last.pt", weights_only=True)
        vals = [h["val"] for h in last["history"]]
        assert all(v["loss"] > 0 and v["score"] == -v["loss"] for v in vals)
        best = torch.load(tmp_path / "run" / stage / "best.pt", weights_only=True)
        assert best["best"] == max(v["score"] for v in vals) and last["scheduler"]


def test_lr_patience_needs_validation(cli, tmp_path, split_dataset, photos):
    result = cli.train(
        "run", "sim2real", "--data", split_dataset, "--target", photos, "--out", tmp_path / "r",
        "--set", "stages.sim2real-tasks.lr_patience=1",
    )  # fmt: skip
    cli.error(result, "lr_patience steps on the validation loss", "validation=true")
