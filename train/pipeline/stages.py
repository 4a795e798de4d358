"""The pipeline's four stages on the engine.

:class:`PipelineStage` says how each is built, fed, corrupted, scored and validated (stages as data:
:class:`~train.pipeline.config.StageConfig`).

A stage with ``perturb`` trains on windows corrupted per frame (drawn from (seed, epoch, window
index), so a resumed run sees the same corruption) and validates on clean and corrupted
windows; best.pt is the epoch (or, with ``validate_start``, the start) that scores highest by
the stage's ``select`` rule (:func:`selection_score`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from dataset import ClipWindows
from dataset.labels import load_label_map
from dataset.perturb import corrupt
from train.context import Context
from train.engine import Schedule, Stage, evaluate
from train.metrics import MiouMeter
from train.pipeline.config import StageConfig, TrainConfig
from train.pipeline.losses import total_loss
from train.pipeline.nets import build_stage_net, stage_forward
from train.pipeline.panels import panel

CORRUPTED = "corrupted_"


class PipelineStage(Stage):
    """Stage ``name`` (stage1 .. stage4) of ``cfg``.

    Validated on the val split when ``validate`` (a split without clips trains without validation).
    """

    def __init__(self, cfg: TrainConfig, name: str, validate: bool = True) -> None:
        """The stage's schedule from its config; the run's ``lr_patience`` for every stage."""
        self.cfg, self.name, self.key = cfg, name, f"stages.{name}"
        self.spec: StageConfig = cfg.stages[name]
        spec = self.spec
        self.schedule = Schedule.of(
            spec,
            lr_patience=cfg.lr_patience,
            frozen=spec.frozen,
            frozen_stats=spec.frozen_stats,
            validate_start=spec.validate_start,
            lr_scale=tuple(spec.lr_scale.items()),
        )
        self.train_split = cfg.data.train_split
        self.val_split = cfg.data.val_split if validate else None

    def build(self) -> nn.Module:
        """The stage's network, starting from the earlier stages' best checkpoints."""
        return build_stage_net(self.spec, self.cfg.model, Path(self.cfg.out))

    def dataset(self, split: str, training: bool, epoch: int) -> ClipWindows:
        """Windows of the stage's length (overlapping by half in training) at the run's size."""
        window = self.spec.window
        ds = ClipWindows.from_config(
            self.cfg.data,
            split,
            window,
            training=training,
            stride=max(1, window // 2) if training else window,
            seed=self.cfg.seed,
            size=self.cfg.frame_size(),
        )
        ds.set_epoch(epoch)
        return ds

    def forward(self, net: nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """The stage network's pipeline-style outputs (:func:`stage_forward`)."""
        return stage_forward(net, batch)

    def loss(
        self, out: dict[str, torch.Tensor], batch: dict[str, Any]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The stage's weighted losses (``ce``, ``depth``, ``pose``, ``restore``)."""
        return total_loss(self.spec.losses, out, batch)

    def prepare(self, batch: dict[str, Any], epoch: int) -> dict[str, Any]:
        """With ``perturb``: every training window corrupted by a draw of (seed, epoch, index)."""
        if self.spec.perturb is not None:
            keys = [(self.cfg.seed, epoch, int(i)) for i in batch["index"]]
            batch["clean_rgb"] = batch["rgb"]  # what an image memory restores (``restore`` loss)
            batch["rgb"], _ = corrupt(batch["rgb"], self.spec.perturb, keys)
        return batch

    def meter(self) -> MiouMeter | None:
        """MIoU for a stage with a segmentation loss."""
        if "ce" not in self.spec.losses:
            return None
        return MiouMeter(load_label_map(self.cfg.data.label_map).num_classes, class_dim=2)

    def validate(self, net: nn.Module, loader: DataLoader, ctx: Context) -> dict[str, float]:
        """:func:`validate_epoch`."""
        return validate_epoch(net, loader, self, ctx)

    def selection(self) -> str:
        """The ``select`` rule and the validation it reads, for the log."""
        conditions = "clean and corrupted" if self.spec.perturb is not None else "clean"
        return f"{self.spec.selection()} on {conditions} validation"

    def panel(self, net: nn.Module, batch: dict[str, Any], ctx: Context) -> np.ndarray | None:
        """RGB | prediction | ground truth of the first window's first frame."""
        return panel(net, batch, self.cfg, ctx.device)


def validate_epoch(
    net: nn.Module, loader: DataLoader, stage: PipelineStage, ctx: Context
) -> dict[str, float]:
    """The stage's validation figures (:func:`~train.engine.evaluate`).

    On clean windows, and for a stage trained on corrupted windows also on corrupted ones (keys
    prefixed ``corrupted_``, every window corrupted by a draw fixed by its index, the same in every
    epoch); with the ``score`` that chooses best.pt (:func:`selection_score`).
    """
    val = evaluate(net, loader, stage, ctx)
    perturb = stage.spec.perturb
    if perturb is not None:
        every = perturb.model_copy(update={"window_p": 1.0})

        def corrupted(batch: dict[str, Any]) -> dict[str, Any]:
            batch["clean_rgb"] = batch["rgb"]
            batch["rgb"], _ = corrupt(batch["rgb"], every, [(int(i),) for i in batch["index"]])
            return batch

        val.update(
            {CORRUPTED + k: v for k, v in evaluate(net, loader, stage, ctx, corrupted).items()}
        )
    val["score"] = selection_score(stage.spec, val)
    return val


def selection_score(stage: StageConfig, val: dict[str, float]) -> float:
    """Higher is better, by the stage's ``select`` rule.

    MIoU; minus the weighted loss; or mIoU minus ``select_depth_weight`` x the log-L1 depth error.
    Averaged over the conditions ``val`` holds (clean, and corrupted for a stage trained on
    corrupted windows).
    """
    rule = stage.selection()
    conditions = ("", CORRUPTED) if CORRUPTED + "loss" in val else ("",)

    def one(prefix: str) -> float:
        if rule == "miou":
            return val[prefix + "miou"]
        if rule == "loss":
            return -val[prefix + "loss"]
        return val[prefix + "miou"] - stage.select_depth_weight * val[prefix + "depth"]

    return sum(one(prefix) for prefix in conditions) / len(conditions)
