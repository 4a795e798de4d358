"""Photometric rotation refinement: on a rendered clip with known motion, a rotation that is off by
about a degree is brought back close to the truth, under a change of brightness too; a frame with
nothing to align keeps the estimate."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from carla_capture.backends.synthetic import SyntheticBackend
from carla_capture.config import CaptureConfig, load_town
from clipcore.geometry import invert_pose
from models.common import pose_from_vector, so3_log
from models.pose_refine import refine_rotation, refine_window


@pytest.fixture(scope="module")
def pair(small_towns):
    """Frames t-1, t (1, 3, H, W) in [0, 1], depth of t (1, 1, H, W), K (1, 3, 3), true motion."""
    cfg = CaptureConfig(backend="synthetic", town="Town03", frames=2, town_dir=small_towns)
    clip = SyntheticBackend(cfg, load_town("Town03", small_towns)).record_clip(2)
    rgb = torch.from_numpy(np.ascontiguousarray(clip.stack("rgb"))).permute(0, 3, 1, 2).float()
    depth = torch.from_numpy(np.array(clip.stack("depth")[1], dtype=np.float32))[None, None]
    c2w = clip.stack("cam_to_world")
    rel = torch.from_numpy(invert_pose(c2w[0]) @ c2w[1]).float()[None]
    K = torch.from_numpy(np.array(clip.intrinsics, dtype=np.float32))[None]
    return rgb[:1] / 255, rgb[1:] / 255, depth, K, rel


def _rotation_error_deg(pose: torch.Tensor, truth: torch.Tensor) -> float:
    difference = pose[:, :3, :3].transpose(1, 2) @ truth[:, :3, :3]
    return float(torch.rad2deg(so3_log(difference).norm(dim=-1)).max())


def _off(truth: torch.Tensor) -> torch.Tensor:
    """The true motion with its rotation off by about 1.6 degrees (yaw and pitch)."""
    error = torch.tensor([[0.0, 0.0, 0.0, 0.01, 0.025, 0.0]])
    return pose_from_vector(error) @ truth


@pytest.mark.parametrize(
    ("gain", "autocast"), [(1.0, False), (1.3, False), (1.0, True)]
)  # 1.3: frame t brighter (flicker); autocast: inside a bf16 autocast region, as training on CUDA
def test_refinement_recovers_the_rotation(pair, gain, autocast):
    prev, cur, depth, K, truth = pair
    start = _off(truth)
    assert _rotation_error_deg(start, truth) > 1.5
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        refined = refine_rotation(prev, cur * gain, depth, K, start, iterations=10)
    assert refined.dtype == start.dtype
    assert _rotation_error_deg(refined, truth) < 0.3
    # the translation is the estimate's
    torch.testing.assert_close(refined[:, :3, 3], start[:, :3, 3])


def test_nothing_to_align_keeps_the_estimate(pair):
    prev, cur, depth, K, truth = pair
    start = _off(truth)
    assert torch.equal(refine_rotation(prev, cur, depth, K, start, iterations=0), start)
    black = torch.zeros_like(cur)  # a dropped frame: no pose lowers the error
    assert torch.equal(refine_rotation(prev, black, depth, K, start, iterations=10), start)


def test_window_refines_every_pair_and_keeps_frame_zero(pair):
    prev, cur, depth, K, truth = pair
    window = torch.stack([prev[0], cur[0]])[None]  # (1, 2, 3, H, W)
    depths = torch.stack([depth[0], depth[0]])[None]
    rel = torch.stack([torch.eye(4), _off(truth)[0]])[None]
    refined = refine_window(window, depths, K, rel, iterations=10)
    assert torch.equal(refined[:, 0], rel[:, 0])
    assert _rotation_error_deg(refined[:, 1], truth) < 0.3
