"""Evaluation metrics, accumulated over a whole split (never averaged per batch)."""

from __future__ import annotations

import math

import torch
import torch.distributed as dist

from dataset.labels import IGNORE_INDEX
from models.common import so3_log


class ConfusionMatrix:
    """Dataset-wide confusion matrix; rows are ground truth, columns predictions."""

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(
        self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None
    ) -> None:
        """Add integer predictions and targets of any (same) shape.

        Pixels where either is 255 (no label: the ground truth scored as a prediction has those) are
        left out.
        """
        keep = (target != IGNORE_INDEX) & (pred != IGNORE_INDEX)
        if mask is not None:
            keep &= mask
        idx = target[keep].long() * self.num_classes + pred[keep].long()
        self.matrix += torch.bincount(idx.cpu(), minlength=self.num_classes**2).view(
            self.num_classes, self.num_classes
        )

    def result(self, class_names: tuple[str, ...] | None = None) -> dict:
        """Pixel accuracy, mIoU, mean class accuracy and per-class IoU.

        Over the classes present in ground truth or prediction (the absent ones are listed, not
        counted).
        """
        m = self.matrix.double()
        tp, gt, pred = m.diag(), m.sum(1), m.sum(0)
        present = (gt + pred) > 0
        iou = tp / (gt + pred - tp).clamp_min(1)
        acc = tp / gt.clamp_min(1)
        names = class_names or tuple(str(i) for i in range(self.num_classes))
        return {
            "pixel_accuracy": float(tp.sum() / m.sum().clamp_min(1)),
            "miou": float(iou[present].mean()) if present.any() else 0.0,
            "mean_class_accuracy": float(acc[gt > 0].mean()) if (gt > 0).any() else 0.0,
            "per_class_iou": {
                names[i]: float(iou[i]) for i in range(self.num_classes) if present[i]
            },
            "absent_classes": [names[i] for i in range(self.num_classes) if not present[i]],
        }


class MiouMeter:
    """Validation mIoU of the ``seg_logits`` a stage outputs (an engine meter).

    Class scores along ``class_dim`` (1 for (B, K, H, W), 2 for windows (B, T, K, H, W)) against
    ``labels``.
    """

    def __init__(self, num_classes: int, class_dim: int) -> None:
        """A meter of ``num_classes`` classes."""
        self.confusion, self.class_dim = ConfusionMatrix(num_classes), class_dim

    def update(self, out: dict[str, torch.Tensor], batch: dict) -> None:
        """Add one batch's predicted and true classes."""
        if "seg_logits" in out:
            pred = out["seg_logits"].argmax(self.class_dim)
            self.confusion.update(pred.cpu(), batch["labels"].cpu())

    def reduce(self) -> None:
        """Sum the confusion matrices of a distributed run's processes."""
        dist.all_reduce(self.confusion.matrix)

    def result(self) -> dict[str, float]:
        """``{"miou": ...}``."""
        return {"miou": self.confusion.result()["miou"]}


class DepthMetrics:
    """AbsRel, SqRel, RMSE, log-RMSE and delta accuracies.

    For ground truth capped at each of ``caps`` metres.
    """

    def __init__(self, caps: tuple[float, ...] = (80.0, 1000.0)) -> None:
        self.caps = caps
        self.sums = {cap: torch.zeros(8, dtype=torch.float64) for cap in caps}

    def update(self, pred: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor) -> None:
        """Depths in metres of any (same) shape; ``valid`` marks pixels with ground truth."""
        for cap in self.caps:
            keep = valid & (gt > 0) & (gt <= cap)
            p, g = pred[keep].double().clamp(1e-3, cap), gt[keep].double()
            ratio = torch.maximum(p / g, g / p)
            self.sums[cap] += torch.stack(
                [
                    torch.tensor(float(keep.sum()), dtype=torch.float64),
                    ((p - g).abs() / g).sum(),
                    ((p - g) ** 2 / g).sum(),
                    ((p - g) ** 2).sum(),
                    ((p.log() - g.log()) ** 2).sum(),
                    (ratio < 1.25).sum(),
                    (ratio < 1.25**2).sum(),
                    (ratio < 1.25**3).sum(),
                ]
            )

    def result(self) -> dict:
        """Per cap, ``cap_<metres>m`` -> abs_rel, sq_rel, rmse, log_rmse, deltas, pixels."""
        out = {}
        for cap, s in self.sums.items():
            n = max(float(s[0]), 1.0)
            out[f"cap_{cap:g}m"] = {
                "abs_rel": float(s[1] / n),
                "sq_rel": float(s[2] / n),
                "rmse": math.sqrt(float(s[3] / n)),
                "log_rmse": math.sqrt(float(s[4] / n)),
                "delta_1.25": float(s[5] / n),
                "delta_1.25^2": float(s[6] / n),
                "delta_1.25^3": float(s[7] / n),
                "pixels": int(s[0]),
            }
        return out


class PoseMetrics:
    """Relative pose error per frame (metres, degrees) and absolute trajectory error per clip."""

    def __init__(self) -> None:
        self.trans, self.rot, self.ate = [], [], []

    def update(self, pred_rel: torch.Tensor, gt_rel: torch.Tensor) -> None:
        """(B, T, 4, 4) motions t-1 -> t (index 0 is the identity) of B whole clips."""
        pred_rel, gt_rel = pred_rel.double(), gt_rel.double()
        err = torch.linalg.inv(gt_rel[:, 1:]) @ pred_rel[:, 1:]
        self.trans += err[..., :3, 3].norm(dim=-1).flatten().tolist()
        self.rot += torch.rad2deg(so3_log(err[..., :3, :3]).norm(dim=-1)).flatten().tolist()
        for b in range(len(pred_rel)):
            p, g = chain(pred_rel[b]), chain(gt_rel[b])
            self.ate.append(float(((p[:, :3, 3] - g[:, :3, 3]) ** 2).sum(-1).mean().sqrt()))

    def result(self) -> dict:
        """Mean RPE translation (m) and rotation (degrees), mean ATE (m), and the clip count."""
        mean = lambda xs: float(sum(xs) / len(xs)) if xs else 0.0  # noqa: E731
        return {
            "rpe_translation_m": mean(self.trans),
            "rpe_rotation_deg": mean(self.rot),
            "ate_m": mean(self.ate),
            "clips": len(self.ate),
        }


def chain(rel: torch.Tensor) -> torch.Tensor:
    """(T, 4, 4) motions t-1 -> t -> (T, 4, 4) poses relative to the first frame."""
    poses = [rel[0]]
    for t in range(1, len(rel)):
        poses.append(poses[-1] @ rel[t])
    return torch.stack(poses)
