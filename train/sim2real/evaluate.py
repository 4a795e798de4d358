"""``train eval sim2real``: a trained twin VAE on labelled frames of either domain.

Two sources of ground truth: a dataset folder's split (our shards: depth and ``common12``
segmentation), or, for real data as in the paper, a folder of images with a folder of KITTI
depth PNGs (metres x 256) of the same names (depth only). Depth is scored up to 80 m, the
prediction resized to the ground truth's size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from clipcore.errors import ConfigError
from dataset.kitti_depth import KittiDepthPairs
from train.context import resolve_device
from train.metrics import ConfusionMatrix, DepthMetrics
from train.sim2real.config import Sim2RealEval
from train.sim2real.stage import frames, load_sim2real, source_frames

CAP_M = 80.0
METRICS = ("abs_rel", "sq_rel", "rmse", "log_rmse", "miou", "pixel_accuracy")


@torch.no_grad()
def score(
    model: torch.nn.Module,
    loader: DataLoader,
    domain: str,
    num_classes: int,
    max_depth_m: float = CAP_M,
) -> dict[str, float]:
    """Depth and segmentation figures of ``model`` on labelled source frames.

    Depth: AbsRel, SqRel, RMSE, log RMSE up to ``max_depth_m``; segmentation: mIoU, pixel accuracy;
    the frames read through ``domain``'s encoder.
    """
    model.eval()
    depth_metrics, confusion = DepthMetrics(caps=(max_depth_m,)), ConfusionMatrix(num_classes)
    device = next(model.parameters()).device
    for batch in loader:
        src = {k: v.to(device) for k, v in frames(batch).items()}
        out = model(src["rgb"], domain)
        depth_metrics.update(out["depth"].cpu(), src["depth"].cpu(), src["valid"].cpu())
        confusion.update(out["seg_logits"].argmax(1).cpu(), src["labels"].cpu())
    depth = depth_metrics.result()[f"cap_{max_depth_m:g}m"]
    seg = confusion.result()
    return {
        "abs_rel": depth["abs_rel"],
        "sq_rel": depth["sq_rel"],
        "rmse": depth["rmse"],
        "log_rmse": depth["log_rmse"],
        "miou": seg["miou"],
        "pixel_accuracy": seg["pixel_accuracy"],
        "depth_pixels": depth["pixels"],
    }


@torch.no_grad()
def evaluate_depth_pairs(
    model: torch.nn.Module, pairs: KittiDepthPairs, domain: str
) -> dict[str, Any]:
    """AbsRel, SqRel, RMSE, log RMSE (and deltas) on image / depth-PNG pairs, up to 80 m."""
    model.eval()
    metrics = DepthMetrics(caps=(CAP_M,))
    device = next(model.parameters()).device
    for item in DataLoader(pairs, batch_size=1):
        pred = model(item["rgb"].to(device), domain)["depth"].float().cpu()
        pred = F.interpolate(
            pred, size=item["depth"].shape[-2:], mode="bilinear", align_corners=False
        )
        metrics.update(pred, item["depth"], item["valid"])
    return metrics.result()[f"cap_{CAP_M:g}m"]


def evaluate(cfg: Sim2RealEval) -> dict[str, Any]:
    """Scores of the run's sim2real model (``train eval sim2real``)."""
    model, trained = load_sim2real(cfg.run)
    model.to(resolve_device(cfg.device))
    report: dict[str, Any] = {"run": str(cfg.run), "domain": cfg.domain}
    if cfg.images is not None or cfg.depth_png is not None:
        if cfg.images is None or cfg.depth_png is None:
            raise ConfigError(
                "pass both --images and --depth-png (KITTI depth PNGs of the same names)"
            )
        pairs = KittiDepthPairs(cfg.images, cfg.depth_png, trained.frame_size())
        report["kitti_depth"] = {
            "images": len(pairs),
            **evaluate_depth_pairs(model, pairs, cfg.domain),
        }
        return report
    ds = source_frames(trained, cfg.split, data=Path(cfg.data or trained.data.root))
    loader = DataLoader(ds, batch_size=trained.stages["sim2real-tasks"].batch_size)
    report[f"{cfg.split}_split"] = score(model, loader, cfg.domain, trained.model.num_classes)
    return report


def to_markdown(report: dict[str, Any]) -> str:
    """The report as a Markdown table (one row per source of ground truth)."""
    lines = [
        f"# Sim2real evaluation of {report['run']} ({report['domain']} encoder)",
        "",
        "| ground truth | " + " | ".join(METRICS) + " | depth pixels |",
        "|---" * (len(METRICS) + 2) + "|",
    ]
    for name, row in report.items():
        if not isinstance(row, dict):
            continue
        cells = [f"{row[m]:.3f}" if isinstance(row.get(m), float) else "-" for m in METRICS]
        pixels = row.get("depth_pixels", row.get("pixels", "-"))
        lines.append(f"| {name.replace('_', ' ')} | " + " | ".join(cells) + f" | {pixels} |")
    return "\n".join(lines) + "\n"
