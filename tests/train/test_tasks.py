"""Every task of the registry on the one engine: ``train run``, ``train eval`` and ``train
predict`` from the command line on tiny data, and a run killed in the middle of an epoch that
resumes to exactly the weights of a run that never stopped."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from train import engine
from train.forecast.stage import train as train_forecast
from train.pipeline.run import train as train_pipeline
from train.sim2real.stage import train as train_sim2real
from train.tasks import TASKS

#: Options of every tiny command-line run: CPU, no TensorBoard.
CPU = ["--device", "cpu", "--set", "tensorboard=false"]


def _sets(*items: str) -> list[str]:
    return [a for item in items for a in ("--set", item)]


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    """Unlabelled target images of two sizes."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "photos"
    folder.mkdir()
    for k, size in enumerate([(40, 90), (64, 64), (20, 30)]):
        cv2.imwrite(str(folder / f"{k}.png"), rng.integers(0, 255, (*size, 3), np.uint8))
    return folder


@pytest.fixture
def stage1_run(tmp_path: Path, trained_run: Path) -> Path:
    """A run folder holding the session's tiny run's config and stages 1-3 (a forecaster's
    teacher and baselines)."""
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(trained_run / "config.json", run / "config.json")
    for stage in ("stage1", "stage2", "stage3"):
        shutil.copytree(trained_run / stage, run / stage, ignore=shutil.ignore_patterns("epoch-*"))
    return run


def test_the_registry_lists_every_task():
    assert set(TASKS) == {"pipeline", "forecast", "sim2real"}
    for name, task in TASKS.items():
        assert task.name == name and task.config.__module__.startswith(f"train.{name}.")


