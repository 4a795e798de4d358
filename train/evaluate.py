"""``train eval``: the frame-by-frame models (stages 1 + 2, with stage 3's ego-motion) against the
temporal model (stage 4) on the same whole-clip windows, plus the ground truth as the
stability ceiling and trivial baselines (majority class, mean depth, no motion)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from carla_capture.errors import CaptureError
from carla_capture.split import load_manifest, require_clips
from dataset import ClipWindows
from dataset.labels import load_label_map
from models.depth import build_depth
from models.ego_motion import build_ego_motion
from models.geometry_filter import build_geometry_filter
from models.pipeline import TemporalPipeline, build_pipeline
from models.segmentation import build_segmentation
from train.config import TrainConfig
from train.metrics import ConfusionMatrix, DepthMetrics, PoseMetrics
from train.nets import load_component
from train.temporal import TemporalConsistency


def load_run(run_dir: Path) -> TrainConfig:
    """The resolved config a run was trained with."""
    path = Path(run_dir) / "config.json"
    if not path.exists():
        raise CaptureError(f"{path} does not exist: is {run_dir} a run folder of train run?")
    return TrainConfig.model_validate_json(path.read_text())


def temporal_model(cfg: TrainConfig, run_dir: Path) -> TemporalPipeline:
    """Stage 4's GeometryFilter with its ego-motion filter, in eval mode."""
    geometry = build_geometry_filter(cfg.model)
    geometry.load_state_dict(load_component(run_dir, "stage4", "geometry_filter"))
    ego = build_ego_motion(cfg.model, geometry.backbone.channels)
    ego.load_state_dict(load_component(run_dir, "stage4", "ego_motion"))
    return build_pipeline(cfg.model, geometry, ego).eval()


class FrameModel(torch.nn.Module):
    """Stages 1 and 2 frame by frame, and stage 3's ego-motion on stage 1's embeddings."""

    def __init__(self, cfg: TrainConfig, run_dir: Path) -> None:
        super().__init__()
        self.segmentation, self.depth = build_segmentation(cfg.model), build_depth(cfg.model)
        self.segmentation.load_state_dict(load_component(run_dir, "stage1", "segmentation"))
        self.depth.load_state_dict(load_component(run_dir, "stage2", "depth"))
        self.ego = build_ego_motion(cfg.model, self.segmentation.backbone.channels)
        self.ego.load_state_dict(load_component(run_dir, "stage3", "ego_motion"))
        self.eval()

    def forward(self, window: torch.Tensor) -> dict[str, torch.Tensor]:
        frames = window.flatten(0, 1)
        b, t = window.shape[:2]
        seg = self.segmentation(frames)["seg_logits"].unflatten(0, (b, t))
        embeddings = self.segmentation.backbone(frames)["out"].unflatten(0, (b, t))
        eye = torch.eye(4, dtype=window.dtype, device=window.device).expand(b, 1, 4, 4)
        rel = torch.cat([eye, self.ego(embeddings)["rel_pose"]], 1)
        return {"seg_logits": seg, "depth": self.depth(frames)["depth"].unflatten(0, (b, t)), "rel_pose": rel}


class _Scores:
    def __init__(self, num_classes: int) -> None:
        self.confusion, self.depth, self.pose = ConfusionMatrix(num_classes), DepthMetrics(), PoseMetrics()
        self.temporal = TemporalConsistency(num_classes)

    def update(self, labels: torch.Tensor, depth: torch.Tensor, rel_pose: torch.Tensor | None, item: dict) -> None:
        self.confusion.update(labels, item["labels"])
        self.depth.update(depth, item["depth"][:, 0], item["valid_depth"][:, 0])
        if rel_pose is not None:
            self.pose.update(rel_pose[None], item["rel_pose"][None])
        self.temporal.update(labels, depth, item)

    def result(self, names: tuple[str, ...]) -> dict[str, Any]:
        return {"segmentation": self.confusion.result(names), "depth": self.depth.result(), "ego_motion": self.pose.result(),
                "temporal": self.temporal.result()}


