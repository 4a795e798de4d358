"""The sim2real twin VAE: PackNet packing / unpacking blocks, shapes, presets."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from models.sim2real import SIM2REAL_PRESETS, Packing, Unpacking, build_sim2real
from train.cli import main as train_main


@pytest.mark.parametrize(("c_in", "c_mid", "depth"), [(3, 8, 4), (16, 32, 8)])
def test_packing_then_unpacking_keeps_spatial_size(c_in, c_mid, depth):
    x = torch.randn(2, c_in, 24, 40)
    packed = Packing(c_in, c_mid, depth=depth)(x)
    assert packed.shape == (2, c_mid, 12, 20)
    assert Unpacking(c_mid, c_in, depth=depth)(packed).shape == x.shape


def test_packing_then_unpacking_is_trainable():
    """Packing -> unpacking learns to reproduce its input; every weight gets a gradient."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        Packing(3, 16, depth=4), Unpacking(16, 4, depth=4), torch.nn.Conv2d(4, 3, 1)
    )
    x = torch.rand(4, 3, 8, 8)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        loss = torch.nn.functional.mse_loss(net(x), x)
        opt.zero_grad()
        loss.backward()
        losses.append(float(loss.detach()))
        opt.step()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())
    assert losses[-1] < 0.3 * losses[0]


def test_twin_vae_outputs_and_shared_layers():
    torch.manual_seed(0)
    cfg = SIM2REAL_PRESETS["tiny"]
    model = build_sim2real("tiny").eval()
    x = torch.rand(2, 3, 32, 64)
    with torch.no_grad():
        out = model(x, "sim")
    z = cfg.latent_channels
    assert out["mu"].shape == out["z"].shape == (2, z, 4, 8)
    assert out["recon"].shape == out["translated"].shape == x.shape
    assert out["seg_logits"].shape == (2, cfg.num_classes, 32, 64)
    assert ((out["depth"] > 0) & (out["depth"] <= cfg.max_depth_m)).all()
    assert 0 <= float(out["recon"].min()) and float(out["recon"].max()) <= 1
    # the last encoder block and the first decoder block are the same modules in both domains
    assert model.encoders["sim"].shared is model.encoders["real"].shared
    assert model.decoders["sim"].first is model.decoders["real"].first
    assert model.encoders["sim"].own is not model.encoders["real"].own


def test_train_models_lists_the_twin_vae():
    result = CliRunner().invoke(train_main, ["models", "--preset", "tiny", "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["model"]: r for r in json.loads(result.stdout)["models"]}
    tiny = sum(p.numel() for p in build_sim2real("tiny").parameters())
    assert rows["Sim2Real twin VAE"]["parameters"] == tiny
    with torch.device("meta"):
        paper = sum(p.numel() for p in build_sim2real("paper").parameters())
    assert paper > 20 * tiny
