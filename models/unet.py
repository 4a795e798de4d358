"""UNet: a small encoder-decoder with skip connections, for low-resolution segmentation on a CPU.

The encoder has five levels of two 3x3 conv + BN + ReLU blocks, ``w, 2w, 4w, 8w, 16w`` channels
(``w = ModelConfig.unet_width``) at strides 1, 2, 4, 8 and 16 (2x2 max pooling between them).
It is a :class:`~models.backbone.Backbone` (``out`` at stride 16, ``low`` at stride 4, plus the
other levels), so with ``seg_model = "unet"`` every stage runs on it: the depth decoder, the
ego-motion filter and the GeometryFilter's memory read its ``out``. The decoder upsamples
(bilinear) to each finer level, concatenates that level's encoder features and applies two conv
blocks; a 1x1 conv gives class logits at the input's size. Any input size works (each upsampling
goes to the skip's exact size).

>>> from models.config import PRESETS
>>> net = build_unet(PRESETS["lowres"])
>>> net(torch.zeros(1, 3, 64, 128))["seg_logits"].shape
torch.Size([1, 22, 64, 128])
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from models.backbone import Backbone
from models.config import ModelConfig

#: Encoder levels, finest first; ``low`` and ``out`` are the names every Backbone has.
LEVELS = ("s1", "s2", "low", "s8", "out")


def double_conv(cin: int, cout: int) -> nn.Sequential:
    """(3x3 conv + BN + ReLU) twice."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(True),
    )


class UNetEncoder(nn.Module):
    """(B, 3, H, W) -> the feature maps of the five levels.

    ``{"s1": (B, w, H, W), "s2": (B, 2w, H/2, W/2), "low": (B, 4w, H/4, W/4), "s8": (B, 8w, H/8,
    W/8), "out": (B, 16w, H/16, W/16)}`` (sizes rounded down by pooling).
    """

    def __init__(self, width: int) -> None:
        super().__init__()
        chans = [width * 2**k for k in range(len(LEVELS))]
        pairs = zip([3, *chans[:-1]], chans, strict=True)
        self.blocks = nn.ModuleList(double_conv(cin, cout) for cin, cout in pairs)
        self.channels = chans

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, 3, H, W) -> the five levels' features, finest first."""
        out: dict[str, torch.Tensor] = OrderedDict()
        for k, (name, block) in enumerate(zip(LEVELS, self.blocks, strict=True)):
            x = block(x if k == 0 else F.max_pool2d(x, 2, ceil_mode=True))
            out[name] = x
        return out


class UNetDecoder(nn.Module):
    """Encoder features (a dict) -> logits (B, K, H, W) at the finest level's size."""

    reads_features = True  # the GeometryFilter passes all features, with memory-fused ``out``

    def __init__(self, channels: list[int], num_classes: int) -> None:
        super().__init__()
        finer = reversed(range(len(channels) - 1))
        self.ups = nn.ModuleList(
            double_conv(channels[k + 1] + channels[k], channels[k]) for k in finer
        )
        self.classifier = nn.Conv2d(channels[0], num_classes, 1)

    def forward(self, feats: dict[str, torch.Tensor]) -> torch.Tensor:
        """The encoder's features (a dict) -> logits (B, K, H, W)."""
        if not isinstance(feats, dict):
            from clipcore.errors import ConfigError

            raise ConfigError(
                "the UNet decoder needs its encoder's skip features, so it cannot "
                "decode a bottleneck alone (forecasting); use a preset with "
                "seg_model='segmentation', e.g. --preset tiny"
            )
        x = feats[LEVELS[-1]]
        for name, up in zip(reversed(LEVELS[:-1]), self.ups, strict=True):
            skip = feats[name]
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = up(torch.cat([x, skip], 1))
        return self.classifier(x)


class UNet(nn.Module):
    """Single-frame segmentation.

    Input (B, 3, H, W) ImageNet-normalised; output ``{"seg_logits": (B, K, H, W)}``. ``backbone``
    and ``head`` as in :class:`~models.segmentation.SegmentationModel`, so later stages can take
    them over.
    """

    def __init__(self, backbone: Backbone, head: UNetDecoder) -> None:
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, 3, H, W) normalised frames -> ``{"seg_logits": (B, K, H, W)}``."""
        return {"seg_logits": self.head(self.backbone(x))}


def unet_encoder(cfg: ModelConfig) -> Backbone:
    """The UNet encoder as a :class:`Backbone` (stride 16)."""
    body = UNetEncoder(cfg.unet_width)
    return Backbone(body, body.channels[-1], body.channels[2], 16)


def build_unet(cfg: ModelConfig) -> UNet:
    """A UNet of base width ``cfg.unet_width`` with ``cfg.num_classes`` outputs.

    No pretrained weights: it is small enough to train from scratch.
    """
    backbone = unet_encoder(cfg)
    return UNet(backbone, UNetDecoder(backbone.body.channels, cfg.num_classes))
