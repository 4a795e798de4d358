"""An in-process test double of the CARLA 0.9.16 server side, usable as the ``carla`` module.

Tests put this module in ``sys.modules["carla"]`` and register a :class:`FakeServer` under
``(host, port)``. The server keeps worlds, settings, actors, a Traffic Manager and a frame
counter, and its cameras deliver BGRA images through ``listen`` callbacks with controllable
faults: dropped measurements, reordering (with stale duplicates), wall-clock delays, pose
glitches, and crashes that invalidate every handle until a new ``Client`` connects.
Never imported by the package.
"""

from __future__ import annotations

import fnmatch
import itertools
import json
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from carla_capture.backends.synthetic.render import Look, Renderer
from carla_capture.backends.synthetic.town import Boxes, Town, build_town
from carla_capture.config import Layout, Weather
from clipcore.geometry import carla_to_cam_to_world, intrinsics, ue_rotation

SERVERS: dict[tuple[str, int], FakeServer] = {}
CLIENT_VERSION = "0.9.16"


def _check(obj) -> None:  # noqa: ANN001
    obj._server.live()
    obj._server.stall()
    if obj._epoch != obj._server.epoch:
        raise RuntimeError(
            "time-out of 2000ms while waiting for the simulator, make sure the simulator is ready "
            "and connected"
        )


#: double class -> member -> the declared uses (contract.Use) of it; filled at the end
STRICT: dict[type, dict[str, list]] = {}
_PACKAGE = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "carla_capture", ""
)


def _from_package(depth: int = 2) -> bool:
    return bool(STRICT) and sys._getframe(depth).f_code.co_filename.startswith(_PACKAGE)


def _declared(cls: type, member: str) -> list:
    return [use for k in cls.__mro__ for use in STRICT.get(k, {}).get(member, ())]


def _fits(uses: list, args: tuple, kwargs: dict) -> bool:
    return any(len(args) == u.args and set(kwargs) <= set(u.kwargs) for u in uses)


def _refuse(cls: type, what: str) -> AttributeError:
    return AttributeError(
        f"carla.{cls.__name__.lstrip('_')}.{what} is not in the contract "
        "(carla_capture/backends/carla/contract.py); declare it there"
    )


class _Strict:
    """Refuses, to the package's code, every member and call shape the contract does not list: the
    backend cannot come to depend on something never checked against the real client."""

    def __new__(cls, *args, **kwargs):  # noqa: ANN204
        if _from_package() and not _fits(_declared(cls, "__init__"), args, kwargs):
            raise _refuse(cls, f"__init__ with {len(args)} arguments and keywords {sorted(kwargs)}")
        return super().__new__(cls)

    def __getattribute__(self, name: str):  # noqa: ANN204
        value = object.__getattribute__(self, name)
        if name.startswith("_") or not _from_package():
            return value
        cls = type(self)
        uses = _declared(cls, name)
        if not uses:
            raise _refuse(cls, name)
        if not callable(value) or any(u.attribute for u in uses):
            return value

        def checked(*args, **kwargs):  # noqa: ANN202
            if not _fits(uses, args, kwargs):
                raise _refuse(
                    cls, f"{name} with {len(args)} arguments and keywords {sorted(kwargs)}"
                )
            return value(*args, **kwargs)

        return checked


class Location(_Strict):
    x = y = z = 0.0

    def __init__(self, x: float = 0.0, y: float = 0.0, z: float = 0.0) -> None:
        self.x, self.y, self.z = float(x), float(y), float(z)

    def distance(self, other: Location) -> float:
        return float(np.linalg.norm([self.x - other.x, self.y - other.y, self.z - other.z]))


class Rotation(_Strict):
    pitch = yaw = roll = 0.0

    def __init__(self, pitch: float = 0.0, yaw: float = 0.0, roll: float = 0.0) -> None:
        self.pitch, self.yaw, self.roll = float(pitch), float(yaw), float(roll)


class Transform(_Strict):
    location = Location()
    rotation = Rotation()

    def __init__(self, location: Location | None = None, rotation: Rotation | None = None) -> None:
        self.location, self.rotation = location or Location(), rotation or Rotation()

    def transform(self, point: Location) -> Location:
        r = self.rotation
        p = ue_rotation(r.pitch, r.yaw, r.roll) @ [point.x, point.y, point.z]
        return Location(p[0] + self.location.x, p[1] + self.location.y, p[2] + self.location.z)

    def compose(self, local: Transform) -> Transform:
        """World transform of ``local`` attached to this one (parents yaw only, children pitch)."""
        r, q = self.rotation, local.rotation
        return Transform(
            self.transform(local.location),
            Rotation(r.pitch + q.pitch, r.yaw + q.yaw, r.roll + q.roll),
        )


