"""The full temporal pipeline: GeometryFilter + EgoMotionFilter, with a streaming state API.

``state = model.init_state(batch, height, width)`` then ``outputs, state = model.step(frame, state)``
runs a clip of any length at constant memory and cost per frame; ``model(window)`` runs a
(B, T, 3, H, W) window at once for training (backpropagation through time).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from models.config import ModelConfig
from models.ego_motion import EgoMotionFilter, build_ego_motion
from models.geometry_filter import GeometryFilter, build_geometry_filter


@dataclass
class PipelineState:
    """What the pipeline carries between frames.

    memory (B, C_mem, h, w); embedding of the previous frame (B, C, h, w) or None before the
    first frame; ego GRU state (B, hidden); accumulated cam_to_world (B, 4, 4) with the first
    frame's camera as the origin; number of frames seen.
    """

    memory: torch.Tensor
    embedding: torch.Tensor | None
    ego: torch.Tensor
    cam_to_world: torch.Tensor
    frames: int = 0


class TemporalPipeline(nn.Module):
    """Segmentation, metric depth and ego-motion from a clip, steady over time."""

    def __init__(self, geometry: GeometryFilter, ego_motion: EgoMotionFilter) -> None:
        super().__init__()
        self.geometry, self.ego_motion = geometry, ego_motion

    def init_state(self, batch: int, height: int, width: int, device: torch.device | str | None = None,
                   dtype: torch.dtype = torch.float32) -> PipelineState:
        """A fresh state for frames of ``height`` x ``width`` pixels."""
        eye = torch.eye(4, device=device, dtype=dtype).expand(batch, 4, 4).clone()
        return PipelineState(self.geometry.init_state(batch, height, width, device, dtype), None,
                             self.ego_motion.init_state(batch, device, dtype), eye)

    def step(self, frame: torch.Tensor, state: PipelineState) -> tuple[dict[str, torch.Tensor], PipelineState]:
        """One normalised frame (B, 3, H, W) -> ``seg_logits``, ``depth`` and, after the first
        frame, ``rel_pose`` (motion from the previous frame, in its camera coordinates) and
        ``cam_to_world`` (accumulated, relative to the first frame)."""
        out, memory, embedding = self.geometry.step(frame, state.memory)
        ego, pose = state.ego, state.cam_to_world
        if state.embedding is not None:
            motion, ego = self.ego_motion.step(state.embedding, embedding, ego)
            pose = pose @ motion["rel_pose"]
            out.update(rel_pose=motion["rel_pose"], cam_to_world=pose)
        return out, PipelineState(memory, embedding, ego, pose, state.frames + 1)

    def forward(self, window: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, T, 3, H, W) -> ``seg_logits`` (B, T, K, H, W), ``depth`` (B, T, 1, H, W) metres,
        ``rel_pose`` and ``cam_to_world`` (B, T, 4, 4) (identity at t = 0)."""
        b, t, _, h, w = window.shape
        feats = self.geometry.backbone(window.flatten(0, 1))
        bottleneck = feats["out"].unflatten(0, (b, t))
        memory = self.geometry.init_state(b, h, w, window.device, window.dtype)
        fused = []
        for k in range(t):
            f, memory = self.geometry.memory(bottleneck[:, k], memory)
            fused.append(f)
        out = self.geometry.decode(feats, torch.stack(fused, 1).flatten(0, 1), (h, w))
        out = {k: v.unflatten(0, (b, t)) for k, v in out.items()}
        eye = torch.eye(4, device=window.device, dtype=window.dtype).expand(b, 1, 4, 4)
        rel = torch.cat([eye, self.ego_motion(bottleneck)["rel_pose"]], 1) if t > 1 else eye
        poses = [rel[:, 0]]
        for k in range(1, t):
            poses.append(poses[-1] @ rel[:, k])
        return {**out, "rel_pose": rel, "cam_to_world": torch.stack(poses, 1)}


def build_pipeline(cfg: ModelConfig, geometry: GeometryFilter | None = None, ego_motion: EgoMotionFilter | None = None) -> TemporalPipeline:
    """The full model; pass trained stage modules to assemble it from them."""
    geometry = geometry or build_geometry_filter(cfg)
    return TemporalPipeline(geometry, ego_motion or build_ego_motion(cfg, geometry.backbone.channels))
