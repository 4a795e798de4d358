"""Metrics against hand-worked examples and an independent implementation (torchmetrics)."""

from __future__ import annotations

import math

import pytest
import torch

from models.common import pose_from_vector
from train.metrics import ConfusionMatrix, DepthMetrics, PoseMetrics


def test_confusion_matrix_hand_worked():
    cm = ConfusionMatrix(4)
    cm.update(torch.tensor([0, 1, 1, 1, 0, 2]), torch.tensor([0, 0, 1, 1, 2, 255]))
    r = cm.result(("a", "b", "c", "d"))
    assert r["per_class_iou"] == pytest.approx({"a": 1 / 3, "b": 2 / 3, "c": 0.0})
    assert r["miou"] == pytest.approx(1 / 3) and r["absent_classes"] == ["d"]
    assert r["pixel_accuracy"] == pytest.approx(3 / 5) and r[
        "mean_class_accuracy"
    ] == pytest.approx((1 / 2 + 1 + 0) / 3)


def test_miou_and_accuracy_match_torchmetrics():
    tm = pytest.importorskip("torchmetrics.classification")
    torch.manual_seed(0)
    target = torch.randint(0, 6, (4, 32, 32))
    target[:, :3] = 255
    pred = torch.where(
        torch.rand(4, 32, 32) < 0.6, target.clamp(max=5), torch.randint(0, 6, (4, 32, 32))
    )
    cm = ConfusionMatrix(6)
    for p, t in zip(pred, target, strict=True):  # accumulated over batches, not averaged per batch
        cm.update(p, t)
    r = cm.result()
    iou = tm.MulticlassJaccardIndex(num_classes=6, ignore_index=255, average="macro")(pred, target)
    acc = tm.MulticlassAccuracy(num_classes=6, ignore_index=255, average="micro")(pred, target)
    class_acc = tm.MulticlassAccuracy(num_classes=6, ignore_index=255, average="macro")(
        pred, target
    )
    assert r["miou"] == pytest.approx(float(iou), abs=1e-6)
    assert r["pixel_accuracy"] == pytest.approx(float(acc), abs=1e-6)
    assert r["mean_class_accuracy"] == pytest.approx(float(class_acc), abs=1e-6)


def test_depth_metrics_hand_worked():
    m = DepthMetrics(caps=(80.0, 1000.0))
    m.update(
        torch.tensor([2.0, 4.0, 50.0]),
        torch.tensor([2.0, 2.0, 500.0]),
        torch.tensor([True, True, True]),
    )
    near, far = m.result()["cap_80m"], m.result()["cap_1000m"]
    assert near["pixels"] == 2 and far["pixels"] == 3
    assert near["abs_rel"] == pytest.approx(0.5) and near["sq_rel"] == pytest.approx(1.0)
    assert near["rmse"] == pytest.approx(math.sqrt(2)) and near["delta_1.25"] == pytest.approx(0.5)
    assert near["log_rmse"] == pytest.approx(math.sqrt(math.log(2) ** 2 / 2))
    assert far["abs_rel"] == pytest.approx((0 + 1 + 0.9) / 3)


def test_pose_metrics_hand_worked():
    eye = torch.eye(4, dtype=torch.float64)
    gt = torch.stack(
        [eye, pose_from_vector(torch.tensor([0, 0, 1.1, 0, 0, 0], dtype=torch.float64))] * 1
    )[None]
    pred = torch.stack(
        [eye, pose_from_vector(torch.tensor([0, 0, 1.0, 0, math.pi / 2, 0], dtype=torch.float64))]
    )[None]
    m = PoseMetrics()
    m.update(pred, gt)
    r = m.result()
    assert r["rpe_rotation_deg"] == pytest.approx(90.0)
    assert r["rpe_translation_m"] == pytest.approx(0.1, abs=1e-9)
    assert r["ate_m"] == pytest.approx(math.sqrt(0.1**2 / 2))
