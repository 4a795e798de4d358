"""GeometryFilter: backbone + a ConvGRU memory + segmentation and depth heads.

The memory (``models/memory.py``) fuses at the bottleneck, on the heads' score and depth maps, on
the frames themselves before the backbone, or on the frames and then the score maps
(``ModelConfig.memory_fusion``; ``off`` has none, for the matched control). It is a residual
branch that starts switched off, so before sequence training the filter's outputs equal the
single-frame models' outputs exactly, for segmentation and depth.

Before each update the memory is aligned by geometry (``ModelConfig.memory_alignment``): it is
warped from frame t-1 into frame t (``models/warp.py``) with the depth of frame t and the
motion t-1 -> t, at the memory's resolution, and the ConvGRU reads a validity channel that is
0 where no source pixel exists (and on the first frame, where there is no memory yet).
``estimated`` uses the ego-motion filter's pose and the depth decoder's single-frame depth
(both detached: they place the memory, they are not trained through it); ``ground_truth``
uses the dataset's depth and pose (an oracle for ablations); ``none`` keeps the memory at
fixed pixel positions.

A frame goes through three steps, shared by the window forward and the streaming ``step`` (so
both give the same outputs): :meth:`GeometryFilter.prepare` (per frame, batched over a window:
the frame's own outputs where the memory reads them, what the memory reads, the single-frame
depth that aligns it), :meth:`GeometryFilter.remember` (frame by frame: align, update) and
:meth:`GeometryFilter.outputs` (batched again: the heads on what the memory fused).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models.common import Backbone
from models.config import ModelConfig
from models.depth import DepthDecoder, build_depth
from models.memory import BottleneckMemory, ChainMemory, ImageMemory, ScoreMemory
from models.segmentation import build_segmentation
from models.warp import scale_intrinsics, warp_previous

Outputs = dict[str, torch.Tensor]
Memory = BottleneckMemory | ScoreMemory | ImageMemory | ChainMemory
#: A memory's state: one tensor, or the chain's pair (image memory, score memory).
State = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


@dataclass
class Prepared:
    """One frame (or a batch of frames) before the memory.

    ``own`` outputs (``seg_logits``, ``depth``; None where the memory does not need them),
    ``reads`` (what the memory reads; None without a memory) and ``depth`` (B, 1, H, W)
    single-frame metres for the estimated alignment (None when not needed).
    """

    own: Outputs | None
    reads: torch.Tensor | None
    depth: torch.Tensor | None


class GeometryFilter(nn.Module):
    """Per frame: embed, update memory, decode segmentation logits and depth (metres)."""

    def __init__(
        self,
        backbone: Backbone,
        memory: Memory | None,
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

    @property
    def fusion(self) -> str:
        """Where the memory fuses: ``off`` or a ``model.memory_fusion``."""
        return "off" if self.memory is None else self.memory.fusion

    def init_state(
        self,
        batch: int,
        height: int,
        width: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> State:
        """Memory for frames of ``height`` x ``width`` pixels ((B, 0, 1, 1) without one)."""
        if self.memory is None:
            return torch.zeros(batch, 0, 1, 1, device=device, dtype=dtype)
        return self.memory.init_state(batch, height, width, device, dtype)

    def decode(self, feats: Outputs, fused: torch.Tensor, size: tuple[int, int]) -> Outputs:
        """Heads on (fused) bottleneck features.

        Returns ``seg_logits`` (B, K, H, W) and ``depth`` (B, 1, H, W) metres.
        """
        skips = getattr(self.seg_head, "reads_features", False)  # a UNet decoder reads every level
        logits = self.seg_head({**feats, "out": fused} if skips else fused)
        logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        return {"seg_logits": logits, "depth": self.depth_decoder({**feats, "out": fused}, size)}

    @torch.no_grad()
    def alignment_depth(self, feats: Outputs, size: tuple[int, int]) -> torch.Tensor:
        """Single-frame depth (B, 1, H, W) metres from the frame's own (unfused) features."""
        return self.depth_decoder(feats, size)

    def prepare(self, x: torch.Tensor, feats: Outputs, estimate_depth: bool) -> Prepared:
        """What the memory needs of normalised frames ``x`` (N, 3, H, W) and their features.

        ``estimate_depth``: also the single-frame depth for the ``estimated`` alignment.
        """
        size = tuple(x.shape[-2:])
        own = self.decode(feats, feats["out"], size) if self.fusion in ("off", "scores") else None
        reads = self.memory.reads(x, feats, own) if self.memory is not None else None
        depth = None
        if estimate_depth and self.memory is not None:
            depth = own["depth"] if own is not None else self.alignment_depth(feats, size)
        return Prepared(own, reads, depth)

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

    def remember(
        self,
        reads: torch.Tensor | None,
        memory: State,
        first: bool,
        size: tuple[int, int],
        intrinsics: torch.Tensor | None = None,
        rel_pose: torch.Tensor | None = None,
        depth: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor | None, State]:
        """One frame's update of the memory.

        Aligns the memory of frame t-1 (see :meth:`align`) and runs it on ``reads`` -> (what it
        fused, new memory). Without a memory: (None, ``memory``).
        """
        if self.memory is None:
            return None, memory
        if isinstance(self.memory, ChainMemory):  # a window of one frame
            frame = [None if v is None else v[:, None] for v in (reads, rel_pose, depth)]
            return self.remember_window(frame[0], memory, first, size, intrinsics, *frame[1:])
        memory, valid = self.align(memory, first, size, intrinsics, rel_pose, depth)
        return self.memory(reads, memory, valid)

    def remember_window(
        self,
        reads: torch.Tensor | None,
        memory: State,
        first: bool,
        size: tuple[int, int],
        intrinsics: torch.Tensor | None = None,
        rel_pose: torch.Tensor | None = None,
        depth: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor | None, State]:
        """Frames t = 0..T-1 through the memory, from ``memory`` (the state before frame 0).

        ``reads`` (B, T, ...); ``first``: frame 0 has no earlier frame; ``rel_pose``
        (B, T, 4, 4) and ``depth`` (B, T, 1, H, W) per frame, as :meth:`align` reads them.
        Returns (what the memory fused, stacked (B * T, ...); the memory after frame T-1), or
        (None, ``memory``) without a memory.
        """
        if self.memory is None:
            return None, memory

        def where(k: int) -> tuple:
            pose, d = (None if v is None else v[:, k] for v in (rel_pose, depth))
            return first and k == 0, size, intrinsics, pose, d

        if isinstance(self.memory, ChainMemory):
            return self._remember_chain(reads, memory, where)
        fused = []
        for k in range(reads.shape[1]):
            f, memory = self.remember(reads[:, k], memory, *where(k))
            fused.append(f)
        return torch.stack(fused, 1).flatten(0, 1), memory

    def _remember_chain(
        self, x: torch.Tensor, memory: tuple[torch.Tensor, torch.Tensor], where: Callable
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """A window through the ``image+scores`` chain.

        The image memory fuses the frames ``x`` (B, T, 3, H, W), frame by frame; the network
        reads the fused frames (all at once); the score memory corrects its outputs, frame by
        frame. ``where(k)``: :meth:`align`'s arguments after the memory for frame k, the same
        for both memories. Returns ((B * T, 3 + K + 1, H, W): the fused frames, the corrected
        logits and depth (metres); (image memory, score memory) after the last frame).
        """
        image, scores = memory
        b, t = x.shape[:2]
        frames = []
        for k in range(t):
            image, valid = self.align(image, *where(k))
            f, image = self.memory.image(x[:, k], image, valid)
            frames.append(f)
        frames = torch.stack(frames, 1).flatten(0, 1)
        feats = self.backbone(frames)
        own = self.decode(feats, feats["out"], tuple(x.shape[-2:]))
        reads = self.memory.scores.reads(frames, feats, own).unflatten(0, (b, t))
        corrections = []
        for k in range(t):
            scores, valid = self.align(scores, *where(k))
            c, scores = self.memory.scores(reads[:, k], scores, valid)
            corrections.append(c)
        out = self.memory.scores.apply(own, torch.stack(corrections, 1).flatten(0, 1))
        maps = [out["seg_logits"].to(frames.dtype), out["depth"].to(frames.dtype)]
        return torch.cat([frames, *maps], 1), (image, scores)

    def outputs(
        self, feats: Outputs, fused: torch.Tensor | None, prepared: Prepared, size: tuple[int, int]
    ) -> Outputs:
        """The frames' outputs from what the memory fused (stacked over frames like ``feats``).

        ``seg_logits``, ``depth``; with the image memory (alone or in the chain) also ``frames``,
        the fused frames the network saw (N, 3, H, W), normalised.
        """
        if self.fusion == "off":
            return prepared.own
        if self.fusion == "image+scores":  # _remember_chain stacked them
            frames, logits, depth = fused.split([3, fused.shape[1] - 4, 1], 1)
            return {"seg_logits": logits, "depth": depth, "frames": frames}
        if self.fusion == "bottleneck":
            return self.decode(feats, fused, size)
        if self.fusion == "image":  # the network on the fused frames, and those frames
            seen = self.backbone(fused)
            return {**self.decode(seen, seen["out"], size), "frames": fused}
        return self.memory.apply(prepared.own, fused)

    def step(
        self,
        x: torch.Tensor,
        memory: State,
        first: bool = True,
        intrinsics: torch.Tensor | None = None,
        rel_pose: torch.Tensor | None = None,
        depth: torch.Tensor | None = None,
    ) -> tuple[Outputs, State, torch.Tensor]:
        """One normalised frame (B, 3, H, W) -> outputs, new memory, and the frame's embedding.

        ``first``: no earlier frame (the memory is empty). Otherwise the memory is aligned with
        ``rel_pose`` (t-1 -> t) and ``depth`` of this frame (default: the single-frame estimate).
        """
        feats = self.backbone(x)
        size = tuple(x.shape[-2:])
        estimate = not first and self.alignment == "estimated" and depth is None
        prepared = self.prepare(x, feats, estimate)
        depth = prepared.depth if estimate else depth
        fused, memory = self.remember(
            prepared.reads, memory, first, size, intrinsics, rel_pose, depth
        )
        return self.outputs(feats, fused, prepared, size), memory, feats["out"]


def build_memory(cfg: ModelConfig, backbone: Backbone) -> Memory | None:
    """The memory ``cfg.memory_fusion`` names (None for ``off``)."""
    if cfg.memory_fusion == "bottleneck":
        return BottleneckMemory(backbone.channels, cfg.memory_channels, backbone.stride)
    if cfg.memory_fusion == "scores":
        return ScoreMemory(
            cfg.num_classes, cfg.score_memory_channels, cfg.score_stride, cfg.max_depth_m
        )
    if cfg.memory_fusion == "image":
        return ImageMemory(cfg.image_memory_channels)
    if cfg.memory_fusion == "image+scores":
        return ChainMemory(
            build_memory(cfg.model_copy(update={"memory_fusion": "image"}), backbone),
            build_memory(cfg.model_copy(update={"memory_fusion": "scores"}), backbone),
        )
    return None


def build_geometry_filter(
    cfg: ModelConfig, segmentation: nn.Module | None = None, depth: nn.Module | None = None
) -> GeometryFilter:
    """Stage-4 model: stage 1's backbone and head, stage 2's decoder, a fresh memory."""
    segmentation = segmentation or build_segmentation(cfg)
    depth = depth or build_depth(cfg)
    backbone = segmentation.backbone
    return GeometryFilter(
        backbone,
        build_memory(cfg, backbone),
        segmentation.head,
        depth.decoder,
        cfg.memory_alignment,
    )
