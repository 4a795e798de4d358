"""Warping by depth and pose: on a rendered clip with known motion, frame t-1 warped into frame t
equals frame t's rendering where valid (at full and at feature resolution)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from carla_capture.backends.synthetic import SyntheticBackend
from carla_capture.config import CaptureConfig, load_town
from clipcore.geometry import backproject, invert_pose, transform_points
from dataset.resample import resample_depth
from models.warp import scale_intrinsics, warp_previous


@pytest.fixture(scope="module")
def clip(small_towns):
    cfg = CaptureConfig(backend="synthetic", town="Town03", frames=2, town_dir=small_towns)
    return SyntheticBackend(cfg, load_town("Town03", small_towns)).record_clip(2)


def _world_image(depth: np.ndarray, K: np.ndarray, cam_to_world: np.ndarray) -> torch.Tensor:
    """A rendering of the scene's world coordinates (3, H, W): one exact value per surface point."""
    return torch.from_numpy(
        transform_points(cam_to_world, backproject(depth.astype(np.float64), K))
    ).permute(2, 0, 1)


# bilinear sampling of a perspective rendering is exact only to O(pixel^2): coarser maps,
# wider tolerance
# (edges and disocclusions are a larger share of a coarse map)
@pytest.mark.parametrize(("size", "tol", "share"), [(None, 0.01, 0.85), ((32, 64), 0.03, 0.75)])
def test_warp_matches_rendered_target(clip, size, tol, share):
    depth, c2w, K = clip.stack("depth"), clip.stack("cam_to_world"), clip.intrinsics
    height, width = depth.shape[1:]
    if size is not None:
        depth = resample_depth(depth, (0.0, 0.0, float(width), float(height)), size)
        K = scale_intrinsics(torch.from_numpy(np.array(K)), (height, width), size).numpy()
    worlds = [_world_image(depth[t], K, c2w[t]).float() for t in range(2)]
    rel = torch.from_numpy(invert_pose(c2w[0]) @ c2w[1])[None]
    assert float(rel[0, 2, 3]) > 0.2, "the camera must move"
    target_depth = torch.from_numpy(np.array(depth[1], dtype=np.float32))[None, None]
    surface = target_depth[:, 0] < 1000  # sky has no surface point

    def agreement(pose: torch.Tensor) -> float:
        warped, valid = warp_previous(
            worlds[0][None], target_depth, torch.from_numpy(np.array(K))[None], pose
        )
        keep = surface & (valid[:, 0] > 0)
        assert keep.float().mean() > 0.5
        err = (warped[0] - worlds[1]).norm(dim=0)[keep[0]] / target_depth[0, 0][keep[0]]
        return float((err < tol).float().mean())

    assert agreement(rel) > share
    assert (
        agreement(torch.eye(4, dtype=torch.float64)[None]) < 0.1
    )  # no motion: wrong almost everywhere


def test_validity_and_gradient():
    prev = torch.randn(1, 4, 6, 8, requires_grad=True)
    K = torch.tensor([[[4.0, 0, 4], [0, 4.0, 3], [0, 0, 1]]])
    depth = torch.full((1, 1, 6, 8), 5.0)
    same, valid = warp_previous(prev, depth, K, torch.eye(4)[None])
    torch.testing.assert_close(same, prev)  # identity motion is the identity, exactly at centres
    assert bool((valid == 1).all())
    sideways = torch.eye(4)[None].clone()
    sideways[0, 0, 3] = 2.5  # frame t is 2.5 m to the right: 2 pixels at 5 m with fx = 4
    warped, valid = warp_previous(prev, depth, K, sideways)
    assert valid[0, 0, :, :6].all() and not valid[0, 0, :, 6:].any()
    torch.testing.assert_close(warped[..., :6], prev[..., 2:])
    assert bool((warped[0, :, :, 6:] == 0).all())
    warped.sum().backward()
    assert prev.grad is not None and prev.grad.abs().sum() > 0
