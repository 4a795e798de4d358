"""Training data: label maps (and the clip-window Dataset over split manifests)."""

from dataset.labels import LabelMap, available_label_maps, load_label_map

__all__ = ["LabelMap", "available_label_maps", "load_label_map"]
