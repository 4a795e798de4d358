"""A view blocked by a vehicle is neither recorded by the simulator nor failed by verify as a
stalled
camera; a stalled camera still is."""

from __future__ import annotations

import dataclasses

import numpy as np

from carla_capture.backends.synthetic import SyntheticBackend
from carla_capture.backends.synthetic.traffic import clear_path, plan_route, spawn_actors
from carla_capture.config import CaptureConfig, VerifyConfig, load_town
from carla_capture.verify import verify_clip
from clipcore.tags import TAG_ID

VEHICLES = [TAG_ID[n] for n in ("Car", "Truck", "Bus", "Motorcycle", "Bicycle")]


def test_reported_truck_clip_is_clear_and_passes(tiny_towns):
    """``--town Town01 --frames 10 --seed 2``, clip 11 drove into a truck that filled 87 % of the
    view."""
    cfg = CaptureConfig(backend="synthetic", town="Town01", frames=10, seed=2, town_dir=tiny_towns)
    clip = SyntheticBackend(cfg, load_town("Town01", tiny_towns)).record_clip(11)
    vehicle_share = max(float(np.isin(f.semantic, VEHICLES).mean()) for f in clip.frames)
    assert vehicle_share < 0.3, vehicle_share
    report = verify_clip(clip, "x.h5", VerifyConfig())
    assert report.passed, report.failures


def test_clear_path_keeps_other_traffic(tiny_towns):
    town_cfg = load_town("Town01", tiny_towns)
    backend = SyntheticBackend(
        CaptureConfig(backend="synthetic", town="Town01", town_dir=tiny_towns), town_cfg
    )
    rng = np.random.default_rng(0)
    kept, total = 0, 0
    for _ in range(10):
        route = plan_route(backend.town, rng, 60.0)
        actors = spawn_actors(
            backend.town, rng, town_cfg.vehicles, town_cfg.walkers, route.pose(10.0), 8.0
        )
        times = [k / 20 for k in range(20)]
        ego = [route.pose(10.0 + 8.0 * t) for t in times]
        clear = clear_path(actors, ego, times)
        for (x, y, yaw), t in zip(ego, times, strict=True):
            fwd = np.array([np.cos(np.radians(yaw)), np.sin(np.radians(yaw))])
            rel = clear.boxes_at(t).centre[:, :2] - [x, y]
            along, across = rel @ fwd, rel @ np.array([-fwd[1], fwd[0]])
            assert not np.any((along > 0) & (along < 15) & (np.abs(across) < 2.5))
        kept, total = kept + len(clear.axis), total + len(actors.axis)
    assert kept > 0.7 * total  # only the few in the ego's way go


def _clip(small_towns):
    cfg = CaptureConfig(backend="synthetic", town="Town03", frames=6, town_dir=small_towns)
    return SyntheticBackend(cfg, load_town("Town03", small_towns)).record_clip(1)


def test_blocked_view_passes_but_stalled_camera_fails(small_towns):
    clip = _clip(small_towns)
    truck = np.full_like(clip.frames[0].semantic, TAG_ID["Truck"])
    grey = np.full_like(clip.frames[0].rgb, 190)
    # frames 2..5: a truck fills the view; RGB and tags repeat while the camera moves and depth
    # changes
    blocked = [
        dataclasses.replace(f, rgb=grey, semantic=truck, depth=np.full_like(f.depth, 8.0 - k))
        if k >= 2
        else f
        for k, f in enumerate(clip.frames)
    ]
    report = verify_clip(dataclasses.replace(clip, frames=tuple(blocked)), "x.h5", VerifyConfig())
    assert not any("frozen" in f for f in report.failures), report.failures
    assert report.metrics["blocked_view_frames"] == 3
    # the camera stalls: RGB repeats while the tags (another sensor) move with the scene
    stalled = [
        dataclasses.replace(f, rgb=clip.frames[2].rgb) if k == 3 else f
        for k, f in enumerate(clip.frames)
    ]
    report = verify_clip(dataclasses.replace(clip, frames=tuple(stalled)), "x.h5", VerifyConfig())
    assert any("stalled camera" in f and "[3]" in f for f in report.failures), report.failures
