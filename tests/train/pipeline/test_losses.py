"""Frames without labels or depth (imported data) add zero loss, never NaN."""

from __future__ import annotations

import torch

from dataset.labels import IGNORE_INDEX
from train.pipeline.losses import ce_loss, depth_loss


def test_unlabelled_batch_gives_zero_loss_and_zero_gradient():
    logits = torch.randn(2, 1, 5, 4, 6, requires_grad=True)
    depth = torch.rand(2, 1, 1, 4, 6, requires_grad=True)
    batch = {
        "labels": torch.full((2, 1, 4, 6), IGNORE_INDEX),
        "depth": torch.ones(2, 1, 1, 4, 6),
        "valid_depth": torch.zeros(2, 1, 1, 4, 6, dtype=torch.bool),
    }
    loss = ce_loss({"seg_logits": logits}, batch) + depth_loss({"depth": depth}, batch)
    assert loss.item() == 0.0
    loss.backward()
    assert logits.grad.abs().sum() == 0 and depth.grad.abs().sum() == 0


def test_partly_labelled_batch_averages_over_labelled_pixels():
    logits = torch.randn(2, 1, 5, 4, 6)
    labels = torch.full((2, 1, 4, 6), IGNORE_INDEX)
    labels[0] = 3
    got = ce_loss({"seg_logits": logits}, {"labels": labels})
    expected = torch.nn.functional.cross_entropy(logits[0, 0][None], labels[0, 0][None])
    torch.testing.assert_close(got, expected)
