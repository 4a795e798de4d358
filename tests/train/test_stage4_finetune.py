"""Stage 4 fine-tunes a trained depth decoder without wrecking it: fixed BatchNorm statistics,
a warmed-up learning rate, and its starting state (the identity) kept unless an epoch beats it."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from dataset import ClipWindows
from train import engine
from train.losses import total_loss
from train.nets import build_stage_net, stage_forward
from train.run import train


def _batchnorm_stats(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items() if "running_" in k}


def test_stage4_trains_the_decoder_but_keeps_its_batchnorm_statistics(
    tiny_config, trained_run, split_dataset
):
    """Batch statistics of 2 windows of consecutive frames drifted from the running ones, so
    that the depth evaluation saw (running statistics) was not what training optimised."""
    cfg = tiny_config(split_dataset, trained_run)
    spec = cfg.stages["stage4"]
    assert "pipeline.geometry.depth_decoder" in spec.frozen_stats
    net = build_stage_net(spec, cfg.model, trained_run)
    for name in spec.frozen:
        net.get_submodule(name).requires_grad_(False)
    decoder = net.pipeline.geometry.depth_decoder
    stats, weight = _batchnorm_stats(decoder), decoder.quarter[0].weight.detach().clone()
    ds = ClipWindows(split_dataset, "train", window=spec.window, size=(64, 128))
    batch = next(iter(DataLoader(ds, batch_size=2)))
    optimizer = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=1e-3)
    engine.set_mode(net, spec, True)
    assert net.pipeline.geometry.memory.training and decoder.training
    loss, _ = total_loss(spec.losses, stage_forward(net, batch), batch)
    loss.backward()
    optimizer.step()
    for key, value in _batchnorm_stats(decoder).items():
        assert torch.equal(value, stats[key]), key
    assert not torch.equal(decoder.quarter[0].weight, weight), "the decoder still trains"


def test_warmup_ramps_the_learning_rate_over_the_first_epoch(tiny_config, tmp_path):
    cfg = tiny_config(tmp_path, tmp_path)
    stage4 = cfg.stages["stage4"]
    assert stage4.warmup_epochs == 1.0
    factors = [engine.warmup_factor(stage4, step, 20) for step in range(45)]
    assert factors[0] == 1 / 20 and factors[9] == 0.5 and factors[19:] == [1.0] * 26
    assert all(a < b for a, b in zip(factors[:19], factors[1:20], strict=True))
    assert engine.warmup_factor(cfg.stages["stage1"], 0, 20) == 1.0


def test_a_stage4_epoch_worse_on_any_loss_never_replaces_the_start(tiny_config):
    history = [{"epoch": -1, "val": {"loss": 2.5, "ce": 2.2, "depth": 0.6}}]
    stage4 = tiny_config(Path("d"), Path("o")).stages["stage4"]
    assert engine._no_worse(stage4, {"loss": 2.4, "ce": 2.1, "depth": 0.6}, history)
    assert not engine._no_worse(stage4, {"loss": 1.9, "ce": 1.5, "depth": 0.8}, history)
    # stage 4 is judged by its whole validation loss, not by mIoU alone
    assert engine._score(stage4, {"loss": 1.0, "miou": 0.1}) == -1.0


def test_stage4_keeps_its_start_when_training_makes_it_worse(
    tiny_config, trained_run, split_dataset, tmp_path
):
    """With a learning rate that wrecks the model, best.pt stays the validated starting state:
    stage 1's segmentation and stage 2's depth exactly (the memory's way out still zero)."""
    for stage in ("stage1", "stage2", "stage3"):
        shutil.copytree(trained_run / stage, tmp_path / stage)
    train(tiny_config(split_dataset, tmp_path, "stages.stage4.lr=5.0"), "stage4")
    best = torch.load(tmp_path / "stage4" / "best.pt", weights_only=True)
    last = torch.load(tmp_path / "stage4" / "last.pt", weights_only=True)
    start, trained = last["history"][0], last["history"][-1]
    assert start["epoch"] == -1 and trained["val"]["loss"] > start["val"]["loss"]
    assert best["epoch"] == -1
    geo = best["components"]["geometry_filter"]
    assert not geo["memory.up.weight"].any()
    depth2 = torch.load(trained_run / "stage2" / "best.pt", weights_only=True)["components"][
        "depth"
    ]
    for key, value in depth2.items():
        if key.startswith("decoder."):
            assert torch.equal(value, geo["depth_" + key]), key
