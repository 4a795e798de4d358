"""The network each stage trains, built from the model registry and earlier stages' checkpoints.

Every stage network takes a batch of windows (``rgb`` (B, T, 3, H, W)) and returns
pipeline-style outputs: ``seg_logits`` (B, T, K, H, W), ``depth`` (B, T, 1, H, W) metres,
``motion`` (B, T-1, 6) as far as the stage predicts them. ``components()`` names the
modules a checkpoint of the stage stores. A network with ``reads_geometry = True`` also takes
the batch's ``intrinsics``, ``depth`` and ``rel_pose`` (:func:`stage_forward` passes them).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from models.common import pose_to_vector
from models.config import ModelConfig
from models.depth import build_depth
from models.ego_motion import build_ego_motion
from models.geometry_filter import build_geometry_filter
from models.pipeline import build_pipeline
from models.segmentation import build_segmentation
from train.pipeline.config import StageConfig
from train.pipeline.trained import component


class SegmentationStage(nn.Module):
    """Stage 1: single-frame segmentation."""

    def __init__(self, cfg: ModelConfig, run_dir: Path) -> None:
        super().__init__()
        self.segmentation = build_segmentation(cfg)

    def components(self) -> dict[str, nn.Module]:
        """What a checkpoint stores: the segmentation model."""
        return {"segmentation": self.segmentation}

    def forward(self, rgb: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, T, 3, H, W) -> ``seg_logits`` (B, T, K, H, W), frame by frame."""
        return {
            "seg_logits": self.segmentation(rgb.flatten(0, 1))["seg_logits"].unflatten(
                0, rgb.shape[:2]
            )
        }


class DepthStage(nn.Module):
    """Stage 2: single-frame metric depth.

    With ``shared_backbone``, its decoder on stage 1's backbone (the one the GeometryFilter uses, so
    stage 4 keeps the backbone the decoder was trained on).
    """

    def __init__(self, cfg: ModelConfig, run_dir: Path, shared_backbone: bool = False) -> None:
        super().__init__()
        self.depth = build_depth(cfg)
        if shared_backbone:
            segmentation = build_segmentation(cfg)
            segmentation.load_state_dict(component(run_dir, "stage1", "segmentation"))
            self.depth.backbone = segmentation.backbone

    def components(self) -> dict[str, nn.Module]:
        """What a checkpoint stores: the depth model."""
        return {"depth": self.depth}

    def forward(self, rgb: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, T, 3, H, W) -> ``depth`` (B, T, 1, H, W) metres, frame by frame."""
        return {"depth": self.depth(rgb.flatten(0, 1))["depth"].unflatten(0, rgb.shape[:2])}


class EgoMotionStage(nn.Module):
    """Stage 3: the ego-motion filter on stage 1's (frozen) backbone embeddings."""

    def __init__(self, cfg: ModelConfig, run_dir: Path) -> None:
        super().__init__()
        segmentation = build_segmentation(cfg)
        segmentation.load_state_dict(component(run_dir, "stage1", "segmentation"))
        self.backbone = segmentation.backbone
        self.ego_motion = build_ego_motion(cfg, self.backbone.channels)

    def components(self) -> dict[str, nn.Module]:
        """What a checkpoint stores: the ego-motion filter."""
        return {"ego_motion": self.ego_motion}

    def forward(self, rgb: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, T, 3, H, W) -> ``motion`` (B, T-1, 6) from frame t-1 to t."""
        embeddings = self.backbone(rgb.flatten(0, 1))["out"].unflatten(0, rgb.shape[:2])
        return {"motion": self.ego_motion(embeddings)["motion"]}


class SequenceStage(nn.Module):
    """Stage 4: the GeometryFilter with stage 3's ego-motion, over whole windows.

    The GeometryFilter: stage 1's backbone and head, stage 2's decoder, a new memory.
    """

    def __init__(self, cfg: ModelConfig, run_dir: Path) -> None:
        super().__init__()
        segmentation, depth = build_segmentation(cfg), build_depth(cfg)
        segmentation.load_state_dict(component(run_dir, "stage1", "segmentation"))
        depth.load_state_dict(component(run_dir, "stage2", "depth"))
        geometry = build_geometry_filter(cfg, segmentation, depth)
        ego = build_ego_motion(cfg, geometry.backbone.channels)
        ego.load_state_dict(component(run_dir, "stage3", "ego_motion"))
        self.pipeline = build_pipeline(cfg, geometry, ego)

    reads_geometry = True

    def components(self) -> dict[str, nn.Module]:
        """What a checkpoint stores: the GeometryFilter and the ego-motion filter."""
        return {"geometry_filter": self.pipeline.geometry, "ego_motion": self.pipeline.ego_motion}

    def forward(
        self,
        rgb: torch.Tensor,
        intrinsics: torch.Tensor | None = None,
        depth: torch.Tensor | None = None,
        rel_pose: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """A window and its geometry -> ``seg_logits``, ``depth`` and ``motion`` of every frame.

        With the image memory also ``frames``, the fused frames its ``restore`` loss reads.
        """
        out = self.pipeline(rgb, intrinsics, depth, rel_pose)
        kept = {k: out[k] for k in ("seg_logits", "depth", "frames") if k in out}
        return {**kept, "motion": pose_to_vector(out["rel_pose"][:, 1:])}


STAGE_NETS: dict[str, type[nn.Module]] = {
    "segmentation": SegmentationStage,
    "depth": DepthStage,
    "ego_motion": EgoMotionStage,
    "sequence": SequenceStage,
}


def build_stage_net(stage: StageConfig, cfg: ModelConfig, run_dir: Path) -> nn.Module:
    """The network ``stage`` trains (a depth stage needing stage 1 decodes stage 1's backbone)."""
    if stage.model == "depth":
        return DepthStage(cfg, run_dir, shared_backbone="stage1" in stage.needs)
    return STAGE_NETS[stage.model](cfg, run_dir)


def stage_forward(net: nn.Module, batch: dict) -> dict[str, torch.Tensor]:
    """Run a stage network (or its DDP wrapper) on a batch of windows."""
    inner = net.module if isinstance(net, nn.parallel.DistributedDataParallel) else net
    if getattr(inner, "reads_geometry", False):
        return net(batch["rgb"], batch["intrinsics"], batch["depth"], batch["rel_pose"])
    return net(batch["rgb"])