def _baselines(confusion: ConfusionMatrix, depths: list[torch.Tensor], pose: PoseMetrics) -> dict[str, Any]:
    gt = confusion.matrix.sum(1).double()
    majority = int(gt.argmax())
    present = int((gt > 0).sum())
    values = torch.cat(depths).double() if depths else torch.ones(1, dtype=torch.float64)
    near = values[values <= 80]
    mean80 = near.mean()
    return {
        "majority_class_miou": float(gt[majority] / gt.sum() / max(present, 1)),
        "mean_depth_abs_rel_cap_80m": float(((mean80 - near).abs() / near).mean()) if len(near) else 0.0,
        "no_motion": pose.result(),
    }


@torch.no_grad()
def evaluate_run(run_dir: Path, split: str = "test", data: Path | None = None, device: str = "cpu") -> dict[str, Any]:
    """The comparison table of a run trained through all four stages, as a dict."""
    cfg = load_run(run_dir)
    data = Path(data or cfg.data)
    require_clips(load_manifest(data), data, split, "evaluation")
    probe = ClipWindows(data, split, window=1, label_map=cfg.label_map)
    window = min(n for *_, n in probe.clips)
    ds = ClipWindows(data, split, window=window, stride=window, label_map=cfg.label_map, size=cfg.frame_size())
    names = load_label_map(cfg.label_map).class_names
    frame, temporal = FrameModel(cfg, run_dir).to(device), temporal_model(cfg, run_dir).to(device)
    scores = {"frame_by_frame": _Scores(len(names)), "temporal": _Scores(len(names))}
    truth = TemporalConsistency(len(names))
    no_motion, depths, generator = PoseMetrics(), [], torch.Generator().manual_seed(0)
    for index in range(len(ds)):
        item = ds[index]
        rgb = item["rgb"][None].to(device)
        for name, model in (("frame_by_frame", frame), ("temporal", temporal)):
            out = model(rgb)
            scores[name].update(out["seg_logits"][0].argmax(1).cpu(), out["depth"][0, :, 0].float().cpu(),
                                out["rel_pose"][0].cpu(), item)
        truth.update(item["labels"], item["depth"][:, 0], item)
        no_motion.update(torch.eye(4, dtype=torch.float64).expand(1, window, 4, 4), item["rel_pose"][None])
        valid = item["depth"][:, 0][item["valid_depth"][:, 0]]
        depths.append(valid[torch.randint(len(valid), (min(len(valid), 4096),), generator=generator)] if len(valid) else valid)
    results = {name: s.result(names) for name, s in scores.items()}
    return {
        "run": str(run_dir), "split": split, "windows": len(ds), "frames_per_window": window,
        "frame_size": list(cfg.frame_size()), "preset": cfg.preset, "label_map": cfg.label_map, "models": results,
        "ground_truth": {"temporal": truth.result()},
        "baselines": _baselines(scores["temporal"].confusion, depths, no_motion),
    }


