"""Pictures of the pipeline's predictions.

TensorBoard panels of the stages (RGB | prediction | ground truth), and the comparison that
``train predict pipeline --compare`` writes: input | ground truth | frame-by-frame | temporal, a
segmentation row over a depth row.
"""

from __future__ import annotations

from collections.abc import Callable

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


#: The comparison's columns, left to right.
COMPARE_COLUMNS = ("input", "ground truth", "frame-by-frame", "temporal")
#: Height of the comparison's title strip, pixels (at scale 1).
TITLE_PX = 14


def comparison_panel(
    rgb: np.ndarray,
    labels: tuple[np.ndarray, np.ndarray, np.ndarray],
    depths: tuple[np.ndarray, np.ndarray, np.ndarray],
    colorize: Callable[[np.ndarray], np.ndarray],
    scale: int = 2,
) -> np.ndarray:
    """One frame: input | ground truth | frame-by-frame | temporal, segmentation over depth.

    Args:
        rgb: The input frame, (H, W, 3) uint8.
        labels: Class ids (H, W) of the ground truth, the frame-by-frame and the temporal model.
        depths: Depth (H, W) metres, in the same order (log colour map, near is bright).
        colorize: Class ids -> (H, W, 3) uint8 colours (the run's label map's palette).
        scale: Each pixel drawn as ``scale`` x ``scale`` (tiny frames stay readable).

    Returns:
        (2H x scale + title strip, 4W x scale, 3) uint8 RGB, the columns titled.
    """
    seg = np.concatenate([rgb, *(colorize(x) for x in labels)], 1)
    depth = np.concatenate([rgb, *(depth_to_rgb(x) for x in depths)], 1)
    body = np.concatenate([seg, depth], 0).repeat(scale, 0).repeat(scale, 1)
    return np.concatenate([title_strip(body.shape[1], COMPARE_COLUMNS, scale), body], 0)


def title_strip(width: int, titles: tuple[str, ...], scale: int = 1) -> np.ndarray:
    """A white strip ``width`` wide with ``titles`` written over equal columns."""
    import cv2

    strip = np.full((TITLE_PX * scale, width, 3), 255, np.uint8)
    column = width // len(titles)
    for i, title in enumerate(titles):
        cv2.putText(
            strip, title, (i * column + 4 * scale, 10 * scale), cv2.FONT_HERSHEY_SIMPLEX,
            0.35 * scale, (0, 0, 0), max(1, scale // 2), cv2.LINE_AA,
        )  # fmt: skip
    return strip


def comparison_sheet(panels: list[np.ndarray], rows: int = 3, scale: int = 2) -> np.ndarray:
    """``rows`` evenly spaced frames' comparison panels (of ``scale``), under one title strip."""
    picks = np.linspace(0, len(panels) - 1, num=min(rows, len(panels))).round().astype(int)
    strip = TITLE_PX * scale
    return np.concatenate([panels[0][:strip], *(panels[i][strip:] for i in picks)], 0)
