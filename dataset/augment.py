"""Sequence-consistent augmentations that keep labels, depth, intrinsics and poses exact.

Parameters are drawn once per window (:func:`draw`) and applied to every frame (:func:`apply`).
Geometry follows ``docs/conventions.md``: pixel centres at ``i + 0.5``.

- Horizontal flip: column i -> W-1-i, ``cx' = W - cx``; the camera's x axis and the world's
  x axis are both mirrored (``cam_to_world' = S @ cam_to_world @ M``, M = S = diag(-1, 1, 1, 1)),
  so poses stay proper rotations and ``rel_pose' = M @ rel_pose @ M``.
- Resized crop of box (x0, y0, w, h) to the output size: ``u' = (u - x0) * W'/w``, so
  ``fx' = fx * W'/w``, ``cx' = (cx - x0) * W'/w`` (same for y); RGB is resampled bilinearly,
  labels by nearest pixel centre. Depth is resampled by nearest pixel centre at depth edges
  and on the far plane, and inside faces by bilinear interpolation of inverse depth (exact on
  a plane; see ``dataset/resample.py``), so every output pixel's depth belongs to its own ray,
  reprojection stays exact, no "flying pixels" appear between surfaces and the sky stays
  exactly on the far plane (invalid) at any size.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np

from clipcore.geometry import invert_pose
from dataset.config import AugmentConfig
from dataset.resample import nearest_index, resample_depth

MIRROR = np.diag([-1.0, 1.0, 1.0, 1.0])


@dataclass(frozen=True)
class Draw:
    """One window's augmentation parameters."""

    flip: bool
    crop: tuple[float, float, float, float] | None  # x0, y0, w, h in pixels
    brightness: float
    contrast: float
    saturation: float
    hue: float
    drift: tuple[float, float]
    clutter: tuple[tuple[int, int, int, int, float], ...]  # x, y, w, h, grey level
    noise_sigma: float
    noise_seed: int


def relative_poses(cam_to_world: np.ndarray) -> np.ndarray:
    """(T, 4, 4) camera-to-world -> (T, 4, 4) motion t-1 -> t in t-1's camera (identity at 0)."""
    rel = np.repeat(np.eye(4)[None], len(cam_to_world), axis=0)
    rel[1:] = invert_pose(cam_to_world[:-1]) @ cam_to_world[1:]
    return rel


