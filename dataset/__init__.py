"""Training data: ``ClipWindows`` over a split manifest, label maps, augmentations.

>>> from dataset import AugmentConfig, ClipWindows
>>> windows = ClipWindows("data/demo", "train", window=6, augment=AugmentConfig())
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dataset.config import AugmentConfig, DataConfig
from dataset.labels import LabelMap, available_label_maps, load_label_map

if TYPE_CHECKING:
    from dataset.windows import ClipWindows

__all__ = [
    "AugmentConfig",
    "ClipWindows",
    "DataConfig",
    "LabelMap",
    "available_label_maps",
    "load_label_map",
]


def __getattr__(name: str) -> Any:
    """``ClipWindows`` on first use: it needs torch, the configs and label maps do not."""
    if name == "ClipWindows":
        from dataset.windows import ClipWindows

        return ClipWindows
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
