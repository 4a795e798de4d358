"""Label maps: CARLA 0.9.16 tags (0..28) onto training classes, chosen by name.

Each map is a data file in ``dataset/label_maps/<name>.toml`` listing its classes (name,
palette colour, the CARLA tags it takes) and the tags it ignores; every one of the 29 tags
appears exactly once.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from functools import cache
from importlib import resources

import numpy as np

from clipcore.errors import ConfigError
from clipcore.tags import NUM_TAGS, TAG_ID

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

IGNORE_INDEX = 255


@dataclass(frozen=True)
class LabelMap:
    """``lut`` (256,) uint8 maps a tag id to a class index or ``ignore_index``."""

    name: str
    class_names: tuple[str, ...]
    palette: np.ndarray  # (K, 3) uint8 RGB
    lut: np.ndarray
    ignore_index: int = IGNORE_INDEX

    @property
    def num_classes(self) -> int:
        """Number of classes K."""
        return len(self.class_names)

    def __call__(self, tags: np.ndarray) -> np.ndarray:
        """Map a uint8 tag array to class indices (same shape, uint8; ignored: ``ignore_index``)."""
        return self.lut[tags]

    def colorize(self, labels: np.ndarray) -> np.ndarray:
        """(..., H, W) class indices -> (..., H, W, 3) uint8 RGB (ignored pixels black)."""
        table = np.zeros((256, 3), np.uint8)
        table[: self.num_classes] = self.palette
        return table[labels]


def available_label_maps() -> list[str]:
    """Names of the shipped label maps."""
    return sorted(
        p.name[:-5]
        for p in resources.files("dataset.label_maps").iterdir()
        if p.name.endswith(".toml")
    )


@cache
def load_label_map(name: str) -> LabelMap:
    """Load a shipped label map by name, checking that it covers every tag exactly once."""
    if name not in available_label_maps():
        raise ConfigError(
            f"unknown label map {name!r}; choose one of: {', '.join(available_label_maps())}"
        )
    data = tomllib.loads(resources.files("dataset.label_maps").joinpath(f"{name}.toml").read_text())
    lut = np.full(256, data["ignore_index"], np.uint8)
    seen: list[str] = list(data["ignore"])
    for index, cls in enumerate(data["classes"]):
        for tag in cls["tags"]:
            lut[TAG_ID[tag]] = index
            seen.append(tag)
    if sorted(seen) != sorted(TAG_ID) or len(seen) != NUM_TAGS:
        raise ConfigError(
            f"label map {name}: every one of the {NUM_TAGS} CARLA tags must appear exactly once"
        )
    return LabelMap(
        name=name,
        class_names=tuple(c["name"] for c in data["classes"]),
        palette=np.array([c["color"] for c in data["classes"]], np.uint8),
        lut=lut,
        ignore_index=int(data["ignore_index"]),
    )
