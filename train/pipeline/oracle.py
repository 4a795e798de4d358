"""A reference for the temporal memory: the frame model's scores averaged over a clip by the truth.

:class:`TruthAverage` runs the frame-by-frame models and replaces each frame's segmentation
logits by a running average of the logits of the frames before it, warped into the frame by the
**true** depth and camera motion at full resolution:

    m_0 = l_0,    m_t = (1 - rate) * l_t + rate * warp(m_{t-1})   where the warp is valid,
    m_t = l_t                                                      elsewhere,

with one fixed ``rate`` for every pixel. It needs no training and no estimated geometry, so it
tells what a memory that blends the frame model's own outputs (the ``scores`` fusion) can
gain at the frame model's quality: where a learned memory stays far below it, the memory is
what to improve; where the reference itself stays below a goal, blending cannot reach the goal
and only a better frame model (or a memory that changes what the frame model sees) can. It is an
oracle (it reads the true depth and pose), a reference, not a product model; its depth and
ego-motion are the frame model's.
"""

from __future__ import annotations

import torch

from models.warp import warp_previous


class TruthAverage(torch.nn.Module):
    """The frame model's segmentation logits averaged over the clip by the true geometry."""

    def __init__(self, frame: torch.nn.Module, rate: float) -> None:
        """Average ``frame``'s logits at ``rate`` in [0, 1), the running average's share.

        ``frame``: a window (B, T, 3, H, W) -> ``seg_logits`` (B, T, K, H, W) and the rest
        (:class:`~train.pipeline.trained.FrameModel`).
        """
        super().__init__()
        if not 0 <= rate < 1:
            raise ValueError(f"rate must lie in [0, 1), got {rate}")
        self.frame, self.rate = frame, rate

    def forward(
        self,
        window: torch.Tensor,
        intrinsics: torch.Tensor,
        depth: torch.Tensor,
        rel_pose: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """The frame model's outputs with the logits averaged.

        window (B, T, 3, H, W); intrinsics (B, 3, 3) at (H, W); the true depth (B, T, 1, H, W)
        metres and relative poses (B, T, 4, 4) (frame t-1 -> t, docs/conventions.md).
        """
        out = self.frame(window)
        logits = out["seg_logits"]
        memory = logits[:, 0].float()
        averaged = [memory]
        for t in range(1, logits.shape[1]):
            warped, valid = warp_previous(memory, depth[:, t], intrinsics, rel_pose[:, t])
            own = logits[:, t].float()
            memory = torch.where(valid > 0, (1 - self.rate) * own + self.rate * warped, own)
            averaged.append(memory)
        return {**out, "seg_logits": torch.stack(averaged, 1).to(logits.dtype)}
