"""One connection to a CARLA server: settings, Traffic Manager, actors and sensors.

Opening a session saves the world's settings, switches to synchronous mode (after any
``load_world``, which resets settings), seeds the Traffic Manager and pedestrians, and spawns
the ego vehicle with its cameras, other vehicles and walkers. Closing it stops every sensor
before destroying it, destroys every actor, and restores the saved settings; it is safe to
call on any exit path, also when the server is gone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from types import ModuleType

import numpy as np

from carla_capture.backends.base import ServerLost
from carla_capture.backends.carla.sync import SensorQueue
from carla_capture.config import CaptureConfig, TownConfig
from carla_capture.errors import BackendUnavailableError, ConfigError

log = logging.getLogger(__name__)

CAMERAS = {"rgb": "sensor.camera.rgb", "semantic": "sensor.camera.semantic_segmentation", "depth": "sensor.camera.depth"}
HOW_TO_START = "start one with ./CarlaUE4.sh -RenderOffScreen -carla-rpc-port={port} (docs/carla.md), or record with --backend synthetic"


@dataclass
class Session:
    """Handles of a live connection; build with :meth:`open`."""

    carla: ModuleType
    cfg: CaptureConfig
    town: TownConfig
    client: object
    world: object
    traffic_manager: object
    original_settings: object
    server_version: str
    ego: object | None = None
    sensors: dict[str, tuple[object, SensorQueue]] = field(default_factory=dict)
    actor_ids: list[int] = field(default_factory=list)
    controllers: list[object] = field(default_factory=list)

    @classmethod
    def open(cls, carla: ModuleType, cfg: CaptureConfig, town: TownConfig) -> "Session":
        """Connect, configure the world and spawn everything; raises a one-line error if no server answers."""
        s = cfg.carla
        client = carla.Client(s.host, s.port)
        client.set_timeout(s.timeout)
        try:
            server_version = client.get_server_version()
        except RuntimeError:
            raise BackendUnavailableError(
                f"no CARLA server answered at {s.host}:{s.port} within {s.timeout:g} s; " + HOW_TO_START.format(port=s.port)
            ) from None
        client_version = client.get_client_version()
        if server_version != client_version:
            log.warning("CARLA client %s and server %s differ; use matching versions (0.9.16)", client_version, server_version)
        maps = sorted(m.rsplit("/", 1)[-1] for m in client.get_available_maps())
        if town.carla_map not in maps:
            raise ConfigError(f"map {town.carla_map} is not on the server at {s.host}:{s.port}; available maps: {', '.join(maps)}")
        world = client.get_world()
        original = world.get_settings()
        if world.get_map().name.rsplit("/", 1)[-1] != town.carla_map:
            log.info("loading %s", town.carla_map)
            world = client.load_world(town.carla_map)  # resets settings: apply ours after this
        settings = world.get_settings()
        settings.synchronous_mode = True
        settings.fixed_delta_seconds = 1.0 / cfg.fps
        world.apply_settings(settings)
        tm = client.get_trafficmanager(s.tm_port)
        session = cls(carla, cfg, town, client, world, tm, original, server_version)
        try:
            tm.set_synchronous_mode(True)
            tm.set_random_device_seed(cfg.seed)
            world.set_pedestrians_seed(cfg.seed)
            session._spawn(np.random.default_rng(cfg.seed))
        except BaseException:
            session.close()
            raise
        return session

    def _spawn(self, rng: np.random.Generator) -> None:
        carla, world, s = self.carla, self.world, self.cfg.carla
        library = world.get_blueprint_library()
        points = world.get_map().get_spawn_points()
        order = rng.permutation(len(points))
        ego_bp = library.find(s.ego_blueprint)
        ego_bp.set_attribute("role_name", "hero")
        self.ego = world.spawn_actor(ego_bp, points[order[0]], None)
        self.actor_ids.append(self.ego.id)
        self.ego.set_autopilot(True, s.tm_port)
        rig = self.town.camera
        mount = carla.Transform(carla.Location(x=rig.x, y=rig.y, z=rig.z), carla.Rotation(pitch=rig.pitch, yaw=0.0, roll=0.0))
        for name, blueprint_id in CAMERAS.items():
            bp = library.find(blueprint_id)
            for key, value in (("image_size_x", rig.width), ("image_size_y", rig.height), ("fov", rig.hfov), ("sensor_tick", 0.0)):
                bp.set_attribute(key, str(value))
            sensor = world.spawn_actor(bp, mount, self.ego)
            inbox = SensorQueue(name)
            sensor.listen(inbox)
            self.sensors[name] = (sensor, inbox)
        vehicles = s.vehicles if s.vehicles is not None else self.town.vehicles
        blueprints = list(library.filter("vehicle.*"))
        batch = [
            carla.command.SpawnActor(blueprints[int(rng.integers(len(blueprints)))], points[i]).then(
                carla.command.SetAutopilot(carla.command.FutureActor, True, s.tm_port))
            for i in order[1 : 1 + vehicles]
        ]
        self.actor_ids += [r.actor_id for r in self.client.apply_batch_sync(batch, True) if not r.error]
        self._spawn_walkers(rng, library, s.walkers if s.walkers is not None else self.town.walkers)
        self.world.tick(s.timeout)

    def _spawn_walkers(self, rng: np.random.Generator, library: object, count: int) -> None:
        carla = self.carla
        if count == 0:
            return
        walkers = list(library.filter("walker.pedestrian.*"))
        spots = [self.world.get_random_location_from_navigation() for _ in range(count)]
        batch = [carla.command.SpawnActor(walkers[int(rng.integers(len(walkers)))], carla.Transform(spot, carla.Rotation(pitch=0.0, yaw=0.0, roll=0.0)))
                 for spot in spots if spot is not None]
        ids = [r.actor_id for r in self.client.apply_batch_sync(batch, True) if not r.error]
        controller_bp = library.find("controller.ai.walker")
        origin = carla.Transform(carla.Location(x=0.0, y=0.0, z=0.0), carla.Rotation(pitch=0.0, yaw=0.0, roll=0.0))
        responses = self.client.apply_batch_sync([carla.command.SpawnActor(controller_bp, origin, w) for w in ids], True)
        self.actor_ids += ids
        for response in responses:
            if response.error:
                continue
            controller = self.world.get_actor(response.actor_id)
            controller.start()
            controller.go_to_location(self.world.get_random_location_from_navigation())
            controller.set_max_speed(float(rng.uniform(1.0, 1.8)))
            self.controllers.append(controller)
            self.actor_ids.append(response.actor_id)

    def tick(self) -> int:
        """Advance one step; returns the new frame number. A timeout means the server is lost."""
        try:
            return int(self.world.tick(self.cfg.carla.timeout))
        except RuntimeError as exc:
            raise ServerLost(f"tick failed at {self.cfg.carla.host}:{self.cfg.carla.port}: {exc}") from None

    def respawn_ego(self, rng: np.random.Generator) -> None:
        """Move the ego to a spawn point drawn with ``rng`` (clips then start somewhere new)."""
        points = self.world.get_map().get_spawn_points()
        self.ego.set_transform(points[int(rng.integers(len(points)))])

    def clear_sensors(self) -> None:
        """Drop every measurement received so far."""
        for _, inbox in self.sensors.values():
            inbox.clear()

    def close(self) -> None:
        """Stop and destroy everything spawned, restore the settings; never raises for a dead server."""
        steps = [lambda: [c.stop() for c in self.controllers]]
        steps += [sensor.stop for sensor, _ in self.sensors.values()]
        steps += [sensor.destroy for sensor, _ in self.sensors.values()]
        steps.append(lambda: self.client.apply_batch_sync([self.carla.command.DestroyActor(i) for i in reversed(self.actor_ids)], False))
        steps.append(lambda: self.traffic_manager.set_synchronous_mode(False))
        steps.append(lambda: self.world.apply_settings(self.original_settings))
        for step in steps:
            try:
                step()
            except RuntimeError as exc:
                log.warning("cleanup step failed (server gone?): %s", exc)
        self.sensors, self.actor_ids, self.controllers = {}, [], []
