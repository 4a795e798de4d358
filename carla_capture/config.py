"""Capture configuration: the town files under ``town_configs/`` and ``CaptureConfig``.

A town file (``town_configs/<Town>.toml``) describes one CARLA map: its traffic, its
weather pool, the camera rig, and the layout the embedded simulator generates for it.
"""

from __future__ import annotations

import logging
import math
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from clipcore.errors import ConfigError
from clipcore.geometry import HFOV_RANGE_DEG
from clipcore.settings import TextPath, build, read_toml

_STRICT = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
#: Clips of one town and seed: clip ids number them with 6 digits.
MAX_CLIPS = 1_000_000
#: Frames per clip: clips are held in memory while recorded (an hour at 20 fps is 72,000).
MAX_FRAMES = 100_000


class CameraRig(BaseModel):
    """The camera mounted on the ego vehicle; RGB, semantic and depth share it."""

    model_config = _STRICT
    width: int = Field(512, ge=16, le=4096, description="Image width in pixels.")
    height: int = Field(256, ge=16, le=4096, description="Image height in pixels.")
    hfov: float = Field(
        90.0,
        gt=HFOV_RANGE_DEG[0],
        lt=HFOV_RANGE_DEG[1],
        description="Horizontal field of view in degrees.",
    )
    x: float = Field(
        1.5, description="Mount position forward of the vehicle origin, metres (UE axes)."
    )
    y: float = Field(0.0, description="Mount position to the right of the vehicle origin, metres.")
    z: float = Field(
        1.7, gt=0.2, description="Mount height above the vehicle origin (ground), metres."
    )
    pitch: float = Field(
        -3.0, ge=-45.0, le=45.0, description="Mount pitch in degrees (negative looks down)."
    )


#: ``carla.WeatherParameters`` presets of CARLA 0.9.16 (test_carla_contract checks them).
CARLA_PRESETS = (
    "ClearNight", "ClearNoon", "ClearSunset", "CloudyNight", "CloudyNoon", "CloudySunset",
    "Default", "DustStorm", "HardRainNight", "HardRainNoon", "HardRainSunset", "MidRainSunset",
    "MidRainyNight", "MidRainyNoon", "SoftRainNight", "SoftRainNoon", "SoftRainSunset",
    "WetCloudyNight", "WetCloudyNoon", "WetCloudySunset", "WetNight", "WetNoon", "WetSunset",
)  # fmt: skip
#: Every field of ``carla.WeatherParameters`` (a field not passed to its constructor is 0).
WEATHER_FIELDS = (
    "cloudiness", "precipitation", "precipitation_deposits", "wind_intensity",
    "sun_azimuth_angle", "sun_altitude_angle", "fog_density", "fog_distance", "fog_falloff",
    "wetness", "scattering_intensity", "mie_scattering_scale", "rayleigh_scattering_scale",
    "dust_storm",
)  # fmt: skip


class Weather(BaseModel):
    """One weather of a town's pool: a CARLA preset (every field), the fields set here on top."""

    model_config = _STRICT
    name: str = Field(description="Weather name, stored in the clip's weather attribute.")
    preset: str | None = Field(
        None, description="CARLA preset it starts from; default: name if a preset, else ClearNoon."
    )
    cloudiness: float = Field(10.0, ge=0, le=100, description="Cloud cover, 0..100.")
    precipitation: float = Field(0.0, ge=0, le=100, description="Rain, 0..100.")
    wetness: float = Field(0.0, ge=0, le=100, description="Wet road look, 0..100.")
    fog_density: float = Field(0.0, ge=0, le=100, description="Fog thickness, 0..100.")
    sun_altitude_angle: float = Field(60.0, ge=-90, le=90, description="Sun elevation, degrees.")
    sun_azimuth_angle: float = Field(180.0, ge=0, le=360, description="Sun azimuth, degrees.")
    # The fields below default to the preset's values.
    precipitation_deposits: float | None = Field(None, ge=0, le=100, description="Puddles, 0..100.")
    wind_intensity: float | None = Field(None, ge=0, le=100, description="Wind, 0..100.")
    fog_distance: float | None = Field(None, ge=0, description="Fog start distance, metres.")
    fog_falloff: float | None = Field(
        None, ge=0, description="Fog density over height (0: fog everywhere)."
    )
    scattering_intensity: float | None = Field(None, ge=0, description="Light scattering in fog.")
    mie_scattering_scale: float | None = Field(None, ge=0, description="Mie scattering (haze).")
    rayleigh_scattering_scale: float | None = Field(
        None, ge=0, description="Rayleigh scattering (sky colour)."
    )
    dust_storm: float | None = Field(None, ge=0, le=100, description="Dust storm, 0..100.")

    @field_validator("preset")
    @classmethod
    def _preset(cls, value: str | None) -> str | None:
        if value is not None and value not in CARLA_PRESETS:
            raise ValueError(
                f"{value!r} is not a CARLA 0.9.16 weather preset; use one of "
                + ", ".join(CARLA_PRESETS)
            )
        return value

    @property
    def base_preset(self) -> str:
        """The CARLA preset this weather starts from."""
        return self.preset or (self.name if self.name in CARLA_PRESETS else "ClearNoon")