WEATHER_FIELDS = (
    "cloudiness",
    "precipitation",
    "precipitation_deposits",
    "wind_intensity",
    "sun_azimuth_angle",
    "sun_altitude_angle",
    "fog_density",
    "fog_distance",
    "fog_falloff",
    "wetness",
    "scattering_intensity",
    "mie_scattering_scale",
    "rayleigh_scattering_scale",
    "dust_storm",
)
# CARLA 0.9.16's presets, in the order of WEATHER_FIELDS (checked in test_carla_contract)
# fmt: off
_PRESET_VALUES = {
    "ClearNight": (5, 0, 0, 10, -1, -90, 60, 75, 1, 0, 1, 0.03, 0.0331, 0),
    "ClearNoon": (5, 0, 0, 10, -1, 45, 2, 0.75, 0.1, 0, 1, 0.03, 0.0331, 0),
    "ClearSunset": (5, 0, 0, 10, -1, 15, 2, 0.75, 0.1, 0, 1, 0.03, 0.0331, 0),
    "CloudyNight": (60, 0, 0, 10, -1, -90, 60, 0.75, 0.1, 0, 1, 0.03, 0.0331, 0),
    "CloudyNoon": (60, 0, 0, 10, -1, 45, 3, 0.75, 0.1, 0, 1, 0.03, 0.0331, 0),
    "CloudySunset": (60, 0, 0, 10, -1, 15, 3, 0.75, 0.1, 0, 1, 0.03, 0.0331, 0),
    "Default": (-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 1, 0.03, 0.0331, 0),
    "DustStorm": (100, 0, 0, 100, -1, 45, 2, 0.75, 0.1, 0, 1, 0.03, 0.0331, 100),
    "HardRainNight": (100, 100, 90, 100, -1, -90, 100, 0.75, 0.1, 100, 1, 0.03, 0.0331, 0),
    "HardRainNoon": (100, 100, 90, 100, -1, 45, 7, 0.75, 0.1, 0, 1, 0.03, 0.0331, 0),
    "HardRainSunset": (100, 100, 90, 100, -1, 15, 7, 0.75, 0.1, 0, 1, 0.03, 0.0331, 0),
    "MidRainSunset": (60, 60, 60, 60, -1, 15, 3, 0.75, 0.1, 0, 1, 0.03, 0.0331, 0),
    "MidRainyNight": (80, 60, 60, 60, -1, -90, 60, 0.75, 0.1, 80, 1, 0.03, 0.0331, 0),
    "MidRainyNoon": (60, 60, 60, 60, -1, 45, 3, 0.75, 0.1, 0, 1, 0.03, 0.0331, 0),
    "SoftRainNight": (60, 30, 50, 30, -1, -90, 60, 0.75, 0.1, 60, 1, 0.03, 0.0331, 0),
    "SoftRainNoon": (20, 30, 50, 30, -1, 45, 3, 0.75, 0.1, 0, 1, 0.03, 0.0331, 0),
    "SoftRainSunset": (20, 30, 50, 30, -1, 15, 2, 0.75, 0.1, 0, 1, 0.03, 0.0331, 0),
    "WetCloudyNight": (60, 0, 50, 10, -1, -90, 60, 0.75, 0.1, 60, 1, 0.03, 0.0331, 0),
    "WetCloudyNoon": (60, 0, 50, 10, -1, 45, 3, 0.75, 0.1, 0, 1, 0.03, 0.0331, 0),
    "WetCloudySunset": (60, 0, 50, 10, -1, 15, 2, 0.75, 0.1, 0, 1, 0.03, 0.0331, 0),
    "WetNight": (5, 0, 50, 10, -1, -90, 60, 75, 1, 60, 1, 0.03, 0.0331, 0),
    "WetNoon": (5, 0, 50, 10, -1, 45, 3, 0.75, 0.1, 0, 1, 0.03, 0.0331, 0),
    "WetSunset": (5, 0, 50, 10, -1, 15, 2, 0.75, 0.1, 0, 1, 0.03, 0.0331, 0),
}
# fmt: on


class WeatherParameters(_Strict):
    """Like the client's: a field not passed is 0 (rayleigh_scattering_scale 0.0331); presets set
    every field."""

    def __init__(
        self,
        cloudiness: float = 0.0,
        precipitation: float = 0.0,
        precipitation_deposits: float = 0.0,
        wind_intensity: float = 0.0,
        sun_azimuth_angle: float = 0.0,
        sun_altitude_angle: float = 0.0,
        fog_density: float = 0.0,
        fog_distance: float = 0.0,
        fog_falloff: float = 0.0,
        wetness: float = 0.0,
        scattering_intensity: float = 0.0,
        mie_scattering_scale: float = 0.0,
        rayleigh_scattering_scale: float = 0.0331,
        dust_storm: float = 0.0,
    ) -> None:
        values = locals()
        for name in WEATHER_FIELDS:
            setattr(self, name, float(values[name]))

    @property
    def values(self) -> dict:
        return {name: getattr(self, name) for name in WEATHER_FIELDS}


for _name, _values in _PRESET_VALUES.items():
    setattr(
        WeatherParameters,
        _name,
        WeatherParameters(**{k: float(v) for k, v in zip(WEATHER_FIELDS, _values, strict=True)}),
    )
