"""The demo's depth stage learns depth that follows the scene, not the image rows.

A constant map of bands (the ground plane's depth depends mostly on the row) is a strong trivial
baseline for driving depth; the demo once shipped a depth head that output one such map for every
input. Stages 1 and 2 of the ``tiny`` preset, with the demo's stage-2 recipe (its decoder on the
frozen stage-1 backbone, its learning rate and loss), trained briefly on clips of the embedded
simulator, must beat the per-row mean depth of the training split on a held-out town, and give
different depth maps for different frames.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from carla_capture.record import record
from carla_capture.split import build_manifest, load_splits, write_manifest
from dataset import ClipWindows
from models.depth import build_depth
from tests.conftest import make_synthetic_config, make_tiny_config
from train.metrics import DepthMetrics
from train.pipeline.evaluate import row_mean_depth
from train.pipeline.run import train
from train.pipeline.schedules import SCHEDULES
from train.pipeline.trained import component

#: Epochs of each stage over the 60 training frames (8 steps of the demo's batch of 8 each): about
#: 50 and 80 steps, a third of the demo's 120 and 120.
EPOCHS = {"stage1": 6, "stage2": 10}


@pytest.fixture(scope="module")
def depth_data(tmp_path_factory: pytest.TempPathFactory, towns_of_size) -> Path:
    """Train towns Town01 and Town03 (3 clips each), val Town10HD and test Town02 (2 clips each),
    10 frames of 128 x 64."""
    towns, out = towns_of_size(128, 64), tmp_path_factory.mktemp("depth") / "data"
    for town, clips in (("Town01", 3), ("Town03", 3), ("Town10HD", 2), ("Town02", 2)):
        record(make_synthetic_config(out, towns, town=town, clips=clips, frames=10))
    write_manifest(out, build_manifest(out, load_splits()))
    return out


@pytest.fixture(scope="module")
def depth_run(depth_data: Path, tmp_path_factory: pytest.TempPathFactory):
    """Stages 1 and 2 of the tiny preset with the demo's schedule, fewer epochs."""
    demo = SCHEDULES["tiny"]
    sets = [
        f"stages.{stage}.{key}={value}"
        for stage, epochs in EPOCHS.items()
        for key, value in (
            ("epochs", epochs),
            ("max_steps", 1000),  # no cap: the epochs decide
            ("batch_size", demo[stage]["batch_size"]),
            ("lr", demo[stage]["lr"]),
        )
    ]
    cfg = make_tiny_config(depth_data, tmp_path_factory.mktemp("run") / "r", *sets)
    for stage in EPOCHS:
        train(cfg, stage)
    return cfg


def _test_frames(cfg, data: Path) -> ClipWindows:
    source = cfg.data.model_copy(update={"root": data})
    return ClipWindows.from_config(source, "test", 1, size=cfg.frame_size())


@torch.no_grad()
def test_demo_depth_beats_the_per_row_mean_depth_on_a_held_out_town(depth_run, depth_data):
    cfg = depth_run
    depth = build_depth(cfg.model)
    depth.load_state_dict(component(cfg.out, "stage2", "depth"))
    depth.eval()
    rows = row_mean_depth(cfg, depth_data, every=1)
    model_metrics, row_metrics = DepthMetrics(caps=(80.0,)), DepthMetrics(caps=(80.0,))
    maps = []
    frames = _test_frames(cfg, depth_data)
    for index in range(len(frames)):
        item = frames[index]
        pred = depth(item["rgb"])["depth"][:, 0]
        gt, valid = item["depth"][:, 0], item["valid_depth"][:, 0]
        model_metrics.update(pred, gt, valid)
        row_metrics.update(rows[:, None].expand_as(gt[0])[None], gt, valid)
        maps.append(pred[0])
    model = model_metrics.result()["cap_80m"]["abs_rel"]
    baseline = row_metrics.result()["cap_80m"]["abs_rel"]
    assert model < baseline, f"depth AbsRel {model:.3f} vs per-row mean depth {baseline:.3f}"
    # an input-independent map is the same for every frame; the scene's depth is not
    first, last = maps[0], maps[-1]
    assert (first.log() - last.log()).abs().mean() > 0.05
    spread = torch.stack(maps).log().std(0).mean()
    assert spread > 0.05, f"depth maps barely change between frames (log std {spread:.3f})"
