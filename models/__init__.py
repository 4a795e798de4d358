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

from typing import TYPE_CHECKING, Any

from models.config import PRESETS, ModelConfig, preset

if TYPE_CHECKING:
    from collections.abc import Callable

    from torch import nn

__all__ = ["MODELS", "PRESETS", "ModelConfig", "preset"]


def _registry() -> dict[str, Callable[..., nn.Module]]:
    """Name -> builder(config): every family, built at its config's sizes with fresh weights."""
    from models.depth import build_depth
    from models.ego_motion import build_ego_motion
    from models.forecast import build_forecaster
    from models.geometry_filter import build_geometry_filter
    from models.pipeline import build_pipeline
    from models.segmentation import build_segmentation
    from models.sim2real import build_sim2real
    from models.unet import build_unet

    return {
        "segmentation": build_segmentation,
        "depth": build_depth,
        "ego_motion": build_ego_motion,
        "geometry_filter": build_geometry_filter,
        "pipeline": build_pipeline,
        "unet": build_unet,
        "forecaster": build_forecaster,
        "sim2real": build_sim2real,
    }


def __getattr__(name: str) -> Any:
    """``MODELS`` (the registry, which imports torch) on first use; the configs need no torch."""
    if name == "MODELS":
        registry = _registry()
        globals()["MODELS"] = registry
        return registry
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
