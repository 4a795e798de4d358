"""Temporal stability of predictions: how much they change where the scene did not.

Each pixel of frame t with a static class and valid depth is moved into frame t+1 with the
ground-truth depth, intrinsics and poses; it counts if it stays in view and unoccluded (the
ground-truth depth there agrees within 2 %). On those pixels:

- temporal-consistency mIoU: the confusion between the class predicted at t and at t+1;
- label flip rate: the share whose predicted class changes;
- depth: the relative change between the prediction at t+1 and the prediction at t carried
  along by the true motion (``pred_t * z_true(t+1) / z_true(t)``), and the share changing
  by more than 5 % (depth flip rate).

Scoring the ground truth itself the same way gives the ceiling.
"""

from __future__ import annotations

import numpy as np
import torch

from carla_capture.geometry import reproject
from train.metrics import ConfusionMatrix

VISIBLE_TOL = 0.02
DEPTH_FLIP = 0.05


def correspondences(depth_t: np.ndarray, depth_t1: np.ndarray, valid: np.ndarray, K: np.ndarray,
                    pose_t: np.ndarray, pose_t1: np.ndarray) -> tuple[np.ndarray, ...]:
    """Source indices (j, i), destination indices (j', i') and true depth ratio z'/z of the
    pixels of frame t that stay visible in frame t+1."""
    h, w = depth_t.shape
    u, v, z = reproject(depth_t.astype(np.float64), K, pose_t, pose_t1)
    with np.errstate(invalid="ignore"):
        i1, j1 = np.floor(u), np.floor(v)
        ok = valid & (z > 0) & (i1 >= 0) & (i1 < w) & (j1 >= 0) & (j1 < h)
    j, i = np.nonzero(ok)
    jj, ii = j1[ok].astype(np.int64), i1[ok].astype(np.int64)
    visible = np.abs(depth_t1[jj, ii] - z[ok]) <= VISIBLE_TOL * z[ok]
    return j[visible], i[visible], jj[visible], ii[visible], (z[ok] / depth_t[j, i])[visible]


class TemporalConsistency:
    """Accumulates the measures above over windows."""

    def __init__(self, num_classes: int) -> None:
        self.confusion = ConfusionMatrix(num_classes)
        self.flips = self.pixels = self.depth_flips = 0
        self.depth_change = 0.0

    def update(self, labels: torch.Tensor, depth: torch.Tensor, item: dict[str, torch.Tensor]) -> None:
        """Predicted ``labels`` (T, H, W) and ``depth`` (T, H, W) metres of one window ``item``."""
        gt_depth, static = item["depth"][:, 0].numpy(), (item["static"] & item["valid_depth"][:, 0]).numpy()
        K, poses = item["intrinsics"][0].numpy(), item["cam_to_world"].numpy()
        labels, depth = labels.cpu().numpy(), depth.float().cpu().numpy()
        for t in range(len(gt_depth) - 1):
            j, i, jj, ii, ratio = correspondences(gt_depth[t], gt_depth[t + 1], static[t], K, poses[t], poses[t + 1])
            if len(j) == 0:
                continue
            a, b = labels[t][j, i], labels[t + 1][jj, ii]
            self.confusion.update(torch.from_numpy(a), torch.from_numpy(b))
            self.flips += int((a != b).sum())
            expected = depth[t][j, i] * ratio
            change = np.abs(depth[t + 1][jj, ii] - expected) / np.maximum(expected, 1e-3)
            self.depth_change += float(change.sum())
            self.depth_flips += int((change > DEPTH_FLIP).sum())
            self.pixels += len(j)

    def result(self) -> dict:
        n = max(self.pixels, 1)
        return {"tc_miou": self.confusion.result()["miou"], "label_flip_rate": self.flips / n,
                "depth_rel_change": self.depth_change / n, "depth_flip_rate": self.depth_flips / n, "pixels": self.pixels}
