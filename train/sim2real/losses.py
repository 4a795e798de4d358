"""Loss terms of the sim2real twin VAE; each is a named entry, weighted by the stage's config.

Stage 1 (``sim2real-vae``), for each domain d in {sim, real}:

* ``kl``: KL(q(z|x_d) || N(0, I)), mean over latent elements (0 when mu = 0, logvar = 0).
* ``vae_recon``: L1 between x_d and its reconstruction from a sampled z.
* ``mse_recon``: MSE between x_d and its reconstruction from the mean mu.
* ``mmd``: squared MMD (Gaussian kernels) between latent vectors and samples of N(0, I).
* ``cycle``: L1 between x_d and x_d -> z -> other domain -> z' -> back to d.

Stage 2 (``sim2real-tasks``), sim images x_S with labels and their translation
x_R' = G_R(E_S(x_S)):

* ``depth``, ``depth_translated``: MSE of log depth (valid pixels up to the model's
  ``max_depth_m``) on x_S through E_S, and on x_R' through E_R.
* ``seg``, ``seg_translated``: cross-entropy (255 ignored) on x_S, and on x_R'.
* ``kl``: KL of both encoders' posteriors (E_S(x_S), E_R(x_R')).
* ``mmd``: squared MMD between z_S and z_R'.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dataset.labels import IGNORE_INDEX
from train.sim2real.config import TASK_LOSSES, VAE_LOSSES  # noqa: F401 (TASK_LOSSES: re-export)

#: Latent vectors compared per MMD term (a random subset keeps the kernel matrices small).
MMD_SAMPLES = 256
MMD_BANDWIDTHS = (0.5, 1.0, 2.0, 4.0)


def kl_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, 1)) per element, averaged."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).mean()


def latent_vectors(
    z: torch.Tensor, n: int = MMD_SAMPLES, generator: torch.Generator | None = None
) -> torch.Tensor:
    """(B, Z, h, w) latent -> (min(n, B*h*w), Z) vectors, a random subset of its positions."""
    vec = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
    if len(vec) > n:
        vec = vec[torch.randperm(len(vec), generator=generator, device="cpu")[:n].to(vec.device)]
    return vec


def mmd(
    a: torch.Tensor, b: torch.Tensor, bandwidths: tuple[float, ...] = MMD_BANDWIDTHS
) -> torch.Tensor:
    """Biased squared MMD between samples a (N, D) and b (M, D).

    With a sum of Gaussian kernels exp(-|x - y|^2 / (2 s^2 D)); >= 0, and 0 when the two samples are
    identical.
    """
    both = torch.cat([a, b])
    d2 = torch.cdist(both, both).pow(2) / a.shape[1]
    k = sum(torch.exp(-d2 / (2 * s * s)) for s in bandwidths)
    n = len(a)
    return (k[:n, :n].mean() + k[n:, n:].mean() - 2 * k[:n, n:].mean()).clamp_min(0)


def mmd_to_prior(z: torch.Tensor) -> torch.Tensor:
    """Squared MMD between latent vectors of z (B, Z, h, w) and as many draws of N(0, I)."""
    vec = latent_vectors(z)
    return mmd(vec, torch.randn_like(vec))


def log_depth_mse(
    log_pred: torch.Tensor, depth: torch.Tensor, valid: torch.Tensor, max_depth_m: float
) -> torch.Tensor:
    """MSE of log depth over valid pixels with ground truth in (0, max_depth_m]; 0 without any."""
    keep = valid & (depth > 0) & (depth <= max_depth_m)
    if not keep.any():
        return log_pred.sum() * 0
    return (log_pred[keep] - depth[keep].log()).pow(2).mean()


def seg_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy with 255 ignored; 0 when no pixel is labelled."""
    if not (labels != IGNORE_INDEX).any():
        return logits.sum() * 0
    return F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX)


def vae_terms(model: torch.nn.Module, x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Stage-1 terms summed over both domains; ``x``: ``sim`` / ``real`` -> (B, 3, H, W), [0, 1]."""
    terms = {name: x["sim"].new_zeros(()) for name in VAE_LOSSES}
    for d in ("sim", "real"):
        other = model.other(d)
        mu, logvar = model.encode(x[d], d)
        z = model.sample(mu, logvar)
        terms["kl"] = terms["kl"] + kl_standard_normal(mu, logvar)
        terms["vae_recon"] = terms["vae_recon"] + (model.decode(z, d) - x[d]).abs().mean()
        terms["mse_recon"] = terms["mse_recon"] + F.mse_loss(model.decode(mu, d), x[d])
        terms["mmd"] = terms["mmd"] + mmd_to_prior(z)
        mu2, logvar2 = model.encode(model.decode(z, other), other)
        back = model.decode(model.sample(mu2, logvar2), d)
        terms["cycle"] = terms["cycle"] + (back - x[d]).abs().mean()
    return terms


def task_terms(
    model: torch.nn.Module,
    x_sim: torch.Tensor,
    depth: torch.Tensor,
    valid: torch.Tensor,
    labels: torch.Tensor,
    translated: bool = True,
) -> dict[str, torch.Tensor]:
    """Stage-2 terms on sim images with depth and labels.

    Sim images x_sim (B, 3, H, W) in [0, 1] with depth (B, 1, H, W) metres, its validity and labels
    (B, H, W). With ``translated``, also the terms of x_R' = G_R(E_S(x_S)) (computed without
    gradient) seen through the real encoder; otherwise those terms are 0.
    """
    mu_s, logvar_s = model.encode(x_sim, "sim")
    z_s = model.sample(mu_s, logvar_s)
    max_d = model.cfg.max_depth_m
    zero = x_sim.new_zeros(())
    terms = {
        "depth": log_depth_mse(model.log_depth(z_s), depth, valid, max_d),
        "seg": seg_ce(model.seg_decoder(z_s), labels),
        "kl": kl_standard_normal(mu_s, logvar_s),
        "depth_translated": zero,
        "seg_translated": zero,
        "mmd": zero,
    }
    if translated:
        with torch.no_grad():
            x_rp = model.decode(mu_s, "real")
        mu_r, logvar_r = model.encode(x_rp, "real")
        z_r = model.sample(mu_r, logvar_r)
        terms["depth_translated"] = log_depth_mse(model.log_depth(z_r), depth, valid, max_d)
        terms["seg_translated"] = seg_ce(model.seg_decoder(z_r), labels)
        terms["kl"] = terms["kl"] + kl_standard_normal(mu_r, logvar_r)
        terms["mmd"] = mmd(latent_vectors(z_s), latent_vectors(z_r))
    return terms


def weighted_total(terms: dict[str, torch.Tensor], weights: dict[str, float]) -> torch.Tensor:
    """Sum of weight * term over the configured entries (a weight of 0 switches a term off)."""
    return sum(w * terms[name] for name, w in weights.items() if w)
