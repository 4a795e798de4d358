"""The CARLA 0.9.16 backend: synchronous, frame-checked capture that survives a crashing server.

The ``carla`` client module is imported here only, when the backend is constructed. See
``docs/carla.md`` for how to run a server and what to expect.
"""

from __future__ import annotations

import importlib
import logging
import time

import numpy as np

from carla_capture import heartbeat
from carla_capture.backends.base import FrameCallback, clip_id
from carla_capture.backends.carla.decode import (
    decode_depth,
    decode_rgb,
    decode_semantic,
    transform_to_array,
)
from carla_capture.backends.carla.session import Session, holds_traffic_manager
from carla_capture.config import WEATHER_FIELDS, CaptureConfig, TownConfig, Weather
from carla_capture.preflight import NoAnswer, preflight
from carla_capture.weather import draw_weather, seeded_rng
from clipcore.errors import BackendUnavailableError, RetryClip, ServerGone, ServerLost
from clipcore.geometry import carla_to_cam_to_world, intrinsics
from clipcore.records import Clip, Frame

log = logging.getLogger(__name__)


def carla_weather(carla: object, weather: Weather) -> dict:
    """Every field of ``weather``.

    Its CARLA preset's values with the fields it sets on top (a ``carla.WeatherParameters`` built
    from a few fields would leave the others at 0, and ``fog_falloff`` 0 fogs the whole scene).
    """
    base = getattr(carla.WeatherParameters, weather.base_preset)
    values = {f: float(getattr(base, f)) for f in WEATHER_FIELDS}
    values.update(weather.model_dump(include=set(WEATHER_FIELDS), exclude_none=True))
    return {"name": weather.name, "preset": weather.base_preset, **values}


