"""One connection to a CARLA server: settings, Traffic Manager, actors and sensors.

Opening a session saves the world's settings, loads the town under its own timeout (only if
another map is loaded), removes actors a dead run left behind (by role name), binds the
Traffic Manager (moving to a free port if its port is taken) before anything changes on the
server, switches to synchronous mode, seeds the Traffic Manager and pedestrians, and spawns the
ego vehicle with its cameras, other vehicles and walkers. Closing it stops every sensor before
destroying it, destroys every actor, and leaves the server asynchronous (or, with
``keep_settings``, as it was found); it is safe to call on any exit path, also when the server
is gone.
"""

from __future__ import annotations

import logging
import math
import socket
import time
from dataclasses import dataclass, field
from types import ModuleType

import numpy as np

from carla_capture import heartbeat
from carla_capture.backends.carla.sync import SensorQueue
from carla_capture.config import CaptureConfig, TownConfig
from carla_capture.preflight import HOW_TO_START
from clipcore.errors import BackendUnavailableError, ConfigError, ServerLost, SetupError

log = logging.getLogger(__name__)

CAMERAS = {
    "rgb": "sensor.camera.rgb",
    "semantic": "sensor.camera.semantic_segmentation",
    "depth": "sensor.camera.depth",
}
#: Role name of every actor a session spawns but the ego (which is "hero" for CARLA's large maps).
ROLE = "carla_capture"
#: A walker this close (metres, horizontally) to its destination has arrived and gets a new one.
ARRIVED_M = 1.5
#: A spawn point this close (metres) to another vehicle or walker is taken.
FREE_M = 6.0
#: Traffic Manager ports this process holds (the client library caches one instance per port for
#: the life of the process, and ``world.tick()`` ticks every one of them).
_TM_PORTS: set[int] = set()


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
    tm_port: int
    ego: object | None = None
    sensors: dict[str, tuple[object, SensorQueue]] = field(default_factory=dict)
    actor_ids: list[int] = field(default_factory=list)
    controllers: list[object] = field(default_factory=list)
    #: [controller, walker id, destination or None] of each walker
    walkers: list[list] = field(default_factory=list)
    #: frame -> the ego's transform in the world snapshot of that frame (the last few ticks)
    ego_poses: dict[int, object] = field(default_factory=dict)
    #: frame -> monotonic time its tick was requested (the last 64)
    tick_started: dict[int, float] = field(default_factory=dict)

    @staticmethod
    def answers(carla: ModuleType, cfg: CaptureConfig, timeout: float = 2.0) -> bool:
        """Whether the server answers a version request within ``timeout`` seconds."""
        client = carla.Client(cfg.carla.host, cfg.carla.port)
        client.set_timeout(min(timeout, cfg.carla.timeout))
        try:
            client.get_server_version()
        except RuntimeError:
            return False
        return True

    @staticmethod
    def probe(carla: ModuleType, cfg: CaptureConfig) -> None:
        """First contact: a one-line :class:`BackendUnavailableError` if no server answers."""
        s = cfg.carla
        if not Session.answers(carla, cfg, s.timeout):
            raise BackendUnavailableError(
                f"no CARLA server answered at {s.host}:{s.port} within {s.timeout:g} s; "
                + HOW_TO_START.format(port=s.port)
            )

    @classmethod
    def open(cls, carla: ModuleType, cfg: CaptureConfig, town: TownConfig) -> Session:
        """Connect, configure the world, spawn everything; one-line error if no server answers."""
        s = cfg.carla
        Session.probe(carla, cfg)
        client = carla.Client(s.host, s.port)
        client.set_timeout(s.timeout)
        server_version = client.get_server_version()
        client_version = client.get_client_version()
        if server_version != client_version:
            log.warning(
                "CARLA client %s and server %s differ; use matching versions (0.9.16)",
                client_version,
                server_version,
            )
        maps = sorted(m.rsplit("/", 1)[-1] for m in client.get_available_maps())
        if town.carla_map not in maps:
            raise ConfigError(
                f"map {town.carla_map} is not on the server at {s.host}:{s.port}; "
                f"available maps: {', '.join(maps)}"
            )
        world = await_world(client, s.map_timeout, s.timeout)
        original = world.get_settings()
        world = _load_town(client, world, town.carla_map, s.map_timeout, s.timeout)
        # before any setting changes, so that a bind error leaves the server as it was
        tm, tm_port = _traffic_manager(client, s.tm_port)
        session = cls(carla, cfg, town, client, world, tm, original, server_version, tm_port)
        try:
            session._remove_leftovers()
            settings = world.get_settings()
            settings.synchronous_mode = True
            settings.fixed_delta_seconds = 1.0 / cfg.fps
            world.apply_settings(settings)
            tm.set_synchronous_mode(True)
            tm.set_random_device_seed(cfg.seed)
            world.set_pedestrians_seed(cfg.seed)
            session._spawn(np.random.default_rng(cfg.seed))
        except BaseException:
            session.close()
            raise
        return session

    def _remove_leftovers(self) -> None:
        """Destroy actors a previous run left: our role name, or a "hero" of our ego blueprint."""
        mine = [a.id for a in self.world.get_actors() if _is_ours(a, self.cfg.carla.ego_blueprint)]
        if mine:
            log.warning("removing %d actors a previous capture run left on the server", len(mine))
            self.client.apply_batch_sync([self.carla.command.DestroyActor(i) for i in mine], False)

    def _ego_blueprint(self, library: object) -> object:
        s = self.cfg.carla
        try:
            return library.find(s.ego_blueprint)
        except IndexError:  # the client's "blueprint 'x' not found"
            raise SetupError(
                f"the server at {s.host}:{s.port} has no blueprint {s.ego_blueprint!r}; pass a "
                "vehicle it has, e.g. --set carla.ego_blueprint=vehicle.lincoln.mkz_2020"
            ) from None

    def _spawn(self, rng: np.random.Generator) -> None:
        carla, world, s = self.carla, self.world, self.cfg.carla
        library = world.get_blueprint_library()
        points = world.get_map().get_spawn_points()
        order = rng.permutation(len(points))
        ego_bp = self._ego_blueprint(library)
        ego_bp.set_attribute("role_name", "hero")
        for i in order:  # an occupied spawn point gives None
            self.ego = world.try_spawn_actor(ego_bp, points[i], None)
            if self.ego is not None:
                break
        else:
            raise SetupError(
                f"all {len(points)} spawn points of {self.town.carla_map} on {s.host}:{s.port} "
                "are occupied, so the ego vehicle has nowhere to start; record with fewer "
                "--vehicles, or restart the server to remove other clients' vehicles"
            )
        self.actor_ids.append(self.ego.id)
        self.ego.set_autopilot(True, self.tm_port)
        rig = self.town.camera
        mount = carla.Transform(
            carla.Location(x=rig.x, y=rig.y, z=rig.z),
            carla.Rotation(pitch=rig.pitch, yaw=0.0, roll=0.0),
        )
        for name, blueprint_id in CAMERAS.items():
            bp = _ours(library.find(blueprint_id))
            for key, value in (
                ("image_size_x", rig.width),
                ("image_size_y", rig.height),
                ("fov", rig.hfov),
                ("sensor_tick", 0.0),
            ):
                bp.set_attribute(key, str(value))
            sensor = world.spawn_actor(bp, mount, self.ego)
            inbox = SensorQueue(name)
            sensor.listen(inbox)
            self.sensors[name] = (sensor, inbox)
        vehicles = s.vehicles if s.vehicles is not None else self.town.vehicles
        blueprints = [_ours(bp) for bp in library.filter("vehicle.*")]
        batch = [
            carla.command.SpawnActor(
                blueprints[int(rng.integers(len(blueprints)))], points[i]
            ).then(carla.command.SetAutopilot(carla.command.FutureActor, True, self.tm_port))
            for i in order[1 : 1 + vehicles]
        ]
        self.actor_ids += [
            r.actor_id for r in self.client.apply_batch_sync(batch, True) if not r.error
        ]
        self._spawn_walkers(rng, library, s.walkers if s.walkers is not None else self.town.walkers)
        self.world.tick(s.timeout)

    def _spawn_walkers(self, rng: np.random.Generator, library: object, count: int) -> None:
        carla = self.carla
        if count == 0:
            return
        walkers = [_ours(bp) for bp in library.filter("walker.pedestrian.*")]
        spots = [self.world.get_random_location_from_navigation() for _ in range(count)]
        batch = [
            carla.command.SpawnActor(
                walkers[int(rng.integers(len(walkers)))],
                carla.Transform(spot, carla.Rotation(pitch=0.0, yaw=0.0, roll=0.0)),
            )
            for spot in spots
            if spot is not None
        ]
        ids = [r.actor_id for r in self.client.apply_batch_sync(batch, True) if not r.error]
        controller_bp = _ours(library.find("controller.ai.walker"))
        origin = carla.Transform(
            carla.Location(x=0.0, y=0.0, z=0.0), carla.Rotation(pitch=0.0, yaw=0.0, roll=0.0)
        )
        responses = self.client.apply_batch_sync(
            [carla.command.SpawnActor(controller_bp, origin, w) for w in ids], True
        )
        self.actor_ids += ids
        for walker_id, response in zip(ids, responses, strict=True):
            if response.error:
                continue
            controller = self.world.get_actor(response.actor_id)
            controller.start()
            controller.set_max_speed(float(rng.uniform(1.0, 1.8)))
            self.controllers.append(controller)
            self.walkers.append([controller, walker_id, None])
            self.actor_ids.append(response.actor_id)
        self._keep_walking(self.world.get_snapshot())

    def _keep_walking(self, snapshot: object) -> None:
        """A new destination for every walker that reached its own (an AI walker stops there)."""
        for entry in self.walkers:
            controller, walker_id, goal = entry
            walker = snapshot.find(walker_id)
            if walker is None:
                continue
            here = walker.get_transform().location
            if goal is None or math.hypot(here.x - goal.x, here.y - goal.y) < ARRIVED_M:
                goal = (
                    self.world.get_random_location_from_navigation()
                )  # None when the navmesh has no point
                if goal is not None:
                    controller.go_to_location(goal)
                entry[2] = goal

    def tick(self) -> int:
        """Advance one step; returns the new frame number. A timeout means the server is lost."""
        started = time.monotonic()
        try:
            frame = int(self.world.tick(self.cfg.carla.timeout))
        except RuntimeError as exc:
            raise ServerLost(
                f"tick failed at {self.cfg.carla.host}:{self.cfg.carla.port}: {exc}"
            ) from None
        heartbeat.beat()
        self.tick_started[frame] = started
        if len(self.tick_started) > 64:
            self.tick_started.pop(next(iter(self.tick_started)))
        snapshot = self.world.get_snapshot()
        self._keep_walking(snapshot)
        ego = snapshot.find(self.ego.id) if self.ego is not None else None
        if ego is not None:
            self.ego_poses[int(snapshot.frame)] = ego.get_transform()
            for old in [f for f in self.ego_poses if f < frame - 8]:
                del self.ego_poses[old]
        return frame

    def respawn_ego(self, rng: np.random.Generator) -> None:
        """Move the ego to a free spawn point drawn with ``rng`` (clips start somewhere new).

        Stays where it is when every spawn point has a vehicle or walker near it.
        """
        points = self.world.get_map().get_spawn_points()
        actors = self.world.get_actors()
        others = [
            a.get_transform().location
            for pattern in ("vehicle.*", "walker.*")
            for a in actors.filter(pattern)
            if a.id != self.ego.id
        ]
        for i in rng.permutation(len(points)):
            if all(points[i].location.distance(o) > FREE_M for o in others):
                self.ego.set_transform(points[i])
                return
        log.warning("no free spawn point to move the ego to; it drives on from where it is")

    def clear_sensors(self) -> None:
        """Drop every measurement received so far."""
        for _, inbox in self.sensors.values():
            inbox.clear()

    def _leave_settings(self) -> None:
        """Asynchronous, variable step (what was found may be a dead run's synchronous mode)."""
        if self.cfg.carla.keep_settings:
            self.world.apply_settings(self.original_settings)
            return
        settings = self.world.get_settings()
        settings.synchronous_mode = False
        settings.fixed_delta_seconds = None
        self.world.apply_settings(settings)

    def close(self) -> None:
        """Stop and destroy everything spawned, leave the server asynchronous.

        Never raises for a dead server.
        """
        steps = [lambda: [c.stop() for c in self.controllers]]
        steps += [sensor.stop for sensor, _ in self.sensors.values()]
        steps += [sensor.destroy for sensor, _ in self.sensors.values()]
        steps.append(
            lambda: self.client.apply_batch_sync(
                [self.carla.command.DestroyActor(i) for i in reversed(self.actor_ids)], False
            )
        )
        steps.append(lambda: self.traffic_manager.set_synchronous_mode(False))
        steps.append(self._leave_settings)
        for step in steps:
            try:
                step()
            except RuntimeError as exc:
                log.warning("cleanup step failed (server gone?): %s", exc)
        self.sensors, self.actor_ids, self.controllers, self.walkers = {}, [], [], []


