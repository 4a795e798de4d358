"""A convolutional GRU cell (the reference's: no bias, no normalisation)."""

from __future__ import annotations

import torch
from torch import nn


class ConvGRUCell(nn.Module):
    """One 3x3 conv over [x, h] gives reset r and update z.

    Candidate c = tanh(conv([x, r*h])); h' = (1 - z) * h + z * c. Shapes: x (B, C_in, H, W), h (B,
    C_h, H, W).
    """

    def __init__(self, in_channels: int, hidden_channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        pad = kernel_size // 2
        self.hidden_channels = hidden_channels
        self.gates = nn.Conv2d(
            in_channels + hidden_channels, 2 * hidden_channels, kernel_size, padding=pad, bias=False
        )
        self.candidate = nn.Conv2d(
            in_channels + hidden_channels, hidden_channels, kernel_size, padding=pad, bias=False
        )

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """One step: input ``x`` (B, C_in, H, W), hidden ``h`` (B, C_h, H, W) -> new hidden."""
        r, z = torch.sigmoid(self.gates(torch.cat([x, h], 1))).chunk(2, 1)
        c = torch.tanh(self.candidate(torch.cat([x, r * h], 1)))
        return (1 - z) * h + z * c
