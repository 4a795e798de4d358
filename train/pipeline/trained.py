"""A trained pipeline run.

Its resolved config and the models built from its stages' checkpoints; the one place that builds
stage models from checkpoints, for the later stages of training, forecasting, ``train eval``,
``train predict`` and ``train live``.

Layout: ``RUN/config.json`` (the resolved :class:`~train.pipeline.config.TrainConfig`) and, per
stage, ``RUN/<stage>/best.pt`` whose ``components`` hold one state dict per module.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from pydantic import ValidationError

from clipcore.errors import CaptureError
from models.depth import build_depth
from models.ego_motion import build_ego_motion
from models.geometry_filter import build_geometry_filter
from models.pipeline import TemporalPipeline, build_pipeline
from models.segmentation import build_segmentation
from train.pipeline.config import TrainConfig, upgrade_pipeline
from train.run_folder import load_component


def component(run_dir: Path, stage: str, name: str) -> dict[str, torch.Tensor]:
    """The state dict of component ``name`` of the pipeline's ``stage`` (its ``best.pt``).

    A missing stage is one line naming the command that trains it.
    """
    return load_component(run_dir, stage, name, f"train run pipeline --stage {stage}")


def load_run(run_dir: Path) -> TrainConfig:
    """The resolved config a pipeline run was trained with (configs of earlier releases too)."""
    path = Path(run_dir) / "config.json"
    if not path.exists():
        raise CaptureError(f"{path} does not exist: is {run_dir} a run folder of train run?")
    try:
        return TrainConfig.model_validate(upgrade_pipeline(json.loads(path.read_text())))
    except (ValidationError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CaptureError(
            f"{path} is not a config train run wrote ({str(exc).splitlines()[0]}): restore it "
            "from the run's copy or train the run again"
        ) from None


def temporal_model(cfg: TrainConfig, run_dir: Path) -> TemporalPipeline:
    """Stage 4's GeometryFilter with its ego-motion filter, in eval mode."""
    geometry = build_geometry_filter(cfg.model)
    geometry.load_state_dict(component(run_dir, "stage4", "geometry_filter"))
    ego = build_ego_motion(cfg.model, geometry.backbone.channels)
    ego.load_state_dict(component(run_dir, "stage4", "ego_motion"))
    return build_pipeline(cfg.model, geometry, ego).eval()


class FrameModel(torch.nn.Module):
    """Stages 1 and 2 frame by frame, and stage 3's ego-motion on stage 1's embeddings."""

    def __init__(self, cfg: TrainConfig, run_dir: Path) -> None:
        """The three stages' models of ``run_dir``, in eval mode."""
        super().__init__()
        self.segmentation, self.depth = build_segmentation(cfg.model), build_depth(cfg.model)
        self.segmentation.load_state_dict(component(run_dir, "stage1", "segmentation"))
        self.depth.load_state_dict(component(run_dir, "stage2", "depth"))
        self.ego = build_ego_motion(cfg.model, self.segmentation.backbone.channels)
        self.ego.load_state_dict(component(run_dir, "stage3", "ego_motion"))
        self.eval()

    def forward(self, window: torch.Tensor) -> dict[str, torch.Tensor]:
        """A window (B, T, 3, H, W) -> per-frame predictions.

        ``seg_logits`` (B, T, K, H, W), ``depth`` (B, T, 1, H, W) metres and ``rel_pose`` (B, T, 4,
        4), the identity at frame 0.
        """
        frames = window.flatten(0, 1)
        b, t = window.shape[:2]
        seg = self.segmentation(frames)["seg_logits"].unflatten(0, (b, t))
        embeddings = self.segmentation.backbone(frames)["out"].unflatten(0, (b, t))
        eye = torch.eye(4, dtype=window.dtype, device=window.device).expand(b, 1, 4, 4)
        rel = torch.cat([eye, self.ego(embeddings)["rel_pose"]], 1)
        return {
            "seg_logits": seg,
            "depth": self.depth(frames)["depth"].unflatten(0, (b, t)),
            "rel_pose": rel,
        }