for (
    _field
) in WEATHER_FIELDS:  # class-level defaults, so the contract sees the attributes on the class
    setattr(WeatherParameters, _field, 0.0)


class WorldSettings(_Strict):
    synchronous_mode = False
    fixed_delta_seconds = None

    def __init__(
        self, synchronous_mode: bool = False, fixed_delta_seconds: float | None = None
    ) -> None:
        self.synchronous_mode, self.fixed_delta_seconds = synchronous_mode, fixed_delta_seconds

    def copy(self) -> WorldSettings:
        return WorldSettings(self.synchronous_mode, self.fixed_delta_seconds)


#: Attributes of the blueprints the double offers (CARLA 0.9.16 blueprint library docs, abridged).
ATTRIBUTES = {
    "sensor.camera.*": (
        "image_size_x",
        "image_size_y",
        "fov",
        "sensor_tick",
        "role_name",
        "lens_circle_falloff",
        "lens_circle_multiplier",
        "lens_k",
        "lens_kcube",
        "lens_x_size",
        "lens_y_size",
    ),
    "vehicle.*": (
        "role_name",
        "color",
        "number_of_wheels",
        "generation",
        "sticky_control",
        "object_type",
        "base_type",
        "special_type",
        "has_dynamic_doors",
        "has_lights",
    ),
    "walker.pedestrian.*": (
        "role_name",
        "is_invincible",
        "speed",
        "age",
        "gender",
        "generation",
        "can_use_wheelchair",
    ),
    "controller.ai.walker": (),
}


class ActorBlueprint(_Strict):
    id = ""

    def __init__(self, blueprint_id: str) -> None:
        self.id, self.attributes = blueprint_id, {}
        self.known = next(
            names for pattern, names in ATTRIBUTES.items() if fnmatch.fnmatch(blueprint_id, pattern)
        )

    def set_attribute(self, key: str, value: str) -> None:
        if key not in self.known:
            raise IndexError(f"ActorBlueprint: no attribute '{key}' in {self.id}")
        self.attributes[key] = value

    def has_attribute(self, key: str) -> bool:
        return key in self.known


class BlueprintLibrary(_Strict):
    IDS = (
        "vehicle.lincoln.mkz_2020",
        "vehicle.audi.a2",
        "vehicle.carlamotors.carlacola",
        "walker.pedestrian.0001",
        "walker.pedestrian.0002",
        "controller.ai.walker",
        "sensor.camera.rgb",
        "sensor.camera.semantic_segmentation",
        "sensor.camera.depth",
    )

    def find(self, blueprint_id: str) -> ActorBlueprint:
        if blueprint_id not in self.IDS:
            raise IndexError(f"blueprint '{blueprint_id}' not found")
        return ActorBlueprint(blueprint_id)

    def filter(self, pattern: str) -> list[ActorBlueprint]:
        return [ActorBlueprint(i) for i in self.IDS if fnmatch.fnmatch(i, pattern)]


class Map(_Strict):
    name = ""

    def __init__(self, name: str, scene: Scene | None = None) -> None:
        self.name, self._scene = f"Carla/Maps/{name}", scene

    def get_spawn_points(self) -> list[Transform]:
        if self._scene is not None:
            return self._scene.spawn_points()
        return [
            Transform(Location(10.0 * i, 5.0 * (i % 3), 0.5), Rotation(yaw=90.0 * (i % 4)))
            for i in range(40)
        ]


_NO_BOXES = Boxes(
    np.zeros((0, 3)),
    np.zeros((0, 3)),
    np.zeros(0),
    np.zeros(0, np.uint8),
    np.zeros((0, 3), np.float32),
)


class Scene:
    """What the cameras see when a server is made with ``scene=True``: the embedded simulator's
    town of the loaded map, rendered from each camera's true pose (static world, default weather),
    so that recorded clips are geometrically consistent and pass ``capture verify``."""

    def __init__(self, map_name: str) -> None:
        self.town: Town = build_town(map_name, Layout())
        self._renderers: dict[tuple, Renderer] = {}
        self._last: tuple | None = None
        self._look = Look.from_weather(Weather(name="ClearNoon"))

    def spawn_points(self) -> list[Transform]:
        """Points on the right-hand lane of every road along x, heading +x (UE: +y is right)."""
        t = self.town
        xs = np.linspace(t.road_x.min() + 15.0, t.road_x.max() - 80.0, 8)
        return [
            Transform(Location(float(x), float(y + t.lane_offset), 0.5), Rotation())
            for y in t.road_y
            for x in xs
        ]

    def render(self, width: int, height: int, fov: float, pose: Transform) -> tuple:
        """rgb (H, W, 3) uint8, tags (H, W) uint8, depth (H, W) float32 metres seen from
        ``pose``."""
        p, r = pose.location, pose.rotation
        key = (width, height, fov, p.x, p.y, p.z, r.pitch, r.yaw, r.roll)
        if self._last is None or self._last[0] != key:
            size = (width, height, fov)
            if size not in self._renderers:
                K = intrinsics(width, height, fov)
                self._renderers[size] = Renderer(self.town, K, width, height)
            cam = carla_to_cam_to_world(np.array(key[3:]))
            self._last = (key, self._renderers[size].render(cam, _NO_BOXES, self._look))
        return self._last[1]


