"""GeometryFilter: backbone + ConvGRU memory at the bottleneck + segmentation and depth heads.

The memory is a residual branch that starts switched off (a zero gate, or a zero-initialised
projection back to the bottleneck), so before sequence training the filter's outputs equal
the single-frame models' outputs exactly, for segmentation and depth.

Before each update the memory is aligned by geometry (``ModelConfig.memory_alignment``): it is
warped from frame t-1 into frame t (``models/warp.py``) with the depth of frame t and the
motion t-1 -> t, at the bottleneck's resolution, and the ConvGRU reads a validity channel that
is 0 where no source pixel exists (and on the first frame, where there is no memory yet).
``estimated`` uses the ego-motion filter's pose and the depth decoder's single-frame depth
(both detached: they place the memory, they are not trained through it); ``ground_truth``
uses the dataset's depth and pose (an oracle for ablations); ``none`` keeps the memory at
fixed pixel positions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.common import Backbone
from models.config import ModelConfig
from models.convgru import ConvGRUCell
from models.depth import DepthDecoder, build_depth
from models.segmentation import build_segmentation
from models.warp import scale_intrinsics, warp_previous


class ResidualMemory(nn.Module):
    """fused = feat + branch(h), h' = ConvGRU(x, h). ``memory_channels=None`` runs the GRU on
    the full bottleneck with a per-channel gate (zero at init); otherwise 1x1 projections in
    and out, the way out zero-initialised."""

    def __init__(self, channels: int, memory_channels: int | None) -> None:
        super().__init__()
        self.projected = memory_channels is not None
        width = memory_channels or channels
        self.width = width
        if self.projected:
            self.down = nn.Conv2d(channels, width, 1, bias=False)
            self.up = nn.Conv2d(width, channels, 1, bias=False)
            nn.init.zeros_(self.up.weight)
        else:
            self.gate = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.cell = ConvGRUCell(width + 1, width)  # + the validity channel

    def init_state(
        self,
        batch: int,
        height: int,
        width: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> torch.Tensor:
        """Zero memory (B, C_mem, height, width) at the bottleneck's resolution."""
        return torch.zeros(batch, self.width, height, width, device=device, dtype=dtype)

    def forward(
        self, feat: torch.Tensor, h: torch.Tensor, valid: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """feat (B, C, h, w), memory h (B, C_mem, h, w) already aligned to this frame, valid
        (B, 1, h, w): 1 where the memory holds a warped source pixel (default: everywhere)."""
        x = self.down(feat) if self.projected else feat
        if valid is None:
            valid = torch.ones_like(x[:, :1])
        h = self.cell(torch.cat([x, valid.to(x.dtype)], 1), h)
        return feat + (self.up(h) if self.projected else self.gate * h), h


class GeometryFilter(nn.Module):
    """Per frame: embed, update memory, decode segmentation logits and depth (metres)."""

    def __init__(
        self,
        backbone: Backbone,
        memory: ResidualMemory,
        seg_head: nn.Module,
        depth_decoder: DepthDecoder,
        alignment: str = "estimated",
    ) -> None:
        super().__init__()
        self.backbone, self.memory, self.seg_head, self.depth_decoder = (
            backbone,
            memory,
            seg_head,
            depth_decoder,
        )
        self.alignment = alignment

    def init_state(
        self,
        batch: int,
        height: int,
        width: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> torch.Tensor:
        """Memory for frames of ``height`` x ``width`` pixels."""
        s = self.backbone.stride
        return self.memory.init_state(batch, -(-height // s), -(-width // s), device, dtype)

    def decode(
        self, feats: dict[str, torch.Tensor], fused: torch.Tensor, size: tuple[int, int]
    ) -> dict[str, torch.Tensor]:
        """Heads on memory-fused features: ``seg_logits`` (B, K, H, W), ``depth`` (B, 1, H, W)
        metres."""
        skips = getattr(self.seg_head, "reads_features", False)  # a UNet decoder reads every level
        logits = self.seg_head({**feats, "out": fused} if skips else fused)
        logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        return {"seg_logits": logits, "depth": self.depth_decoder({**feats, "out": fused}, size)}

    @torch.no_grad()
    def alignment_depth(
        self, feats: dict[str, torch.Tensor], size: tuple[int, int]
    ) -> torch.Tensor:
        """Single-frame depth (B, 1, H, W) metres from the frame's own (unfused) features."""
        return self.depth_decoder(feats, size)

    def align(
        self,
        memory: torch.Tensor,
        first: bool,
        size: tuple[int, int],
        intrinsics: torch.Tensor | None,
        rel_pose: torch.Tensor | None,
        depth: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Memory of frame t-1 -> (memory aligned to frame t, validity (B, 1, h, w)).

        ``size`` (H, W) of the frames; ``intrinsics`` (B, 3, 3) at that size; ``rel_pose``
        (B, 4, 4) motion t-1 -> t; ``depth`` (B, 1, H, W) planar depth of frame t, metres.
        """
        valid = memory.new_full((memory.shape[0], 1, *memory.shape[-2:]), 0.0 if first else 1.0)
        if first or self.alignment == "none":
            return memory, valid
        if intrinsics is None or rel_pose is None or depth is None:
            raise ValueError(
                "a memory aligned by geometry needs intrinsics (B, 3, 3), the "
                "relative pose and depth; pass intrinsics= (and ground truth for "
                "memory_alignment='ground_truth'), or build the model with "
                "memory_alignment='none'"
            )
        fsize = tuple(memory.shape[-2:])
        inv = F.interpolate(1.0 / depth.detach().float().clamp_min(1e-3), size=fsize, mode="area")
        K = scale_intrinsics(intrinsics.float(), size, fsize)
        return warp_previous(memory, 1.0 / inv, K, rel_pose.detach().float())

    def step(
        self,
        x: torch.Tensor,
        memory: torch.Tensor,
        first: bool = True,
        intrinsics: torch.Tensor | None = None,
        rel_pose: torch.Tensor | None = None,
        depth: torch.Tensor | None = None,
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
        """One normalised frame (B, 3, H, W) -> outputs, new memory, and the frame's embedding.

        ``first``: no earlier frame (the memory is empty). Otherwise the memory is aligned with
        ``rel_pose`` (t-1 -> t) and ``depth`` of this frame (default: the single-frame estimate).
        """
        feats = self.backbone(x)
        size = tuple(x.shape[-2:])
        if not first and self.alignment == "estimated" and depth is None:
            depth = self.alignment_depth(feats, size)
        memory, valid = self.align(memory, first, size, intrinsics, rel_pose, depth)
        fused, memory = self.memory(feats["out"], memory, valid)
        return self.decode(feats, fused, size), memory, feats["out"]


def build_geometry_filter(
    cfg: ModelConfig, segmentation: nn.Module | None = None, depth: nn.Module | None = None
) -> GeometryFilter:
    """Stage-4 model: stage 1's backbone and head, stage 2's decoder, a fresh memory."""
    segmentation = segmentation or build_segmentation(cfg)
    depth = depth or build_depth(cfg)
    backbone = segmentation.backbone
    memory = ResidualMemory(backbone.channels, cfg.memory_channels)
    return GeometryFilter(backbone, memory, segmentation.head, depth.decoder, cfg.memory_alignment)
