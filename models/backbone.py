"""``Backbone``: the image encoder every model family reads (its builders: :mod:`models.common`).

A module of its own so that an encoder family (the UNet's) can be a Backbone without importing
the module that builds every backbone.
"""

from __future__ import annotations

import torch
from torch import nn


class Backbone(nn.Module):
    """Image encoder returning ``{"out": (B, C, H/s, W/s), "low": (B, C_low, H/4, W/4)}``.

    ``resnet50`` is dilated as in DeepLabv3 (s = 8); ``mobilenet_v3_small`` is dilated in its
    last stage (s = 16).
    """

    def __init__(self, body: nn.Module, channels: int, low_channels: int, stride: int) -> None:
        """Wrap ``body`` (a module returning a dict of feature maps) with its widths and stride."""
        super().__init__()
        self.body, self.channels, self.low_channels, self.stride = (
            body,
            channels,
            low_channels,
            stride,
        )

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, 3, H, W) normalised frames -> the body's named feature maps."""
        return dict(self.body(x))
