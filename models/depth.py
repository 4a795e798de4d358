"""DepthEstimationModel: an encoder plus a progressive-upsampling depth decoder (metres)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.common import Backbone, build_backbone
from models.config import ModelConfig


def _conv_bn_relu(cin: int, cout: int, k: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, padding=k // 2, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class DepthDecoder(nn.Module):
    """Features -> planar depth in metres, (B, 1, H, W).

    ``paper``: up to H/4, 3x3 conv C->384 + BN + ReLU, up to H/2, 1x1 conv 384->384 + BN +
    ReLU, up to H, 1x1 conv to 1, ReLU (no skips). ``skip``: the H/4 features are
    concatenated with the encoder's H/4 features first, and the convs are narrower.
    The output unit is ``depth_scale_m`` metres, clamped to ``max_depth_m``; the last conv starts
    at a uniform 1 (10 m) so that no pixel starts in the ReLU's dead zone.
    """

    def __init__(self, cfg: ModelConfig, channels: int, low_channels: int) -> None:
        super().__init__()
        width = cfg.decoder_channels
        self.skip = cfg.decoder == "skip"
        first_in = channels + (low_channels if self.skip else 0)
        self.quarter = _conv_bn_relu(first_in, width, 3)
        self.mid = _conv_bn_relu(
            width, width if not self.skip else width // 2, 1 if not self.skip else 3
        )
        self.out = nn.Conv2d(width if not self.skip else width // 2, 1, 1)
        # start every pixel at depth_scale_m (10 m): no pixel begins in the ReLU's dead zone
        nn.init.normal_(self.out.weight, std=1e-3)
        nn.init.constant_(self.out.bias, 1.0)
        self.scale, self.max_depth = cfg.depth_scale_m, cfg.max_depth_m

    def forward(self, feats: dict[str, torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        """Encoder features -> depth (B, 1, H, W) metres at ``size`` (H, W)."""
        h, w = size
        x = F.interpolate(feats["out"], size=(h // 4, w // 4), mode="bilinear", align_corners=False)
        if self.skip:
            x = torch.cat(
                [
                    x,
                    F.interpolate(
                        feats["low"], size=(h // 4, w // 4), mode="bilinear", align_corners=False
                    ),
                ],
                1,
            )
        x = self.quarter(x)
        x = self.mid(F.interpolate(x, size=(h // 2, w // 2), mode="bilinear", align_corners=False))
        x = self.out(F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False))
        return (F.relu(x) * self.scale).clamp(max=self.max_depth)


class DepthEstimationModel(nn.Module):
    """Single-frame metric depth.

    Input (B, 3, H, W) normalised; output ``{"depth": (B, 1, H, W)}`` metres.
    """

    def __init__(self, backbone: Backbone, decoder: DepthDecoder) -> None:
        super().__init__()
        self.backbone, self.decoder = backbone, decoder

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, 3, H, W) normalised frames -> ``{"depth": (B, 1, H, W)}`` metres."""
        return {"depth": self.decoder(self.backbone(x), x.shape[-2:])}


def build_depth(cfg: ModelConfig) -> DepthEstimationModel:
    """Stage-2 model for ``cfg`` (its own encoder)."""
    backbone = build_backbone(cfg)
    return DepthEstimationModel(
        backbone, DepthDecoder(cfg, backbone.channels, backbone.low_channels)
    )