def draw(cfg: AugmentConfig, rng: np.random.Generator, height: int, width: int) -> Draw:
    """Draw the parameters of one window."""
    crop = None
    if rng.random() < cfg.crop_p:
        area = rng.uniform(*cfg.crop_scale) * height * width
        aspect = np.exp(rng.uniform(np.log(0.8), np.log(1.25))) * width / height
        w = float(np.clip(np.sqrt(area * aspect), 8, width))
        h = float(np.clip(w / aspect, 8, height))
        crop = (float(rng.uniform(0, width - w)), float(rng.uniform(0, height - h)), w, h)
    clutter: tuple = ()
    if rng.random() < cfg.clutter_p:
        clutter = tuple(
            (
                int(rng.integers(width)),
                int(rng.integers(height)),
                int(rng.integers(4, max(5, width // 6))),
                int(rng.integers(4, max(5, height // 6))),
                float(rng.uniform(0, 1)),
            )
            for _ in range(int(rng.integers(1, 5)))
        )
    return Draw(
        flip=bool(rng.random() < cfg.flip_p),
        crop=crop,
        brightness=float(rng.uniform(1 - cfg.brightness, 1 + cfg.brightness)),
        contrast=float(rng.uniform(1 - cfg.contrast, 1 + cfg.contrast)),
        saturation=float(rng.uniform(1 - cfg.saturation, 1 + cfg.saturation)),
        hue=float(rng.uniform(-cfg.hue, cfg.hue)),
        drift=(
            float(rng.uniform(-cfg.lighting_drift, cfg.lighting_drift)),
            float(rng.uniform(-cfg.lighting_drift, cfg.lighting_drift)),
        ),
        clutter=clutter,
        # uniform in [0, sigma], so clean frames are among those trained on (always sigma: a
        # short-trained model scored better on noisy than on clean frames, docs/training.md)
        noise_sigma=float(rng.uniform(0, cfg.noise_sigma)),
        noise_seed=int(rng.integers(2**31)),
    )


_LUMA = np.array([0.299, 0.587, 0.114], np.float32)
_RGB_TO_YIQ = np.array(
    [[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], np.float32
)
_YIQ_TO_RGB = np.linalg.inv(_RGB_TO_YIQ)
_GREY = np.tile(_LUMA, (3, 1))  # each output channel the luma
_EYE3 = np.eye(3, dtype=np.float32)


def colour_matrix(d: Draw) -> np.ndarray:
    """The 3x3 linear map of brightness, saturation and hue (rotation of the YIQ chroma plane)."""
    angle = d.hue * 2 * np.pi
    rot = np.array(
        [[1, 0, 0], [0, np.cos(angle), -np.sin(angle)], [0, np.sin(angle), np.cos(angle)]],
        np.float32,
    )
    hue = _YIQ_TO_RGB @ rot @ _RGB_TO_YIQ
    sat = d.saturation * _EYE3 + (1 - d.saturation) * _GREY
    return (d.brightness * sat @ hue).astype(np.float32)


def photometric(rgb: np.ndarray, d: Draw) -> np.ndarray:
    """(T, H, W, 3) float32 in [0, 1] -> jittered, drifting, cluttered, noisy.

    Same draw for all frames.
    """
    t = len(rgb)
    matrix = colour_matrix(d)
    drift = np.linspace(d.drift[0], d.drift[1], t, dtype=np.float32)
    out = np.empty_like(rgb)
    for k in range(t):
        frame = cv2.transform(rgb[k], matrix)
        mean = float(frame.mean())
        out[k] = cv2.addWeighted(
            frame, d.contrast, frame, 0.0, (1 - d.contrast) * mean + float(drift[k])
        )
    for x, y, w, h, grey in d.clutter:
        out[:, y : y + h, x : x + w] = grey
    if d.noise_sigma > 0:
        flat = out.reshape(-1, out.shape[-1])
        cv2.scaleAdd(gaussian_noise(d.noise_seed, flat.shape), d.noise_sigma, flat, dst=flat)
    return np.clip(out, 0, 1, out=out)


_BANK_SIZE = 1 << 23  # 8 Mi float32 (32 MiB): more than one 6-frame window at 512x256


@functools.lru_cache(maxsize=1)
def _noise_bank() -> np.ndarray:
    return np.random.default_rng(0x5EED).standard_normal(_BANK_SIZE, dtype=np.float32)


def gaussian_noise(seed: int, shape: tuple[int, ...]) -> np.ndarray:
    """Standard normal float32 noise of ``shape``, a pure function of ``seed``.

    A slice of a per-process bank drawn once, at a random offset (drawing fresh normals took most of
    a window's augmentation time). Larger requests are drawn directly.
    """
    n = int(np.prod(shape))
    start = noise_start(seed, n)
    if start is None:
        return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)
    return _noise_bank()[start : start + n].reshape(shape)


def noise_start(seed: int, n: int) -> int | None:
    """Where :func:`gaussian_noise`'s ``n`` values start in the bank (None: drawn directly)."""
    if n > _BANK_SIZE // 2:
        return None
    return int(np.random.default_rng(seed).integers(0, _BANK_SIZE - n + 1))


def noise_bank() -> np.ndarray:
    """The bank :func:`gaussian_noise` slices (read-only: shared by every caller)."""
    bank = _noise_bank()
    bank.flags.writeable = False
    return bank


def _nearest(
    images: np.ndarray, crop: tuple[float, float, float, float], size: tuple[int, int]
) -> np.ndarray:
    flat = nearest_index(crop, size, images.shape[1:3])
    return images.reshape(len(images), -1, *images.shape[3:])[:, flat]


def _depth(
    depth: np.ndarray, crop: tuple[float, float, float, float], size: tuple[int, int]
) -> np.ndarray:
    return resample_depth(depth, crop, size)


def _bilinear(
    rgb: np.ndarray, crop: tuple[float, float, float, float], size: tuple[int, int]
) -> np.ndarray:
    x0, y0, w, h = crop
    sx, sy = size[1] / w, size[0] / h
    affine = np.array(
        [[sx, 0, -x0 * sx + 0.5 * sx - 0.5], [0, sy, -y0 * sy + 0.5 * sy - 0.5]], np.float32
    )
    return np.stack(
        [
            cv2.warpAffine(
                f, affine, (size[1], size[0]), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
            )
            for f in rgb
        ]
    )


#: The draw that changes nothing (used to only resize a window).
IDENTITY = Draw(
    flip=False,
    crop=None,
    brightness=1.0,
    contrast=1.0,
    saturation=1.0,
    hue=0.0,
    drift=(0.0, 0.0),
    clutter=(),
    noise_sigma=0.0,
    noise_seed=0,
)


def output_crop(
    d: Draw, in_size: tuple[int, int], size: tuple[int, int] | None = None
) -> tuple[tuple[float, float, float, float] | None, tuple[int, int]]:
    """The source box a window is resampled from (None: kept as it is) and the output (H, W).

    The draw's crop, else the whole image when ``size`` differs from ``in_size`` (a resize).
    """
    in_h, in_w = in_size
    height, width = size or (in_h, in_w)
    if d.crop is not None:
        return d.crop, (height, width)
    whole = (0.0, 0.0, float(in_w), float(in_h))
    return (whole if (height, width) != (in_h, in_w) else None), (height, width)


def camera(
    d: Draw,
    K: np.ndarray,
    cam_to_world: np.ndarray,
    in_size: tuple[int, int],
    size: tuple[int, int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Intrinsics (3, 3) and camera poses (T, 4, 4) of a window after :func:`geometric`."""
    crop, (height, width) = output_crop(d, in_size, size)
    K = K.copy()
    if crop is not None:
        x0, y0, w, h = crop
        K[0, 0], K[0, 2] = K[0, 0] * width / w, (K[0, 2] - x0) * width / w
        K[1, 1], K[1, 2] = K[1, 1] * height / h, (K[1, 2] - y0) * height / h
    if d.flip:
        K[0, 2] = width - K[0, 2]
        cam_to_world = MIRROR @ cam_to_world @ MIRROR
    return K, np.ascontiguousarray(cam_to_world)


def geometric(
    d: Draw,
    rgb: np.ndarray,
    labels: np.ndarray,
    depth: np.ndarray,
    K: np.ndarray,
    cam_to_world: np.ndarray,
    size: tuple[int, int] | None = None,
) -> tuple[np.ndarray, ...]:
    """Crop (or just resize to ``size``) and flip a window.

    Rgb (T,H,W,3) float32, labels (T,H,W), depth (T,H,W), K (3,3), cam_to_world (T,4,4). Returns the
    same five, geometry kept exact.
    """
    in_size = labels.shape[1:]
    crop, out_size = output_crop(d, in_size, size)
    K, cam_to_world = camera(d, K, cam_to_world, in_size, size)
    if crop is not None:
        rgb = _bilinear(rgb, crop, out_size)
        labels, depth = _nearest(labels, crop, out_size), _depth(depth, crop, out_size)
    if d.flip:
        rgb, labels, depth = rgb[:, :, ::-1], labels[:, :, ::-1], depth[:, :, ::-1]
    return (
        np.ascontiguousarray(rgb, dtype=np.float32),
        np.ascontiguousarray(labels),
        np.ascontiguousarray(depth),
        K,
        cam_to_world,
    )


def apply(
    d: Draw,
    rgb: np.ndarray,
    labels: np.ndarray,
    depth: np.ndarray,
    K: np.ndarray,
    cam_to_world: np.ndarray,
    size: tuple[int, int] | None = None,
) -> tuple[np.ndarray, ...]:
    """Augment a window (see :func:`geometric`), then its colours (:func:`photometric`)."""
    rgb, labels, depth, K, cam_to_world = geometric(d, rgb, labels, depth, K, cam_to_world, size)
    return photometric(rgb, d), labels, depth, K, cam_to_world
