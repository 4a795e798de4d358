"""Second appearance of the embedded simulator: a visible domain gap for sim2real experiments.

``default`` is the renderer's own look (and leaves its pixels untouched). ``textured`` repaints
the same scene as another "camera in another world" would see it: other surface colours,
procedural textures on every surface, warmer low-contrast lighting, a slight blur, sensor
noise and vignetting. Geometry, tags, depth and poses are unchanged, so labels stay exact.
Deterministic: the noise is seeded by the frame number.
"""

from __future__ import annotations

import cv2
import numpy as np

from clipcore.tags import TAG_ID

APPEARANCES = ("default", "textured")

#: Per-tag colour multipliers (RGB) of the ``textured`` look.
_TINT = {
    "Roads": (1.25, 1.0, 0.8),
    "RoadLines": (1.0, 0.95, 0.6),
    "Sidewalks": (0.9, 1.0, 1.15),
    "Buildings": (1.3, 0.85, 0.7),
    "Walls": (1.2, 0.9, 0.8),
    "Vegetation": (0.75, 1.15, 0.55),
    "Terrain": (1.2, 1.05, 0.65),
    "Ground": (1.2, 1.05, 0.7),
    "Sky": (1.15, 0.95, 0.85),
    "Car": (0.8, 0.9, 1.3),
    "Truck": (1.1, 1.1, 0.8),
    "Bus": (0.9, 1.2, 1.0),
    "Poles": (0.7, 0.7, 0.8),
}
_TINT_LUT = np.ones((256, 3), np.float32)
for _name, _rgb in _TINT.items():
    _TINT_LUT[TAG_ID[_name]] = _rgb


def _texture(height: int, width: int, depth: np.ndarray, tags: np.ndarray) -> np.ndarray:
    """(H, W) multiplicative texture.

    Stripes whose frequency follows inverse depth (so they shrink with distance like surface
    detail), a per-tag phase, and a fixed grain.
    """
    v, u = np.mgrid[0:height, 0:width].astype(np.float32)
    inv = 8.0 / np.maximum(depth, 1.0)
    phase = tags.astype(np.float32) * 0.7
    stripes = np.sin(u * 0.9 * inv + phase) * np.sin(v * 1.3 * inv + 2 * phase)
    grain = np.random.default_rng(11).uniform(-1, 1, (height, width)).astype(np.float32)
    sky = tags == TAG_ID["Sky"]
    tex = 1.0 + 0.18 * stripes + 0.08 * grain
    tex[sky] = 1.0 + 0.03 * grain[sky]
    return tex


def apply_appearance(
    name: str, rgb: np.ndarray, tags: np.ndarray, depth: np.ndarray, frame: int
) -> np.ndarray:
    """RGB (H, W, 3) uint8 of the scene in appearance ``name`` (``default``: ``rgb`` itself)."""
    if name == "default":
        return rgb
    if name != "textured":
        raise ValueError(f"unknown appearance {name!r}; choose one of: {', '.join(APPEARANCES)}")
    height, width = tags.shape
    img = rgb.astype(np.float32) / 255.0
    img = img * _TINT_LUT[tags] * _texture(height, width, depth, tags)[..., None]
    # warmer, hazier light with lower contrast and a lifted black level
    img = 0.08 + 0.8 * img**0.8 * np.array([1.08, 0.98, 0.85], np.float32)
    img = cv2.GaussianBlur(img, (0, 0), sigmaX=max(0.6, width / 400))
    v, u = np.mgrid[0:height, 0:width].astype(np.float32)
    r2 = ((u - width / 2) / (width / 2)) ** 2 + ((v - height / 2) / (height / 2)) ** 2
    img = img * (1.0 - 0.35 * r2 / 2)[..., None]
    noise = np.random.default_rng(int(frame)).normal(0.0, 0.03, img.shape).astype(np.float32)
    return np.clip((img + noise) * 255.0, 0, 255).astype(np.uint8)