class Image(_Strict):
    raw_data = b""
    width = height = frame = 0
    timestamp = 0.0
    transform = Transform()

    def __init__(
        self,
        raw_data: bytes,
        width: int,
        height: int,
        frame: int,
        timestamp: float,
        transform: Transform,
    ) -> None:
        self.raw_data, self.width, self.height = raw_data, width, height
        self.frame, self.timestamp, self.transform = frame, timestamp, transform


class Actor(_Strict):
    id = 0
    type_id = ""
    attributes: dict = {}

    def __init__(
        self,
        server: FakeServer,
        blueprint: ActorBlueprint,
        transform: Transform,
        parent: Actor | None,
    ) -> None:
        self._server, self._epoch = server, server.epoch
        self.id, self.type_id, self.attributes = (
            next(server.ids),
            blueprint.id,
            dict(blueprint.attributes),
        )
        self.parent, self._transform, self._previous = parent, transform, transform

    def get_transform(self) -> Transform:
        _check(self)
        return (
            self.parent.get_transform().compose(self._transform) if self.parent else self._transform
        )

    def world_transform(self, stale: bool = False) -> Transform:
        """Where the server has the actor now (or one tick ago, ``stale``)."""
        if self.parent:
            return self.parent.world_transform(stale).compose(self._transform)
        return self._previous if stale else self._transform

    def set_transform(self, transform: Transform) -> None:
        _check(self)
        near = [
            a.world_transform().location.distance(transform.location)
            for a in self._server.actors.values()
            if a is not self and a.parent is None and a.type_id.startswith(("vehicle.", "walker."))
        ]
        self._server.teleports.append(min(near, default=np.inf))
        self._transform = self._previous = transform

    def destroy(self) -> bool:
        _check(self)
        self._server.events.append(("destroy", self.id))
        return self._server.actors.pop(self.id, None) is not None


class Vehicle(Actor):
    autopilot = False
    tm_port = 8000

    def set_autopilot(self, enabled: bool = True, tm_port: int = 8000) -> None:
        _check(self)
        self.autopilot, self.tm_port = enabled, tm_port


class Sensor(Actor):
    callback = None

    def listen(self, callback) -> None:  # noqa: ANN001
        _check(self)
        self.callback = callback

    def stop(self) -> None:
        _check(self)
        self._server.events.append(("stop", self.id))
        self.callback = None


class WalkerAIController(Actor):
    goal = None
    speed = 1.4

    def start(self) -> None:
        _check(self)

    def go_to_location(self, location: Location) -> None:
        _check(self)
        self.goal = location
        self._server.destinations += 1

    def set_max_speed(self, speed: float = 1.4) -> None:
        _check(self)
        self.speed = speed

    def stop(self) -> None:
        _check(self)


class TrafficManager(_Strict):
    """Like the client library's TrafficManagerLocal: its settings are the client's own (no
    server call, no error), and it stays bound to the server it was made for; once that server is
    lost it is *stale*: it drives nothing, and a synchronous stale one never finishes its tick."""

    def __init__(self, server: FakeServer, port: int) -> None:
        self._server, self._epoch, self.port, self.sync = server, server.epoch, port, False

    def stale(self) -> bool:
        return self._epoch != self._server.epoch

    def set_synchronous_mode(self, mode: bool = True) -> None:
        self.sync = mode
        if self.stale():
            return
        if self._server.remote is not None:
            self._server._remote("tm", sync=mode)
        self._server.tm_sync = mode

    def set_random_device_seed(self, seed: int) -> None:
        if not self.stale():
            self._server.tm_seed = seed


#: How long a stale synchronous Traffic Manager's tick blocks (the client library's blocks
#: forever, where no signal reaches; bounded here so that a regression fails instead of hanging).
STALE_TM_HANG_S = 30.0


def _tick_traffic_managers() -> None:
    """``world.tick()`` ticks every Traffic Manager this process holds, like the client library;
    a synchronous one whose server was lost waits for a step that never comes."""
    for tm in list(_TM_MAP.values()):
        if tm.sync and tm.stale():
            threading.Event().wait(STALE_TM_HANG_S)
            raise RuntimeError("the Traffic Manager's synchronous tick never finished")


class _Command(_Strict):
    def __init__(self) -> None:
        self.follow: list = []

    def then(self, command: _Command) -> _Command:
        self.follow.append(command)
        return self


class _SpawnActor(_Command):
    def __init__(
        self, blueprint: ActorBlueprint, transform: Transform, parent: int | None = None
    ) -> None:
        super().__init__()
        self.blueprint, self.transform, self.parent = blueprint, transform, parent


