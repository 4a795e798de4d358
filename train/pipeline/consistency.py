"""Temporal figures of predictions over a clip, on pixels that correspond by geometry.

Each pixel of frame t with a static class and valid depth is moved into frame t+1 with the
ground-truth depth, intrinsics and poses; it counts if it stays in view and unoccluded (the
ground-truth depth there agrees within 2 %). Correspondences come from the ground truth, so the
camera may move (VSPW's VC assumes it does not).

Headline figures (need correctness: a constant prediction cannot win them):

- ``mean_consistent_accuracy`` (mCA): per class c, among corresponding pairs whose ground truth is
  c in both frames, the share predicted c in both frames; averaged over the classes present.
  VSPW's VC_2 per class, with geometric correspondences. A constant class scores 1 / (classes).
- ``consistent_depth_accuracy``: the share of corresponding pairs whose predicted depth is within
  a factor 1.25 of the truth in both frames.
- ``depth_log_change``: mean |log d'_{t+1} - log(d'_t * z_true(t+1) / z_true(t))| with
  d' = max(prediction, 1 m): how much the depth changes beyond the true motion, in log space.
  A constant (or all-zero) depth changes by the true motion's |log ratio| and so scores badly.

Other figures (a constant class or depth wins them; read them only beside the headline ones):
temporal-consistency mIoU (Liu et al. 2020), label flip rate, label flip rate among pairs whose
ground truth does not change, relative depth change and depth flip rate (> 5 %).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from clipcore.geometry import reproject
from dataset.labels import IGNORE_INDEX
from train.metrics import ConfusionMatrix

VISIBLE_TOL = 0.02
DEPTH_FLIP = 0.05
DEPTH_FLOOR_M = 1.0
DELTA = 1.25
HEADLINE = ("mean_consistent_accuracy", "consistent_depth_accuracy", "depth_log_change")
LOWER_IS_BETTER = {
    "depth_log_change",
    "label_flip_rate",
    "stable_flip_rate",
    "depth_rel_change",
    "depth_flip_rate",
}


def correspondences(
    depth_t: np.ndarray,
    depth_t1: np.ndarray,
    valid: np.ndarray,
    K: np.ndarray,
    pose_t: np.ndarray,
    pose_t1: np.ndarray,
) -> tuple[np.ndarray, ...]:
    """Correspondences of the pixels of frame t that stay visible in frame t+1.

    Source indices (j, i), destination indices (j', i') and true depth ratio z'/z.
    """
    h, w = depth_t.shape
    u, v, z = reproject(depth_t.astype(np.float64), K, pose_t, pose_t1)
    with np.errstate(invalid="ignore"):
        i1, j1 = np.floor(u), np.floor(v)
        ok = valid & (z > 0) & (i1 >= 0) & (i1 < w) & (j1 >= 0) & (j1 < h)
    j, i = np.nonzero(ok)
    jj, ii = j1[ok].astype(np.int64), i1[ok].astype(np.int64)
    visible = np.abs(depth_t1[jj, ii] - z[ok]) <= VISIBLE_TOL * z[ok]
    return j[visible], i[visible], jj[visible], ii[visible], (z[ok] / depth_t[j, i])[visible]


@dataclass(frozen=True)
class Pairs:
    """Corresponding pixels of frames t and t+1 of one window, with their ground truth."""

    t: int
    src: tuple[np.ndarray, np.ndarray]
    dst: tuple[np.ndarray, np.ndarray]
    ratio: np.ndarray
    gt_label: tuple[np.ndarray, np.ndarray]
    gt_depth: tuple[np.ndarray, np.ndarray]


def window_pairs(item: dict[str, torch.Tensor]) -> list[Pairs]:
    """The correspondences of every consecutive frame pair of a window item.

    Computed once, shared by every predictor scored on that window.
    """
    gt_depth, static = (
        item["depth"][:, 0].numpy(),
        (item["static"] & item["valid_depth"][:, 0]).numpy(),
    )
    labels = item["labels"].numpy()
    K, poses = item["intrinsics"][0].numpy(), item["cam_to_world"].numpy()
    out = []
    for t in range(len(gt_depth) - 1):
        j, i, jj, ii, ratio = correspondences(
            gt_depth[t], gt_depth[t + 1], static[t], K, poses[t], poses[t + 1]
        )
        out.append(
            Pairs(
                t,
                (j, i),
                (jj, ii),
                ratio,
                (labels[t][j, i], labels[t + 1][jj, ii]),
                (gt_depth[t][j, i], gt_depth[t + 1][jj, ii]),
            )
        )
    return out


class TemporalConsistency:
    """Accumulates the figures above over windows."""

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.confusion = ConfusionMatrix(num_classes)
        self.flips = self.pixels = self.depth_flips = self.stable = self.stable_flips = 0
        self.depth_change = self.log_change = 0.0
        self.depth_both = 0
        self.class_pairs = np.zeros(num_classes, np.int64)
        self.class_hits = np.zeros(num_classes, np.int64)

    def update(
        self,
        labels: torch.Tensor,
        depth: torch.Tensor,
        item: dict[str, torch.Tensor],
        pairs: list[Pairs] | None = None,
    ) -> None:
        """Add the predicted ``labels`` and ``depth`` of one window ``item``.

        ``labels`` (T, H, W), ``depth`` (T, H, W) metres; ``pairs``: the item's
        :func:`window_pairs`, computed here if not given.
        """
        labels, depth = labels.cpu().numpy(), depth.float().cpu().numpy()
        for p in pairs if pairs is not None else window_pairs(item):
            if len(p.ratio) == 0:
                continue
            self._labels(labels[p.t][p.src], labels[p.t + 1][p.dst], *p.gt_label)
            self._depth(
                depth[p.t][p.src].astype(np.float64), depth[p.t + 1][p.dst].astype(np.float64), p
            )
            self.pixels += len(p.ratio)

    def _labels(self, a: np.ndarray, b: np.ndarray, ga: np.ndarray, gb: np.ndarray) -> None:
        self.confusion.update(torch.from_numpy(a), torch.from_numpy(b))
        self.flips += int((a != b).sum())
        stable = (ga == gb) & (ga != IGNORE_INDEX)
        self.stable += int(stable.sum())
        self.stable_flips += int((a != b)[stable].sum())
        gt = ga[stable].astype(np.int64)
        self.class_pairs += np.bincount(gt, minlength=self.num_classes)[: self.num_classes]
        hit = (a[stable] == gt) & (b[stable] == gt)
        self.class_hits += np.bincount(gt[hit], minlength=self.num_classes)[: self.num_classes]

    def _depth(self, da: np.ndarray, db: np.ndarray, p: Pairs) -> None:
        expected = da * p.ratio
        change = np.abs(db - expected) / np.maximum(expected, 1e-3)
        self.depth_change += float(change.sum())
        self.depth_flips += int((change > DEPTH_FLIP).sum())
        fa, fb = np.maximum(da, DEPTH_FLOOR_M), np.maximum(db, DEPTH_FLOOR_M)
        self.log_change += float(np.abs(np.log(fb) - np.log(fa * p.ratio)).sum())
        ga, gb = p.gt_depth
        ok = lambda d, g: np.maximum(d / g, g / np.maximum(d, 1e-3)) < DELTA  # noqa: E731
        self.depth_both += int((ok(da, ga) & ok(db, gb)).sum())

    def result(self) -> dict:
        """The figures of the module docstring, with the pixel counts they average over."""
        n = max(self.pixels, 1)
        present = self.class_pairs > 0
        mca = (
            float((self.class_hits[present] / self.class_pairs[present]).mean())
            if present.any()
            else 0.0
        )
        return {
            "mean_consistent_accuracy": mca,
            "consistent_depth_accuracy": self.depth_both / n,
            "depth_log_change": self.log_change / n,
            "tc_miou": self.confusion.result()["miou"],
            "label_flip_rate": self.flips / n,
            "stable_flip_rate": self.stable_flips / max(self.stable, 1),
            "depth_rel_change": self.depth_change / n,
            "depth_flip_rate": self.depth_flips / n,
            "pixels": self.pixels,
            "stable_pixels": self.stable,
        }