class Layout(BaseModel):
    """Parameters of the town the embedded simulator generates (it ignores nothing here)."""

    model_config = _STRICT
    seed: int = Field(
        0, ge=0, description="Seed of the static town layout (roads, buildings, props)."
    )
    blocks: tuple[int, int] = Field((5, 5), description="City blocks along x and y.")
    block_size: tuple[float, float] = Field(
        (60.0, 90.0), description="Block edge length range, metres."
    )
    road_width: float = Field(10.0, ge=6.0, le=30.0, description="Kerb-to-kerb road width, metres.")
    sidewalk_width: float = Field(3.0, ge=1.0, le=10.0, description="Sidewalk width, metres.")
    building_density: float = Field(
        0.8, ge=0.0, le=1.0, description="Share of lots holding a building."
    )
    building_height: tuple[float, float] = Field(
        (8.0, 30.0), description="Building height range, metres."
    )
    vegetation_density: float = Field(
        0.3, ge=0.0, le=1.0, description="Trees per lot not built on, 0..1."
    )
    pole_spacing: float = Field(25.0, ge=5.0, description="Distance between street lights, metres.")
    walls: bool = Field(False, description="Walls instead of fences around empty lots.")
    guard_rails: bool = Field(False, description="Guard rails along the outer ring road.")
    water: bool = Field(False, description="A pond in one empty lot.")
    ground_colour: tuple[int, int, int] = Field((120, 130, 90), description="Base RGB of terrain.")
    building_palette: str = Field("grey", description="One of: grey, brick, sand, glass.")

    @field_validator("block_size", "building_height")
    @classmethod
    def _ordered(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not 0 < value[0] <= value[1]:
            raise ValueError(f"expected [low, high] with 0 < low <= high, got {list(value)}")
        return value

    @field_validator("building_palette")
    @classmethod
    def _palette(cls, value: str) -> str:
        if value not in ("grey", "brick", "sand", "glass"):
            raise ValueError("must be one of grey, brick, sand, glass")
        return value


class TownConfig(BaseModel):
    """Everything the project knows about one town; one file per town in ``town_configs/``."""

    model_config = _STRICT
    name: str = Field(description="Town name used on the command line and in shard names.")
    carla_map: str = Field(description="Map name as CARLA's get_available_maps() lists it.")
    description: str = Field("", description="One line for people.")
    vehicles: int = Field(30, ge=0, le=500, description="Other vehicles to spawn.")
    walkers: int = Field(20, ge=0, le=500, description="Pedestrians to spawn.")
    camera: CameraRig = Field(
        default_factory=CameraRig, description="Camera rig on the ego vehicle."
    )
    weather: tuple[Weather, ...] = Field(
        description="Weather pool; each clip draws one with its seed."
    )
    layout: Layout = Field(default_factory=Layout, description="Embedded-simulator town layout.")

    @field_validator("weather")
    @classmethod
    def _non_empty(cls, value: tuple[Weather, ...]) -> tuple[Weather, ...]:
        if not value:
            raise ValueError("the weather pool is empty; add at least one [[weather]] table")
        return value


def town_name(value: str) -> str:
    """A town name as given (``Town10`` becomes ``Town10HD``).

    A ValueError for an empty name or a path (it names the folder ``<out>/<town>/`` that shards
    are written to, so it must stay inside ``--out``).
    """
    if not value:
        raise ValueError("is empty: pass a town name such as Town03")
    if any(c in value for c in "/\\") or value.startswith("."):
        raise ValueError(
            f"{value!r} is a path, not a town name: pass a name such as Town03, and "
            "--town-dir FOLDER for town files kept elsewhere"
        )
    if value == "Town10":
        logging.getLogger(__name__).warning("CARLA 0.9.16 has no Town10; using Town10HD")
        return "Town10HD"
    return value


def default_town_dir() -> Path:
    """The ``town_configs`` folder shipped with the package."""
    return Path(str(resources.files("town_configs")))


def available_towns(town_dir: Path | None = None) -> list[str]:
    """Names of the towns that have a config file, sorted."""
    folder = town_dir or default_town_dir()
    return sorted(p.stem for p in folder.glob("Town*.toml"))


def load_town(name: str, town_dir: Path | None = None) -> TownConfig:
    """Load and validate ``<town_dir>/<name>.toml``; unknown towns list the known ones."""
    folder = town_dir or default_town_dir()
    path = folder / f"{name}.toml"
    if not path.is_file():
        known = ", ".join(available_towns(folder)) or "none"
        where = (
            f"add {path.name} to {folder}"
            if town_dir
            else f"put {path.name} (docs/synthetic.md) in a folder of yours, pass --town-dir FOLDER"
        )
        raise ConfigError(f"unknown town {name!r}; known towns: {known} (or {where})")
    town = build(TownConfig, read_toml(path), str(path))
    if town.name != name:
        raise ConfigError(
            f"{path}: name = {town.name!r} does not match the file name; set name = {name!r}"
        )
    return town


class CarlaSettings(BaseModel):
    """How the CARLA backend talks to the server and populates the world."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    host: str = Field("127.0.0.1", description="CARLA server host.")
    port: int = Field(2000, ge=1, le=65535, description="CARLA RPC port.")
    tm_port: int = Field(8000, ge=1, le=65535, description="Traffic Manager port.")
    timeout: float = Field(
        10.0, gt=0, description="Seconds to wait for any server call, tick included."
    )
    vehicles: int | None = Field(
        None, ge=0, description="Other vehicles; default: the town file's."
    )
    walkers: int | None = Field(None, ge=0, description="Pedestrians; default: the town file's.")
    ego_blueprint: str = Field(
        "vehicle.lincoln.mkz_2020", description="Blueprint id of the ego vehicle."
    )
    sensor_timeout: float = Field(
        2.0, gt=0, description="Seconds to wait for a sensor's measurement of a tick."
    )
    warmup_ticks: int = Field(
        20, ge=0, description="Ticks discarded after (re)spawning, while auto-exposure settles."
    )
    respawn_every: int = Field(
        5, ge=1, description="Move the ego to a new spawn point every K clips."
    )
    pose_tolerance_m: float = Field(
        0.005,
        gt=0,
        description="Allowed distance (m) between an image's pose and the ego's mount "
        "point in the world snapshot of the same frame.",
    )
    clip_attempts: int = Field(
        3, ge=1, description="Tries per clip when a sensor times out or disagrees."
    )
    max_restarts: int = Field(
        3, ge=0, description="Reconnects after a lost server before giving up."
    )
    restart_backoff_s: float = Field(
        2.0, ge=0, description="First wait before reconnecting; doubles each time."
    )
    servers: tuple[str, ...] = Field(
        (),
        description="host:port,host:port,... (4 ports apart on one host): one capture process "
        "per CARLA server, each a task of the plan; or N with --server-cmd: N servers launched on "
        "ports port, port+4, ... and GPUs 0..N-1.",
    )
    map_timeout: float = Field(120.0, gt=0, description="Seconds allowed for load_world.")
    server_wait: float = Field(
        60.0, ge=0, description="Seconds to wait for a lost server to answer again."
    )
    keep_settings: bool = Field(
        False, description="On exit restore the server's settings as found, not asynchronous."
    )
    stall_timeout: float = Field(
        60.0, gt=0, description="Seconds without a tick before the worker is restarted."
    )
    server_cmd: str | None = Field(
        None,
        description="Command that starts a server, with {port} (and {gpu}); capture then "
        "starts, relaunches and stops it.",
    )
    contact_wait: float = Field(
        0.0,
        ge=0,
        description="Seconds the first contact waits for an answer (the supervisor "
        "sets it for a restarted worker).",
    )
    server_gpu: int = Field(0, ge=0, description="Value of {gpu} in server_cmd.")
    supervise: bool = Field(True, description="Record in a worker watched by a heartbeat per tick.")


class CaptureConfig(BaseModel):
    """What ``capture record`` does; saved beside each town's data as ``record-<seed>.json``."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    backend: Literal["carla", "synthetic"] = Field("carla", description="Capture backend.")
    town: str = Field("Town03", description="Town to record; a file in town_configs/.")
    towns: tuple[str, ...] = Field(
        (),
        description="Towns of the dataset plan, recorded one after another with --clips clips "
        "each (instead of --town).",
    )
    clips: int = Field(10, description="Clips each town of the plan holds when done.")
    frames: int = Field(20, description="Frames per clip.")
    frame_stride: int = Field(1, description="Simulator ticks between recorded frames.")
    fps: float = Field(
        20.0, description="Simulator ticks per second (fixed_delta_seconds = 1/fps)."
    )
    seed: int = Field(0, description="Seed of the dataset plan; clip ids contain it.")
    task_index: int | None = Field(
        None,
        ge=0,
        description="This task's index: it records clips k, k+N, ... of every town; default: "
        "SLURM_ARRAY_TASK_ID or JOB_COMPLETION_INDEX, else 0.",
    )
    num_tasks: int | None = Field(
        None,
        ge=1,
        description="Number of tasks N sharing the plan; default: SLURM_ARRAY_TASK_COUNT, else 1.",
    )
    lease_timeout: float = Field(
        120.0,
        gt=0,
        description="Seconds after which a writer on another host whose lease is not renewed "
        "counts as dead (its leftovers are then taken over).",
    )
    out: TextPath = Field(Path("data"), description="Dataset folder; shards go to <out>/<Town>/.")
    clips_per_shard: int = Field(
        50, description="Clips per HDF5 shard (about 50 MB each at 512x256)."
    )
    compression: Literal["lz4hc", "lz4hc+zstd", "zstd", "lz4", "gzip", "lzf", "none"] = Field(
        "lz4hc",
        description="Chunk codec: lz4hc (the fastest to read at PNG size, written faster than a "
        "PNG folder), lz4hc+zstd (zstd depth: smaller, slower), zstd, lz4, gzip, lzf or "
        "none (see docs/format.md; all but gzip, lzf and none need hdf5plugin to read).",
    )
    town_dir: TextPath | None = Field(
        None, description="Folder of town files; default: the packaged one."
    )
    appearance: Literal["default", "textured"] = Field(
        "default",
        description="Embedded simulator's look: default, or textured (another palette, lighting, "
        "textures, noise, blur, vignetting: a domain gap for sim2real; see docs/sim2real.md).",
    )
    carla: CarlaSettings = Field(
        default_factory=CarlaSettings, description="CARLA backend settings."
    )

    @field_validator("town")
    @classmethod
    def _town_name(cls, value: str) -> str:
        return town_name(value)

    @field_validator("towns")
    @classmethod
    def _town_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        names = tuple(town_name(name) for name in value)
        if len(set(names)) != len(names):
            raise ValueError(f"lists a town twice: {', '.join(names)}; name each town once")
        return names

    @field_validator("clips", "frames", "frame_stride", "clips_per_shard")
    @classmethod
    def _positive(cls, value: int, info) -> int:  # noqa: ANN001 - pydantic's ValidationInfo
        if value < 1:
            raise ValueError(
                f"must be at least 1, got {value}; pass --{info.field_name.replace('_', '-')} N "
                "with N >= 1"
            )
        return value

    @field_validator("clips")
    @classmethod
    def _clips_bound(cls, value: int) -> int:
        if value > MAX_CLIPS:
            raise ValueError(
                f"at most {MAX_CLIPS:,} clips per town and seed (clip ids have 6 digits), got "
                f"{value:,};"
                " record more with another --seed"
            )
        return value

    @field_validator("frames")
    @classmethod
    def _frames_bound(cls, value: int) -> int:
        if value > MAX_FRAMES:
            raise ValueError(
                f"at most {MAX_FRAMES:,} frames per clip, got {value:,}; record more clips instead"
            )
        return value

    @field_validator("seed")
    @classmethod
    def _seed(cls, value: int) -> int:
        if not 0 <= value < 2**31:
            raise ValueError(f"must be in [0, 2^31), got {value}; pass --seed N with N >= 0")
        return value

    @field_validator("fps")
    @classmethod
    def _fps(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError(f"must be a finite number of ticks per second, got {value}; use 20")
        if value < 10.0:
            raise ValueError(
                f"{value} fps is a step over 0.1 s, which breaks CARLA physics; use --fps 10 or "
                "more"
            )
        return value

    @model_validator(mode="after")
    def _one_town_option(self) -> CaptureConfig:
        if self.towns and "town" in self.model_fields_set and self.town not in self.towns:
            raise ValueError(
                f"--town {self.town} and --towns {','.join(self.towns)} disagree; pass the towns "
                "with --towns alone"
            )
        return self

    @model_validator(mode="after")
    def _out_not_file(self) -> CaptureConfig:
        if self.out.exists() and not self.out.is_dir():
            raise ValueError(
                f"--out {self.out} is a file; pass a folder (it is created if missing)"
            )
        return self

    def town_config(self) -> TownConfig:
        """The validated town file this capture records."""
        return load_town(self.town, self.town_dir)


class VerifyConfig(BaseModel):
    """Thresholds of ``capture verify``; a clip fails when any check is outside them."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    timestamp_tolerance_s: float = Field(
        1e-3, gt=0, description="Allowed error of timestamp steps vs frame_stride / fps, seconds."
    )
    black_mean: float = Field(
        3.0, ge=0, description="An RGB frame whose mean value (0..255) is below this is black."
    )
    saturated_share: float = Field(
        0.5,
        gt=0,
        le=1,
        description="An RGB frame with more than this share of white pixels is saturated.",
    )
    frozen_mean_diff: float = Field(
        0.5,
        ge=0,
        description="Consecutive RGB frames closer than this mean abs difference while the camera "
        "moved are frozen.",
    )
    frozen_min_motion_m: float = Field(
        0.05,
        ge=0,
        description="Camera motion (metres) above which identical frames count as frozen.",
    )
    frozen_scene_change: float = Field(
        0.01,
        ge=0,
        le=1,
        description="Repeated RGB counts as a stalled camera when at least this share of pixels "
        "changed tag; below it, the view is blocked (e.g. by a vehicle) and the clip passes.",
    )
    sky_far_iou: float = Field(
        0.98,
        ge=0,
        le=1,
        description="Minimum IoU between sky-tagged pixels and pixels at the far plane, per frame.",
    )
    geometry_rel_tol: float = Field(
        0.005, gt=0, description="Relative depth tolerance of a reprojected static pixel."
    )
    min_depth_agree: float = Field(
        0.9,
        ge=0,
        le=1,
        description="Minimum mean share of static pixels inside faces (off tag and depth edges, "
        "in both frames) whose reprojected depth agrees with the next frame.",
    )
    min_label_agree: float = Field(
        0.95, ge=0, le=1, description="Minimum mean share of agreeing pixels whose tag also agrees."
    )
    min_static_pixels: int = Field(
        200,
        ge=1,
        description="Frame pairs with fewer static pixels inside faces in view skip the geometric "
        "check.",
    )
    trajectory_min_step_m: float = Field(
        0.05,
        ge=0,
        description="Camera steps between frames shorter than this (metres) are not judged for "
        "turning back (a stopped vehicle's jitter).",
    )
