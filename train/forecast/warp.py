"""The geometric forecasting baseline: the last frame's labels splatted into the future frame.

Conventions are the project's (``docs/conventions.md``): OpenCV camera axes, planar depth in
metres, pixel centres at half-integers, ``cam_to_world`` maps camera to world, and the motion
from frame a to frame b in a's camera is ``inv(cam_to_world[a]) @ cam_to_world[b]``.

Constant velocity: the camera repeats the same rigid motion ``m`` (in its own frame) every
frame, ``cam_to_world[t + 1] = cam_to_world[t] @ m``. Two poses ``gap`` frames apart give
``m^gap``; the pose ``lead`` frames after the last one is ``m^lead = (m^gap)^(lead / gap)``,
taken exactly on SE(3) (matrix logarithm and exponential, a screw motion).

Splatting: every pixel of the last frame with its depth is lifted to 3D, moved into the target
camera and drawn into the pixel it falls in (``floor(u), floor(v)``); where several land, the
nearest wins (z-buffer). Pixels where nothing lands are ``unknown``. The static world moves
right in it; moving objects do not.
"""

from __future__ import annotations

import numpy as np
import torch

from clipcore.geometry import backproject, invert_pose, project, transform_points
from models.common import _hat, so3_exp, so3_log

UNKNOWN = 255


def se3_log(pose: np.ndarray) -> np.ndarray:
    """(4, 4) rigid transform -> twist (6,) = (v, omega) with ``se3_exp(twist) == pose``."""
    omega = so3_log(torch.from_numpy(pose[:3, :3]).double()).numpy()
    return np.concatenate([np.linalg.solve(_left_jacobian(omega), pose[:3, 3]), omega])


def se3_exp(twist: np.ndarray) -> np.ndarray:
    """Twist (6,) = (v, omega) -> (4, 4) rigid transform (the screw motion it generates)."""
    omega = np.asarray(twist[3:], np.float64)
    out = np.eye(4)
    out[:3, :3] = so3_exp(torch.from_numpy(omega)).numpy()
    out[:3, 3] = _left_jacobian(omega) @ np.asarray(twist[:3], np.float64)
    return out


def _left_jacobian(omega: np.ndarray) -> np.ndarray:
    """V = I + (1 - cos t) / t^2 K + (t - sin t) / t^3 K^2, K = hat(omega), t = |omega|."""
    theta2 = float(omega @ omega)
    k = _hat(torch.from_numpy(np.asarray(omega, np.float64))).numpy()
    if theta2 < 1e-10:
        a, b = 0.5 - theta2 / 24, 1 / 6 - theta2 / 120
    else:
        theta = np.sqrt(theta2)
        a, b = (1 - np.cos(theta)) / theta2, (theta - np.sin(theta)) / (theta2 * theta)
    return np.eye(3) + a * k + b * (k @ k)


def pose_power(pose: np.ndarray, power: float) -> np.ndarray:
    """``pose`` to a real ``power`` along its screw motion (0: identity, 2: pose @ pose)."""
    return se3_exp(power * se3_log(pose))


def extrapolate_motion(prev_to_last: np.ndarray, gap: int, lead: int) -> np.ndarray:
    """Motion from the last input frame to the target frame ``lead`` frames later.

    In the last frame's camera, from the motion ``prev_to_last`` over the ``gap`` frames before it.
    """
    return pose_power(prev_to_last, lead / gap)


def splat_labels(
    labels: np.ndarray, depth: np.ndarray, K: np.ndarray, motion: np.ndarray, unknown: int = UNKNOWN
) -> np.ndarray:
    """Forward-warp a (H, W) label map with its planar depth (metres) into another camera.

    The camera's pose in the source camera's frame is ``motion`` (4, 4); nearest pixel, z-buffer,
    ``unknown`` holes.
    """
    height, width = labels.shape
    points = transform_points(invert_pose(motion), backproject(depth, K))
    u, v, z = project(points, K)
    with np.errstate(invalid="ignore"):
        ok = (
            (z > 1e-6)
            & np.isfinite(u)
            & np.isfinite(v)
            & (u >= 0)
            & (u < width)
            & (v >= 0)
            & (v < height)
        )
    cols, rows = np.floor(u[ok]).astype(np.int64), np.floor(v[ok]).astype(np.int64)
    dst, z, src = rows * width + cols, z[ok], labels[ok]
    order = np.lexsort((z, dst))  # by destination pixel, nearest first
    dst, src = dst[order], src[order]
    first = np.ones(len(dst), bool)
    first[1:] = dst[1:] != dst[:-1]
    out = np.full(height * width, unknown, dtype=labels.dtype)
    out[dst[first]] = src[first]
    return out.reshape(height, width)


def warp_forecast(
    labels: np.ndarray,
    depth: np.ndarray,
    K: np.ndarray,
    motion: np.ndarray,
    fill: np.ndarray | None = None,
) -> tuple[np.ndarray, float]:
    """:func:`splat_labels`, holes filled from ``fill`` (default: ``labels``, i.e. zero motion).

    Returns the forecast and the fraction of pixels that were holes.
    """
    warped = splat_labels(labels, depth, K, motion)
    holes = warped == UNKNOWN
    warped[holes] = (labels if fill is None else fill)[holes]
    return warped, float(holes.mean())
