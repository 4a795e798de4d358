"""Photometric refinement of the ego-motion's rotation, for the memory's estimated alignment.

The ego-motion filter reads the segmentation backbone's coarse embeddings (stride 16), and its
rotation is its weak part: on the embedded simulator's clips its error per frame is of the order
of the rotation itself (about 1 degree, 1 to 2 pixels at 96 x 192), so a memory warped by it can
land worse than one left in place. Before the estimated alignment warps a memory, this module
corrects that rotation the way direct visual odometry does: frame t-1 is warped into frame t by
the frame's single-frame depth and the candidate pose (``models/warp.py``), and a few
Gauss-Newton steps on the three rotation parameters lower the robust (Huber) photometric error

    E(R) = sum_p rho(I_t(p) - I_{t-1}(warp(p; depth_t(p), R, t)))

over the valid pixels, at 1 / :data:`REFINE_SCALE` of the frame. The translation stays the
filter's: it is weakly constrained by a small, noisy frame (refining it too made it worse on
corrupted clips of the validation town, while the rotation improved on clean and corrupted).
Each frame is standardised per channel first, so a change of brightness between frames (flicker)
does not read as motion. The refined pose is kept only where it lowers the photometric error at
full resolution; elsewhere (a black frame, a frame mostly occluded) the filter's pose stays.

The Jacobian is numerical (one extra warp per parameter and step); everything runs without
gradients: the pose places the memory, it is not trained through it.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch
import torch.nn.functional as F

from models.common import so3_exp
from models.warp import scale_intrinsics, warp_previous

#: The refinement runs at 1 / this of the frame (a wider basin, less noise, 4x fewer pixels).
REFINE_SCALE = 2
#: Huber threshold of the photometric residual, in standard deviations of the frame.
HUBER = 0.2
#: A frame whose values spread less than this (standard deviation) has nothing to align.
FLAT = 1e-3
#: Largest change of a rotation parameter per step (radians, about 3 degrees): it corrects, it
#: does not search.
MAX_STEP_RAD = 0.05
#: Step (radians) of the numerical derivative of each rotation parameter.
EPSILON_RAD = 1e-3


def standardise(x: torch.Tensor) -> torch.Tensor:
    """Frames (N, C, H, W) with each channel at zero mean and unit standard deviation."""
    mean, std = x.mean((2, 3), keepdim=True), x.std((2, 3), keepdim=True)
    return (x - mean) / std.clamp_min(FLAT)


def _residual(
    prev: torch.Tensor, cur: torch.Tensor, depth: torch.Tensor, K: torch.Tensor, pose: torch.Tensor
) -> torch.Tensor:
    """The previous frame warped into the current one, minus it; zero where invalid (N, C*H*W)."""
    warped, valid = warp_previous(prev, depth, K, pose)
    return ((warped - cur) * valid).flatten(1)


def _rotate(pose: torch.Tensor, omega: torch.Tensor) -> torch.Tensor:
    """``pose`` (N, 4, 4), its rotation turned by ``omega`` (N, 3) radians, its translation kept."""
    out = pose.clone()
    out[:, :3, :3] = so3_exp(omega) @ pose[:, :3, :3]
    return out


def _rotation_step(
    prev: torch.Tensor, cur: torch.Tensor, depth: torch.Tensor, K: torch.Tensor, pose: torch.Tensor
) -> torch.Tensor:
    """One Gauss-Newton step (iteratively reweighted for Huber): the pose turned (N, 4, 4).

    The residual at the pose and at the pose turned by :data:`EPSILON_RAD` about each axis are
    one batched warp (4 N frames): the same values as four warps, at a quarter of the calls.
    """
    n = pose.shape[0]
    delta = pose.new_zeros(4, n, 3)
    for k in range(3):
        delta[k + 1, :, k] = EPSILON_RAD
    poses = torch.cat([pose, *(_rotate(pose, delta[k]) for k in range(1, 4))])
    residuals = _residual(
        *(x.repeat(4, *(1,) * (x.dim() - 1)) for x in (prev, cur, depth, K)), poses
    ).unflatten(0, (4, n))
    r = residuals[0]
    weight = (HUBER / r.abs().clamp_min(1e-6)).clamp(max=1.0)
    J = ((residuals[1:] - r) / EPSILON_RAD).permute(1, 2, 0).contiguous()  # (N, P, 3)
    weighted = J * weight[..., None]
    A = weighted.transpose(1, 2) @ J + 1e-6 * torch.eye(3, device=J.device)
    g = weighted.transpose(1, 2) @ r[..., None]
    step, info = torch.linalg.solve_ex(A, g)
    step = -step[..., 0]
    solved = (info == 0) & torch.isfinite(step).all(-1)  # e.g. nothing valid to compare: no step
    step = torch.where(solved[:, None], step, 0.0).clamp(-MAX_STEP_RAD, MAX_STEP_RAD)
    return _rotate(pose, step)


def photometric_error(
    prev: torch.Tensor, cur: torch.Tensor, depth: torch.Tensor, K: torch.Tensor, pose: torch.Tensor
) -> torch.Tensor:
    """Mean absolute difference (N,) over the valid pixels of ``cur`` and ``prev`` warped into it.

    prev, cur (N, C, H, W) frames t-1 and t; depth (N, 1, H, W) planar depth of frame t, metres;
    K (N, 3, 3) at (H, W); pose (N, 4, 4) the motion t-1 -> t (:func:`models.warp.warp_previous`).
    """
    warped, valid = warp_previous(prev, depth, K, pose)
    error = ((warped - cur).abs().mean(1, keepdim=True) * valid).sum((1, 2, 3))
    return error / valid.sum((1, 2, 3)).clamp_min(1)


@torch.no_grad()
def refine_rotation(
    prev: torch.Tensor,
    cur: torch.Tensor,
    depth: torch.Tensor,
    intrinsics: torch.Tensor,
    rel_pose: torch.Tensor,
    iterations: int,
) -> torch.Tensor:
    """The motion t-1 -> t with its rotation refined photometrically.

    prev, cur (N, 3, H, W) frames t-1 and t (any normalisation); depth (N, 1, H, W) planar depth
    of frame t, metres; intrinsics (N, 3, 3) at (H, W); rel_pose (N, 4, 4) the estimate
    (docs/conventions.md). Returns (N, 4, 4) in rel_pose's dtype: the refined motion where it
    lowers the photometric error, the estimate elsewhere; the estimate itself for ``iterations`` 0.
    Always in float32, also under autocast (a numerical derivative needs the precision).
    """
    if iterations == 0:
        return rel_pose
    with _autocast_off(cur.device.type):
        refined = _refine(
            prev.float(),
            cur.float(),
            depth.float(),
            intrinsics.float(),
            rel_pose.float(),
            iterations,
        )
    return refined.to(rel_pose.dtype)


def _autocast_off(device: str) -> AbstractContextManager:
    """A region where autocast is off on ``device`` (a no-op where it has none, e.g. meta)."""
    try:
        return torch.autocast(device, enabled=False)
    except RuntimeError:
        return nullcontext()


def _refine(
    prev: torch.Tensor,
    cur: torch.Tensor,
    depth: torch.Tensor,
    K: torch.Tensor,
    start: torch.Tensor,
    iterations: int,
) -> torch.Tensor:
    """:func:`refine_rotation` on float32 inputs."""
    h, w = cur.shape[-2:]
    raw_spread = [x.flatten(1).std(1) for x in (prev, cur)]
    size = (max(1, h // REFINE_SCALE), max(1, w // REFINE_SCALE))
    prev, cur = standardise(prev), standardise(cur)
    inverse = 1.0 / depth.clamp_min(1e-3)  # averaged as inverse depth, as the memories' warp does
    small = [F.interpolate(x, size=size, mode="area") for x in (prev, cur, inverse)]
    small_K = scale_intrinsics(K, (h, w), size)
    pose = start
    for _ in range(iterations):
        pose = _rotation_step(small[0], small[1], 1.0 / small[2], small_K, pose)
    informative = (raw_spread[0] > FLAT) & (raw_spread[1] > FLAT)  # not a black or flat frame
    better = photometric_error(prev, cur, depth, K, pose) < photometric_error(
        prev, cur, depth, K, start
    )
    better = better & informative
    return torch.where(better[:, None, None], pose, start)


def refine_window(
    window: torch.Tensor,
    depth: torch.Tensor,
    intrinsics: torch.Tensor,
    rel_pose: torch.Tensor,
    iterations: int,
) -> torch.Tensor:
    """:func:`refine_rotation` for every consecutive pair of a window.

    window (B, T, 3, H, W); depth (B, T, 1, H, W) metres; intrinsics (B, 3, 3); rel_pose
    (B, T, 4, 4) with frame 0's (the identity) kept. Returns (B, T, 4, 4).
    """
    b, t = window.shape[:2]
    if iterations == 0 or t < 2:
        return rel_pose
    K = intrinsics[:, None].expand(b, t - 1, 3, 3).flatten(0, 1)
    refined = refine_rotation(
        window[:, :-1].flatten(0, 1),
        window[:, 1:].flatten(0, 1),
        depth[:, 1:].flatten(0, 1),
        K,
        rel_pose[:, 1:].flatten(0, 1),
        iterations,
    )
    return torch.cat([rel_pose[:, :1], refined.unflatten(0, (b, t - 1))], 1)
