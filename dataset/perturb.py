"""Corruptions drawn independently for every frame: the situation a memory is for.

Applied to normalised windows (B, T, 3, H, W) as batched torch operations on the windows'
device (de-normalised to RGB in [0, 1], corrupted, re-normalised):

- sensor noise: Gaussian, standard deviation ``noise_sigma``;
- brightness flicker: every frame scaled by a factor drawn uniformly from
  [1 - flicker, 1 + flicker];
- occluders that appear per frame: ``occluders`` rectangles of a random flat colour in every
  frame, each side up to ``occluder_size`` of the image's side, at independent random places;
- occluders that move: ``moving_occluders`` rectangles per window that keep their size and
  colour and cross the image at a constant random speed (up to ``occluder_speed`` of the image
  side per frame);
- frame dropouts: a frame replaced by black with probability ``dropout_p``, for 1 or 2 frames.

``window_p`` is the share of windows that are corrupted at all (training mixes clean windows
in; evaluation corrupts every window). Every draw derives from (``Perturbation.seed``, the
window's key): a key is a tuple of integers, (window index) at evaluation and (run seed, epoch,
window index) in training, so every model sees the same corrupted windows and a resumed run the
same draws.
:func:`corrupt` also returns where the image is hidden (occluders and dropped frames), for
accuracy under the occluders.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from clipcore.normalize import denormalize, normalize
from dataset.config import Perturbation


@dataclass(frozen=True)
class _Draw:
    """One window's corruption.

    Per frame (T,) gains, (T, N, 4) boxes y0, y1, x0, x1 in pixels, (T, N, 3) colours, (T,) dropped
    frames, the noise seed and whether anything applies.
    """

    gain: np.ndarray
    boxes: np.ndarray
    colours: np.ndarray
    dropped: np.ndarray
    noise_seed: int
    on: bool


def _boxes_per_frame(
    p: Perturbation, rng: np.random.Generator, t: int, h: int, w: int
) -> tuple[np.ndarray, np.ndarray]:
    boxes, colours = np.zeros((t, p.occluders, 4), np.int64), np.zeros((t, p.occluders, 3))
    for k in range(t):
        for n in range(p.occluders):
            oh = max(1, int(rng.uniform(0.3, 1.0) * p.occluder_size * h))
            ow = max(1, int(rng.uniform(0.3, 1.0) * p.occluder_size * w))
            y, x = int(rng.integers(0, h - oh + 1)), int(rng.integers(0, w - ow + 1))
            boxes[k, n] = (y, y + oh, x, x + ow)
            colours[k, n] = rng.uniform(0, 1, 3)
    return boxes, colours


def _moving_boxes(
    p: Perturbation, rng: np.random.Generator, t: int, h: int, w: int
) -> tuple[np.ndarray, np.ndarray]:
    boxes = np.zeros((t, p.moving_occluders, 4), np.int64)
    colours = np.zeros((t, p.moving_occluders, 3))
    frames = np.arange(t)
    for n in range(p.moving_occluders):
        oh = max(1, int(rng.uniform(0.3, 1.0) * p.occluder_size * h))
        ow = max(1, int(rng.uniform(0.3, 1.0) * p.occluder_size * w))
        y0, x0 = rng.uniform(0, h - oh), rng.uniform(0, w - ow)
        vy, vx = rng.uniform(-1, 1, 2) * p.occluder_speed * np.array([h, w])
        y = np.clip(np.round(y0 + vy * frames), 0, h - oh).astype(np.int64)
        x = np.clip(np.round(x0 + vx * frames), 0, w - ow).astype(np.int64)
        boxes[:, n] = np.stack([y, y + oh, x, x + ow], 1)
        colours[:, n] = rng.uniform(0, 1, 3)
    return boxes, colours


def _dropped(p: Perturbation, rng: np.random.Generator, t: int) -> np.ndarray:
    dropped = np.zeros(t, bool)
    for k in range(t):
        if rng.random() < p.dropout_p:
            dropped[k : k + int(rng.integers(1, 3))] = True
    return dropped


def draw(p: Perturbation, key: Sequence[int], t: int, h: int, w: int) -> _Draw:
    """The corruption of the window with ``key`` (T frames of H x W).

    A function of (``p.seed``, ``key``) alone.
    """
    rng = np.random.default_rng([p.seed, *(int(k) for k in key)])
    on = bool(rng.random() < p.window_p)
    gain = rng.uniform(1 - p.flicker, 1 + p.flicker, t)
    still, still_colours = _boxes_per_frame(p, rng, t, h, w)
    moving, moving_colours = _moving_boxes(p, rng, t, h, w)
    dropped = _dropped(p, rng, t)
    return _Draw(
        gain,
        np.concatenate([still, moving], 1),
        np.concatenate([still_colours, moving_colours], 1),
        dropped,
        int(rng.integers(2**62)),
        on,
    )


def corrupt(
    rgb: torch.Tensor, p: Perturbation, keys: Sequence[Sequence[int]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Corrupt normalised windows (B, T, 3, H, W), one key per window.

    Returns the windows corrupted (same shape, dtype and device) and where the image is hidden (B,
    T, H, W) bool.
    """
    b, t, _, h, w = rgb.shape
    draws = [draw(p, key, t, h, w) for key in keys]
    device = rgb.device
    on = torch.tensor([d.on for d in draws], device=device)
    gain = torch.from_numpy(np.stack([d.gain for d in draws])).float().to(device)
    frames = denormalize(rgb.float()) * torch.where(on[:, None], gain, 1.0)[..., None, None, None]
    noise = torch.stack(
        [
            torch.randn(
                (t, 3, h, w),
                generator=torch.Generator(device).manual_seed(d.noise_seed),
                device=device,
            )
            for d in draws
        ]
    )
    frames = frames + p.noise_sigma * on.float()[:, None, None, None, None] * noise
    hidden = torch.zeros(b, t, h, w, dtype=torch.bool, device=device)
    if draws[0].boxes.shape[1]:  # any rectangles
        frames, hidden = _paint(frames, hidden, draws, on)
    dropped = torch.from_numpy(np.stack([d.dropped for d in draws])).to(device) & on[:, None]
    frames = torch.where(dropped[..., None, None, None], 0.0, frames)
    hidden |= dropped[..., None, None]
    return normalize(frames.clamp(0, 1)).to(rgb.dtype), hidden


def _paint(
    frames: torch.Tensor, hidden: torch.Tensor, draws: list[_Draw], on: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat-coloured rectangles painted into ``frames`` (B, T, 3, H, W), in order."""
    device = frames.device
    boxes = torch.from_numpy(np.stack([d.boxes for d in draws])).to(device)  # (B, T, N, 4)
    colours = torch.from_numpy(np.stack([d.colours for d in draws])).float().to(device)
    ys = torch.arange(frames.shape[-2], device=device)
    xs = torch.arange(frames.shape[-1], device=device)
    for n in range(boxes.shape[2]):
        y0, y1, x0, x1 = (boxes[:, :, n, i, None, None] for i in range(4))
        inside = (ys[:, None] >= y0) & (ys[:, None] < y1) & (xs >= x0) & (xs < x1)
        inside &= on[:, None, None, None]
        frames = torch.where(inside[:, :, None], colours[:, :, n, :, None, None], frames)
        hidden |= inside
    return frames, hidden
