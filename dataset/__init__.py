"""Training data: ``ClipWindows`` over a split manifest, label maps, augmentations.

>>> from dataset import ClipWindows
>>> windows = ClipWindows("data/demo", "train", window=6, label_map="carla22", augment="train")
"""

from dataset.config import AugmentConfig, DatasetConfig
from dataset.labels import LabelMap, available_label_maps, load_label_map
from dataset.windows import ClipWindows

__all__ = [
    "AugmentConfig",
    "ClipWindows",
    "DatasetConfig",
    "LabelMap",
    "available_label_maps",
    "load_label_map",
]
