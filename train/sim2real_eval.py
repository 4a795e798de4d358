"""``train eval --task sim2real``: a trained twin VAE on labelled frames of either domain.

Two sources of ground truth: a dataset folder's split (our shards: depth and ``common12``
segmentation), or, for real data as in the paper, a folder of images with a folder of KITTI
depth PNGs (metres x 256) of the same names (depth only). Depth is scored up to 80 m, the
prediction resized to the ground truth's size.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from clipcore.fsutil import atomic_write_text
from dataset.kitti_depth import KittiDepthPairs
from train.metrics import DepthMetrics
from train.sim2real import Sim2RealConfig, evaluate, load_checkpoint, source_loader

CAP_M = 80.0


@torch.no_grad()
def evaluate_depth_pairs(model: torch.nn.Module, pairs: KittiDepthPairs, domain: str) -> dict:
    """AbsRel, SqRel, RMSE, log RMSE (and deltas) on image / depth-PNG pairs, up to 80 m."""
    model.eval()
    metrics = DepthMetrics(caps=(CAP_M,))
    for item in DataLoader(pairs, batch_size=1):
        pred = model(item["rgb"], domain)["depth"]
        pred = F.interpolate(
            pred, size=item["depth"].shape[-2:], mode="bilinear", align_corners=False
        )
        metrics.update(pred, item["depth"], item["valid"])
    return metrics.result()[f"cap_{CAP_M:g}m"]


def evaluate_sim2real_run(
    run_dir: Path,
    domain: str = "real",
    data: Path | None = None,
    split: str = "test",
    images: Path | None = None,
    depth_png: Path | None = None,
) -> dict:
    """Scores of ``run_dir``'s sim2real model; written to ``<run>/sim2real-eval.json``."""
    run_dir = Path(run_dir)
    ckpt = run_dir / "sim2real-tasks" / "model.pt"
    model, _ = load_checkpoint(ckpt)
    report: dict = {"checkpoint": str(ckpt), "domain": domain}
    if images is not None or depth_png is not None:
        if images is None or depth_png is None:
            from clipcore.errors import ConfigError

            raise ConfigError(
                "pass both --images and --depth-png (KITTI depth PNGs of the same names)"
            )
        pairs = KittiDepthPairs(images, depth_png, model.cfg.input_size)
        report["kitti_depth"] = {"images": len(pairs), **evaluate_depth_pairs(model, pairs, domain)}
    else:
        saved = json.loads((run_dir / "sim2real-config.json").read_text())
        cfg = Sim2RealConfig(**{**saved, "data": data or saved["data"]})
        loader = source_loader(cfg, cfg.stages["sim2real-tasks"], 0, split=split, training=False)
        report[f"{split}_split"] = evaluate(model, loader, domain, cfg.model.num_classes)
    atomic_write_text(run_dir / "sim2real-eval.json", json.dumps(report, indent=2))
    return report
