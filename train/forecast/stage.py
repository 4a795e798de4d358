"""``train run forecast``: future segmentation from past RGB, trained on the engine.

The forecaster (``models/forecast.py``) sees the frames of a horizon's pattern (e.g. the four
frames before the target) and predicts the target frame's segmentation. Loss: cross-entropy to
the target's labels plus ``distill_weight`` (lambda, 100) times the distillation loss to the frozen
stage-1 model's output on the target frame. Stage 1 of the pipeline run in ``--out`` is the
teacher and initialises the encoder and decoder. Checkpoints go to
``<run>/<forecast-horizon[-stack][-nodistill]>/`` (``best.pt`` by validation mIoU), beside the
forecaster's resolved config (``config.json``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from clipcore.errors import CaptureError
from clipcore.manifest import load_manifest
from dataset.labels import IGNORE_INDEX, load_label_map
from models.forecast import Forecaster, build_forecaster
from models.segmentation import SegmentationModel, build_segmentation
from train import config as run_config
from train.context import setup
from train.engine import Schedule, Stage, run_stage
from train.forecast.config import ForecastRunConfig, preset_defaults, upgrade_forecast
from train.forecast.data import ForecastWindows
from train.metrics import MiouMeter
from train.pipeline.config import upgrade_pipeline
from train.pipeline.trained import component
from train.run_folder import load_checkpoint, refuse_overwrite, same_model, save_config


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Mean squared error between the student's and the teacher's softmax probabilities.

    Of (B, K, H, W) logits each, averaged over pixels and classes (0 when the student copies the
    teacher).
    """
    return F.mse_loss(student_logits.float().softmax(1), teacher_logits.float().softmax(1))


def forecast_loss(
    logits: torch.Tensor, labels: torch.Tensor, teacher_logits: torch.Tensor | None, weight: float
) -> tuple[torch.Tensor, dict[str, float]]:
    """Cross-entropy to the target labels plus ``weight`` x distillation; total and parts."""
    ce = F.cross_entropy(logits.float(), labels, ignore_index=IGNORE_INDEX)
    parts = {"ce": float(ce.detach())}
    if teacher_logits is None or weight == 0:
        return ce, parts
    distill = distillation_loss(logits, teacher_logits)
    parts["distill"] = float(distill.detach())
    return ce + weight * distill, parts


def load_teacher(cfg: ForecastRunConfig, run_dir: Path) -> SegmentationModel:
    """Stage 1's segmentation model from ``run_dir``, frozen, in eval mode."""
    teacher = build_segmentation(cfg.model)
    teacher.load_state_dict(component(run_dir, "stage1", "segmentation"))
    return teacher.requires_grad_(False).eval()


class ForecastNet(nn.Module):
    """The forecaster beside its frozen teacher.

    ``(rgb (B, T, 3, H, W), target_rgb (B, 3, H, W))`` -> ``seg_logits`` (B, K, H, W) of the target
    and, in training with distillation, the teacher's ``teacher_logits`` on the target frame.
    """

    def __init__(self, teacher: SegmentationModel, forecaster: Forecaster, distill: bool) -> None:
        """``distill``: whether training reads the teacher's output."""
        super().__init__()
        self.teacher, self.forecaster, self.distill = teacher, forecaster, distill

    def components(self) -> dict[str, nn.Module]:
        """What a checkpoint stores: the forecaster."""
        return {"forecaster": self.forecaster}

    def forward(self, rgb: torch.Tensor, target_rgb: torch.Tensor) -> dict[str, torch.Tensor]:
        """Forecast (and the teacher's logits for the distillation loss)."""
        out = {}
        if self.training and self.distill:
            with torch.no_grad():
                out["teacher_logits"] = self.teacher(target_rgb)["seg_logits"]
        out["seg_logits"] = self.forecaster(rgb)["seg_logits"]
        return out


