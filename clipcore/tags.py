"""CARLA 0.9.16 semantic tags (``carla.CityObjectLabel``) and their CityScapes palette.

Ids 0..28 as the 0.9.16 client defines them; this is the ``semantic_schema`` value
``"carla-0.9.16"`` written into every shard. Checked against the installed client by
``tests/carla_capture/test_tags.py``.
"""

from __future__ import annotations

import numpy as np

SEMANTIC_SCHEMA = "carla-0.9.16"

#: (id, name, (R, G, B)) for every tag of the schema, in id order.
TAGS: tuple[tuple[int, str, tuple[int, int, int]], ...] = (
    (0, "Unlabeled", (0, 0, 0)),
    (1, "Roads", (128, 64, 128)),
    (2, "Sidewalks", (244, 35, 232)),
    (3, "Buildings", (70, 70, 70)),
    (4, "Walls", (102, 102, 156)),
    (5, "Fences", (190, 153, 153)),
    (6, "Poles", (153, 153, 153)),
    (7, "TrafficLight", (250, 170, 30)),
    (8, "TrafficSigns", (220, 220, 0)),
    (9, "Vegetation", (107, 142, 35)),
    (10, "Terrain", (152, 251, 152)),
    (11, "Sky", (70, 130, 180)),
    (12, "Pedestrians", (220, 20, 60)),
    (13, "Rider", (255, 0, 0)),
    (14, "Car", (0, 0, 142)),
    (15, "Truck", (0, 0, 70)),
    (16, "Bus", (0, 60, 100)),
    (17, "Train", (0, 80, 100)),
    (18, "Motorcycle", (0, 0, 230)),
    (19, "Bicycle", (119, 11, 32)),
    (20, "Static", (110, 190, 160)),
    (21, "Dynamic", (170, 120, 50)),
    (22, "Other", (55, 90, 80)),
    (23, "Water", (45, 60, 150)),
    (24, "RoadLines", (157, 234, 50)),
    (25, "Ground", (81, 0, 81)),
    (26, "Bridge", (150, 100, 100)),
    (27, "RailTrack", (230, 150, 140)),
    (28, "GuardRail", (180, 165, 180)),
)

NUM_TAGS = len(TAGS)
TAG_NAMES: tuple[str, ...] = tuple(name for _, name, _ in TAGS)
TAG_ID: dict[str, int] = {name: tag for tag, name, _ in TAGS}

#: Tags of things that never move; reprojection checks use only these.
STATIC_TAGS: frozenset[int] = frozenset(
    TAG_ID[n]
    for n in (
        "Roads",
        "Sidewalks",
        "Buildings",
        "Walls",
        "Fences",
        "Poles",
        "TrafficLight",
        "TrafficSigns",
        "Vegetation",
        "Terrain",
        "RoadLines",
        "Ground",
        "Bridge",
        "RailTrack",
        "GuardRail",
        "Static",
    )
)


def palette() -> np.ndarray:
    """The (256, 3) uint8 RGB palette: row ``i`` is the colour of tag ``i``, unused rows black."""
    lut = np.zeros((256, 3), dtype=np.uint8)
    for tag, _, rgb in TAGS:
        lut[tag] = rgb
    return lut


def colorize(semantic: np.ndarray) -> np.ndarray:
    """Map a (..., H, W) uint8 tag image to (..., H, W, 3) uint8 RGB in the CARLA palette."""
    return palette()[semantic]
