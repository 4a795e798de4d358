"""What the storage and write benchmarks share: CARLA-like frames and the PNG folder baseline.

The PNG folder is what ``carla.Image.save_to_disk`` produces: one BGRA PNG per sensor per frame
(RGB image; semantic tags in the red channel; depth encoded as R + G*256 + B*256^2), written
with OpenCV at its default level.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np

from clipcore.records import Clip, Frame


def encode_depth_png(depth: np.ndarray) -> np.ndarray:
    """Metres -> CARLA's 24-bit depth encoding as a BGRA image."""
    code = np.round(depth / 1000.0 * (256**3 - 1)).astype(np.uint32)
    r, g, b = code & 255, (code >> 8) & 255, (code >> 16) & 255
    return np.stack([b, g, r, np.full_like(r, 255)], -1).astype(np.uint8)


def write_frame_pngs(folder: Path, clip_id: str, f: Frame) -> None:
    """One frame's three PNGs: ``<clip>-<frame>-rgb.png``, ``-semantic.png``, ``-depth.png``."""
    stem = folder / f"{clip_id}-{f.frame:08d}"
    alpha = np.full(f.semantic.shape + (1,), 255, np.uint8)
    cv2.imwrite(f"{stem}-rgb.png", np.concatenate([f.rgb[..., ::-1], alpha], -1))
    tag = np.zeros(f.semantic.shape + (4,), np.uint8)
    tag[..., 2], tag[..., 3] = f.semantic, 255
    cv2.imwrite(f"{stem}-semantic.png", tag)
    cv2.imwrite(f"{stem}-depth.png", encode_depth_png(f.depth))


def write_pngs(folder: Path, clips: list[Clip]) -> None:
    """Every frame of ``clips`` as a PNG folder."""
    for clip in clips:
        for f in clip.frames:
            write_frame_pngs(folder, clip.clip_id, f)


def textured(clip: Clip, seed: int) -> Clip:
    """``clip`` with CARLA-like RGB: multi-scale texture fixed per clip, sensor noise per frame."""
    rng = np.random.default_rng(seed)
    height, width = clip.frames[0].size
    texture = np.zeros((height, width), np.float32)
    for cell, amplitude in ((2, 6.0), (8, 10.0), (32, 14.0)):
        small = rng.normal(
            0, amplitude, ((height + cell - 1) // cell, (width + cell - 1) // cell)
        ).astype(np.float32)
        texture += cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)
    frames = []
    for f in clip.frames:
        noise = rng.normal(0, 2.0, f.rgb.shape).astype(np.float32)
        rgb = np.clip(f.rgb.astype(np.float32) + texture[..., None] + noise, 0, 255).astype(
            np.uint8
        )
        frames.append(dataclasses.replace(f, rgb=rgb))
    return dataclasses.replace(clip, frames=tuple(frames))
