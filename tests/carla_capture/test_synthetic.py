"""The embedded simulator: deterministic, varied, and geometrically exact."""

from __future__ import annotations

import numpy as np
import pytest

from carla_capture.backends.synthetic import SyntheticBackend
from carla_capture.config import CaptureConfig, available_towns, load_town
from carla_capture.consistency import reprojection_agreement
from clipcore.geometry import FAR_PLANE_M, reproject
from clipcore.tags import STATIC_TAGS, TAG_ID


def _clip(town_dir, town="Town03", index=0, frames=3, seed=0):
    cfg = CaptureConfig(backend="synthetic", town=town, frames=frames, seed=seed, town_dir=town_dir)
    return SyntheticBackend(cfg, load_town(town, town_dir)).record_clip(index)


def test_same_inputs_same_pixels(tiny_towns):
    a, b = _clip(tiny_towns), _clip(tiny_towns)
    for fa, fb in zip(a.frames, b.frames, strict=True):
        assert np.array_equal(fa.rgb, fb.rgb) and np.array_equal(fa.depth, fb.depth)
        assert np.array_equal(fa.cam_to_world, fb.cam_to_world)
    other = _clip(tiny_towns, index=1)
    assert not np.array_equal(a.frames[0].rgb, other.frames[0].rgb)
    assert not np.array_equal(a.frames[0].rgb, _clip(tiny_towns, seed=1).frames[0].rgb)


def test_towns_look_different(small_towns):
    histograms = {}
    for town in available_towns(small_towns):
        tags = np.concatenate(
            [_clip(small_towns, town, i, frames=1).frames[0].semantic.ravel() for i in range(3)]
        )
        histograms[town] = np.bincount(tags, minlength=29) / tags.size
    towns = sorted(histograms)
    assert len(towns) == 8
    for i, a in enumerate(towns):
        for b in towns[i + 1 :]:
            assert np.abs(histograms[a] - histograms[b]).sum() > 0.02, (a, b)


def test_frames_have_valid_ranges_and_classes(small_towns):
    clip = _clip(small_towns, "Town10HD", frames=2)
    seen = set()
    for f in clip.frames:
        assert f.rgb.dtype == np.uint8 and f.rgb.shape == (128, 256, 3)
        assert f.depth.dtype == np.float32 and 0 < f.depth.min() and f.depth.max() <= FAR_PLANE_M
        sky = f.semantic == TAG_ID["Sky"]
        assert np.all(f.depth[sky] == FAR_PLANE_M)
        assert f.semantic.max() <= 28
        seen |= set(np.unique(f.semantic).tolist())
    assert {TAG_ID[n] for n in ("Roads", "Sidewalks", "Buildings", "Sky", "RoadLines")} <= seen
    # the camera moves forward between frames and the timestamps follow the frame numbers
    a, b = clip.frames
    assert np.linalg.norm(b.cam_to_world[:3, 3] - a.cam_to_world[:3, 3]) > 0.1
    assert b.timestamp - a.timestamp == pytest.approx((b.frame - a.frame) / clip.fps)


def _smooth_relative_errors(a, b, K):
    """Relative depth error of reprojected static pixels whose destination neighbourhood lies
    inside one planar face of the same class (same tag around, inverse depth locally affine)."""
    import cv2

    u, v, z = reproject(a.depth, K, a.cam_to_world, b.cam_to_world)
    inv = 1.0 / b.depth.astype(np.float64)
    flat = np.abs(cv2.Laplacian(inv, cv2.CV_64F, ksize=1)) < 1e-6 * inv.max()
    same = cv2.dilate(b.semantic, np.ones((3, 3))) == cv2.erode(b.semantic, np.ones((3, 3)))
    smooth = cv2.erode((flat & same).astype(np.uint8), np.ones((3, 3))).astype(bool)
    h, w = a.depth.shape
    x, y = u - 0.5, v - 0.5
    with np.errstate(invalid="ignore"):
        ok = (
            np.isin(a.semantic, list(STATIC_TAGS))
            & (a.depth < FAR_PLANE_M)
            & (x >= 0)
            & (x < w - 1)
            & (y >= 0)
            & (y < h - 1)
        )
    i, j = np.floor(x[ok]).astype(int), np.floor(y[ok]).astype(int)
    fx, fy = x[ok] - i, y[ok] - j
    sampled = (
        inv[j, i] * (1 - fx) * (1 - fy)
        + inv[j, i + 1] * fx * (1 - fy)
        + inv[j + 1, i] * (1 - fx) * fy
        + inv[j + 1, i + 1] * fx * fy
    )
    keep = smooth[j, i] & smooth[j, i + 1] & smooth[j + 1, i] & smooth[j + 1, i + 1]
    keep &= b.semantic[j, i] == a.semantic[ok]  # not occluded by another class (e.g. a passing car)
    return np.abs(sampled * z[ok] - 1.0)[keep]


@pytest.mark.parametrize("town,index", [("Town03", 0), ("Town01", 1), ("Town10HD", 2)])
def test_static_points_reproject_exactly(small_towns, town, index):
    clip = _clip(small_towns, town, index, frames=3)
    for a, b in zip(clip.frames[:-1], clip.frames[1:], strict=True):
        errors = _smooth_relative_errors(a, b, clip.intrinsics)
        assert errors.size > 5000
        # inside faces, depth + intrinsics + poses agree to float32 precision
        assert errors.max() < 1e-5
        # over all static pixels (edges and occlusions included), agreement stays high
        agree = reprojection_agreement(
            a.depth,
            a.semantic,
            a.cam_to_world,
            b.depth,
            b.semantic,
            b.cam_to_world,
            clip.intrinsics,
        )
        assert agree.depth_agree > 0.95 and agree.label_agree > 0.98


@pytest.mark.parametrize(
    "break_it,limit",
    [("flip_y_axis", 0.2), ("shift_10cm", 0.9), ("depth_in_cm", 0.1), ("next_frame_lag", 0.5)],
)
def test_reprojection_catches_broken_geometry(small_towns, break_it, limit):
    clip = _clip(small_towns, "Town03", 0, frames=3)
    a, b = clip.frames[0], clip.frames[1]
    depth_a, pose_b, b_frame = a.depth, b.cam_to_world.copy(), b
    if break_it == "flip_y_axis":
        pose_b[:3, 1] *= -1
    elif break_it == "shift_10cm":
        pose_b[:3, 3] += pose_b[:3, :3] @ [0.1, 0, 0]
    elif break_it == "depth_in_cm":
        depth_a = a.depth * 100
    else:  # destination images one frame late, with the destination pose of the right tick
        b_frame = clip.frames[2]
    good = reprojection_agreement(
        a.depth, a.semantic, a.cam_to_world, b.depth, b.semantic, b.cam_to_world, clip.intrinsics
    )
    bad = reprojection_agreement(
        depth_a,
        a.semantic,
        a.cam_to_world,
        b_frame.depth,
        b_frame.semantic,
        pose_b,
        clip.intrinsics,
    )
    assert good.depth_agree > 0.95
    assert bad.depth_agree < limit
