"""Training data: ``ClipWindows`` over a split manifest, label maps, augmentations.

>>> from dataset import AugmentConfig, ClipWindows
>>> windows = ClipWindows("data/demo", "train", window=6, augment=AugmentConfig())
"""

from dataset.config import AugmentConfig, DataConfig
from dataset.labels import LabelMap, available_label_maps, load_label_map
from dataset.windows import ClipWindows

__all__ = [
    "AugmentConfig",
    "ClipWindows",
    "DataConfig",
    "LabelMap",
    "available_label_maps",
    "load_label_map",
]
