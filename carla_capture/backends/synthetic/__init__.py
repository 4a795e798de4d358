"""The embedded procedural driving simulator (``capture record --backend synthetic``).

Deterministic in (town config, seed, clip index): the same command always writes the same
pixels. See ``docs/synthetic.md`` for what it models and what it does not.
"""

from __future__ import annotations

import numpy as np

from carla_capture import __version__
from carla_capture.backends.base import FrameCallback, clip_id
from carla_capture.backends.synthetic.appearance import apply_appearance
from carla_capture.backends.synthetic.render import Look, Renderer
from carla_capture.backends.synthetic.town import build_town
from carla_capture.backends.synthetic.traffic import clear_path, plan_route, spawn_actors
from carla_capture.config import CaptureConfig, TownConfig
from carla_capture.weather import draw_weather, seeded_rng
from clipcore.geometry import carla_to_cam_to_world, intrinsics
from clipcore.records import Clip, Frame

#: Ticks between the starts of consecutive clips' frame numbers (keeps them disjoint).
_WARMUP_TICKS = 50


class SyntheticBackend:
    """Renders clips of a procedurally generated town; needs no server and no GPU."""

    name = "synthetic"

    def __init__(self, config: CaptureConfig, town: TownConfig) -> None:
        self.config, self.town_config = config, town
        rig = town.camera
        self.K = intrinsics(rig.width, rig.height, rig.hfov)
        self.town = build_town(town.name, town.layout)
        self.renderer = Renderer(self.town, self.K, rig.width, rig.height)

    def __enter__(self) -> SyntheticBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def restart(self, attempt: int = 1) -> None:
        """Nothing to reconnect: the embedded simulator never loses its server."""

    def camera_transform(
        self, x: float, y: float, yaw: float, t: float, phase: float
    ) -> np.ndarray:
        """CARLA-style (x, y, z, pitch, yaw, roll) of the rig on a vehicle at (x, y, yaw) at time t.

        With a small suspension sway so every rotation axis is exercised.
        """
        rig = self.town_config.camera
        c, s = np.cos(np.radians(yaw)), np.sin(np.radians(yaw))
        pitch = rig.pitch + 0.6 * np.sin(2 * np.pi * 1.3 * t + phase)
        roll = 0.4 * np.sin(2 * np.pi * 0.9 * t + 2 * phase)
        z = rig.z + 0.02 * np.sin(2 * np.pi * 1.7 * t + phase)
        return np.array([x + c * rig.x - s * rig.y, y + s * rig.x + c * rig.y, z, pitch, yaw, roll])

    def record_clip(self, index: int, on_frame: FrameCallback | None = None) -> Clip:
        """Render clip ``index``: ``config.frames`` frames, ``config.frame_stride`` ticks apart."""
        cfg, town = self.config, self.town_config
        rng = seeded_rng(town.name, town.layout.seed, cfg.seed, index)
        weather = draw_weather(town.weather, rng)
        look = Look.from_weather(weather)
        speed = rng.uniform(5.0, 11.0)
        duration = cfg.frames * cfg.frame_stride / cfg.fps
        start = rng.uniform(5.0, 40.0)
        route = plan_route(self.town, rng, start + speed * duration)
        actors = spawn_actors(self.town, rng, town.vehicles, town.walkers, route.pose(start), speed)
        times = [k * cfg.frame_stride / cfg.fps for k in range(cfg.frames)]
        actors = clear_path(actors, [route.pose(start + speed * t) for t in times], times)
        phase = rng.uniform(0, 2 * np.pi)
        first = _WARMUP_TICKS + index * (cfg.frames * cfg.frame_stride + _WARMUP_TICKS)
        frames = []
        for t_idx in range(cfg.frames):
            tick = first + t_idx * cfg.frame_stride
            t = t_idx * cfg.frame_stride / cfg.fps
            transform = self.camera_transform(*route.pose(start + speed * t), t, phase)
            cam_to_world = carla_to_cam_to_world(transform)
            rgb, tags, depth = self.renderer.render(cam_to_world, actors.boxes_at(t), look)
            rgb = apply_appearance(cfg.appearance, rgb, tags, depth, tick)
            frames.append(Frame(rgb, tags, depth, cam_to_world, transform, tick, tick / cfg.fps))
            if on_frame is not None:
                on_frame(frames[-1])
        return Clip(
            clip_id=clip_id(town.name, cfg.seed, index),
            town=town.name,
            backend=self.name,
            seed=cfg.seed,
            fps=cfg.fps,
            frame_stride=cfg.frame_stride,
            intrinsics=self.K,
            weather=weather.model_dump(),
            camera=town.camera.model_dump(),
            frames=tuple(frames),
            attrs={
                "clip_index": index,
                "map": town.carla_map,
                "simulator": f"carla-temporal-synthetic {__version__}",
                "speed_mps": float(speed),
                "layout_seed": town.layout.seed,
                **({"appearance": cfg.appearance} if cfg.appearance != "default" else {}),
            },
        )
