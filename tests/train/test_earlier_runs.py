"""Run folders written by earlier releases keep loading: a pipeline config with a forecast
section, a forecaster's checkpoint without the engine's keys (and its resume), a sim2real run of
``model.pt`` files beside a flat ``sim2real-config.json``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import torch

from models.sim2real import build_sim2real
from train.forecast.stage import load_forecaster
from train.forecast.stage import train as train_forecast
from train.pipeline.trained import load_run


def test_a_pipeline_config_with_a_forecast_section_loads(tmp_path, trained_run):
    run = tmp_path / "run"
    run.mkdir()
    saved = json.loads((trained_run / "config.json").read_text())
    saved["forecast"] = {"horizon": "mid", "epochs": 4}  # forecasting lived in the pipeline's
    (run / "config.json").write_text(json.dumps(saved))
    assert load_run(run).model == load_run(trained_run).model


def _earlier_forecaster(run: Path, trained_run: Path, forecast_config, data: Path) -> Path:
    """A forecaster folder as earlier releases wrote it: components, optimizer, epoch, best,
    history and the whole pipeline config with the forecast section; no net, scheduler, rng."""
    train_forecast(forecast_config(data, run, "forecast.epochs=2"))
    pipeline = json.loads((trained_run / "config.json").read_text())
    for name in ("best.pt", "last.pt"):
        path = run / "forecast-tiny" / name
        state = torch.load(path, weights_only=True)
        pipeline["forecast"] = state["config"]["forecast"]
        old = {k: state[k] for k in ("components", "optimizer", "epoch", "best", "history")}
        torch.save({**old, "config": pipeline}, path)
    (run / "forecast-tiny" / "config.json").unlink()
    return run / "forecast-tiny"


def test_a_forecaster_of_an_earlier_release_loads_and_resumes(
    cli, tmp_path, trained_run, split_dataset, forecast_config
):
    run = tmp_path / "run"
    for stage in ("stage1", "stage2", "stage3"):
        shutil.copytree(trained_run / stage, run / stage, ignore=shutil.ignore_patterns("epoch-*"))
    shutil.copy(trained_run / "config.json", run / "config.json")
    folder = _earlier_forecaster(run, trained_run, forecast_config, split_dataset)
    net, cfg = load_forecaster(run, "forecast-tiny")
    assert cfg.forecast.horizon == "tiny" and cfg.model == load_run(trained_run).model
    result = cli.train("eval", "forecast", "--run", run, "--device", "cpu")
    assert result.exit_code == 0, result.output
    state = torch.load(folder / "last.pt", weights_only=True)
    state["epoch"] = 0  # stopped after its first epoch
    torch.save(state, folder / "last.pt")
    train_forecast(forecast_config(split_dataset, run, "forecast.epochs=2"), "forecast", True)
    resumed = torch.load(folder / "last.pt", weights_only=True)
    assert resumed["epoch"] == 1 and "net" in resumed and "rng" in resumed


def test_a_sim2real_run_of_an_earlier_release_evaluates_predicts_and_trains_on(
    cli, tmp_path, split_dataset, sim2real_sets
):
    run = tmp_path / "s2r"
    config = {  # the flat layout of earlier releases
        "data": str(split_dataset),
        "target": None,
        "out": str(run),
        "preset": "tiny",
        "model": {"preset": "tiny", "input_size": [32, 64], "channels": [8, 16, 32]},
        "stages": {
            "sim2real-vae": {"losses": {"kl": 0.01, "vae_recon": 10.0}, "epochs": 1},
            "sim2real-tasks": {"losses": {"depth": 1.0, "seg": 1.0}, "frozen": ["decoders"]},
        },
        "source_split": "train",
        "label_map": "common12",
        "num_workers": 0,
        "seed": 0,
        "device": "auto",
    }
    model = build_sim2real("tiny").cfg.model_copy(
        update={"input_size": (32, 64), "channels": (8, 16, 32)}
    )
    (run / "sim2real-config.json").parent.mkdir(parents=True)
    (run / "sim2real-config.json").write_text(json.dumps(config))
    for stage in ("sim2real-vae", "sim2real-tasks"):
        (run / stage).mkdir()
        twin = build_sim2real(model)
        state = {"model": twin.state_dict(), "model_config": model.model_dump(), "stage": stage}
        torch.save(state, run / stage / "model.pt")
    result = cli.train("eval", "sim2real", "--run", run, "--split", "val", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["val_split"]["depth_pixels"] > 0
    image = tmp_path / "one.png"
    cv2.imwrite(str(image), np.full((40, 80, 3), 90, np.uint8))
    result = cli.train("predict", "sim2real", "--run", run, image, "--out", tmp_path / "p")
    assert result.exit_code == 0, result.output
    sets = [a for s in (*sim2real_sets, "model.channels=[8, 16, 32]") for a in ("--set", s)]
    args = ["run", "sim2real", "--stage", "sim2real-tasks", "--data", split_dataset, "--out", run]
    result = cli.train(*args, *sets, "--device", "cpu", "--set", "tensorboard=false")
    assert result.exit_code == 0, result.output  # stage 2 starts from stage 1's model.pt
    assert (run / "sim2real-tasks" / "best.pt").exists()
