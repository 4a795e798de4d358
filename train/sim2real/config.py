"""The sim2real task's config: the twin VAE, its two stages' loss weights and schedules.

Every loss term is a named weight of its stage (``train/sim2real/losses.py``), so ablations are
config changes (``--set stages.sim2real-tasks.losses.mmd=0``). A ``sim2real-tasks`` stage with no
weight on any translated term and ``from_vae = false`` is the source-only baseline. The source
frames are read through the same :class:`~dataset.config.DataConfig` as every task (labels in
``common12`` and no augmentation by default); ``target`` is the unlabelled target domain.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from clipcore.errors import ConfigError
from clipcore.settings import TextPath
from dataset.config import DataConfig
from models.config import SIM2REAL_PRESETS, Sim2RealModelConfig
from train.config import EvalConfig, PredictConfig, RunConfig

#: The loss terms of each stage (computed in train/sim2real/losses.py).
VAE_LOSSES = ("kl", "vae_recon", "mse_recon", "mmd", "cycle")
TASK_LOSSES = ("depth", "seg", "depth_translated", "seg_translated", "kl", "mmd")

Sim2RealStageName = Literal["sim2real-vae", "sim2real-tasks"]
SIM2REAL_STAGES = ("sim2real-vae", "sim2real-tasks")
#: The data settings sim2real reads unless told otherwise: the twin VAE's segmentation decoder
#: speaks common12, and its source frames are not augmented.
DATA_DEFAULTS = {"label_map": "common12", "augment": None}


class Sim2RealStage(BaseModel):
    """One sim2real stage: loss weights and schedule (Adam)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    losses: dict[str, float] = Field(
        description="Loss name -> weight (see train/sim2real/losses.py)."
    )
    epochs: int = Field(2, ge=1, description="Epochs (one epoch = one pass over the sim frames).")
    batch_size: int = Field(8, ge=1, description="Images per domain per batch.")
    lr: float = Field(1e-4, gt=0, description="Adam learning rate (betas 0.9, 0.999).")
    max_steps: int | None = Field(None, ge=1, description="Cap on optimiser steps per epoch.")
    warmup_epochs: float = Field(
        0.0, ge=0, description="Linear learning-rate warmup over this many epochs' steps."
    )
    frozen: tuple[str, ...] = Field(
        (), description="Submodules of the twin VAE not trained (e.g. decoders)."
    )
    from_vae: bool = Field(True, description="sim2real-tasks: start from sim2real-vae's weights.")
    validation: bool = Field(
        False,
        description="Validate every epoch on data.val_split (the weighted loss, eval mode; "
        "target images as in the first epoch): best.pt is the lowest, not the last epoch.",
    )
    lr_patience: int | None = Field(
        None,
        ge=0,
        description="ReduceLROnPlateau patience in epochs (factor 0.1) on the validation loss "
        "(needs validation); None: a constant learning rate.",
    )

    @model_validator(mode="after")
    def _schedule_reads_validation(self) -> Sim2RealStage:
        if self.lr_patience is not None and not self.validation:
            raise ValueError("lr_patience steps on the validation loss: set validation=true too")
        return self


def _data_defaults(value: Any) -> Any:
    """``data`` as a dict with sim2real's defaults where it does not say otherwise."""
    if isinstance(value, (str, Path)):
        value = {"root": value}
    return {**DATA_DEFAULTS, **value} if isinstance(value, dict) else value


