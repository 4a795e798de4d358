"""The pipeline's config: stages as data (``StageConfig``) inside a ``TrainConfig``.

A stage says which model it trains, which checkpoints of earlier stages it starts from, which
modules are frozen (and kept in eval mode), its losses with weights, window length, epochs,
batch size and learning rate. Presets (``train/pipeline/schedules.py``) fill in the reference
schedule.
"""

from __future__ import annotations

import math
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from clipcore.geometry import HFOV_RANGE_DEG
from clipcore.settings import TextPath
from dataset.config import Perturbation
from models.config import ModelConfig
from train.config import EvalConfig, PredictConfig, RunConfig, upgrade_saved

StageName = Literal["stage1", "stage2", "stage3", "stage4"]
LOSSES = ("ce", "depth", "pose", "restore")
#: The pipeline's stages, in training order.
STAGE_ORDER = ("stage1", "stage2", "stage3", "stage4")


class StageConfig(BaseModel):
    """One training stage."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    model: Literal["segmentation", "depth", "ego_motion", "sequence"] = Field(
        description="What this stage trains."
    )
    needs: tuple[StageName, ...] = Field(
        (), description="Earlier stages whose best checkpoints this one starts from."
    )
    frozen: tuple[str, ...] = Field(
        (), description="Submodules kept frozen and in eval mode (dotted names)."
    )
    frozen_stats: tuple[str, ...] = Field(
        (),
        description="Submodules that train but whose BatchNorm layers keep their running "
        "statistics (eval mode): for fine-tuning a trained module on small, correlated batches.",
    )
    validate_start: bool = Field(
        False,
        description="Validate before the first update and keep the starting weights as a "
        "best-checkpoint candidate (for a stage that starts from a working model).",
    )
    losses: dict[str, float] = Field(
        description="Loss name (ce, depth, pose, restore: train/pipeline/losses.py) -> weight."
    )
    window: int = Field(
        1, ge=1, description="Frames per training item (backpropagation through all of them)."
    )
    epochs: int = Field(20, ge=1, description="Epochs.")
    batch_size: int = Field(8, ge=1, description="Windows per batch (per process under DDP).")
    lr: float = Field(3e-4, gt=0, description="Adam learning rate.")
    lr_scale: dict[str, float] = Field(
        {},
        description="Learning-rate multipliers of submodules (dotted names): a module trained "
        "from scratch can learn faster than the trained ones it is fine-tuned beside.",
    )
    warmup_epochs: float = Field(
        0.0,
        ge=0,
        description="Linear learning-rate warmup over this many epochs' optimiser "
        "steps: Adam's first updates move every weight by about lr, too far for a trained module.",
    )
    max_steps: int | None = Field(
        None, ge=1, description="Cap on optimiser steps per epoch (None: the whole split)."
    )
    perturb: Perturbation | None = Field(
        None,
        description="Per-frame-independent corruption of the training windows (noise, "
        "flicker, occluders, dropouts; dataset/perturb.py), the situation a memory is for; "
        "validation then scores corrupted windows (a fixed draw) beside clean ones; false: clean.",
    )
    select: Literal["auto", "miou", "loss", "miou_depth"] = Field(
        "auto",
        description="How best.pt is chosen among the validated epochs: miou (highest mIoU), "
        "loss (lowest weighted loss), miou_depth (highest mIoU - select_depth_weight x log-L1 "
        "depth, averaged over clean and, with perturb, corrupted validation); auto: miou for a "
        "segmentation-only stage, else loss.",
    )
    select_depth_weight: float = Field(
        0.5, ge=0, description="select='miou_depth': weight of the log-L1 depth error."
    )

    @field_validator("losses")
    @classmethod
    def _known(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = set(value) - set(LOSSES)
        if unknown or not value:
            raise ValueError(
                f"losses must be a non-empty subset of {', '.join(LOSSES)}; got {sorted(value)}"
            )
        bad = {k: w for k, w in value.items() if not (math.isfinite(w) and w >= 0)}
        if bad:
            raise ValueError(f"loss weights must be finite and >= 0, got {bad}")
        return value

    @field_validator("lr_scale")
    @classmethod
    def _positive_scales(cls, value: dict[str, float]) -> dict[str, float]:
        bad = {k: v for k, v in value.items() if not (math.isfinite(v) and v > 0)}
        if bad:
            raise ValueError(f"learning-rate multipliers must be finite and > 0, got {bad}")
        return value

    @field_validator("perturb", mode="before")
    @classmethod
    def _perturb_switch(cls, value: Any) -> Any:
        """``true`` / ``false`` mean the default corruptions / clean windows."""
        if isinstance(value, bool):
            return Perturbation() if value else None
        return value

    @model_validator(mode="after")
    def _select_reads_its_losses(self) -> StageConfig:
        needs = {"miou": {"ce"}, "miou_depth": {"ce", "depth"}}.get(self.select, set())
        if not needs <= set(self.losses):
            raise ValueError(
                f"select={self.select!r} scores {' and '.join(sorted(needs))}, which this stage "
                f"does not compute (losses {sorted(self.losses)}): use select='loss' or 'auto'"
            )
        return self

    def selection(self) -> str:
        """The rule that chooses best.pt (``auto`` resolved)."""
        if self.select != "auto":
            return self.select
        return "miou" if set(self.losses) == {"ce"} else "loss"


def upgrade_pipeline(config: dict[str, Any]) -> dict[str, Any]:
    """A pipeline run's saved ``config.json`` (as a dict) in today's layout.

    As :func:`train.config.upgrade_saved`; the ``forecast`` section that runs of earlier releases
    saved beside the stages (forecasting is its own task now) is left out.
    """
    config = upgrade_saved(config)
    if isinstance(config, dict):
        config.pop("forecast", None)
    return config


class TrainConfig(RunConfig):
    """Everything ``train run pipeline`` needs; saved as ``<run>/config.json``."""

    preset: str = Field(
        "tiny",
        description="Model sizes and stage schedule (models/config.py PRESETS, "
        "train/pipeline/schedules.py).",
    )
    model: ModelConfig = Field(
        default_factory=ModelConfig, description="Model sizes (from the preset)."
    )
    stages: dict[StageName, StageConfig] = Field(description="The four stages (from the preset).")
    lr_patience: int = Field(
        2, ge=0, description="ReduceLROnPlateau patience in epochs (factor 0.1)."
    )

    @model_validator(mode="after")
    def _every_stage(self) -> TrainConfig:
        missing = [name for name in get_args(StageName) if name not in self.stages]
        if missing:
            raise ValueError(
                f"stages lacks {', '.join(missing)}: change a stage's fields "
                "(--set stages.stage1.epochs=2) rather than replacing the stages table"
            )
        return self


class PipelineEval(EvalConfig):
    """``train eval pipeline``: the frame-by-frame against the temporal model of a run."""

    perturbed: bool = Field(
        False, description="Also evaluate under per-frame noise, flicker and occluders."
    )
    average_rate: float = Field(
        0.7,
        ge=0,
        lt=1,
        description="Also score the untrained baseline of the temporal model: the frame model's "
        "segmentation averaged over each clip by its own depth and ego-motion, this share kept "
        "per frame (0: leave it out; benchmarks/learning.py's validation town picks 0.7 to 0.9).",
    )


class PipelinePredict(PredictConfig):
    """``train predict pipeline``: one clip of PATH, or a video file, through a run's model."""

    clip: str | None = Field(None, description="Clip id [default: the first clip].")
    video: TextPath | None = Field(
        None,
        description="Predict on this video file (mp4, avi, mkv, webm, gif) instead of a clip; "
        "--out is then the .mp4 or .gif to write.",
    )
    hfov: float = Field(
        90.0,
        gt=HFOV_RANGE_DEG[0],
        lt=HFOV_RANGE_DEG[1],
        description="With --video: the camera's horizontal field of view, degrees (temporal "
        "model).",
    )
    max_frames: int | None = Field(None, ge=1, description="With --video: stop after N frames.")
    gif: bool = Field(False, description="Write a GIF instead of an MP4.")
    compare: bool = Field(
        False,
        description="Also write <clip>-compare.mp4 and .png: input | ground truth | "
        "frame-by-frame | temporal, segmentation over depth (stages 1-3 too).",
    )
