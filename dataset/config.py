"""``DatasetConfig`` and ``AugmentConfig``: what the training data pipeline reads and how it
augments."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class AugmentConfig(BaseModel):
    """Augmentations, drawn once per window and applied to every frame of it."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    noise_sigma: float = Field(0.05, ge=0, description="Gaussian noise std on RGB in [0, 1].")
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


#: Named presets: ``train`` augments, ``eval`` does not.
AUGMENT_PRESETS: dict[str, AugmentConfig | None] = {"train": AugmentConfig(), "eval": None}


class DatasetConfig(BaseModel):
    """Which windows of which split, mapped with which label map."""

    model_config = ConfigDict(extra="forbid")
    data_dir: Path = Field(
        Path("data"), description="Dataset folder holding split.json (run capture split)."
    )
    split: str = Field("train", description="Split name in the manifest.")
    window: int = Field(6, ge=1, description="Frames per window.")
    stride: int = Field(1, ge=1, description="Step between window starts when sampling='all'.")
    sampling: Literal["all", "random"] = Field(
        "all", description="Every window, or one random window per clip per epoch."
    )
    label_map: str = Field(
        "carla22", description="Label map name: carla22, cityscapes19, common12."
    )
    augment: Literal["train", "eval"] = Field("eval", description="Augmentation preset.")
    seed: int = Field(
        0, description="Seed of random windows and augmentations (with the epoch and index)."
    )
    size: tuple[int, int] | None = Field(
        None,
        description="(H, W) to resize windows to (intrinsics follow); None keeps the recorded "
        "size.",
    )
