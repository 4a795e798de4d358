"""The forecasting task's config (``train run forecast``): horizons as data.

A horizon names the clip frames the forecaster sees and the frame it forecasts. The defaults
map "Segmenting the Future"'s Cityscapes protocol (target S19; short X15-X18, mid X7-X16 every
third frame, long X1-X10 every third frame) onto our 20-frame clips, target frame 19. Only the
pattern relative to the target matters: on a clip of any length every frame with enough history
is a target (see :func:`train.forecast.data.forecast_samples`).

A forecaster trains inside a pipeline run folder, from its stage 1: :class:`ForecastRunConfig`
holds the run's data, model and settings (which must be the pipeline's, checked against
``<run>/config.json``) and the ``forecast`` section.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from models.config import PRESETS, ModelConfig
from train.config import EvalConfig, PredictConfig, RunConfig, upgrade_saved


class HorizonConfig(BaseModel):
    """Input frame indices (ascending) and the target frame index, in clip frames."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    inputs: tuple[int, ...] = Field(
        description="Clip frame indices the forecaster sees, ascending."
    )
    target: int = Field(description="Clip frame index whose segmentation is forecast.")

    @model_validator(mode="after")
    def _ordered(self) -> HorizonConfig:
        ins = self.inputs
        if (
            not ins
            or ins[0] < 0
            or any(b <= a for a, b in zip(ins[:-1], ins[1:], strict=True))
            or ins[-1] >= self.target
        ):
            raise ValueError(
                f"inputs {list(ins)} must be ascending, >= 0 and before target {self.target}; "
                "e.g. inputs=[15, 16, 17, 18], target=19"
            )
        return self

    @property
    def offsets(self) -> tuple[int, ...]:
        """Input frames relative to the target (negative), e.g. (-4, -3, -2, -1)."""
        return tuple(i - self.target for i in self.inputs)

    @property
    def history(self) -> int:
        """Frames from the first input to the target: a target needs this many frames before it."""
        return self.target - self.inputs[0]

    @property
    def lead(self) -> int:
        """Frames from the last input to the target (how far ahead the forecast reaches)."""
        return self.target - self.inputs[-1]


HORIZONS: dict[str, HorizonConfig] = {
    "short": HorizonConfig(inputs=(15, 16, 17, 18), target=19),
    "mid": HorizonConfig(inputs=(7, 10, 13, 16), target=19),
    "long": HorizonConfig(inputs=(1, 4, 7, 10), target=19),
}


class ForecastConfig(BaseModel):
    """The forecasting stage: stage 1 is its teacher and initialises its encoder and decoder."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    horizon: str = Field("short", description="Which of ``horizons`` to train (short, mid, long).")
    horizons: dict[str, HorizonConfig] = Field(
        default_factory=lambda: dict(HORIZONS), description="Named input / target frame patterns."
    )
    temporal: Literal["conv3d", "stack"] = Field(
        "conv3d",
        description="Conv3D temporal module, or the ablation: frames' features stacked, 2D convs.",
    )
    width: int = Field(64, ge=4, description="Channels of the temporal module.")
    distill_weight: float = Field(
        100.0, ge=0, description="lambda of the distillation loss (0: no teacher)."
    )
    epochs: int = Field(4, ge=1, description="Epochs.")
    batch_size: int = Field(8, ge=1, description="Samples per batch.")
    lr: float = Field(1e-3, gt=0, description="Adam learning rate (the paper's).")
    max_steps: int | None = Field(
        None, ge=1, description="Cap on optimiser steps per epoch (None: the whole split)."
    )
    warmup_epochs: float = Field(
        0.0, ge=0, description="Linear learning-rate warmup over this many epochs' steps."
    )
    lr_patience: int | None = Field(
        None,
        ge=0,
        description="ReduceLROnPlateau patience in epochs (factor 0.1) on the validation loss; "
        "None: a constant learning rate (the paper's).",
    )

    @model_validator(mode="after")
    def _known(self) -> ForecastConfig:
        if self.horizon not in self.horizons:
            raise ValueError(
                f"forecast.horizon {self.horizon!r} is not one of {', '.join(self.horizons)}"
            )
        return self

    def pattern(self) -> HorizonConfig:
        """The horizon this config trains."""
        return self.horizons[self.horizon]

    def run_name(self) -> str:
        """Folder of this variant in the run: ``forecast-<horizon>[-stack][-nodistill]``."""
        name = f"forecast-{self.horizon}"
        name += "-stack" if self.temporal == "stack" else ""
        return name + ("-nodistill" if self.distill_weight == 0 else "")


class ForecastRunConfig(RunConfig):
    """Everything ``train run forecast`` needs; saved as ``<run>/<forecaster>/config.json``."""

    preset: str = Field(
        "tiny", description="Model sizes of the run's stage 1 (models/config.py PRESETS)."
    )
    model: ModelConfig = Field(
        default_factory=ModelConfig, description="Model sizes (from the preset)."
    )
    forecast: ForecastConfig = Field(
        default_factory=ForecastConfig, description="The forecaster and how it trains."
    )


def preset_defaults(name: str) -> dict[str, Any]:
    """The ForecastRunConfig fields a preset sets: the model sizes of the run's stage 1."""
    from clipcore.errors import ConfigError

    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return {"preset": name, "model": PRESETS[name].model_dump()}


#: Fields of the pipeline's config that forecasters of earlier releases saved in theirs.
_PIPELINE_ONLY = ("stages", "lr_patience")


def upgrade_forecast(config: dict[str, Any]) -> dict[str, Any]:
    """A forecaster's saved config (as a dict) in today's layout.

    Earlier releases saved the whole pipeline config (its stages too) with the ``forecast`` section.
    """
    config = upgrade_saved(config)
    if isinstance(config, dict):
        config = {k: v for k, v in config.items() if k not in _PIPELINE_ONLY}
    return config


class ForecastEval(EvalConfig):
    """``train eval forecast``: every forecaster of a run (``RUN/forecast-*/best.pt``)."""


class ForecastPredict(PredictConfig):
    """``train predict forecast``: one clip of PATH through one forecaster of the run."""

    clip: str | None = Field(None, description="Clip id [default: the first clip].")
    variant: str | None = Field(
        None, description="Forecaster folder, e.g. forecast-mid [default: the first]."
    )
    gif: bool = Field(False, description="Write a GIF instead of an MP4.")
