"""Forecaster: future segmentation from past RGB frames ("Segmenting the Future", Chiu et al.).

Per-frame encoder (the segmentation backbone) -> a temporal module over the frames' features ->
the segmentation decoder (head) -> logits of the *target* frame. The temporal module reduces the
features to ``width`` channels, mixes them over time (Conv3D, or 2D convs on the frames stacked
along channels as the ablation), and adds its output to the last frame's features through a 1x1
convolution that starts at zero: an untrained forecaster initialised from stage 1 is exactly the
zero-motion baseline (stage 1 on the last input frame), and training learns the change.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from models.config import ModelConfig
from models.segmentation import SegmentationModel, build_segmentation


def _conv3d(
    cin: int, cout: int, kernel: tuple[int, int, int], padding: tuple[int, int, int]
) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(cin, cout, kernel, padding=padding, bias=False),
        nn.BatchNorm3d(cout),
        nn.ReLU(inplace=True),
    )


def _conv2d(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class TemporalModule(nn.Module):
    """(B, T, C, h, w) frame features -> (B, C, h, w) change to add to the last frame's features.

    ``conv3d``: two 3x3x3 Conv3D layers, then a Conv3D with kernel (T, 1, 1) that collapses time.
    ``stack``: the T frames' features concatenated along channels, two 3x3 Conv2D layers.
    """

    def __init__(self, channels: int, frames: int, width: int, kind: str) -> None:
        super().__init__()
        self.kind, self.frames = kind, frames
        self.reduce = nn.Sequential(
            nn.Conv2d(channels, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)
        )
        if kind == "conv3d":
            self.mix = nn.Sequential(
                _conv3d(width, width, (3, 3, 3), (1, 1, 1)),
                _conv3d(width, width, (3, 3, 3), (1, 1, 1)),
                _conv3d(width, width, (frames, 1, 1), (0, 0, 0)),
            )
        elif kind == "stack":
            self.mix = nn.Sequential(_conv2d(width * frames, width), _conv2d(width, width))
        else:
            raise ValueError(f"unknown temporal module {kind!r}; use conv3d or stack")
        self.expand = nn.Conv2d(width, channels, 1)
        nn.init.zeros_(self.expand.weight)
        nn.init.zeros_(self.expand.bias)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """(B, T, C, h, w) frame features -> (B, C, h, w) change of the last frame's."""
        b, t = feats.shape[:2]
        if t != self.frames:
            raise ValueError(f"the forecaster was built for {self.frames} input frames, got {t}")
        x = self.reduce(feats.flatten(0, 1)).unflatten(0, (b, t))
        if self.kind == "conv3d":
            x = self.mix(x.transpose(1, 2)).squeeze(2)  # (B, width, 1, h, w) -> (B, width, h, w)
        else:
            x = self.mix(x.flatten(1, 2))
        return self.expand(x)


class Forecaster(nn.Module):
    """Input (B, T, 3, H, W) ImageNet-normalised past frames.

    Output ``{"seg_logits": (B, K, H, W)}`` of the target frame and ``{"features": (B, C, h, w)}``.
    """

    def __init__(
        self, segmentation: SegmentationModel, frames: int, temporal: str, width: int
    ) -> None:
        super().__init__()
        self.backbone, self.head = segmentation.backbone, segmentation.head
        self.temporal = TemporalModule(self.backbone.channels, frames, width, temporal)

    def forward(self, rgb: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, T, 3, H, W) past frames -> the target frame's ``seg_logits`` and ``features``."""
        b, t, _, h, w = rgb.shape
        feats = self.backbone(rgb.flatten(0, 1))["out"].unflatten(0, (b, t))
        fused = feats[:, -1] + self.temporal(feats)
        logits = self.head(fused)
        return {
            "seg_logits": F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False),
            "features": fused,
        }


def build_forecaster(
    cfg: ModelConfig,
    frames: int = 4,
    temporal: str = "conv3d",
    width: int = 64,
    segmentation: SegmentationModel | None = None,
) -> Forecaster:
    """A forecaster of ``frames`` input frames (the paper's four by default).

    Encoder and decoder copied from ``segmentation`` (stage 1) when given, else freshly built for
    ``cfg``.
    """
    seg = copy.deepcopy(segmentation) if segmentation is not None else build_segmentation(cfg)
    return Forecaster(seg, frames, temporal, width)
