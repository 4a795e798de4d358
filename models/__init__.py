"""Every model family of the project, one file per family, chosen from a registry.

The temporal pipeline's families (segmentation, depth, ego-motion, GeometryFilter and the full
pipeline), the UNet (the ``lowres`` segmentation model), the forecaster and the sim2real twin
VAE. Each builder takes its family's config: a :class:`ModelConfig` (sizes from
:data:`PRESETS`), except ``sim2real``, which takes a
:class:`~models.sim2real.Sim2RealModelConfig` (sizes from ``SIM2REAL_PRESETS``) or a preset name.

>>> from models import MODELS, PRESETS
>>> model = MODELS["pipeline"](PRESETS["tiny"])
>>> twin = MODELS["sim2real"]("tiny")
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from models.config import PRESETS, ModelConfig, preset
from models.depth import build_depth
from models.ego_motion import build_ego_motion
from models.forecast import build_forecaster
from models.geometry_filter import build_geometry_filter
from models.pipeline import build_pipeline
from models.segmentation import build_segmentation
from models.sim2real import build_sim2real
from models.unet import build_unet

#: name -> builder(config): every family, built at its config's sizes with fresh weights
MODELS: dict[str, Callable[..., nn.Module]] = {
    "segmentation": build_segmentation,
    "depth": build_depth,
    "ego_motion": build_ego_motion,
    "geometry_filter": build_geometry_filter,
    "pipeline": build_pipeline,
    "unet": build_unet,
    "forecaster": build_forecaster,
    "sim2real": build_sim2real,
}

__all__ = ["MODELS", "PRESETS", "ModelConfig", "preset"]
