"""``train run stage1 --preset lowres``: the UNet trains on tiny synthetic data on a CPU."""

from __future__ import annotations

import json
from pathlib import Path

import torch


def test_lowres_unet_stage1_trains(split_dataset: Path, tmp_path: Path, cli) -> None:
    out = tmp_path / "run"
    result = cli.train(
        "run",
        "pipeline",
        "--stage",
        "stage1",
        "--data",
        split_dataset,
        "--out",
        out,
        "--preset",
        "lowres",
        "--set",
        "stages.stage1.epochs=2",
        "--set",
        "stages.stage1.max_steps=2",
        "--set",
        "stages.stage1.batch_size=2",
        "--set",
        "tensorboard=false",
        "--set",
        'device="cpu"',
    )
    assert result.exit_code == 0, (result.output, result.exception)
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["seg_model"] == "unet" and config["model"]["input_size"] == [64, 128]
    state = torch.load(out / "stage1" / "best.pt", weights_only=True)
    assert any(k.startswith("head.ups.") for k in state["components"]["segmentation"])
    history = state["history"]
    assert len(history) >= 1 and history[-1]["val"]["loss"] > 0