def test_pipeline_runs_evaluates_and_predicts_from_the_command_line(
    cli, trained_run, split_dataset, tmp_path
):
    """``trained_run`` is ``train run pipeline`` (conftest); its eval and predict here."""
    assert json.loads((trained_run / "config.json").read_text())["stages"]["stage4"]
    result = cli.train("eval", "pipeline", "--run", trained_run, "--device", "cpu", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["models"]["temporal"]["segmentation"]["miou"] >= 0
    out = tmp_path / "pred"
    result = cli.train(
        "predict", "pipeline", "--run", trained_run, split_dataset / "Town02", "--out", out
    )
    assert result.exit_code == 0, result.output
    assert len(list(out.glob("*.mp4"))) == 1 and len(list(out.glob("*.ply"))) == 2


def test_forecast_runs_evaluates_and_predicts_from_the_command_line(
    cli, stage1_run, split_dataset, tmp_path
):
    sets = _sets(
        'forecast.horizons={"tiny": {"inputs": [1, 3], "target": 5}}',
        "data.size=[64, 128]",
    )
    run = [
        *("run", "forecast", "--data", split_dataset, "--out", stage1_run, "--horizon", "tiny"),
        *("--epochs", "1", "--max-steps", "1", "--batch-size", "2", "--width", "8"),
    ]
    result = cli.train(*run, *sets, *CPU)
    assert result.exit_code == 0, result.output
    saved = json.loads((stage1_run / "forecast-tiny" / "config.json").read_text())
    assert saved["forecast"]["width"] == 8 and saved["forecast"]["horizon"] == "tiny"
    result = cli.train("eval", "forecast", "--run", stage1_run, "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "zero-motion" in result.stdout and (stage1_run / "forecast_eval.md").exists()
    town = split_dataset / "Town02"
    result = cli.train("predict", "forecast", "--run", stage1_run, town, "--out", tmp_path / "p")
    assert result.exit_code == 0, result.output
    assert list((tmp_path / "p").glob("*forecast-tiny.mp4"))


def test_sim2real_runs_evaluates_and_predicts_from_the_command_line(
    cli, split_dataset, photos, tmp_path, sim2real_sets
):
    out = tmp_path / "s2r"
    fast = _sets(*sim2real_sets)
    run = ["run", "sim2real", "--data", split_dataset, "--target", photos, "--out", out]
    result = cli.train(*run, "--label-map", "common12", *fast, *CPU)
    assert result.exit_code == 0, result.output
    assert result.stdout.count("best checkpoint") == 2
    result = cli.train(
        "eval", "sim2real", "--run", out, "--data", split_dataset, "--split", "val", "--json"
    )
    assert result.exit_code == 0, result.output
    assert 0 <= json.loads(result.stdout)["val_split"]["miou"] <= 1
    assert (out / "sim2real-eval.md").exists()
    result = cli.train("predict", "sim2real", "--run", out, photos, "--out", tmp_path / "p")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "p" / "sim2real-real.png").exists()


def _killed_in_the_second_epoch(monkeypatch: pytest.MonkeyPatch, step: int):  # noqa: ANN202
    """Make the engine's ``step``-th optimiser step (1-based) raise KeyboardInterrupt."""
    real, calls = engine.train_step, {"n": 0}

    def dies(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == step:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "train_step", dies)
    return lambda: monkeypatch.setattr(engine, "train_step", real)


def _same_training(a: Path, b: Path) -> None:
    """Two ``last.pt`` of the same run: weights, optimizer state, epoch and validation equal."""
    x, y = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    assert x["epoch"] == y["epoch"]
    assert x["net"].keys() == y["net"].keys()
    for key, value in x["net"].items():
        assert torch.equal(value, y["net"][key]), key
    for key, state in x["optimizer"]["state"].items():
        for name, value in state.items():
            assert torch.equal(
                torch.as_tensor(value), torch.as_tensor(y["optimizer"]["state"][key][name])
            )
    assert [h["val"] for h in x["history"]] == [h["val"] for h in y["history"]]
    for hx, hy in zip(x["history"], y["history"], strict=True):
        assert {k: v for k, v in hx["train"].items() if k != "frames_per_s"} == {
            k: v for k, v in hy["train"].items() if k != "frames_per_s"
        }


@pytest.mark.parametrize("task", ["pipeline", "forecast", "sim2real"])
def test_a_run_killed_mid_epoch_resumes_to_the_same_weights(
    task, monkeypatch, tmp_path, split_dataset, trained_run, photos,
    tiny_config, forecast_config, sim2real_config,
):  # fmt: skip
    """Two epochs of two steps; the killed run dies at step 3 (inside epoch 2, after its first
    step) and resumes from epoch 1's last.pt."""
    two = "deterministic=true"
    if task == "pipeline":
        sets = [two, "stages.stage1.epochs=2", "stages.stage1.max_steps=2"]
        run = lambda out, resume=False: train_pipeline(  # noqa: E731
            tiny_config(split_dataset, out, *sets), "stage1", resume
        )
        checked = ["stage1"]
    elif task == "forecast":
        sets = [two, "forecast.epochs=2", "forecast.max_steps=2"]
        for out in ("straight", "killed"):
            shutil.copytree(trained_run / "stage1", tmp_path / out / "stage1")
        run = lambda out, resume=False: train_forecast(  # noqa: E731
            forecast_config(split_dataset, out, *sets), "forecast", resume
        )
        checked = ["forecast-tiny"]
    else:
        sets = [two, *(f"stages.{s}.epochs=2" for s in ("sim2real-vae", "sim2real-tasks"))]
        run = lambda out, resume=False: train_sim2real(  # noqa: E731
            sim2real_config(split_dataset, photos, out, *sets), "all", resume
        )
        checked = ["sim2real-vae", "sim2real-tasks"]
    run(tmp_path / "straight")
    restore = _killed_in_the_second_epoch(monkeypatch, step=3)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "killed")
    restore()
    killed = torch.load(tmp_path / "killed" / checked[0] / "last.pt", weights_only=True)
    assert killed["epoch"] == 0  # only the first epoch was saved
    run(tmp_path / "killed", resume=True)
    for stage in checked:
        _same_training(
            tmp_path / "straight" / stage / "last.pt", tmp_path / "killed" / stage / "last.pt"
        )


ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("task", ["pipeline", "forecast", "sim2real"])
def test_every_task_trains_under_ddp_with_two_cpu_processes(
    task, tmp_path, stage1_run, split_dataset, photos, sim2real_sets
):
    """torchrun, two processes (gloo): the pipeline's stage 2 (a frozen backbone), the forecaster
    (a frozen teacher), both sim2real stages (parameters outside some stages' loss)."""
    common = ["--data", str(split_dataset), "--device", "cpu", "--set", "tensorboard=false"]
    if task == "pipeline":
        shutil.rmtree(stage1_run / "stage2")  # trained here
        sets = ["stages.stage2.epochs=1", "stages.stage2.max_steps=2", "data.size=[64, 128]"]
        args = ["pipeline", "--stage", "stage2", "--out", str(stage1_run)]
        written = [stage1_run / "stage2" / "best.pt"]
    elif task == "forecast":
        sets = ['forecast.horizons={"tiny": {"inputs": [1, 3], "target": 5}}']
        sets += ['forecast.horizon="tiny"', "forecast.max_steps=2", "forecast.epochs=1"]
        args = ["forecast", "--out", str(stage1_run), "--size", "64,128", "--width", "8"]
        written = [stage1_run / "forecast-tiny" / "best.pt"]
    else:
        sets = sim2real_sets
        args = ["sim2real", "--out", str(tmp_path / "s2r"), "--target", str(photos)]
        written = [tmp_path / "s2r" / s / "best.pt" for s in ("sim2real-vae", "sim2real-tasks")]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    result = subprocess.run(
        [*torchrun, "--nproc-per-node", "2", "-m", "train", "run", *args, *common, *_sets(*sets)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("best checkpoint") == 2 * len(written)  # one line per process
    for path in written:
        assert torch.load(path, weights_only=True)["history"][0]["train"]["loss"] > 0