def leave_server(carla: ModuleType, cfg: CaptureConfig) -> None:
    """What a killed worker could not do: destroy its actors and leave the server asynchronous."""
    s = cfg.carla
    client = carla.Client(s.host, s.port)
    client.set_timeout(s.timeout)
    world = client.get_world()
    mine = [a.id for a in world.get_actors() if _is_ours(a, s.ego_blueprint)]
    client.apply_batch_sync([carla.command.DestroyActor(i) for i in mine], False)
    settings = world.get_settings()
    settings.synchronous_mode = False
    settings.fixed_delta_seconds = None
    world.apply_settings(settings)


def _is_ours(actor: object, ego_blueprint: str) -> bool:
    role = actor.attributes.get("role_name", "")
    return role == ROLE or (role == "hero" and actor.type_id == ego_blueprint)


def _ours(blueprint: object) -> object:
    """``blueprint`` with our role name (so a later run can find what a dead one left)."""
    if blueprint.has_attribute("role_name"):
        blueprint.set_attribute("role_name", ROLE)
    return blueprint


def await_world(client: object, map_timeout: float, timeout: float) -> object:
    """``client.get_world()``, allowed ``map_timeout`` seconds.

    A server that is loading a map (for us, or for a worker that was lost meanwhile) answers no
    world call until it is done; it answers ``get_server_version`` meanwhile, so it is not lost.
    """
    client.set_timeout(map_timeout)
    try:
        return client.get_world()
    finally:
        client.set_timeout(timeout)


