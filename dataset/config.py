"""``DataConfig`` and ``AugmentConfig``: what the training data pipeline reads and augments."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from clipcore.settings import FrameSize, TextPath


class AugmentConfig(BaseModel):
    """Augmentations, drawn once per window and applied to every frame of it."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    noise_sigma: float = Field(
        0.05,
        ge=0,
        description="Largest Gaussian noise std on RGB in [0, 1]; each window's std is drawn "
        "uniformly in [0, this].",
    )
    brightness: float = Field(0.3, ge=0, description="Brightness factor range 1 +- this.")
    contrast: float = Field(0.3, ge=0, description="Contrast factor range 1 +- this.")
    saturation: float = Field(0.3, ge=0, description="Saturation factor range 1 +- this.")
    hue: float = Field(
        0.05, ge=0, le=0.5, description="Hue shift range +- this (fraction of the colour circle)."
    )
    lighting_drift: float = Field(
        0.1, ge=0, description="Brightness offset that drifts linearly across the window, +- this."
    )
    clutter_p: float = Field(
        0.25, ge=0, le=1, description="Probability of occluding clutter (blobs fixed on the lens)."
    )
    flip_p: float = Field(0.5, ge=0, le=1, description="Probability of a horizontal flip.")
    crop_p: float = Field(0.5, ge=0, le=1, description="Probability of a random resized crop.")
    crop_scale: tuple[float, float] = Field(
        (0.5, 1.0), description="Crop area range as a share of the image."
    )

    @field_validator("crop_scale")
    @classmethod
    def _scale_range(cls, value: tuple[float, float]) -> tuple[float, float]:
        low, high = value
        if not 0 < low <= high <= 1:
            raise ValueError(f"must be (low, high) with 0 < low <= high <= 1, got {list(value)}")
        return value


class Perturbation(BaseModel):
    """Strengths of the per-frame corruptions (the defaults: ``train eval --perturbed``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    noise_sigma: float = Field(0.08, ge=0, description="Gaussian noise std in RGB [0, 1] units.")
    flicker: float = Field(
        0.35, ge=0, lt=1, description="Brightness factor drawn from [1 - flicker, 1 + flicker]."
    )
    occluders: int = Field(2, ge=0, description="Occluding rectangles per frame, placed anew.")
    occluder_size: float = Field(
        0.25, gt=0, le=1, description="Largest occluder side, as a share of the image side."
    )
    moving_occluders: int = Field(
        0, ge=0, description="Occluding rectangles per window that move across the frames."
    )
    occluder_speed: float = Field(
        0.1, ge=0, le=1, description="Largest speed of a moving occluder, image sides per frame."
    )
    dropout_p: float = Field(
        0.0, ge=0, le=1, description="Probability that a frame (and maybe the next) is black."
    )
    window_p: float = Field(1.0, ge=0, le=1, description="Share of windows corrupted at all.")
    seed: int = Field(0, ge=0, description="Seed of all draws.")


class DataConfig(BaseModel):
    """The training data.

    Which dataset and splits, the label map, the frame size the models see, the augmentations of the
    training split and the loader's workers.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    root: TextPath = Field(
        Path("data"), description="Dataset folder holding split.json (run capture split)."
    )
    label_map: str = Field(
        "carla22",
        description="Label map of the segmentation targets: carla22, cityscapes19, "
        "common12 (the segmentation head follows its class count).",
    )
    size: FrameSize | None = Field(
        None,
        description="(H, W) of the frames the models see (intrinsics follow); default: the "
        "model's input_size.",
    )

    train_split: str = Field("train", description="Manifest split to train on.")
    val_split: str = Field(
        "val",
        description="Manifest split for validation, checkpoint selection and the LR schedule.",
    )
    augment: AugmentConfig | None = Field(
        default_factory=AugmentConfig,
        description="Augmentations of the training split (validation is never augmented); "
        "false turns them off.",
    )
    augment_on: Literal["loader", "device"] = Field(
        "loader",
        description="Where training windows are augmented and normalised: 'loader' (the "
        "workers, on the CPU) or 'device' (workers only decode; the batch is augmented with "
        "the same draws on the device the model trains on, e.g. the GPU).",
    )
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes.")

    @field_validator("augment", mode="before")
    @classmethod
    def _augment_switch(cls, value: Any) -> Any:
        """``true`` / ``false`` (a config file's switch) mean the default augmentations / none."""
        if isinstance(value, bool):
            return AugmentConfig() if value else None
        return value
