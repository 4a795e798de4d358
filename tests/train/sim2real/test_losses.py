"""Each sim2real loss term reaches zero (or its minimum) on a case built to make it so."""

from __future__ import annotations

import math

import pytest
import torch

from models.sim2real import build_sim2real
from train.sim2real.losses import (
    TASK_LOSSES,
    VAE_LOSSES,
    kl_standard_normal,
    log_depth_mse,
    mmd,
    mmd_to_prior,
    seg_ce,
    task_terms,
    vae_terms,
    weighted_total,
)


class IdentityVAE(torch.nn.Module):
    """Both domains identical: encoders and decoders are the identity, posteriors N(x, 1)."""

    training = False

    @staticmethod
    def other(domain: str) -> str:
        return "real" if domain == "sim" else "sim"

    def encode(self, x, domain):
        return x, torch.zeros_like(x)

    def sample(self, mu, logvar):
        return mu

    def decode(self, z, domain):
        return z


def test_kl_is_zero_only_at_the_prior():
    zero = torch.zeros(2, 4, 3, 3)
    assert float(kl_standard_normal(zero, zero)) == 0.0
    assert float(kl_standard_normal(zero + 0.5, zero)) == pytest.approx(0.125)
    assert float(kl_standard_normal(zero, zero + 1.0)) == pytest.approx(0.5 * (math.e - 2))


def test_mmd_zero_for_identical_samples_small_for_matched_large_for_shifted():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(256, 16, generator=g)
    b = torch.randn(256, 16, generator=g)
    assert float(mmd(a, a)) == pytest.approx(0.0, abs=1e-6)
    matched, shifted = float(mmd(a, b)), float(mmd(a, b + 1.0))
    assert matched < 0.05 and shifted > 10 * matched
    torch.manual_seed(0)
    assert float(mmd_to_prior(torch.randn(4, 16, 8, 8))) < 0.05
    assert float(mmd_to_prior(torch.randn(4, 16, 8, 8) * 3 + 2)) > 0.5


def test_reconstruction_and_cycle_terms_vanish_for_identical_domains():
    x = torch.rand(2, 3, 8, 8)
    terms = vae_terms(IdentityVAE(), {"sim": x, "real": x.clone()})
    assert set(terms) == set(VAE_LOSSES)
    for name in ("vae_recon", "mse_recon", "cycle"):
        assert float(terms[name]) == 0.0, name


def test_depth_and_segmentation_terms_reach_their_minimum():
    depth = torch.rand(2, 1, 8, 8) * 50 + 1
    valid = torch.ones_like(depth, dtype=torch.bool)
    assert float(log_depth_mse(depth.log(), depth, valid, 80.0)) == pytest.approx(0.0, abs=1e-10)
    assert float(log_depth_mse(depth.log() + 1, depth, valid, 80.0)) == pytest.approx(1.0)
    assert float(log_depth_mse(depth.log() + 1, depth, torch.zeros_like(valid), 80.0)) == 0.0
    labels = torch.randint(0, 5, (2, 8, 8))
    labels[0, 0, 0] = 255
    logits = torch.nn.functional.one_hot(labels.clamp(max=4), 5).permute(0, 3, 1, 2).float() * 50
    assert float(seg_ce(logits, labels)) < 1e-6
    assert float(seg_ce(-logits, labels)) > 10


def test_task_terms_are_named_finite_and_switch_off_the_translated_ones():
    torch.manual_seed(0)
    model = build_sim2real("tiny")
    x = torch.rand(2, 3, 32, 64)
    depth = torch.rand(2, 1, 32, 64) * 40 + 1
    valid, labels = depth < 30, torch.randint(0, 12, (2, 32, 64))
    with torch.no_grad():
        terms = task_terms(model, x, depth, valid, labels)
    assert set(terms) == set(TASK_LOSSES) and all(torch.isfinite(v) for v in terms.values())
    assert float(terms["seg_translated"]) > 0
    with torch.no_grad():
        off = task_terms(model, x, depth, valid, labels, translated=False)
    assert (
        float(off["seg_translated"]) == float(off["depth_translated"]) == float(off["mmd"]) == 0.0
    )
    total = weighted_total(terms, {"depth": 1.0, "seg": 0.0})
    assert float(total) == pytest.approx(float(terms["depth"]))
