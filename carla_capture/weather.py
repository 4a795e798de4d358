"""Per-clip weather, drawn from a town's weather pool with the clip's random generator."""

from __future__ import annotations

import zlib

import numpy as np

from carla_capture.config import Weather


def seeded_rng(name: str, *keys: int) -> np.random.Generator:
    """A generator seeded from a name and integer keys, stable across runs and machines."""
    return np.random.default_rng([zlib.crc32(name.encode()), *keys])


def draw_weather(pool: tuple[Weather, ...], rng: np.random.Generator) -> Weather:
    """One preset of the pool, with sun angles and clouds jittered, for one clip."""
    base = pool[int(rng.integers(len(pool)))]
    return base.model_copy(
        update={
            "sun_altitude_angle": float(
                np.clip(base.sun_altitude_angle + rng.uniform(-5, 5), -90, 90)
            ),
            "sun_azimuth_angle": float((base.sun_azimuth_angle + rng.uniform(-20, 20)) % 360),
            "cloudiness": float(np.clip(base.cloudiness + rng.uniform(-10, 10), 0, 100)),
        }
    )