class _SetAutopilot(_Command):
    def __init__(self, actor: object, enabled: bool, tm_port: int = 8000) -> None:
        super().__init__()
        self.actor, self.enabled, self.tm_port = actor, enabled, tm_port


class _DestroyActor(_Command):
    def __init__(self, actor: int) -> None:
        super().__init__()
        self.actor = actor


class _Response(_Strict):
    error = ""
    actor_id = 0

    def __init__(self, actor_id: int = 0, error: str = "") -> None:
        self.actor_id, self.error = actor_id, error


class command:  # noqa: N801 - mirrors carla.command
    SpawnActor, SetAutopilot, DestroyActor, Response = (
        _SpawnActor,
        _SetAutopilot,
        _DestroyActor,
        _Response,
    )
    FutureActor = object()


@dataclass
class FakeServer:
    """The server side. Faults (sensors rgb, semantic_segmentation, depth): ``drop`` {(sensor, f)},
    ``reorder``, ``delay_s`` {sensor: s},
    ``glitch`` {frame: metres} of camera pose error, ``crash_at_ticks`` {tick count}."""

    maps: tuple[str, ...] = (
        "Town01",
        "Town02",
        "Town03",
        "Town04",
        "Town05",
        "Town06",
        "Town07",
        "Town10HD",
        "Town10HD_Opt",
    )
    version: str = CLIENT_VERSION
    map_name: str = "Town10HD_Opt"  # where a fresh 0.9.16 server starts
    drop: set = field(default_factory=set)
    reorder: bool = False
    delay_s: dict = field(default_factory=dict)
    glitch: dict = field(default_factory=dict)
    crash_at_ticks: set = field(default_factory=set)
    down_s: float = (
        0.0  # after a crash the server answers nothing for this long (inf: until relaunched)
    )
    load_s: float = (
        0.0  # seconds load_world takes; meanwhile every call but version and maps stalls
    )
    hang_at_ticks: set = field(
        default_factory=set
    )  # these ticks never finish; world.tick(t) raises after t
    stale_frames: set = field(
        default_factory=set
    )  # images of these frames carry the previous tick's pose
    threaded: bool = False  # deliver each measurement from its own thread, like the client library
    speed_m: float = 0.4  # metres an autopilot vehicle moves per tick
    nav_extent_m: float = 100.0  # navigation points lie in [0, extent]^2
    remote: tuple | None = (
        None  # (host, port) of a tests/carla_standin.py process holding the server's state
    )
    scene: bool = False  # cameras see the embedded simulator's town (see Scene), not test patterns

    def scene_of_map(self) -> Scene | None:
        """The rendered town of the loaded map, when the server was made with ``scene=True``."""
        if not self.scene:
            return None
        if getattr(self, "_scene", None) is None or self._scene.town.name != self.map_name:
            self._scene = Scene(self.map_name)
        return self._scene

    def __post_init__(self) -> None:
        self.epoch, self.ids, self.ticks, self.frame = 0, itertools.count(1), 0, 1000
        self.actors: dict[int, Actor] = {}
        self.settings = WorldSettings()
        self.settings_log: list[tuple[bool, float | None]] = []
        self.events: list[tuple[str, int]] = []
        self.tm_sync, self.tm_seed, self.pedestrians_seed, self.weather, self.loads = (
            False,
            None,
            None,
            None,
            0,
        )
        self.down_until, self.boot, self._link, self.destinations, self.teleports = (
            0.0,
            None,
            None,
            0,
            [],
        )
        self.rng = np.random.default_rng(0)  # navigation points
        self.loading_left, self._loading_seen, self.client_timeout, self.stalls = 0.0, 0.0, 5.0, 0

    def _remote(self, op: str, **args: object) -> dict:
        """One request to the stand-in process; a dead or restarted one invalidates every handle."""
        try:
            if self._link is None or self._link[0] != os.getpid():
                sock = socket.create_connection(self.remote, timeout=2.0)
                sock.settimeout(
                    None
                )  # a hung tick blocks forever, like the client library's C++ side
                self._link = (os.getpid(), sock, sock.makefile("r"))
            _, sock, reader = self._link
            sock.sendall((json.dumps({"op": op, **args}) + "\n").encode())
            line = reader.readline()
            if not line:
                raise OSError("connection closed")
        except OSError as exc:
            self._link = None
            raise RuntimeError(
                f"time-out of 2000ms while waiting for the simulator ({exc})"
            ) from None
        reply = json.loads(line)
        if reply["boot"] != self.boot:
            if self.boot is not None:  # the server restarted: every handle of the old one is dead
                self.epoch += 1
                self.actors = {}
            self.boot = reply["boot"]
        self.map_name, self.tm_sync, self.frame = reply["map"], reply["tm_sync"], reply["frame"]
        self.settings = WorldSettings(reply["sync"], reply["delta"])
        return reply

    def drives(self, tm_port: int) -> bool:
        """Whether this process has a live Traffic Manager on ``tm_port`` for this server."""
        tm = _TM_MAP.get(tm_port)
        return tm is not None and tm._server is self and not tm.stale()

    def stall(self) -> None:
        """While a map loads, a call waits (the client's timeout, counted on a clock of its own
        that real time also advances) and times out unless the load ends within it: the server's
        game thread, which serves every call but version and maps, is busy loading."""
        if self.loading_left <= 0:
            return
        now = time.monotonic()
        self.loading_left -= now - self._loading_seen
        self._loading_seen = now
        if self.loading_left > self.client_timeout:
            self.loading_left -= self.client_timeout
            self.stalls += 1
            raise RuntimeError(
                f"time-out of {self.client_timeout * 1000:.0f}ms while waiting for the simulator, "
                "make sure the simulator is ready and connected"
            )
        self.loading_left = 0.0

    def live(self) -> None:
        """Raise like the client library does while the server is down."""
        if self.remote is not None:
            self._remote("hello")
        if time.monotonic() < self.down_until:
            raise RuntimeError(
                "time-out of 2000ms while waiting for the simulator, make sure the simulator "
                "is ready and connected"
            )

    def crash(self) -> None:
        """The server process dies and comes back empty (after ``down_s``): old handles are dead."""
        self.epoch += 1
        self.actors, self.settings, self.tm_sync, self.map_name = (
            {},
            WorldSettings(),
            False,
            "Town10HD_Opt",
        )
        self.down_until = time.monotonic() + self.down_s

    def sensors(self) -> list[Sensor]:
        return [a for a in self.actors.values() if isinstance(a, Sensor) and a.callback is not None]

    def step(self) -> int:
        self.ticks += 1
        if self.ticks in self.crash_at_ticks:
            self.crash()
            raise RuntimeError("time-out of 2000ms while waiting for the simulator")
        if self.remote is not None:
            self._remote("tick")
        else:
            self.frame += 1
        for actor in self.actors.values():
            actor._previous = actor._transform
            if isinstance(actor, Vehicle) and actor.autopilot and self.drives(actor.tm_port):
                tf = actor._transform
                yaw = np.radians(tf.rotation.yaw)
                loc = Location(
                    tf.location.x + self.speed_m * np.cos(yaw),
                    tf.location.y + self.speed_m * np.sin(yaw),
                    tf.location.z,
                )
                actor._transform = Transform(loc, tf.rotation)
            if (
                isinstance(actor, WalkerAIController)
                and actor.goal is not None
                and actor.parent is not None
            ):
                self._walk(actor)
        self._deliver()
        return self.frame

    def _walk(self, controller: WalkerAIController) -> None:
        """Move the walker towards its goal; it stops there (like CARLA's AI walkers)."""
        walker, goal = controller.parent, controller.goal
        here = walker._transform.location
        gap = np.array([goal.x - here.x, goal.y - here.y])
        step = controller.speed * (self.settings.fixed_delta_seconds or 0.05)
        if np.linalg.norm(gap) <= step:
            walker._transform, controller.goal = Transform(Location(goal.x, goal.y, here.z)), None
            return
        move = gap / np.linalg.norm(gap) * step
        walker._transform = Transform(
            Location(here.x + move[0], here.y + move[1], here.z), walker._transform.rotation
        )

    def image(self, sensor: Sensor, frame: int) -> Image:
        w, h = int(sensor.attributes["image_size_x"]), int(sensor.attributes["image_size_y"])
        v, u = np.mgrid[0:h, 0:w]
        px = np.zeros((h, w, 4), np.uint8)
        px[..., 3] = 255
        scene = self.scene_of_map()
        if scene is not None:  # content from the true pose, even when the reported one is wrong
            fov = float(sensor.attributes.get("fov", 90.0))
            rgb, tags, metres = scene.render(w, h, fov, sensor.world_transform())
        else:
            rgb = np.stack([(u * 3 + frame) % 256, (v * 5) % 256, np.full_like(u, 128)], -1)
            tags, metres = expected_tags(h, w, frame), expected_depth(h, w, frame)
        if sensor.type_id.endswith("depth"):
            code = encode_depth(metres)
            px[..., 2], px[..., 1], px[..., 0] = code & 255, (code >> 8) & 255, code >> 16
        elif sensor.type_id.endswith("segmentation"):
            px[..., 2] = tags
        else:
            px[..., 2], px[..., 1], px[..., 0] = rgb[..., 0], rgb[..., 1], rgb[..., 2]
        tf = sensor.world_transform(stale=frame in self.stale_frames)
        if frame in self.glitch:
            tf = Transform(
                Location(tf.location.x + self.glitch[frame], tf.location.y, tf.location.z),
                tf.rotation,
            )
        return Image(
            px.tobytes(), w, h, frame, frame * (self.settings.fixed_delta_seconds or 0.05), tf
        )

    def _deliver(self) -> None:
        out = []
        for sensor in self.sensors():
            kind = sensor.type_id.rsplit(".", 1)[-1]
            if (kind, self.frame) in self.drop:
                continue
            if self.reorder:  # a stale measurement first, then this frame's
                out.append((sensor, self.image(sensor, self.frame - 1)))
            out.append((sensor, self.image(sensor, self.frame)))
        if self.reorder:
            out.reverse()
        for sensor, image in out:
            delay = self.delay_s.get(sensor.type_id.rsplit(".", 1)[-1], 0.0)
            if delay or self.threaded:
                threading.Timer(delay, sensor.callback, (image,)).start()
            else:
                sensor.callback(image)