ROWS = (
    ("pixel accuracy", ("segmentation", "pixel_accuracy"), "{:.3f}"),
    ("mIoU", ("segmentation", "miou"), "{:.3f}"),
    ("mean class accuracy", ("segmentation", "mean_class_accuracy"), "{:.3f}"),
    ("depth AbsRel (<= 80 m)", ("depth", "cap_80m", "abs_rel"), "{:.3f}"),
    ("depth SqRel (<= 80 m)", ("depth", "cap_80m", "sq_rel"), "{:.3f}"),
    ("depth RMSE m (<= 80 m)", ("depth", "cap_80m", "rmse"), "{:.2f}"),
    ("depth log-RMSE (<= 80 m)", ("depth", "cap_80m", "log_rmse"), "{:.3f}"),
    ("delta < 1.25 (<= 80 m)", ("depth", "cap_80m", "delta_1.25"), "{:.3f}"),
    ("delta < 1.25^2 (<= 80 m)", ("depth", "cap_80m", "delta_1.25^2"), "{:.3f}"),
    ("delta < 1.25^3 (<= 80 m)", ("depth", "cap_80m", "delta_1.25^3"), "{:.3f}"),
    ("depth AbsRel (<= 1000 m)", ("depth", "cap_1000m", "abs_rel"), "{:.3f}"),
    ("delta < 1.25 (<= 1000 m)", ("depth", "cap_1000m", "delta_1.25"), "{:.3f}"),
    ("RPE translation (m)", ("ego_motion", "rpe_translation_m"), "{:.3f}"),
    ("RPE rotation (deg)", ("ego_motion", "rpe_rotation_deg"), "{:.3f}"),
    ("ATE (m)", ("ego_motion", "ate_m"), "{:.3f}"),
    ("temporal-consistency mIoU", ("temporal", "tc_miou"), "{:.3f}"),
    ("label flip rate", ("temporal", "label_flip_rate"), "{:.4f}"),
    ("depth relative change", ("temporal", "depth_rel_change"), "{:.4f}"),
    ("depth flip rate (> 5 %)", ("temporal", "depth_flip_rate"), "{:.4f}"),
)


def _get(d: dict, path: tuple[str, ...]) -> Any:
    for key in path:
        d = d.get(key) if isinstance(d, dict) else None
    return d


def to_markdown(report: dict[str, Any]) -> str:
    """The report as one Markdown table (plus baselines and per-class IoU)."""
    m, gt, base = report["models"], report["ground_truth"], report["baselines"]
    lines = [f"# Evaluation of {report['run']} on {report['split']} ({report['windows']} clips of "
             f"{report['frames_per_window']} frames at {report['frame_size'][0]}x{report['frame_size'][1]}, preset {report['preset']})", "",
             "| metric | frame-by-frame (stages 1+2+3) | temporal (stage 4) | ground truth |", "|---|---|---|---|"]
    for label, path, fmt in ROWS:
        cells = [fmt.format(v) if (v := _get(m[k], path)) is not None else "-" for k in ("frame_by_frame", "temporal")]
        truth = _get(gt, path) if path[0] == "temporal" else None
        lines.append(f"| {label} | {cells[0]} | {cells[1]} | {fmt.format(truth) if truth is not None else ''} |")
    lines += ["", "| baseline | value |", "|---|---|",
              f"| majority class mIoU | {base['majority_class_miou']:.3f} |",
              f"| mean depth AbsRel (<= 80 m) | {base['mean_depth_abs_rel_cap_80m']:.3f} |",
              f"| no motion RPE translation (m) | {base['no_motion']['rpe_translation_m']:.3f} |",
              f"| no motion ATE (m) | {base['no_motion']['ate_m']:.3f} |", ""]
    names = sorted(set(m["frame_by_frame"]["segmentation"]["per_class_iou"]) | set(m["temporal"]["segmentation"]["per_class_iou"]))
    lines += ["| class IoU | frame-by-frame | temporal |", "|---|---|---|"]
    for name in names:
        a = m["frame_by_frame"]["segmentation"]["per_class_iou"].get(name)
        b = m["temporal"]["segmentation"]["per_class_iou"].get(name)
        lines.append(f"| {name} | {'-' if a is None else f'{a:.3f}'} | {'-' if b is None else f'{b:.3f}'} |")
    absent = m["temporal"]["segmentation"]["absent_classes"]
    lines += ["", f"Classes absent from both prediction and ground truth (not in mIoU): {', '.join(absent) or 'none'}."]
    return "\n".join(lines) + "\n"


def write_report(report: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    """``eval.json`` and ``eval.md`` in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    js, md = out_dir / "eval.json", out_dir / "eval.md"
    js.write_text(json.dumps(report, indent=2) + "\n")
    md.write_text(to_markdown(report))
    return js, md