class CarlaBackend:
    """Records clips from a CARLA server; a context manager that owns one :class:`Session`."""

    name = "carla"

    def __init__(self, config: CaptureConfig, town: TownConfig) -> None:
        try:
            self.carla = importlib.import_module("carla")
        except ImportError:
            raise BackendUnavailableError(
                "the carla client module is not installed: pip install carla==0.9.16 "
                "(or record with --backend synthetic)"
            ) from None
        self.cfg, self.town = config, town
        self.K = intrinsics(town.camera.width, town.camera.height, town.camera.hfov)
        self.session: Session | None = None
        self._clips_in_session = 0

    def __enter__(self) -> CarlaBackend:
        """First contact: a one-line error when nothing answers.

        The world is set up by the first clip, inside the record loop's retry policy.
        """
        s = self.cfg.carla
        deadline = time.monotonic() + s.contact_wait
        while True:
            heartbeat.expect(s.timeout + 15.0)
            try:
                preflight(
                    s.host, s.port, s.timeout
                )  # in a child: a C++ abort there becomes a one-line error
                return self
            except NoAnswer:
                if time.monotonic() > deadline and s.contact_wait > 0:  # a worker after a loss
                    raise ServerGone(
                        f"the CARLA server at {s.host}:{s.port} did not answer for "
                        f"{s.contact_wait:g} s after it was lost; start it again (or pass "
                        "--server-cmd so capture relaunches it) and run the same command to "
                        "resume"
                    ) from None
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.5)

    def __exit__(self, *exc: object) -> None:
        if self.session is not None:
            self.session.close()
            self.session = None

    def _open(self) -> None:
        address, s = f"{self.cfg.carla.host}:{self.cfg.carla.port}", self.cfg.carla
        heartbeat.expect(s.map_timeout + 6 * s.timeout + 10.0)  # map load, spawning: no ticks yet
        try:
            self.session = Session.open(self.carla, self.cfg, self.town)
        except (RuntimeError, BackendUnavailableError) as exc:
            raise ServerLost(
                f"lost the CARLA server at {address} while setting up: {exc}"
            ) from None
        self._clips_in_session = 0

    def reconnects_in_process(self) -> bool:
        """Whether a lost server may be reconnected from this process.

        Not once its CARLA client holds a Traffic Manager, which stays bound to the lost server (see
        the supervisor).
        """
        return not holds_traffic_manager()

    def restart(self, attempt: int = 1) -> None:
        """Reconnect after a lost server: wait, then set the world up again.

        Drop the session, wait (doubling with each attempt), then wait up to ``server_wait`` seconds
        for the server to answer; the next clip sets the world up again.
        """
        s = self.cfg.carla
        backoff = s.restart_backoff_s * 2 ** (attempt - 1)
        heartbeat.expect(backoff + s.server_wait + 3 * s.timeout + 5.0)
        self.__exit__()
        time.sleep(backoff)
        deadline = time.monotonic() + s.server_wait
        while not Session.answers(self.carla, self.cfg):
            if time.monotonic() > deadline:
                raise ServerGone(
                    f"the CARLA server at {s.host}:{s.port} did not answer for {s.server_wait:g} s "
                    "after it was lost; start it again (or pass --server-cmd so capture relaunches "
                    "it) and run the same command to resume"
                )
            time.sleep(min(0.5, s.server_wait))

    def record_clip(self, index: int, on_frame: FrameCallback | None = None) -> Clip:
        """Warm up, then record ``frames`` frames ``frame_stride`` ticks apart, matched by frame."""
        try:
            if self.session is None:
                self._open()
            return self._record(index, on_frame)
        except RuntimeError as exc:  # any RPC failure: the server is gone or hung
            raise ServerLost(
                f"lost the CARLA server at {self.cfg.carla.host}:{self.cfg.carla.port}: {exc}"
            ) from None

    def _record(self, index: int, on_frame: FrameCallback | None) -> Clip:
        cfg, s, session = self.cfg, self.cfg.carla, self.session
        rng = seeded_rng(self.town.name, cfg.seed, index)
        weather = carla_weather(self.carla, draw_weather(self.town.weather, rng))
        session.world.set_weather(
            self.carla.WeatherParameters(**{f: weather[f] for f in WEATHER_FIELDS})
        )
        if self._clips_in_session % s.respawn_every == 0:
            session.respawn_ego(rng)
        self._clips_in_session += 1
        for _ in range(s.warmup_ticks):
            session.tick()
        session.clear_sensors()
        frames = []
        for k in range(cfg.frames):
            for _ in range(cfg.frame_stride - 1 if k else 0):
                session.tick()
            frame = self._frame(session.tick())
            frames.append(frame)
            if on_frame is not None:
                on_frame(frame)
        return Clip(
            clip_id=clip_id(self.town.name, cfg.seed, index),
            town=self.town.name,
            backend=self.name,
            seed=cfg.seed,
            fps=cfg.fps,
            frame_stride=cfg.frame_stride,
            intrinsics=self.K,
            weather=weather,
            camera=self.town.camera.model_dump(),
            frames=tuple(frames),
            attrs={
                "clip_index": index,
                "map": self.town.carla_map,
                "simulator": f"CARLA {session.server_version}",
                "tm_seed": cfg.seed,
                "pedestrians_seed": cfg.seed,
                "server": f"{s.host}:{s.port}",
            },
        )

    def _frame(self, tick: int) -> Frame:
        """The three measurements of ``tick``, decoded, with the pose cross-checked."""
        session, timeout = self.session, self.cfg.carla.sensor_timeout
        data = {name: inbox.get(tick, timeout) for name, (_, inbox) in session.sensors.items()}
        poses = {name: transform_to_array(m.transform) for name, m in data.items()}
        if not all(np.allclose(p, poses["rgb"], atol=1e-3) for p in poses.values()):
            raise RetryClip(f"frame {tick}: the three cameras report different poses")
        rig, ego = self.town.camera, session.ego_poses.get(tick)
        if ego is None:
            raise RetryClip(
                f"frame {tick}: no world snapshot of this frame to check the camera pose against"
            )
        mount = ego.transform(self.carla.Location(x=rig.x, y=rig.y, z=rig.z))
        drift = mount.distance(data["rgb"].transform.location)
        if drift > self.cfg.carla.pose_tolerance_m:  # CARLA #8935: a pose one tick stale
            raise RetryClip(
                f"frame {tick}: camera pose is {drift * 1000:.0f} mm from the ego's mount point "
                "in the world snapshot of the same frame (a stale pose)"
            )
        rgb = data["rgb"]
        return Frame(
            decode_rgb(rgb),
            decode_semantic(data["semantic"]),
            decode_depth(data["depth"]),
            carla_to_cam_to_world(poses["rgb"]),
            poses["rgb"],
            rgb.frame,
            rgb.timestamp,
        )