class ForecastStage(Stage):
    """The forecaster of ``cfg.forecast`` as an engine stage."""

    def __init__(self, cfg: ForecastRunConfig) -> None:
        """Its schedule from the ``forecast`` section; the teacher always frozen."""
        fc = cfg.forecast
        self.cfg, self.name, self.key = cfg, fc.run_name(), "forecast"
        self.schedule = Schedule.of(fc, lr_patience=fc.lr_patience, frozen=("teacher",))
        self.train_split, self.val_split = cfg.data.train_split, cfg.data.val_split

    def build(self) -> nn.Module:
        """Stage 1 as teacher, and the forecaster initialised from it."""
        fc = self.cfg.forecast
        teacher = load_teacher(self.cfg, Path(self.cfg.out))
        forecaster = build_forecaster(
            self.cfg.model, len(fc.pattern().inputs), fc.temporal, fc.width, teacher
        )
        return ForecastNet(teacher, forecaster.requires_grad_(True), fc.distill_weight != 0)

    def dataset(self, split: str, training: bool, epoch: int) -> ForecastWindows:
        """The horizon's samples of ``split`` at the run's frame size."""
        cfg = self.cfg
        ds = ForecastWindows(
            cfg.data,
            split,
            cfg.forecast.pattern(),
            training=training,
            seed=cfg.seed,
            size=cfg.frame_size(),
        )
        ds.set_epoch(epoch)
        return ds

    def forward(self, net: nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """The forecast of the batch's target frames."""
        return net(batch["rgb"], batch["target_rgb"])

    def loss(
        self, out: dict[str, torch.Tensor], batch: dict[str, Any]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """:func:`forecast_loss` (validation: the cross-entropy alone)."""
        weight = self.cfg.forecast.distill_weight
        return forecast_loss(out["seg_logits"], batch["labels"], out.get("teacher_logits"), weight)

    def meter(self) -> MiouMeter:
        """The forecast's mIoU."""
        return MiouMeter(load_label_map(self.cfg.data.label_map).num_classes, class_dim=1)

    def validate(self, net: nn.Module, loader: Any, ctx: Any) -> dict[str, float]:
        """Cross-entropy and mIoU of the forecast; best.pt by mIoU."""
        val = super().validate(net, loader, ctx)
        val["score"] = val["miou"]
        return val

    def selection(self) -> str:
        """best.pt by validation mIoU."""
        return "highest validation mIoU"


def load_forecaster(
    run_dir: Path, name: str, device: str | torch.device = "cpu"
) -> tuple[Forecaster, ForecastRunConfig]:
    """A trained forecaster variant (``forecast-short``, ...) of a run, and its config."""
    path = Path(run_dir) / name / "best.pt"
    if not path.exists():
        raise CaptureError(
            f"{path} does not exist: train it first (train run forecast --out {run_dir} ...)"
        )
    state = load_checkpoint(path)
    cfg = ForecastRunConfig.model_validate(upgrade_forecast(state["config"]))
    net = build_forecaster(
        cfg.model, len(cfg.forecast.pattern().inputs), cfg.forecast.temporal, cfg.forecast.width
    )
    net.load_state_dict(state["components"]["forecaster"])
    return net.to(device).eval(), cfg


def resolve_config(
    preset: str | None,
    options: dict[str, Any],
    config_file: Path | None = None,
    overrides: Sequence[str] = (),
) -> ForecastRunConfig:
    """Preset < config file < command-line options < ``--set`` overrides, validated."""
    return run_config.resolve(
        ForecastRunConfig, preset_defaults, preset, options, config_file, overrides
    )


def train(cfg: ForecastRunConfig, stage: str = "forecast", resume: bool = False) -> list[Path]:
    """Train the forecaster of ``cfg.forecast`` into ``<out>/<run_name>/``; returns ``best.pt``."""
    load_manifest(cfg.data.root)  # a missing dataset or manifest fails here, with the fix
    name = cfg.forecast.run_name()
    if not resume:
        refuse_overwrite(Path(cfg.out), (name,))
    same_model(cfg, Path(cfg.out) / "config.json", upgrade_pipeline)  # stage 1 is the teacher
    ctx = setup(cfg)
    if ctx.main:
        save_config(cfg, Path(cfg.out) / name / "config.json", upgrade_forecast)
    return [run_stage(ForecastStage(cfg), ctx, resume)]
