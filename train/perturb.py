"""Test-time corruptions, drawn independently for every frame: the situation a memory is for.

Applied to RGB in [0, 1] (the normalised frames are de-normalised, corrupted, re-normalised):

- sensor noise: Gaussian, standard deviation ``noise_sigma``;
- brightness flicker: every frame scaled by a factor drawn uniformly from
  [1 - flicker, 1 + flicker];
- occluders: ``occluders`` rectangles per frame of a random flat colour, each side up to
  ``occluder_size`` of the image's side, at random places.

Every draw derives from (seed, window index, frame), so every model sees the same corrupted clips.
"""

from __future__ import annotations

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from clipcore.normalize import denormalize, normalize


class Perturbation(BaseModel):
    """Strengths of the per-frame corruptions."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    noise_sigma: float = Field(0.08, ge=0, description="Gaussian noise std in RGB [0, 1] units.")
    flicker: float = Field(
        0.35, ge=0, lt=1, description="Brightness factor drawn from [1 - flicker, 1 + flicker]."
    )
    occluders: int = Field(2, ge=0, description="Occluding rectangles per frame.")
    occluder_size: float = Field(
        0.25, gt=0, le=1, description="Largest occluder side, as a share of the image side."
    )
    seed: int = Field(0, description="Seed of all draws.")


def perturb_window(rgb: torch.Tensor, p: Perturbation, index: int) -> torch.Tensor:
    """(T, 3, H, W) normalised frames -> the same frames corrupted independently per frame."""
    t, _, h, w = rgb.shape
    frames = denormalize(rgb.float()).clone()
    for k in range(t):
        rng = np.random.default_rng([p.seed, index, k])
        gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
        frame = frames[k] * float(rng.uniform(1 - p.flicker, 1 + p.flicker))
        frame = frame + p.noise_sigma * torch.randn(frame.shape, generator=gen)
        for _ in range(p.occluders):
            oh = max(1, int(rng.uniform(0.3, 1.0) * p.occluder_size * h))
            ow = max(1, int(rng.uniform(0.3, 1.0) * p.occluder_size * w))
            y, x = int(rng.integers(0, h - oh + 1)), int(rng.integers(0, w - ow + 1))
            frame[:, y : y + oh, x : x + ow] = torch.from_numpy(
                rng.uniform(0, 1, (3, 1, 1))
            ).float()
        frames[k] = frame.clamp(0, 1)
    return normalize(frames).to(rgb.dtype)
