"""The full temporal pipeline: GeometryFilter + EgoMotionFilter, with a streaming state API.

``state = model.init_state(batch, height, width)`` then
``outputs, state = model.step(frame, state)`` runs a clip of any length at constant memory and
cost per frame; ``model(window)`` runs a (B, T, 3, H, W) window at once for training
(backpropagation through time). Both give the same outputs. A memory aligned by geometry needs
the camera's ``intrinsics`` (B, 3, 3) at the frames' size; the ``ground_truth`` oracle also needs
the true ``depth`` and ``rel_pose``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from models.config import ModelConfig
from models.ego_motion import EgoMotionFilter, build_ego_motion
from models.geometry_filter import GeometryFilter, State, build_geometry_filter
from models.pose_refine import refine_rotation, refine_window


@dataclass
class PipelineState:
    """What the pipeline carries between frames.

    memory (B, C_mem, h, w), or the ``image+scores`` chain's pair of them; embedding of the
    previous frame (B, C, h, w) or None before the first frame; ego GRU state (B, hidden);
    accumulated cam_to_world (B, 4, 4) with the first frame's camera as the origin; number of
    frames seen; the previous normalised frame (B, 3, H, W), or None (kept for the photometric
    pose refinement of the estimated alignment).
    """

    memory: State
    embedding: torch.Tensor | None
    ego: torch.Tensor
    cam_to_world: torch.Tensor
    frames: int = 0
    previous: torch.Tensor | None = None


class TemporalPipeline(nn.Module):
    """Segmentation, metric depth and ego-motion from a clip, steady over time.

    With the ``estimated`` alignment, the ego-motion filter's rotation is refined photometrically
    (``refine_iterations`` Gauss-Newton steps, :mod:`models.pose_refine`) before it warps the
    memory; the outputs' ``rel_pose`` and ``cam_to_world`` stay the filter's own.
    """

    def __init__(
        self, geometry: GeometryFilter, ego_motion: EgoMotionFilter, refine_iterations: int = 0
    ) -> None:
        super().__init__()
        self.geometry, self.ego_motion = geometry, ego_motion
        self.refine_iterations = refine_iterations

    def _refines(self, intrinsics: torch.Tensor | None) -> bool:
        """Whether the estimated alignment's pose is refined (it needs the intrinsics)."""
        estimated = self.geometry.alignment == "estimated" and self.geometry.memory is not None
        return estimated and self.refine_iterations > 0 and intrinsics is not None

    def init_state(
        self,
        batch: int,
        height: int,
        width: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> PipelineState:
        """A fresh state for frames of ``height`` x ``width`` pixels."""
        eye = torch.eye(4, device=device, dtype=dtype).expand(batch, 4, 4).clone()
        return PipelineState(
            self.geometry.init_state(batch, height, width, device, dtype),
            None,
            self.ego_motion.init_state(batch, device, dtype),
            eye,
        )

    def _truth(self, depth: torch.Tensor | None, rel_pose: torch.Tensor | None) -> tuple:
        if self.geometry.alignment != "ground_truth":
            return None, None
        if depth is None or rel_pose is None:
            raise ValueError(
                "memory_alignment='ground_truth' needs the true depth and rel_pose of the frames"
            )
        return depth, rel_pose

    def step(
        self,
        frame: torch.Tensor,
        state: PipelineState,
        intrinsics: torch.Tensor | None = None,
        depth: torch.Tensor | None = None,
        rel_pose: torch.Tensor | None = None,
    ) -> tuple[dict[str, torch.Tensor], PipelineState]:
        """One normalised frame (B, 3, H, W) -> its predictions and the new state.

        ``seg_logits``, ``depth`` and, after the first frame, ``rel_pose`` (motion from the previous
        frame, in its camera coordinates) and ``cam_to_world`` (accumulated, relative to the first
        frame).

        ``intrinsics`` (B, 3, 3) at the frame's size; ``depth`` (B, 1, H, W) and ``rel_pose``
        (B, 4, 4) are the ground truth, read only by the ``ground_truth`` alignment.
        """
        true_depth, true_pose = self._truth(depth, rel_pose)
        ego, pose = state.ego, state.cam_to_world
        feats = self.geometry.backbone(frame)
        embedding = feats["out"]
        motion = None
        if state.embedding is not None:
            motion, ego = self.ego_motion.step(state.embedding, embedding, ego)
            pose = pose @ motion["rel_pose"]
        first = state.embedding is None
        size = tuple(frame.shape[-2:])
        align_pose = true_pose if true_pose is not None else (None if first else motion["rel_pose"])
        prepared = self.geometry.prepare(
            frame, feats, not first and self.geometry.alignment == "estimated"
        )
        align_depth = true_depth if true_depth is not None else prepared.depth
        if state.previous is not None and true_pose is None and self._refines(intrinsics):
            align_pose = refine_rotation(
                state.previous, frame, align_depth, intrinsics, align_pose, self.refine_iterations
            )
        fused, memory = self.geometry.remember(
            prepared.reads, state.memory, first, size, intrinsics, align_pose, align_depth
        )
        out = self.geometry.outputs(feats, fused, prepared, size)
        if motion is not None:
            out.update(rel_pose=motion["rel_pose"], cam_to_world=pose)
        previous = frame if self._refines(intrinsics) else None
        return out, PipelineState(memory, embedding, ego, pose, state.frames + 1, previous)

    def forward(
        self,
        window: torch.Tensor,
        intrinsics: torch.Tensor | None = None,
        depth: torch.Tensor | None = None,
        rel_pose: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """A window (B, T, 3, H, W) -> per-frame predictions and poses.

        ``seg_logits`` (B, T, K, H, W), ``depth`` (B, T, 1, H, W) metres, ``rel_pose`` and
        ``cam_to_world`` (B, T, 4, 4) (identity at t = 0).

        ``intrinsics`` (B, 3, 3) or (B, T, 3, 3); ``depth`` (B, T, 1, H, W) and ``rel_pose``
        (B, T, 4, 4): the ground truth, read only by the ``ground_truth`` alignment.
        """
        b, t, _, h, w = window.shape
        true_depth, true_pose = self._truth(depth, rel_pose)
        if intrinsics is not None and intrinsics.dim() == 4:
            intrinsics = intrinsics[:, 0]
        frames = window.flatten(0, 1)
        feats = self.geometry.backbone(frames)
        bottleneck = feats["out"].unflatten(0, (b, t))
        eye = torch.eye(4, device=window.device, dtype=window.dtype).expand(b, 1, 4, 4)
        rel = torch.cat([eye, self.ego_motion(bottleneck)["rel_pose"]], 1) if t > 1 else eye
        align_pose = true_pose if true_pose is not None else rel
        prepared = self.geometry.prepare(
            frames, feats, self.geometry.alignment == "estimated" and t > 1
        )
        if true_depth is None and prepared.depth is not None:
            true_depth = prepared.depth.unflatten(0, (b, t))
        if true_pose is None and t > 1 and self._refines(intrinsics):
            align_pose = refine_window(
                window, true_depth, intrinsics, align_pose, self.refine_iterations
            )
        reads = prepared.reads.unflatten(0, (b, t)) if prepared.reads is not None else None
        memory = self.geometry.init_state(b, h, w, window.device, window.dtype)
        stacked, _ = self.geometry.remember_window(
            reads, memory, True, (h, w), intrinsics, align_pose, true_depth
        )
        out = self.geometry.outputs(feats, stacked, prepared, (h, w))
        out = {k: v.unflatten(0, (b, t)) for k, v in out.items()}
        poses = [rel[:, 0]]
        for k in range(1, t):
            poses.append(poses[-1] @ rel[:, k])
        return {**out, "rel_pose": rel, "cam_to_world": torch.stack(poses, 1)}


def build_pipeline(
    cfg: ModelConfig,
    geometry: GeometryFilter | None = None,
    ego_motion: EgoMotionFilter | None = None,
) -> TemporalPipeline:
    """The full model; pass trained stage modules to assemble it from them."""
    geometry = geometry or build_geometry_filter(cfg)
    return TemporalPipeline(
        geometry,
        ego_motion or build_ego_motion(cfg, geometry.backbone.channels),
        cfg.pose_refine_iterations,
    )