def holds_traffic_manager() -> bool:
    """Whether this process's CARLA client holds a Traffic Manager.

    It keeps it until the process ends, bound to the server it was made for.
    """
    return bool(_TM_PORTS)


def _load_town(
    client: object, world: object, name: str, map_timeout: float, timeout: float
) -> object:
    """The world with map ``name``: loaded under ``map_timeout`` unless it is already loaded."""
    loaded = world.get_map().name.rsplit("/", 1)[-1]
    if loaded in (name, f"{name}_Opt"):
        return world
    log.info("loading %s (was %s; allowing %g s)", name, loaded, map_timeout)
    client.set_timeout(map_timeout)
    try:
        return client.load_world(name)  # resets settings: ours are applied after this
    finally:
        client.set_timeout(timeout)


def _port_taken(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("", port))
        except OSError:
            return True
    return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


def _traffic_manager(client: object, port: int) -> tuple[object, int]:
    """The Traffic Manager on ``port``, or on a free port when another program holds that one."""
    if port not in _TM_PORTS and _port_taken(port):
        moved = _free_port()
        log.warning("Traffic Manager port %d is taken by another program; using %d", port, moved)
        port = moved
    try:
        tm = client.get_trafficmanager(port)
    except RuntimeError as exc:
        raise ConfigError(
            f"the Traffic Manager could not bind port {port} ({exc}); "
            "pass a free one with --tm-port"
        ) from None
    _TM_PORTS.add(port)
    return tm, port
