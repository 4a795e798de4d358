"""Losses of the training stages, each on the pipeline-style outputs of a stage network.

- ``ce``: cross-entropy over every frame, ignore index 255.
- ``depth``: log-L1, ``mean |log pred - log gt|`` over pixels with valid depth (below the far
  plane): metric (a scale error is penalised), and equally sensitive at 5 m and 50 m.
- ``pose``: L1 between the predicted and the true 6-vector of the motion from frame t-1 to t
  (translation in metres, axis-angle in radians).
- ``restore``: the image memory's own objective (``model.memory_fusion = "image"`` or
  ``"image+scores"``): mean squared
  error between the frames the network saw (the memory's fused frames) and the clean frames,
  in normalised units. Under per-frame corruption it is what teaches the memory's gate where to
  keep the past (noise, flicker, an occluder) and where not (an edge the warp missed); zero for a
  model that fuses elsewhere or has no memory (nothing to restore).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dataset.labels import IGNORE_INDEX
from models.common import pose_to_vector


def ce_loss(out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Cross-entropy of ``seg_logits`` (B, T, K, H, W) against ``labels`` (B, T, H, W).

    Zero (not NaN) for a batch without a labelled pixel (imported frames without labels).
    """
    logits, labels = out["seg_logits"].flatten(0, 1).float(), batch["labels"].flatten(0, 1)
    if not bool((labels != IGNORE_INDEX).any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX)


def depth_loss(out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """log-L1 of ``depth`` (B, T, 1, H, W) metres on ``valid_depth``; zero without any."""
    valid = batch["valid_depth"]
    if not bool(valid.any()):
        return out["depth"].float().sum() * 0.0
    pred = out["depth"].float().clamp_min(1e-3)[valid]
    return (pred.log() - batch["depth"][valid].clamp_min(1e-3).log()).abs().mean()


def pose_target(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """(B, T-1, 6) true motion vectors of frames 1..T-1."""
    return pose_to_vector(batch["rel_pose"][:, 1:].float())


def pose_loss(out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """L1 between ``motion`` (B, T-1, 6) and the true motion."""
    return (out["motion"].float() - pose_target(batch)).abs().mean()


def restore_loss(out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean squared error of the fused frames against the clean ones; zero without an image memory.

    ``frames`` (B, T, 3, H, W): what the image memory fused; ``clean_rgb``: the frames before
    corruption (``rgb`` when the batch was not corrupted).
    """
    if "frames" not in out:
        return out["seg_logits"].float().sum() * 0.0
    clean = batch.get("clean_rgb", batch["rgb"])
    return (out["frames"].float() - clean.float()).pow(2).mean()


LOSS_FUNCTIONS = {"ce": ce_loss, "depth": depth_loss, "pose": pose_loss, "restore": restore_loss}


def total_loss(
    weights: dict[str, float], out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted sum of the named losses, and each loss's value."""
    parts = {name: LOSS_FUNCTIONS[name](out, batch) for name in weights}
    total = sum(weights[name] * value for name, value in parts.items())
    return total, {name: float(value.detach()) for name, value in parts.items()}
