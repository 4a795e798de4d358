"""``train eval pipeline``: the frame-by-frame models against the temporal model.

The frame-by-frame models (stages 1 + 2, with stage 3's ego-motion) and the temporal model
(stage 4) on the same whole-clip windows, clean and (optionally) under per-frame corruptions,
beside the ground truth and trivial baselines (majority class, mean depth, no motion; a constant
class with zero or clip-median depth on every temporal figure).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from clipcore.manifest import load_manifest, require_clips
from clipcore.progress import Progress
from dataset import ClipWindows
from dataset.config import Perturbation
from dataset.labels import IGNORE_INDEX, load_label_map
from dataset.perturb import corrupt
from models.pipeline import TemporalPipeline
from train.context import resolve_device
from train.metrics import ConfusionMatrix, DepthMetrics, PoseMetrics
from train.pipeline.average import RunningAverage, level_of
from train.pipeline.config import PipelineEval, TrainConfig
from train.pipeline.consistency import TemporalConsistency, window_pairs
from train.pipeline.trained import FrameModel, load_run, temporal_model


class _Scores:
    def __init__(self, num_classes: int) -> None:
        self.confusion, self.depth, self.pose = (
            ConfusionMatrix(num_classes),
            DepthMetrics(),
            PoseMetrics(),
        )
        self.hidden = ConfusionMatrix(num_classes)
        self.temporal = TemporalConsistency(num_classes)

    def update(
        self,
        labels: torch.Tensor,
        depth: torch.Tensor,
        rel_pose: torch.Tensor | None,
        item: dict,
        pairs: list,
        hidden: torch.Tensor | None = None,
    ) -> None:
        """Add one window ``item``'s predictions.

        ``labels`` (T, H, W), ``depth`` (T, H, W) metres and ``rel_pose`` (T, 4, 4); ``hidden`` (T,
        H, W): where corruption hid the image.
        """
        self.confusion.update(labels, item["labels"])
        if hidden is not None:
            self.hidden.update(labels, item["labels"], hidden)
        self.depth.update(depth, item["depth"][:, 0], item["valid_depth"][:, 0])
        if rel_pose is not None:
            self.pose.update(rel_pose[None], item["rel_pose"][None])
        self.temporal.update(labels, depth, item, pairs)

    def result(self, names: tuple[str, ...]) -> dict[str, Any]:
        segmentation = self.confusion.result(names)
        if self.hidden.matrix.sum() > 0:
            segmentation["occluded_pixel_accuracy"] = self.hidden.result()["pixel_accuracy"]
        return {
            "segmentation": segmentation,
            "depth": self.depth.result(),
            "ego_motion": self.pose.result(),
            "temporal": self.temporal.result(),
        }


def run_model(model: torch.nn.Module, rgb: torch.Tensor, item: dict) -> dict[str, torch.Tensor]:
    """Outputs of a frame-by-frame or temporal model on one window ``rgb`` (1, T, 3, H, W).

    The temporal pipeline also reads the window's intrinsics (and, as an oracle, depth and pose);
    the running averages read all three.
    """
    if isinstance(model, TemporalPipeline | RunningAverage):
        device = rgb.device
        return model(
            rgb,
            item["intrinsics"][None, 0].to(device),
            item["depth"][None].to(device),
            item["rel_pose"][None].to(device),
        )
    return model(rgb)


def _majority_class(ds: ClipWindows, num_classes: int) -> int:
    counts = torch.zeros(num_classes, dtype=torch.int64)
    for index in range(len(ds)):
        labels = ds[index]["labels"]
        counts += torch.bincount(labels[labels != IGNORE_INDEX], minlength=num_classes)[
            :num_classes
        ]
    return int(counts.argmax())


def row_mean_depth(cfg: TrainConfig, data: Path, every: int = 5) -> torch.Tensor:
    """(H,) metres: the mean valid depth of each image row over the training split.

    Every ``every``-th frame, at the run's frame size. A strong trivial baseline for driving depth:
    the ground plane's depth depends mostly on the image row. Rows without valid depth get the
    split's mean.
    """
    source = cfg.data.model_copy(update={"root": data})
    ds = ClipWindows.from_config(
        source, cfg.data.train_split, 1, stride=every, size=cfg.frame_size()
    )
    sums = torch.zeros(cfg.frame_size()[0], dtype=torch.float64)
    counts = torch.zeros_like(sums)
    for index in range(len(ds)):
        item = ds[index]
        valid = item["valid_depth"][0, 0]
        sums += torch.where(valid, item["depth"][0, 0], 0.0).double().sum(1)
        counts += valid.double().sum(1)
    overall = sums.sum() / counts.sum().clamp_min(1)
    return torch.where(counts > 0, sums / counts.clamp_min(1), overall).float()


@torch.no_grad()
def score_models(
    models: dict[str, torch.nn.Module],
    ds: ClipWindows,
    names: tuple[str, ...],
    device: str = "cpu",
    perturbation: Perturbation | None = None,
    row_depth: torch.Tensor | None = None,
    progress: str | None = None,
) -> dict[str, Any]:
    """Every model on every window of ``ds`` (corrupted by ``perturbation`` if given).

    Segmentation, depth, ego-motion and temporal figures; plus the ground truth's temporal figures
    and trivial baselines (majority class, mean depth, no motion, the per-row mean depth
    ``row_depth`` (H,) metres if given, and the temporal figures of a constant class with all-zero
    depth and with each clip's median depth). With ``progress`` (what is being done), the windows
    done are shown on stderr (:class:`~clipcore.progress.Progress`).
    """
    scores = {name: _Scores(len(names)) for name in models}
    rows = DepthMetrics()
    majority = _majority_class(ds, len(names))
    truth = TemporalConsistency(len(names))
    trivial = {
        "constant_class_zero_depth": TemporalConsistency(len(names)),
        "constant_class_median_depth": TemporalConsistency(len(names)),
    }
    no_motion, depths, generator = PoseMetrics(), [], torch.Generator().manual_seed(0)
    bar = _progress(len(ds), progress, ds.window)
    for index in range(len(ds)):
        if bar is not None and index:
            bar.update()
        item = ds[index]
        pairs = window_pairs(item)
        rgb, hidden = item["rgb"][None].to(device), None
        if perturbation is not None:
            rgb, hidden = corrupt(rgb, perturbation, [(index,)])
            hidden = hidden[0].cpu()
        for name, model in models.items():
            out = run_model(model, rgb, item)
            scores[name].update(
                out["seg_logits"][0].argmax(1).cpu(),
                out["depth"][0, :, 0].float().cpu(),
                out["rel_pose"][0].cpu(),
                item,
                pairs,
                hidden,
            )
        gt_depth, valid_depth = item["depth"][:, 0], item["valid_depth"][:, 0]
        if row_depth is not None:
            rows.update(row_depth[:, None].expand_as(gt_depth), gt_depth, valid_depth)
        truth.update(item["labels"], gt_depth, item, pairs)
        constant = torch.full_like(item["labels"], majority)
        median = gt_depth[valid_depth].median() if valid_depth.any() else torch.tensor(10.0)
        trivial["constant_class_zero_depth"].update(
            constant, torch.zeros_like(gt_depth), item, pairs
        )
        trivial["constant_class_median_depth"].update(
            constant, torch.full_like(gt_depth, float(median)), item, pairs
        )
        no_motion.update(
            torch.eye(4, dtype=torch.float64).expand(1, len(gt_depth), 4, 4), item["rel_pose"][None]
        )
        valid = gt_depth[valid_depth]
        depths.append(
            valid[torch.randint(len(valid), (min(len(valid), 4096),), generator=generator)]
            if len(valid)
            else valid
        )
    if bar is not None:
        bar.update()
        bar.close()
    confusion = next(iter(scores.values())).confusion if scores else ConfusionMatrix(len(names))
    baselines = _baselines(confusion, depths, no_motion)
    baselines["majority_class"] = names[majority]
    baselines["temporal"] = {k: v.result() for k, v in trivial.items()}
    if row_depth is not None:
        baselines["row_mean_depth"] = rows.result()
        baselines["row_mean_depth_abs_rel_cap_80m"] = rows.result()["cap_80m"]["abs_rel"]
    return {
        "models": {name: s.result(names) for name, s in scores.items()},
        "ground_truth": {"temporal": truth.result()},
        "baselines": baselines,
    }


def _progress(total: int, desc: str | None, frames: int) -> Progress | None:
    """A progress display of ``total`` windows of ``frames`` frames, or None without ``desc``."""
    if desc is None or not total:
        return None
    return Progress(total, desc, unit="window", per_item=frames, rate_unit="frames")


def _baselines(
    confusion: ConfusionMatrix, depths: list[torch.Tensor], pose: PoseMetrics
) -> dict[str, Any]:
    gt = confusion.matrix.sum(1).double()
    majority = int(gt.argmax())
    present = int((gt > 0).sum())
    values = torch.cat(depths).double() if depths else torch.ones(1, dtype=torch.float64)
    near = values[values <= 80]
    mean80 = near.mean()
    return {
        "majority_class_miou": float(gt[majority] / gt.sum() / max(present, 1)),
        "mean_depth_abs_rel_cap_80m": float(((mean80 - near).abs() / near).mean())
        if len(near)
        else 0.0,
        "no_motion": pose.result(),
    }


def whole_clips(cfg: TrainConfig, data: Path, split: str) -> ClipWindows:
    """The split's clips as whole windows (as long as its shortest clip) at the run's frame size.

    A split without clips is refused with what to do.
    """
    require_clips(load_manifest(data), data, split, "evaluation")
    source = cfg.data.model_copy(update={"root": data})
    window = min(n for *_, n in ClipWindows.from_config(source, split, 1).clips)
    return ClipWindows.from_config(source, split, window, size=cfg.frame_size())


@torch.no_grad()
def evaluate_run(
    run_dir: Path,
    split: str = "test",
    data: Path | None = None,
    device: str = "cpu",
    perturbation: Perturbation | None = None,
    average_rate: float = 0.0,
) -> dict[str, Any]:
    """The comparison table of a run trained through all four stages, as a dict.

    With ``perturbation``, also under per-frame corruptions (``report["perturbed"]``); with
    ``average_rate`` > 0, also the untrained baseline ``average_estimated``
    (:class:`~train.pipeline.average.RunningAverage` at that rate, by the frame model's own
    depth and ego-motion, at the level of the run's memory
    (:func:`~train.pipeline.average.level_of`), saved as ``report["average_level"]``).
    """
    cfg = load_run(run_dir)
    data = Path(data or cfg.data.root)
    ds = whole_clips(cfg, data, split)
    names = load_label_map(cfg.data.label_map).class_names
    trained_on = load_manifest(data)["splits"].get(cfg.data.train_split, {})
    row_depth = row_mean_depth(cfg, data) if trained_on.get("clips") else None
    frame = FrameModel(cfg, run_dir).to(device)
    models = {"frame_by_frame": frame, "temporal": temporal_model(cfg, run_dir).to(device)}
    level = level_of(cfg.model.memory_fusion)
    if average_rate > 0:
        models["average_estimated"] = RunningAverage(
            frame, average_rate, "estimated", level, cfg.model.pose_refine_iterations
        )
    report = {
        "run": str(run_dir),
        "split": split,
        "windows": len(ds),
        "frames_per_window": ds.window,
        "frame_size": list(cfg.frame_size()),
        "preset": cfg.preset,
        "label_map": cfg.data.label_map,
        "average_rate": average_rate,
        "average_level": level,
        **score_models(
            models, ds, names, device, row_depth=row_depth, progress=f"scoring {split} (clean)"
        ),
    }
    if perturbation is not None:
        report["perturbation"] = perturbation.model_dump()
        report["perturbed"] = score_models(
            models, ds, names, device, perturbation, row_depth, f"scoring {split} (corrupted)"
        )
    return report


ROWS = (
    ("pixel accuracy", ("segmentation", "pixel_accuracy"), "{:.3f}"),
    ("mIoU", ("segmentation", "miou"), "{:.3f}"),
    ("mean class accuracy", ("segmentation", "mean_class_accuracy"), "{:.3f}"),
    (
        "pixel accuracy under the occluders",
        ("segmentation", "occluded_pixel_accuracy"),
        "{:.3f}",
    ),
    ("depth AbsRel (<= 80 m)", ("depth", "cap_80m", "abs_rel"), "{:.3f}"),
    ("depth SqRel (<= 80 m)", ("depth", "cap_80m", "sq_rel"), "{:.3f}"),
    ("depth RMSE m (<= 80 m)", ("depth", "cap_80m", "rmse"), "{:.2f}"),
    ("depth log-RMSE (<= 80 m)", ("depth", "cap_80m", "log_rmse"), "{:.3f}"),
    ("delta < 1.25 (<= 80 m)", ("depth", "cap_80m", "delta_1.25"), "{:.3f}"),
    ("delta < 1.25^2 (<= 80 m)", ("depth", "cap_80m", "delta_1.25^2"), "{:.3f}"),
    ("delta < 1.25^3 (<= 80 m)", ("depth", "cap_80m", "delta_1.25^3"), "{:.3f}"),
    ("depth AbsRel (all valid, < 1000 m)", ("depth", "cap_1000m", "abs_rel"), "{:.3f}"),
    ("delta < 1.25 (all valid, < 1000 m)", ("depth", "cap_1000m", "delta_1.25"), "{:.3f}"),
    ("RPE translation (m)", ("ego_motion", "rpe_translation_m"), "{:.3f}"),
    ("RPE rotation (deg)", ("ego_motion", "rpe_rotation_deg"), "{:.3f}"),
    ("ATE (m)", ("ego_motion", "ate_m"), "{:.3f}"),
)

#: Temporal rows: headline figures (a constant cannot win them) first, marked **bold**.
TEMPORAL_ROWS = (
    (
        "**mean consistent accuracy (mCA)** (higher is better)",
        ("temporal", "mean_consistent_accuracy"),
        "{:.3f}",
    ),
    (
        "**consistent depth accuracy** (higher is better)",
        ("temporal", "consistent_depth_accuracy"),
        "{:.3f}",
    ),
    ("**depth log change** (lower is better)", ("temporal", "depth_log_change"), "{:.4f}"),
    ("temporal-consistency mIoU (a constant scores 1)", ("temporal", "tc_miou"), "{:.3f}"),
    ("label flip rate (a constant scores 0)", ("temporal", "label_flip_rate"), "{:.4f}"),
    (
        "flip rate where the truth is stable (a constant scores 0)",
        ("temporal", "stable_flip_rate"),
        "{:.4f}",
    ),
    ("depth relative change (zero depth scores 0)", ("temporal", "depth_rel_change"), "{:.4f}"),
    ("depth flip rate > 5 % (zero depth scores 0)", ("temporal", "depth_flip_rate"), "{:.4f}"),
)

TRIVIAL = {
    "constant_class_zero_depth": "constant class, zero depth",
    "constant_class_median_depth": "constant class, clip-median depth",
}


def _get(d: dict, path: tuple[str, ...]) -> Any:
    for key in path:
        d = d.get(key) if isinstance(d, dict) else None
    return d


def _fmt(fmt: str, value: Any) -> str:
    return fmt.format(value) if value is not None else "-"


def comparison_table(columns: dict[str, dict], scored: dict[str, Any]) -> list[str]:
    """Markdown lines.

    One column per model result (``columns``: header -> result), then on the temporal rows the
    ground truth and the trivial baselines of ``scored`` (a :func:`score_models` result).
    """
    extra = {"ground truth": scored["ground_truth"]}
    extra.update(
        {
            label: {"temporal": scored["baselines"]["temporal"][key]}
            for key, label in TRIVIAL.items()
        }
    )
    headers = [*columns, *extra]
    lines = ["| metric | " + " | ".join(headers) + " |", "|---" * (len(headers) + 1) + "|"]
    for label, path, fmt in ROWS:
        cells = [_fmt(fmt, _get(c, path)) for c in columns.values()] + [""] * len(extra)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    for label, path, fmt in TEMPORAL_ROWS:
        cells = [_fmt(fmt, _get(c, path)) for c in [*columns.values(), *extra.values()]]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def baseline_lines(base: dict[str, Any]) -> list[str]:
    """The single-figure baselines as a small Markdown table."""
    return [
        "| baseline | value |",
        "|---|---|",
        f"| majority class ({base['majority_class']}) mIoU | {base['majority_class_miou']:.3f} |",
        f"| mean depth AbsRel (<= 80 m) | {base['mean_depth_abs_rel_cap_80m']:.3f} |",
        *(
            [
                "| per-row mean depth of the training split AbsRel (<= 80 m) | "
                f"{base['row_mean_depth_abs_rel_cap_80m']:.3f} |"
            ]
            if "row_mean_depth_abs_rel_cap_80m" in base
            else []
        ),
        f"| no motion RPE translation (m) | {base['no_motion']['rpe_translation_m']:.3f} |",
        f"| no motion ATE (m) | {base['no_motion']['ate_m']:.3f} |",
    ]


def to_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown.

    The comparison (clean, and perturbed if measured), baselines, per-class IoU.
    """
    m = report["models"]
    lines = [
        f"# Evaluation of {report['run']} on {report['split']} ({report['windows']} clips of "
        f"{report['frames_per_window']} frames at "
        f"{report['frame_size'][0]}x{report['frame_size'][1]}, preset {report['preset']})",
        "",
        *comparison_table(_columns(m, report), report),
        "",
    ]
    if "perturbed" in report:
        pm = report["perturbed"]["models"]
        lines += [
            "## Under per-frame corruptions",
            "",
            f"Corruptions: {report['perturbation']}.",
            "",
            *comparison_table(_columns(pm, report), report["perturbed"]),
            "",
        ]
    lines += [*baseline_lines(report["baselines"]), ""]
    names = sorted(
        set(m["frame_by_frame"]["segmentation"]["per_class_iou"])
        | set(m["temporal"]["segmentation"]["per_class_iou"])
    )
    lines += ["| class IoU | frame-by-frame | temporal |", "|---|---|---|"]
    for name in names:
        a = m["frame_by_frame"]["segmentation"]["per_class_iou"].get(name)
        b = m["temporal"]["segmentation"]["per_class_iou"].get(name)
        lines.append(
            f"| {name} | {'-' if a is None else f'{a:.3f}'} | {'-' if b is None else f'{b:.3f}'} |"
        )
    absent = m["temporal"]["segmentation"]["absent_classes"]
    lines += [
        "",
        "Classes absent from both prediction and ground truth (not in mIoU): "
        f"{', '.join(absent) or 'none'}.",
    ]
    return "\n".join(lines) + "\n"


def _columns(models: dict[str, Any], report: dict[str, Any]) -> dict[str, Any]:
    """The compared models of one condition by column header."""
    columns = {
        "frame-by-frame (stages 1+2+3)": models["frame_by_frame"],
        "temporal (stage 4)": models["temporal"],
    }
    if "average_estimated" in models:
        level = report.get("average_level", "scores")  # reports written before it was saved
        header = (
            "frame-by-frame averaged over the clip "
            f"(untrained, {level} level, rate {report['average_rate']})"
        )
        columns[header] = models["average_estimated"]
    return columns


def evaluate_pipeline(cfg: PipelineEval) -> dict[str, Any]:
    """:func:`evaluate_run` with ``train eval pipeline``'s options."""
    return evaluate_run(
        cfg.run,
        cfg.split,
        cfg.data,
        resolve_device(cfg.device),
        Perturbation() if cfg.perturbed else None,
        cfg.average_rate,
    )