def expected_depth(h: int, w: int, frame: int) -> np.ndarray:
    """The depth the fake depth camera encodes at ``frame``, metres."""
    v, u = np.mgrid[0:h, 0:w]
    return 2.0 + 0.75 * v + 0.013 * u + 0.001 * frame


def expected_tags(h: int, w: int, frame: int) -> np.ndarray:
    """The tags the fake semantic camera sends at ``frame``."""
    v, u = np.mgrid[0:h, 0:w]
    return ((u // 4 + v // 4 + frame) % 29).astype(np.uint8)


def encode_depth(metres: np.ndarray) -> np.ndarray:
    """CARLA's 24-bit depth code of metres."""
    return np.round(metres / 1000.0 * (256**3 - 1)).astype(np.int64)


class World(_Strict):
    def __init__(self, server: FakeServer) -> None:
        self._server, self._epoch = server, server.epoch

    def get_settings(self) -> WorldSettings:
        _check(self)
        return self._server.settings.copy()

    def apply_settings(self, settings: WorldSettings) -> int:
        _check(self)
        if self._server.remote is not None:
            self._server._remote(
                "settings", sync=settings.synchronous_mode, delta=settings.fixed_delta_seconds
            )
        self._server.settings = settings.copy()
        self._server.settings_log.append((settings.synchronous_mode, settings.fixed_delta_seconds))
        return self._server.frame

    def tick(self, seconds: float = 10.0) -> int:
        _check(self)
        if not self._server.settings.synchronous_mode:
            raise RuntimeError("tick() in asynchronous mode")
        if self._server.ticks + 1 in self._server.hang_at_ticks:  # the frame never comes
            self._server.ticks += 1
            time.sleep(seconds)
            raise RuntimeError(
                f"time-out of {seconds * 1000:.0f}ms while waiting for the simulator"
            )
        frame = self._server.step()
        _tick_traffic_managers()
        return frame

    def get_snapshot(self) -> WorldSnapshot:
        _check(self)
        server = self._server
        return WorldSnapshot(
            server.frame, {i: a.world_transform() for i, a in server.actors.items()}
        )

    def get_actors(self) -> ActorList:
        _check(self)
        return ActorList(self._server.actors.values())

    def try_spawn_actor(
        self, blueprint: ActorBlueprint, transform: Transform, attach_to: Actor | None = None
    ) -> Actor | None:
        try:
            return self.spawn_actor(blueprint, transform, attach_to)
        except RuntimeError:
            _check(self)
            return None

    def get_map(self) -> Map:
        _check(self)
        return Map(self._server.map_name, self._server.scene_of_map())

    def get_blueprint_library(self) -> BlueprintLibrary:
        _check(self)
        return BlueprintLibrary()

    def spawn_actor(
        self, blueprint: ActorBlueprint, transform: Transform, attach_to: Actor | None = None
    ) -> Actor:
        _check(self)
        if attach_to is None and not blueprint.id.startswith(("sensor.", "controller.")):
            for other in self._server.actors.values():
                if (
                    other.parent is None
                    and other.world_transform().location.distance(transform.location) < 2.0
                ):
                    raise RuntimeError("Spawn failed because of collision at spawn position")
        cls = (
            Sensor
            if blueprint.id.startswith("sensor.")
            else Vehicle
            if blueprint.id.startswith("vehicle.")
            else WalkerAIController
            if blueprint.id.startswith("controller.")
            else Actor
        )
        actor = cls(self._server, blueprint, transform, attach_to)
        self._server.actors[actor.id] = actor
        return actor

    def get_actor(self, actor_id: int) -> Actor | None:
        _check(self)
        return self._server.actors.get(actor_id)

    def set_weather(self, weather: WeatherParameters) -> None:
        _check(self)
        self._server.weather = weather.values

    def set_pedestrians_seed(self, seed: int) -> None:
        _check(self)
        self._server.pedestrians_seed = seed

    def get_random_location_from_navigation(self) -> Location:
        _check(self)
        extent = self._server.nav_extent_m
        x, y = self._server.rng.uniform(0, extent, 2)
        return Location(float(x), float(y), 0.5)


class ActorSnapshot(_Strict):
    def __init__(self, transform: Transform) -> None:
        self._transform = transform

    def get_transform(self) -> Transform:
        return self._transform


class WorldSnapshot(_Strict):
    frame = 0

    def __init__(self, frame: int, transforms: dict) -> None:
        self.frame, self._transforms = frame, transforms

    def find(self, actor_id: int) -> ActorSnapshot | None:
        tf = self._transforms.get(actor_id)
        return ActorSnapshot(tf) if tf is not None else None


class ActorList(_Strict, list):
    def filter(self, pattern: str) -> ActorList:
        return ActorList(a for a in self if fnmatch.fnmatch(a.type_id, pattern))


#: Traffic Manager ports bound by this process, like the client library's per-port cache.
_TM_SOCKETS: dict[int, socket.socket] = {}
#: The Traffic Managers of this process by port: the client library's static ``_tm_map``; a port
#: asked for again gives the instance made first, whatever server it was made for.
_TM_MAP: dict[int, TrafficManager] = {}


def reset_process() -> None:
    """Forget this process's client-library state (a test then runs like a new process)."""
    _TM_MAP.clear()
    for sock in _TM_SOCKETS.values():
        sock.close()
    _TM_SOCKETS.clear()


class Client(_Strict):
    def __init__(self, host: str = "127.0.0.1", port: int = 2000, worker_threads: int = 0) -> None:
        self.address = (host, port)
        self._server = SERVERS.get(self.address)
        if self._server is not None and self._server.remote is not None:
            try:
                self._server.live()  # learn whether the server restarted since the last client
            except RuntimeError:
                pass
        self._epoch = self._server.epoch if self._server else -1

    def _live(self) -> FakeServer:
        if self._server is not None:
            self._server.live()
        if self._server is None:
            raise RuntimeError(
                "time-out of 2000ms while waiting for the simulator, make sure the simulator is "
                f"ready and connected to {self.address[0]}:{self.address[1]}"
            )
        if self._epoch != self._server.epoch:  # no stall: version and maps answer while loading
            raise RuntimeError(
                "time-out of 2000ms while waiting for the simulator, make sure the simulator is "
                "ready and connected"
            )
        return self._server

    timeout = 5.0

    def set_timeout(self, seconds: float) -> None:
        self.timeout = seconds
        if self._server is not None:
            self._server.client_timeout = seconds

    def get_server_version(self) -> str:
        return self._live().version

    def get_client_version(self) -> str:
        return CLIENT_VERSION

    def get_available_maps(self) -> list[str]:
        return [f"/Game/Carla/Maps/{m}" for m in self._live().maps]

    def get_world(self) -> World:
        server = self._live()
        server.stall()
        return World(server)

    def load_world(self, map_name: str) -> World:
        server = self._live()
        if server.remote is not None:
            server._remote("load", map=map_name)
        server.stall()
        server.map_name, server.settings, server.loads = (
            map_name,
            WorldSettings(),
            server.loads + 1,
        )  # resets settings, like CARLA
        server.actors = {}
        server.loading_left, server._loading_seen = server.load_s, time.monotonic()
        try:
            server.stall()
        except RuntimeError:  # the server goes on loading; the client gives up waiting
            raise RuntimeError(
                f"time-out of {self.timeout * 1000:.0f}ms while waiting for the simulator, "
                "failed to connect to newly created map"
            ) from None
        return World(server)

    def get_trafficmanager(self, port: int = 8000) -> TrafficManager:
        server = self._live()
        server.stall()
        if port not in _TM_SOCKETS:
            sock = socket.socket()
            try:
                sock.bind(("", port))
            except OSError:
                sock.close()
                raise RuntimeError(
                    "trying to create rpc server for traffic manager; but the system failed to "
                    "create because of bind error."
                ) from None
            _TM_SOCKETS[port] = sock
        if port not in _TM_MAP:
            _TM_MAP[port] = TrafficManager(server, port)
        return _TM_MAP[port]

    def apply_batch_sync(self, commands: list, do_tick: bool = False) -> list[_Response]:
        server, world = self._live(), World(self._live())
        server.stall()
        responses = []
        for cmd in commands:
            if isinstance(cmd, _SpawnActor):
                parent = server.actors.get(cmd.parent) if cmd.parent is not None else None
                try:
                    actor = world.spawn_actor(cmd.blueprint, cmd.transform, parent)
                except RuntimeError as exc:  # reported per command, like the server
                    responses.append(_Response(0, str(exc)))
                    continue
                for follow in cmd.follow:
                    if isinstance(follow, _SetAutopilot) and isinstance(actor, Vehicle):
                        actor.autopilot, actor.tm_port = follow.enabled, follow.tm_port
                responses.append(_Response(actor.id))
            elif isinstance(cmd, _DestroyActor):
                actor = server.actors.get(cmd.actor)
                responses.append(
                    _Response(cmd.actor, "" if actor and actor.destroy() else "not found")
                )
        if do_tick and server.settings.synchronous_mode:
            server.step()
        return responses


def _contract_classes() -> dict[type, dict[str, list]]:
    from carla_capture.backends.carla.contract import CONTRACT

    out: dict[type, dict[str, list]] = {}
    for use in CONTRACT:
        owner = sys.modules[__name__]
        for part in filter(None, use.owner.split(".")):
            owner = getattr(owner, part)
        if isinstance(owner, type):
            out.setdefault(owner, {}).setdefault(use.member, []).append(use)
    return out


STRICT.update(_contract_classes())
