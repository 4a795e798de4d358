"""References for the temporal memory: the frame model averaged over a clip, untrained.

:class:`RunningAverage` runs the frame-by-frame models and replaces, frame by frame, their
segmentation logits (``level = "scores"``, the counterpart of the ``scores`` memory), the frames
they read (``level = "image"``, the counterpart of the ``image`` memory) or both, the frames and
then the logits of the averaged frames (``level = "image+scores"``, the counterpart of the chain)
by a running average over the frames before it, warped into the frame at full resolution by
depth and camera motion:

    m_0 = y_0,    m_t = (1 - rate) * y_t + rate * warp(m_{t-1})   where the warp is valid,
    m_t = y_t                                                      elsewhere,

with one fixed ``rate`` for every pixel, y the logits or the frames. It trains nothing. Three
alignments, named as ``model.memory_alignment``'s, each the untrained counterpart of a stage-4
variant:

- ``none``: no warp (the average at fixed pixel positions), the trivial baseline of the memory
  without alignment;
- ``estimated``: by the frame model's own depth and ego-motion (on the frames as they are), the
  inputs the default memory (``memory_alignment = "estimated"``) reads: the trivial baseline the
  default must beat;
- ``ground_truth``: by the true depth and pose (an oracle): what blending, as the memory does,
  can gain at the frame model's quality without learning where to blend.

Its ego-motion and the depth that warps are the frame model's on the frames as they are (the depth
it outputs at the ``image`` levels: the frame model's on the averaged frames); with
``estimated`` alignment the rotation is refined photometrically as the memory's estimated
alignment refines it (``refine_iterations``, :mod:`models.pose_refine`), so that the baseline
reads the same geometry as the memory it stands beside.
"""

from __future__ import annotations

import torch

from models.pose_refine import refine_window
from models.warp import warp_previous

ALIGNMENTS = ("none", "estimated", "ground_truth")
LEVELS = ("scores", "image", "image+scores")


def level_of(fusion: str) -> str:
    """The level whose average is the untrained counterpart of a memory fusing at ``fusion``.

    ``fusion``: a ``model.memory_fusion``; the frames for ``image``, the frames and then the
    logits for ``image+scores``, the logits otherwise.
    """
    return fusion if fusion in ("image", "image+scores") else "scores"


class RunningAverage(torch.nn.Module):
    """The frame model's logits, or the frames it reads, averaged over the clip."""

    def __init__(
        self,
        frame: torch.nn.Module,
        rate: float,
        alignment: str,
        level: str = "scores",
        refine_iterations: int = 0,
    ) -> None:
        """Average at ``rate`` in [0, 1), the running average's share.

        ``frame``: a window (B, T, 3, H, W) -> ``seg_logits`` (B, T, K, H, W), ``depth``
        (B, T, 1, H, W) metres and ``rel_pose`` (B, T, 4, 4)
        (:class:`~train.pipeline.trained.FrameModel`); ``alignment``: one of :data:`ALIGNMENTS`;
        ``level``: one of :data:`LEVELS`; ``refine_iterations``: Gauss-Newton steps of the
        estimated alignment's rotation (``model.pose_refine_iterations``).
        """
        super().__init__()
        if not 0 <= rate < 1:
            raise ValueError(f"rate must lie in [0, 1), got {rate}")
        if alignment not in ALIGNMENTS:
            raise ValueError(f"alignment must be one of {ALIGNMENTS}, got {alignment!r}")
        if level not in LEVELS:
            raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
        self.frame, self.rate, self.alignment, self.level = frame, rate, alignment, level
        self.refine_iterations = refine_iterations

    def forward(
        self,
        window: torch.Tensor,
        intrinsics: torch.Tensor,
        depth: torch.Tensor,
        rel_pose: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """The frame model's outputs with the logits (or frames) averaged.

        window (B, T, 3, H, W); intrinsics (B, 3, 3) at (H, W); the true depth (B, T, 1, H, W)
        metres and relative poses (B, T, 4, 4) (frame t-1 -> t, docs/conventions.md), read only
        with ``ground_truth`` alignment.
        """
        out = self.frame(window)
        if self.alignment == "estimated":
            depth = out["depth"]
            rel_pose = refine_window(
                window, depth, intrinsics, out["rel_pose"], self.refine_iterations
            )
        if self.level != "scores":  # the network on the averaged frames
            frames = self._average(window, intrinsics, depth, rel_pose)
            out = {**self.frame(frames), "rel_pose": out["rel_pose"]}
        if self.level == "image":
            return out
        return {**out, "seg_logits": self._average(out["seg_logits"], intrinsics, depth, rel_pose)}

    def _average(
        self,
        maps: torch.Tensor,
        intrinsics: torch.Tensor,
        depth: torch.Tensor,
        rel_pose: torch.Tensor,
    ) -> torch.Tensor:
        """The running average of ``maps`` (B, T, C, H, W) over its frames, in its dtype."""
        memory = maps[:, 0].float()
        averaged = [memory]
        for t in range(1, maps.shape[1]):
            own = maps[:, t].float()
            warped, valid = self._previous(memory, depth[:, t], intrinsics, rel_pose[:, t])
            memory = torch.where(valid > 0, (1 - self.rate) * own + self.rate * warped, own)
            averaged.append(memory)
        return torch.stack(averaged, 1).to(maps.dtype)

    def _previous(
        self,
        memory: torch.Tensor,
        depth: torch.Tensor,
        intrinsics: torch.Tensor,
        rel_pose: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The running average of frame t-1 (B, C, H, W) seen from frame t, and its validity.

        Validity (B, 1, H, W); without alignment the average as it is, valid everywhere.
        """
        if self.alignment == "none":
            return memory, torch.ones_like(memory[:, :1])
        return warp_previous(memory, depth, intrinsics, rel_pose)
