"""The GeometryFilter's memories: where a ConvGRU carries the past into the current frame.

Three places to fuse (``ModelConfig.memory_fusion``) and one chain of two, all residual branches
that start switched off, so that before sequence training the filter's outputs are the
single-frame models' exactly:

- ``bottleneck`` (:class:`BottleneckMemory`, the reference's): the GRU runs on the backbone's
  bottleneck (stride 8 or 16) and its output is added to the features both heads decode.
  At a small frame the bottleneck is a few cells wide and one frame of motion is mostly under a
  cell, so alignment by geometry has little to correct there.
- ``scores`` (:class:`ScoreMemory`, after GRFP, Nilsson & Sminchisescu, CVPR 2018): a GRU
  whose hidden state is what the heads say at 1 / ``score_stride`` of the frame (segmentation
  logits, log-depth); each frame's own outputs are its candidate, and a learned per-pixel gate
  decides how much of the memory warped into the frame to keep. At stride 4 a frame of motion
  moves a cell by cells, where warping by depth and pose matters.
- ``image`` (:class:`ImageMemory`): the memory is the frame itself. A gated running average of
  the (normalised) frames, warped into each frame at full resolution, is what the backbone and
  heads see: noise and flicker that differ from frame to frame average out before the network
  reads them, which blending its outputs cannot undo (the frame model's errors under noise are
  not independent from frame to frame). A learned per-pixel gate decides how much of the past to
  keep (e.g. little where the frame and the warped memory disagree: an edge the warp missed).
- ``image+scores`` (:class:`ChainMemory`): both, one after the other. The image memory fuses the
  frames, the network reads the fused frames, and a score memory corrects what it says: the
  first averages out what differs from frame to frame in every pixel (noise, flicker), the
  second carries the outputs across what covers part of a frame (an occluder), where the image
  memory's gate must choose between the frame and a memory that may hold the occluder itself.

Every memory is read and written the same way by :class:`~models.geometry_filter.GeometryFilter`:
``reads = memory.reads(...)`` per frame (or a batch of frames), ``fused, h = memory(reads, h,
valid)`` once per frame with ``h`` already aligned to the frame, and the GeometryFilter turns
``fused`` into outputs. ``valid`` (B, 1, h, w) is 1 where ``h`` holds a warped source pixel.
The chain is the exception: its state is a pair of memories at two resolutions, and the
GeometryFilter runs the network between its two steps.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from models.convgru import ConvGRUCell

#: Depth floor (metres) of the ``scores`` memory's log-depth input; depth is stored in units of
#: ``LOG_DEPTH_UNIT_M`` so that log-depth sits around 0.
LOG_DEPTH_FLOOR_M = 0.5
LOG_DEPTH_UNIT_M = 10.0
#: Largest log-depth correction (a factor e^2 ~ 7.4 either way): the correction is bounded.
MAX_LOG_DEPTH_STEP = 2.0
#: The image memory's strength enters multiplied by this, and its gate starts at
#: sigmoid(GATE_START) ~ 0.82: see :class:`ImageMemory` on learning speed.
STRENGTH_SCALE = 10.0
GATE_START = 1.5


class _Memory(nn.Module):
    """What both memories share: a state of ``width`` channels at 1 / ``stride`` of the frame."""

    stride: int
    width: int

    def init_state(
        self,
        batch: int,
        height: int,
        width: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> torch.Tensor:
        """Zero memory (B, C_mem, ceil(H / stride), ceil(W / stride)) for H x W frames."""
        size = (math.ceil(height / self.stride), math.ceil(width / self.stride))
        return torch.zeros(batch, self.width, *size, device=device, dtype=dtype)


class BottleneckMemory(_Memory):
    """fused = feat + branch(h), h' = ConvGRU([feat, valid], h) at the bottleneck.

    ``memory_channels=None`` runs the GRU on the full bottleneck with a per-channel gate (zero at
    init, the reference's); otherwise 1x1 projections in and out, the way out zero-initialised.
    """

    fusion = "bottleneck"

    def __init__(self, channels: int, memory_channels: int | None, stride: int) -> None:
        super().__init__()
        self.projected = memory_channels is not None
        width = memory_channels or channels
        self.width, self.stride = width, stride
        if self.projected:
            self.down = nn.Conv2d(channels, width, 1, bias=False)
            self.up = nn.Conv2d(width, channels, 1, bias=False)
            nn.init.zeros_(self.up.weight)
        else:
            self.gate = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.cell = ConvGRUCell(width + 1, width)  # + the validity channel

    def reads(
        self, x: torch.Tensor, feats: dict[str, torch.Tensor], own: dict[str, torch.Tensor] | None
    ) -> torch.Tensor:
        """What the memory reads of a frame: its bottleneck features (B, C, h, w)."""
        return feats["out"]

    def forward(
        self, feat: torch.Tensor, h: torch.Tensor, valid: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Fuse bottleneck features with the memory.

        feat (B, C, h, w), memory h (B, C_mem, h, w) aligned to this frame, valid (B, 1, h, w)
        (default: everywhere) -> (fused bottleneck features, new memory).
        """
        x = self.down(feat) if self.projected else feat
        if valid is None:
            valid = torch.ones_like(x[:, :1])
        h = self.cell(torch.cat([x, valid.to(x.dtype)], 1), h)
        return feat + (self.up(h) if self.projected else self.gate * h), h


class ScoreMemory(_Memory):
    """A ConvGRU whose hidden state is the score map (GRFP's idea).

    Per cell at 1 / ``stride`` of the frame: K segmentation logits and one log-depth. Its
    candidate is the frame's own
    outputs ``x``; its update gate comes from a small conv net that compares them with the
    memory warped into the frame:

        h_t = x + m * (w(h_{t-1}) - x),
        m = valid * sigmoid(gate([x, w, x - w, rgb, valid])) * min(s, 1)

    with one gate for the logits and one for the depth, and a strength ``s`` per head that is
    zero at init, so that the fused outputs start as the frame's own exactly. The gate reads the
    logits as class probabilities, through leaky ReLUs, and its inputs are detached: it decides,
    it does not train the heads it reads. (At the CPU scale of ``benchmarks/learning.py`` the
    sigmoid tends to open everywhere and ``s`` becomes one blending rate: a running average of
    the warped outputs; see docs/learning.md for what that buys and what was tried.)

    Reads (B, K + 7, h, w): logits, log(depth / 10 m) with depth floored at 0.5 m and the
    normalised RGB, each area-averaged to (h, w) = ceil(H / stride) x ceil(W / stride), and the
    RGB's standard deviation within each cell.
    """

    fusion = "scores"

    def __init__(self, num_classes: int, width: int, stride: int, max_depth_m: float) -> None:
        super().__init__()
        self.classes, self.stride, self.max_depth = num_classes, stride, max_depth_m
        self.width = num_classes + 1  # the state: logits and log-depth
        self.gate = nn.Sequential(
            nn.Conv2d(3 * self.width + 7, width, 3, padding=1),
            nn.LeakyReLU(0.1, inplace=True),
            nn.Conv2d(width, 2, 3, padding=1),
        )
        nn.init.zeros_(self.gate[-1].weight)  # every gate starts at sigmoid(0) = 1/2 ...
        nn.init.zeros_(self.gate[-1].bias)
        self.strength = nn.Parameter(torch.zeros(1, 2, 1, 1))  # ... times a strength of 0

    def reads(
        self, x: torch.Tensor, feats: dict[str, torch.Tensor], own: dict[str, torch.Tensor] | None
    ) -> torch.Tensor:
        """What the memory reads of one frame: (B, K + 7, h, w).

        From the normalised frames ``x`` (B, 3, H, W) and their own outputs ``own``
        (``seg_logits`` (B, K, H, W), ``depth`` (B, 1, H, W) metres): per cell the mean logits,
        log-depth and colours, and the colours' standard deviation (an occluder is flat).
        """
        size = (math.ceil(x.shape[-2] / self.stride), math.ceil(x.shape[-1] / self.stride))
        log_depth = (own["depth"].float().clamp_min(LOG_DEPTH_FLOOR_M) / LOG_DEPTH_UNIT_M).log()
        rgb = x.float()
        maps = torch.cat([own["seg_logits"].float(), log_depth, rgb, rgb * rgb], 1)
        pooled = F.interpolate(maps, size=size, mode="area")
        mean = pooled[:, : self.width + 3]
        spread = (pooled[:, self.width + 3 :] - mean[:, self.width :] ** 2).clamp_min(0).sqrt()
        return torch.cat([mean, spread], 1).to(own["seg_logits"].dtype)

    def forward(
        self, reads: torch.Tensor, h: torch.Tensor, valid: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One step of the memory.

        reads (B, K + 7, h, w), memory h (B, K + 1, h, w) aligned to this frame, valid
        (B, 1, h, w) -> (corrections (B, K + 1, h, w): logits then log-depth, new memory).
        """
        own, rgb = reads[:, : self.width], reads[:, self.width :]
        if valid is None:
            valid = torch.ones_like(reads[:, :1])
        valid = valid.to(reads.dtype)
        # the gate decides from what it sees; it does not train the heads that it reads
        seen = torch.cat([*self._compare(own.detach(), h.detach()), rgb, valid], 1)
        gates = torch.sigmoid(self.gate(seen)) * self.strength.clamp(max=1.0)
        weight = valid * gates
        weight = torch.cat(
            [weight[:, :1].expand(-1, self.classes, -1, -1), weight[:, 1:]], 1
        )  # one gate for the logits, one for the depth
        correction = weight * (h - own)
        return correction, own + correction

    def _compare(self, own: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """What the gate compares, on a bounded scale.

        The class probabilities of the frame and of the memory and their difference, the
        log-depths and theirs.
        """
        k = self.classes
        p, q = own[:, :k].float().softmax(1), h[:, :k].float().softmax(1)
        d, e = own[:, k:], h[:, k:]
        return p.to(own.dtype), q.to(own.dtype), (p - q).to(own.dtype), d, e, d - e

    def apply(
        self, own: dict[str, torch.Tensor], corrections: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """The frame's own outputs corrected.

        Logits + correction, depth x e^step (bounded, at most ``max_depth_m``), the corrections
        upsampled bilinearly to the frame's size.
        """
        size = own["seg_logits"].shape[-2:]
        up = F.interpolate(corrections, size=size, mode="bilinear", align_corners=False)
        step = up[:, -1:].float().clamp(-MAX_LOG_DEPTH_STEP, MAX_LOG_DEPTH_STEP)
        depth = (own["depth"].float() * torch.exp(step)).clamp(max=self.max_depth)
        return {
            "seg_logits": own["seg_logits"] + up[:, :-1].to(own["seg_logits"].dtype),
            "depth": depth.to(own["depth"].dtype),
        }


def local_spread(x: torch.Tensor, size: int = 5) -> torch.Tensor:
    """Local standard deviation (B, 1, H, W) of ``x`` (B, C, H, W), averaged over channels.

    In a ``size`` x ``size`` window: low on a flat patch (e.g. an occluder).
    """
    pool = nn.functional.avg_pool2d
    pad = size // 2
    mean = pool(x, size, 1, pad, count_include_pad=False)
    square = pool(x * x, size, 1, pad, count_include_pad=False)
    return (square - mean * mean).clamp_min(0).sqrt().mean(1, keepdim=True)


class ImageMemory(_Memory):
    """A gated running average of the frames, before the network (stride 1, 3 channels).

    Per pixel: h_t = x + m * (w(h_{t-1}) - x), m = valid * sigmoid(gate([x, w, x - w, |x - w|^2,
    spread(x), spread(w), valid])) * min(10 s, 1), with ``x`` the normalised frame, ``w`` the
    memory warped into it, ``|x - w|^2`` their squared difference averaged over channels, a gate
    of three 3x3 convs (the middle one dilated, so that it sees 9 x 9 pixels) and a strength ``s``
    that is zero at init: the fused frame starts as the frame itself exactly. The GeometryFilter
    runs the backbone and heads on ``h_t``.

    Learning speed: an optimiser such as Adam moves each parameter by about its learning rate per
    step, so a strength learned from 0 to 1 or a gate from 1/2 to 0.9 would take thousands of
    steps. Hence the strength enters scaled by :data:`STRENGTH_SCALE` and the gate starts mostly
    open, at sigmoid(:data:`GATE_START`) (a running average over about five frames once the
    strength is 1); it learns where to close (e.g. an edge the warp missed, an occluder).
    """

    fusion = "image"
    stride = 1
    width = 3

    def __init__(self, channels: int) -> None:
        """``channels``: width of the gate's conv net."""
        super().__init__()
        self.gate = nn.Sequential(
            nn.Conv2d(3 * 3 + 4, channels, 3, padding=1),
            nn.LeakyReLU(0.1, inplace=True),
            nn.Conv2d(channels, channels, 3, padding=2, dilation=2),
            nn.LeakyReLU(0.1, inplace=True),
            nn.Conv2d(channels, 1, 3, padding=1),
        )
        nn.init.zeros_(self.gate[-1].weight)
        nn.init.constant_(self.gate[-1].bias, GATE_START)
        self.strength = nn.Parameter(torch.zeros(1, 1, 1, 1))

    def reads(
        self, x: torch.Tensor, feats: dict[str, torch.Tensor], own: dict[str, torch.Tensor] | None
    ) -> torch.Tensor:
        """What the memory reads of a frame: the normalised frame (B, 3, H, W) itself."""
        return x

    def forward(
        self, x: torch.Tensor, h: torch.Tensor, valid: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One step of the memory.

        Frame x (B, 3, H, W), memory h (B, 3, H, W) aligned to it, valid (B, 1, H, W) -> (the
        fused frame, new memory: the same tensor).
        """
        if valid is None:
            valid = torch.ones_like(x[:, :1])
        valid = valid.to(x.dtype)
        change = x - h
        square = change.pow(2).mean(1, keepdim=True)
        seen = torch.cat([x, h, change, square, local_spread(x), local_spread(h), valid], 1)
        strength = (STRENGTH_SCALE * self.strength).clamp(max=1.0)
        m = valid * torch.sigmoid(self.gate(seen)) * strength
        fused = x + m * (h - x)
        return fused, fused


class ChainMemory(nn.Module):
    """An :class:`ImageMemory` before the network and a :class:`ScoreMemory` after it.

    Its state is the pair (image memory (B, 3, H, W), score memory (B, K + 1, h, w)); each is
    aligned to the frame at its own resolution. It reads the normalised frame, like the image
    memory; :meth:`~models.geometry_filter.GeometryFilter.remember_window` runs the image memory
    through the frames, the network once on the fused frames and the score memory through its
    outputs (a single frame when streaming).
    """

    fusion = "image+scores"

    def __init__(self, image: ImageMemory, scores: ScoreMemory) -> None:
        super().__init__()
        self.image, self.scores = image, scores

    def init_state(
        self,
        batch: int,
        height: int,
        width: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Zero memories for H x W frames: (B, 3, H, W) and (B, K + 1, h, w)."""
        return tuple(  # type: ignore[return-value]
            m.init_state(batch, height, width, device, dtype) for m in (self.image, self.scores)
        )

    def reads(
        self, x: torch.Tensor, feats: dict[str, torch.Tensor], own: dict[str, torch.Tensor] | None
    ) -> torch.Tensor:
        """What the chain reads of a frame: the normalised frame (B, 3, H, W)."""
        return x
