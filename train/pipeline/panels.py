"""TensorBoard panels of the pipeline's stages: RGB | prediction | ground truth."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from clipcore.normalize import to_uint8
from clipcore.pictures import depth_to_rgb
from dataset.labels import load_label_map
from train.pipeline.config import TrainConfig
from train.pipeline.nets import stage_forward


@torch.no_grad()
def panel(net: nn.Module, batch: dict, cfg: TrainConfig, device: torch.device) -> np.ndarray | None:
    """One row per kind of output of the first window's first frame.

    RGB | prediction | ground truth.
    """
    label_map = load_label_map(cfg.data.label_map)
    first = {k: v[:1].to(device) for k, v in batch.items() if isinstance(v, torch.Tensor)}
    out = stage_forward(net, first)
    rgb = to_uint8(batch["rgb"][0, 0])
    rows = []
    if "seg_logits" in out:
        pred = out["seg_logits"][0, 0].argmax(0).cpu().numpy()
        rows.append(
            np.concatenate(
                [rgb, label_map.colorize(pred), label_map.colorize(batch["labels"][0, 0].numpy())],
                1,
            )
        )
    if "depth" in out:
        pred = out["depth"][0, 0, 0].float().cpu().numpy()
        rows.append(
            np.concatenate(
                [rgb, depth_to_rgb(pred), depth_to_rgb(batch["depth"][0, 0, 0].numpy())], 1
            )
        )
    return np.concatenate(rows, 0) if rows else None
