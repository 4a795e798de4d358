"""GeometryFilter: backbone + ConvGRU memory at the bottleneck + segmentation and depth heads.

The memory is a residual branch that starts switched off (a zero gate, or a zero-initialised
projection back to the bottleneck), so before sequence training the filter's outputs equal
the single-frame models' outputs exactly.
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
        self.cell = ConvGRUCell(width, width)

    def init_state(self, batch: int, height: int, width: int, device: torch.device | str | None = None,
                   dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Zero memory (B, C_mem, height, width) at the bottleneck's resolution."""
        return torch.zeros(batch, self.width, height, width, device=device, dtype=dtype)

    def forward(self, feat: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.down(feat) if self.projected else feat
        h = self.cell(x, h)
        return feat + (self.up(h) if self.projected else self.gate * h), h


class GeometryFilter(nn.Module):
    """Per frame: embed, update memory, decode segmentation logits and depth (metres)."""

    def __init__(self, backbone: Backbone, memory: ResidualMemory, seg_head: nn.Module, depth_decoder: DepthDecoder) -> None:
        super().__init__()
        self.backbone, self.memory, self.seg_head, self.depth_decoder = backbone, memory, seg_head, depth_decoder

    def init_state(self, batch: int, height: int, width: int, device: torch.device | str | None = None,
                   dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Memory for frames of ``height`` x ``width`` pixels."""
        s = self.backbone.stride
        return self.memory.init_state(batch, -(-height // s), -(-width // s), device, dtype)

    def decode(self, feats: dict[str, torch.Tensor], fused: torch.Tensor, size: tuple[int, int]) -> dict[str, torch.Tensor]:
        """Heads on memory-fused features: ``seg_logits`` (B, K, H, W), ``depth`` (B, 1, H, W) metres."""
        logits = F.interpolate(self.seg_head(fused), size=size, mode="bilinear", align_corners=False)
        return {"seg_logits": logits, "depth": self.depth_decoder({**feats, "out": fused}, size)}

    def step(self, x: torch.Tensor, memory: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
        """One normalised frame (B, 3, H, W) -> outputs, new memory, and the frame's embedding."""
        feats = self.backbone(x)
        fused, memory = self.memory(feats["out"], memory)
        return self.decode(feats, fused, x.shape[-2:]), memory, feats["out"]


def build_geometry_filter(cfg: ModelConfig, segmentation: nn.Module | None = None, depth: nn.Module | None = None) -> GeometryFilter:
    """Stage-4 model: stage 1's backbone and head, stage 2's decoder, a fresh memory."""
    segmentation = segmentation or build_segmentation(cfg)
    depth = depth or build_depth(cfg)
    backbone = segmentation.backbone
    memory = ResidualMemory(backbone.channels, cfg.memory_channels)
    return GeometryFilter(backbone, memory, segmentation.head, depth.decoder)
