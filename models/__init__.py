"""The four models of the temporal pipeline, one file per family, chosen from a registry.

>>> from models import MODELS, PRESETS
>>> model = MODELS["pipeline"](PRESETS["tiny"])
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from models.config import PRESETS, ModelConfig, preset
from models.depth import build_depth
from models.ego_motion import build_ego_motion
from models.geometry_filter import build_geometry_filter
from models.pipeline import build_pipeline
from models.segmentation import build_segmentation
from models.unet import build_unet

#: name -> builder(config)
MODELS: dict[str, Callable[[ModelConfig], nn.Module]] = {
    "segmentation": build_segmentation,
    "depth": build_depth,
    "ego_motion": build_ego_motion,
    "geometry_filter": build_geometry_filter,
    "pipeline": build_pipeline,
    "unet": build_unet,
}

__all__ = ["MODELS", "PRESETS", "ModelConfig", "preset"]