class Sim2RealConfig(RunConfig):
    """Everything ``train run sim2real`` needs; saved as ``<out>/sim2real-config.json``."""

    data: DataConfig = Field(
        default_factory=lambda: DataConfig(**DATA_DEFAULTS),
        description="The source domain: sim frames with labels (dataset folder, train split, "
        "label map, loader workers); frames are resized to data.size, else model.input_size "
        "(multiples of 2**len(model.channels)); the val split only for a stage with validation.",
    )
    target: TextPath | None = Field(
        None, description="Target domain: folder of JPG/PNG images or of shards (unlabelled)."
    )
    out: TextPath = Field(Path("runs/sim2real"), description="Run folder.")
    preset: str = Field("tiny", description="Model and schedule preset: paper, small, tiny.")
    model: Sim2RealModelConfig = Field(
        default_factory=Sim2RealModelConfig, description="Model sizes."
    )
    stages: dict[Sim2RealStageName, Sim2RealStage] = Field(
        description="The two stages (from the preset)."
    )
    tensorboard: bool = Field(True, description="Write TensorBoard scalars of the losses.")

    @model_validator(mode="before")
    @classmethod
    def _earlier_layout(cls, value: Any) -> Any:
        """Sim2real's data defaults.

        Configs of earlier releases (``data`` a folder beside a flat ``label_map``, ``num_workers``
        and ``source_split``) still load.
        """
        if not isinstance(value, dict):
            return value
        value = dict(value)
        flat = {k: value.pop(k) for k in ("label_map", "num_workers") if k in value}
        if "source_split" in value:
            flat["train_split"] = value.pop("source_split")
        data = value.get("data", {})
        if isinstance(data, (str, Path)):
            data = {"root": data}
        if isinstance(data, dict):
            value["data"] = _data_defaults({**flat, **data})
        return value

    @field_validator("stages")
    @classmethod
    def _known_losses(cls, value: dict[str, Sim2RealStage]) -> dict[str, Sim2RealStage]:
        for name, known in (("sim2real-vae", VAE_LOSSES), ("sim2real-tasks", TASK_LOSSES)):
            if name in value:
                unknown = set(value[name].losses) - set(known)
                if unknown or not any(value[name].losses.values()):
                    raise ValueError(
                        f"{name} losses must weight some of {', '.join(known)}; "
                        f"got {sorted(value[name].losses)}"
                    )
        return value

    @model_validator(mode="after")
    def _frames_fit_the_model(self) -> Sim2RealConfig:
        """Packing halves the frame len(channels) times: sides must be multiples of 2**n."""
        step = 2 ** len(self.model.channels)
        if any(side % step for side in self.frame_size()):
            raise ValueError(
                f"frames of {list(self.frame_size())} do not fit the twin VAE: each side must "
                f"be a multiple of {step} (2 ** len(model.channels)); set data.size or "
                "model.input_size to one"
            )
        return self


def preset_defaults(preset: str) -> dict[str, Any]:
    """Model sizes and the paper's schedule (``paper``) or a CPU-sized one (``small``, ``tiny``)."""
    if preset not in SIM2REAL_PRESETS:
        raise ConfigError(
            f"unknown preset {preset!r}; choose one of: {', '.join(SIM2REAL_PRESETS)}"
        )
    vae = {"kl": 0.01, "vae_recon": 10.0, "mse_recon": 10.0, "mmd": 1.0, "cycle": 10.0}
    tasks = {
        "depth": 1.0,
        "seg": 1.0,
        "depth_translated": 1.0,
        "seg_translated": 1.0,
        "kl": 0.01,
        "mmd": 1.0,
    }
    epochs = {"paper": (300, 25), "small": (30, 10), "tiny": (2, 2)}[preset]
    return {
        "preset": preset,
        "model": SIM2REAL_PRESETS[preset].model_dump(),
        "stages": {
            "sim2real-vae": {"losses": vae, "epochs": epochs[0]},
            "sim2real-tasks": {"losses": tasks, "epochs": epochs[1], "frozen": ["decoders"]},
        },
    }


class Sim2RealEval(EvalConfig):
    """``train eval sim2real``: the twin VAE of a run (its sim2real-tasks stage)."""

    domain: Literal["real", "sim"] = Field("real", description="The encoder the images go through.")
    images: TextPath | None = Field(
        None, description="Folder of real images, scored against --depth-png instead of SPLIT."
    )
    depth_png: TextPath | None = Field(
        None, description="KITTI depth PNGs (16-bit, metres x 256) named like --images."
    )


class Sim2RealPredict(PredictConfig):
    """``train predict sim2real``: images of PATH (an image, or a folder of images or shards)."""

    path: TextPath | None = Field(
        None, description="An image, or a folder of images (JPG/PNG) or of shards."
    )
    domain: Literal["real", "sim"] = Field("real", description="The encoder the images go through.")
    rows: int = Field(4, ge=1, le=64, description="Images in the PNG (spread over PATH's).")
