"""``train eval forecast``: every trained forecaster of a run against its baselines, per horizon.

For every horizon with a trained forecaster in the run, one table over the same samples (every
target with enough history in every clip of the split): each forecaster variant, the zero-motion
baseline (stage 1 on the last input frame), the geometric warp of that prediction (estimated depth
and ego-motion; true depth and past poses; true depth and the true future pose) and stage 1 on the
true target frame (an upper bound). Warp holes are filled with the zero-motion prediction.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from clipcore.errors import CaptureError
from clipcore.geometry import invert_pose
from clipcore.tags import STATIC_TAGS
from dataset.labels import load_label_map
from models.depth import build_depth
from models.ego_motion import build_ego_motion
from train.context import resolve_device
from train.forecast.config import ForecastEval, HorizonConfig
from train.forecast.data import ForecastWindows
from train.forecast.stage import load_forecaster, load_teacher
from train.forecast.warp import extrapolate_motion, warp_forecast
from train.metrics import ConfusionMatrix
from train.pipeline.trained import component, load_run

BASELINES = {
    "zero_motion": "zero-motion (stage 1 on the last input)",
    "warp_estimated": "warp, estimated depth + ego-motion",
    "warp_true_depth_past_poses": "warp, true depth + past poses",
    "warp_true_depth_true_pose": "warp, true depth + true future pose",
    "stage1_on_target": "stage 1 on the target frame (upper bound)",
}


def variant_label(name: str) -> str:
    """Table label of a forecaster folder name."""
    parts = name.split("-")[2:]
    if not parts:
        return "forecaster (Conv3D + distillation)"
    return "forecaster, " + ", ".join(
        {"stack": "frames stacked", "nodistill": "no distillation"}[p] for p in parts
    )


def class_groups(label_map_name: str) -> tuple[list[str], list[str]]:
    """Names of the static classes (every tag of the class never moves) and of the dynamic ones."""
    label_map = load_label_map(label_map_name)
    static, dynamic = [], []
    for k, name in enumerate(label_map.class_names):
        tags = set(np.flatnonzero(label_map.lut == k).tolist())
        (static if tags <= set(STATIC_TAGS) else dynamic).append(name)
    return static, dynamic


class _Row:
    def __init__(self, num_classes: int) -> None:
        self.confusion, self.holes = ConfusionMatrix(num_classes), []

    def result(
        self, names: tuple[str, ...], static: list[str], dynamic: list[str]
    ) -> dict[str, Any]:
        r = self.confusion.result(names)
        iou = r["per_class_iou"]

        def group(g: list[str]) -> float | None:
            scores = [iou[n] for n in g if n in iou]
            return float(np.mean(scores)) if scores else None

        out = {k: r[k] for k in ("miou", "pixel_accuracy", "mean_class_accuracy", "per_class_iou")}
        out.update(static_miou=group(static), dynamic_miou=group(dynamic))
        if self.holes:
            out["hole_fraction"] = float(np.mean(self.holes))
        return out


class _Frame:
    """Stage 1 (zero motion, upper bound), stage 2 depth and stage 3 ego-motion of a run."""

    def __init__(self, cfg: Any, run_dir: Path, device: str) -> None:
        self.teacher = load_teacher(cfg, run_dir).to(device)
        self.depth = build_depth(cfg.model)
        self.depth.load_state_dict(component(run_dir, "stage2", "depth"))
        self.ego = build_ego_motion(cfg.model, self.teacher.backbone.channels)
        self.ego.load_state_dict(component(run_dir, "stage3", "ego_motion"))
        self.depth.to(device).eval()
        self.ego.to(device).eval()

    def past_motion(self, rgb: torch.Tensor) -> torch.Tensor:
        """(B, T, 3, H, W) inputs -> (B, 4, 4) estimated motion, second-last to last input."""
        if rgb.shape[1] < 2:
            return torch.eye(4, dtype=torch.float64).expand(len(rgb), 4, 4)
        emb = self.teacher.backbone(rgb.flatten(0, 1))["out"].unflatten(0, rgb.shape[:2])
        return self.ego(emb)["rel_pose"][:, -1].double().cpu()


def _true_past_motion(c2w: torch.Tensor) -> np.ndarray:
    c2w = c2w.numpy()
    return invert_pose(c2w[-2]) @ c2w[-1] if len(c2w) > 1 else np.eye(4)


@torch.no_grad()
def evaluate_horizon(
    frame: _Frame,
    forecasters: dict[str, torch.nn.Module],
    cfg: Any,
    data: Path,
    split: str,
    pattern: HorizonConfig,
    device: str,
    batch_size: int = 4,
) -> dict[str, Any]:
    """Every forecaster and every baseline on the same samples of one horizon."""
    names = load_label_map(cfg.data.label_map).class_names
    static, dynamic = class_groups(cfg.data.label_map)
    source = cfg.data.model_copy(update={"root": Path(data)})
    ds = ForecastWindows(source, split, pattern, size=cfg.frame_size())
    rows = {name: _Row(len(names)) for name in [*forecasters, *BASELINES]}
    gap = pattern.inputs[-1] - pattern.inputs[-2] if len(pattern.inputs) > 1 else 1
    for batch in DataLoader(ds, batch_size=batch_size):
        rgb, labels = batch["rgb"].to(device), batch["labels"]
        for name, net in forecasters.items():
            rows[name].confusion.update(net(rgb)["seg_logits"].argmax(1).cpu(), labels)
        last = frame.teacher(rgb[:, -1])["seg_logits"].argmax(1).cpu()
        rows["zero_motion"].confusion.update(last, labels)
        rows["stage1_on_target"].confusion.update(
            frame.teacher(batch["target_rgb"].to(device))["seg_logits"].argmax(1).cpu(), labels
        )
        depth = frame.depth(rgb[:, -1])["depth"][:, 0].float().cpu().numpy()
        est_motion = frame.past_motion(rgb).numpy()
        for b in range(len(labels)):
            K, c2w = batch["intrinsics"][b].numpy(), batch["input_cam_to_world"][b]
            true_future = invert_pose(c2w[-1].numpy()) @ batch["target_cam_to_world"][b].numpy()
            cases = {
                "warp_estimated": (depth[b], extrapolate_motion(est_motion[b], gap, pattern.lead)),
                "warp_true_depth_past_poses": (
                    batch["last_depth"][b].numpy(),
                    extrapolate_motion(_true_past_motion(c2w), gap, pattern.lead),
                ),
                "warp_true_depth_true_pose": (batch["last_depth"][b].numpy(), true_future),
            }
            for name, (d, motion) in cases.items():
                warped, holes = warp_forecast(last[b].numpy(), d, K, motion)
                rows[name].confusion.update(torch.from_numpy(warped), labels[b])
                rows[name].holes.append(holes)
    return {
        "inputs": list(pattern.inputs),
        "target": pattern.target,
        "offsets": list(pattern.offsets),
        "samples": len(ds),
        "rows": {name: row.result(names, static, dynamic) for name, row in rows.items()},
    }


def evaluate_forecast(
    run_dir: Path, split: str = "test", data: Path | None = None, device: str = "cpu"
) -> dict[str, Any]:
    """Tables of every horizon with a trained forecaster in ``run_dir`` (``forecast-*/best.pt``)."""
    run_dir = Path(run_dir)
    cfg = load_run(run_dir)
    variants = sorted(p.parent.name for p in run_dir.glob("forecast-*/best.pt"))
    if not variants:
        raise CaptureError(
            f"{run_dir} has no forecaster: train one first (train run forecast --out {run_dir} ...)"
        )
    frame = _Frame(cfg, run_dir, device)
    by_horizon: dict[str, tuple[HorizonConfig, dict[str, torch.nn.Module]]] = {}
    for name in variants:
        net, net_cfg = load_forecaster(run_dir, name, device)
        horizon = net_cfg.forecast.horizon
        by_horizon.setdefault(horizon, (net_cfg.forecast.pattern(), {}))[1][name] = net
    horizons = {
        h: evaluate_horizon(frame, nets, cfg, Path(data or cfg.data.root), split, pattern, device)
        for h, (pattern, nets) in sorted(by_horizon.items(), key=lambda kv: kv[1][0].history)
    }
    return {
        "run": str(run_dir),
        "split": split,
        "preset": cfg.preset,
        "frame_size": list(cfg.frame_size()),
        "label_map": cfg.data.label_map,
        "static_classes": class_groups(cfg.data.label_map)[0],
        "horizons": horizons,
    }


def _cell(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def to_markdown(report: dict[str, Any], title: str | None = None) -> str:
    """One Markdown table per horizon."""
    lines = [
        f"# {title or 'Forecast evaluation of ' + report['run']} on {report['split']} "
        f"({report['frame_size'][0]}x{report['frame_size'][1]}, preset {report['preset']})",
        "",
    ]
    for h, res in report["horizons"].items():
        lines += [
            f"## {h}: inputs {res['inputs']} -> target {res['target']} "
            f"(offsets {res['offsets']}; {res['samples']} samples)",
            "",
            "| model | mIoU | pixel accuracy | mean class accuracy | static mIoU | dynamic mIoU "
            "| warp holes |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, row in res["rows"].items():
            label = BASELINES.get(name) or variant_label(name)
            holes = f"{row['hole_fraction']:.3f}" if "hole_fraction" in row else ""
            lines.append(
                f"| {label} | {_cell(row['miou'])} | {_cell(row['pixel_accuracy'])} | "
                f"{_cell(row['mean_class_accuracy'])} | {_cell(row['static_miou'])} | "
                f"{_cell(row['dynamic_miou'])} | {holes} |"
            )
        lines.append("")
    return "\n".join(lines)


def evaluate(cfg: ForecastEval) -> dict[str, Any]:
    """:func:`evaluate_forecast` with ``train eval forecast``'s options."""
    return evaluate_forecast(cfg.run, cfg.split, cfg.data, resolve_device(cfg.device))
