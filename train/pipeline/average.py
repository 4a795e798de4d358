"""References for the temporal memory: the frame model's scores averaged over a clip, untrained.

:class:`RunningAverage` runs the frame-by-frame models and replaces each frame's segmentation
logits by a running average of the logits of the frames before it, warped into the frame at full
resolution by depth and camera motion:

    m_0 = l_0,    m_t = (1 - rate) * l_t + rate * warp(m_{t-1})   where the warp is valid,
    m_t = l_t                                                      elsewhere,

with one fixed ``rate`` for every pixel. It trains nothing. Three alignments, named as
``model.memory_alignment``'s, each the untrained counterpart of a stage-4 variant:

- ``none``: no warp (the average at fixed pixel positions), the trivial baseline of the memory
  without alignment;
- ``estimated``: by the frame model's own depth and ego-motion, the inputs the default memory
  (``memory_alignment = "estimated"``) reads: the trivial baseline the default must beat;
- ``ground_truth``: by the true depth and pose (an oracle): what blending the frame model's own
  outputs, as the ``scores`` memory does, can gain at the frame model's quality. Where it stays
  below a goal, blending cannot reach the goal; only a better frame model, or a memory that
  changes what the frame model sees, can.

Its depth and ego-motion are the frame model's.
"""

from __future__ import annotations

import torch

from models.warp import warp_previous

ALIGNMENTS = ("none", "estimated", "ground_truth")


class RunningAverage(torch.nn.Module):
    """The frame model's segmentation logits averaged over the clip by depth and motion."""

    def __init__(self, frame: torch.nn.Module, rate: float, alignment: str) -> None:
        """Average ``frame``'s logits at ``rate`` in [0, 1), the running average's share.

        ``frame``: a window (B, T, 3, H, W) -> ``seg_logits`` (B, T, K, H, W), ``depth``
        (B, T, 1, H, W) metres and ``rel_pose`` (B, T, 4, 4)
        (:class:`~train.pipeline.trained.FrameModel`); ``alignment``: one of :data:`ALIGNMENTS`.
        """
        super().__init__()
        if not 0 <= rate < 1:
            raise ValueError(f"rate must lie in [0, 1), got {rate}")
        if alignment not in ALIGNMENTS:
            raise ValueError(f"alignment must be one of {ALIGNMENTS}, got {alignment!r}")
        self.frame, self.rate, self.alignment = frame, rate, alignment

    def forward(
        self,
        window: torch.Tensor,
        intrinsics: torch.Tensor,
        depth: torch.Tensor,
        rel_pose: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """The frame model's outputs with the logits averaged.

        window (B, T, 3, H, W); intrinsics (B, 3, 3) at (H, W); the true depth (B, T, 1, H, W)
        metres and relative poses (B, T, 4, 4) (frame t-1 -> t, docs/conventions.md), read only
        with ``ground_truth`` alignment.
        """
        out = self.frame(window)
        if self.alignment == "estimated":
            depth, rel_pose = out["depth"], out["rel_pose"]
        logits = out["seg_logits"]
        memory = logits[:, 0].float()
        averaged = [memory]
        for t in range(1, logits.shape[1]):
            own = logits[:, t].float()
            warped, valid = self._previous(memory, depth[:, t], intrinsics, rel_pose[:, t])
            memory = torch.where(valid > 0, (1 - self.rate) * own + self.rate * warped, own)
            averaged.append(memory)
        return {**out, "seg_logits": torch.stack(averaged, 1).to(logits.dtype)}

    def _previous(
        self,
        memory: torch.Tensor,
        depth: torch.Tensor,
        intrinsics: torch.Tensor,
        rel_pose: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The running average of frame t-1 (B, K, H, W) seen from frame t, and its validity.

        Validity (B, 1, H, W); without alignment the average as it is, valid everywhere.
        """
        if self.alignment == "none":
            return memory, torch.ones_like(memory[:, :1])
        return warp_previous(memory, depth, intrinsics, rel_pose)
