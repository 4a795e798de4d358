"""Backward warping of a feature map from frame t-1 into frame t by depth and camera motion.

Conventions are the project's (docs/conventions.md): pixel centres at ``i + 0.5``, OpenCV camera
axes, planar depth in metres, and the relative pose ``rel_pose = inv(cam_to_world[t-1]) @
cam_to_world[t]`` (the motion from t-1 to t in t-1's camera), which maps a point in frame t's
camera coordinates into frame t-1's.

Each pixel of frame t is lifted with the depth **of frame t**, moved into frame t-1's camera
and projected there; the frame t-1 features are sampled at that point bilinearly
(``grid_sample``, differentiable in the features). A pixel is valid where the point lies in
front of frame t-1's camera and projects inside its image. Occlusion is not tested (the
memory's validity channel and its gates handle disocclusions as new content).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

MIN_Z_M = 1e-3


def scale_intrinsics(
    K: torch.Tensor, image_size: tuple[int, int], feature_size: tuple[int, int]
) -> torch.Tensor:
    """(..., 3, 3) intrinsics of an (H, W) image -> those of an (h, w) map covering the same view.

    With pixel centres at ``i + 0.5``, ``u' = u * w / W``: fx and cx scale by w / W, fy and cy
    by h / H.
    """
    sx = feature_size[1] / image_size[1]
    sy = feature_size[0] / image_size[0]
    scale = K.new_tensor([[sx, sx, sx], [sy, sy, sy], [1.0, 1.0, 1.0]])
    return K * scale


def warp_previous(
    prev: torch.Tensor, depth: torch.Tensor, K: torch.Tensor, rel_pose: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features of frame t-1 seen from frame t.

    prev (B, C, h, w); depth (B, 1, h, w) planar depth of frame t in metres; K (B, 3, 3)
    intrinsics at (h, w) (see :func:`scale_intrinsics`); rel_pose (B, 4, 4) motion t-1 -> t.
    Returns the warped features (B, C, h, w), zero where invalid, and the validity (B, 1, h, w)
    as 0 / 1 in ``prev``'s dtype.
    """
    b, _, h, w = prev.shape
    dtype = prev.dtype
    K, rel_pose, depth = K.to(torch.float32), rel_pose.to(torch.float32), depth.to(torch.float32)
    v, u = torch.meshgrid(
        torch.arange(h, device=prev.device, dtype=torch.float32) + 0.5,
        torch.arange(w, device=prev.device, dtype=torch.float32) + 0.5,
        indexing="ij",
    )
    pixels = torch.stack([u, v, torch.ones_like(u)]).reshape(1, 3, -1)  # (1, 3, h*w)
    rays = torch.linalg.inv(K) @ pixels  # (B, 3, h*w), z = 1
    points = rays * depth.reshape(b, 1, -1)
    moved = rel_pose[:, :3, :3] @ points + rel_pose[:, :3, 3:]
    z = moved[:, 2]
    projected = K @ moved
    safe_z = z.clamp_min(MIN_Z_M)
    px, py = projected[:, 0] / safe_z, projected[:, 1] / safe_z
    valid = (z > MIN_Z_M) & (px >= 0) & (px <= w) & (py >= 0) & (py <= h)
    grid = torch.stack([2 * px / w - 1, 2 * py / h - 1], -1).reshape(b, h, w, 2)
    grid = torch.where(valid.reshape(b, h, w, 1), grid, torch.zeros_like(grid))
    warped = F.grid_sample(
        prev.to(torch.float32), grid, mode="bilinear", padding_mode="border", align_corners=False
    )
    valid = valid.reshape(b, 1, h, w).to(torch.float32)
    return (warped * valid).to(dtype), valid.to(dtype)
