"""Checkpoints load with torch's safe loader: one that would run code when unpickled is refused in
one line by every command that reads checkpoints, without running it; the checkpoints train run
writes (and those of earlier releases) still load."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from train.run_folder import load_checkpoint


class _RunsCode:
    """Unpickling this calls ``open(marker, "w")``: it creates the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (open, (str(self.marker), "w"))


def _evil(path: Path, marker: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"components": _RunsCode(marker), "model": _RunsCode(marker), "epoch": 0}, path)


def test_the_payload_runs_code_with_the_unsafe_loader(tmp_path):
    """The test's checkpoint is a real attack: torch.load(weights_only=False) runs it."""
    marker = tmp_path / "pwned"
    _evil(tmp_path / "evil.pt", marker)
    torch.load(tmp_path / "evil.pt", weights_only=False)
    assert marker.exists()


CHECKPOINTS = (
    *(f"stage{i}/{name}" for i in range(1, 5) for name in ("best.pt", "last.pt")),
    "forecast-short/best.pt",
    "forecast-short/last.pt",
    "sim2real-vae/model.pt",
    "sim2real-tasks/model.pt",
)


@pytest.fixture
def evil_run(tmp_path, trained_run) -> tuple[Path, Path]:
    """A run folder (the session's tiny run's configs) whose every checkpoint runs code when
    unpickled, and the marker file that code would create."""
    run, marker = tmp_path / "run", tmp_path / "pwned"
    run.mkdir()
    shutil.copy(trained_run / "config.json", run / "config.json")
    for rel in CHECKPOINTS:
        _evil(run / rel, marker)
    return run, marker


def _video(path: Path) -> Path:
    frames = [Image.fromarray(np.full((32, 64, 3), 40 * k, np.uint8)) for k in range(3)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50)
    return path


def _sim2real_config(run: Path, data: Path) -> None:
    from train.sim2real.stage import resolve_config

    cfg = resolve_config("tiny", {"data": data, "out": run, "target": data}, None, ())
    (run / "sim2real-config.json").write_text(cfg.model_dump_json())


FAST = [
    *(
        a
        for i in range(1, 5)
        for k, v in (("epochs", 2), ("max_steps", 1), ("batch_size", 2))
        for a in ("--set", f"stages.stage{i}.{k}={v}")
    ),
    *("--set", "data.size=[64, 128]", "--set", "tensorboard=false"),
]
FORECAST = [
    *("--set", "forecast.max_steps=1", "--set", "data.size=[64, 128]", "--set", "tensorboard=false")
]

#: name -> arguments of a command that reads checkpoints (RUN, DATA, TOWNS, TMP filled in)
COMMANDS = {
    "eval": ["eval", "pipeline", "--run", "RUN", "--data", "DATA", "--device", "cpu"],
    "eval_forecast": ["eval", "forecast", "--run", "RUN", "--data", "DATA"],
    "eval_sim2real": ["eval", "sim2real", "--run", "RUN", "--data", "DATA"],
    "predict": ["predict", "pipeline", "--run", "RUN", "DATA", "--device", "cpu", "--out", "TMP/p"],
    "predict_video": [
        "predict",
        "pipeline",
        "--run",
        "RUN",
        "--video",
        "TMP/in.gif",
        "--out",
        "TMP/o.gif",
    ],
    "predict_forecast": ["predict", "forecast", "--run", "RUN", "DATA", "--out", "TMP/f"],
    "predict_sim2real": ["predict", "sim2real", "--run", "RUN", "DATA", "--out", "TMP/s"],
    "live": [
        *("live", "--run", "RUN", "--backend", "synthetic", "--town", "Town02"),
        *("--town-dir", "TOWNS", "--frames", "2", "--save", "TMP/live.rrd", "--device", "cpu"),
    ],
    "run_resume": [
        "run",
        "pipeline",
        "--stage",
        "stage1",
        "--data",
        "DATA",
        "--out",
        "RUN",
        "--resume",
        *FAST,
    ],
    "run_from_stage1": [
        "run",
        "pipeline",
        "--stage",
        "stage2",
        "--data",
        "DATA",
        "--out",
        "FRESH",
        *FAST,
    ],
    "run_forecast_resume": [
        *("run", "forecast", "--data", "DATA", "--out", "RUN", "--resume", *FORECAST)
    ],
    "run_sim2real_tasks": [
        *("run", "sim2real", "--stage", "sim2real-tasks", "--data", "DATA", "--out", "RUN"),
        *("--set", "model.input_size=[32, 64]", "--set", 'device="cpu"'),
    ],
}


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_refuses_a_checkpoint_that_runs_code(
    cli, evil_run, split_dataset, tiny_towns, tmp_path, name
):
    run, marker = evil_run
    fresh = tmp_path / "fresh"
    _evil(fresh / "stage1" / "best.pt", marker)  # stage 2 starts from stage 1's best.pt
    _video(tmp_path / "in.gif")
    _sim2real_config(run, split_dataset)
    places = {"RUN": run, "DATA": split_dataset, "TOWNS": tiny_towns, "FRESH": fresh}
    args = [places.get(a, a) for a in COMMANDS[name]]
    args = [str(a).replace("TMP", str(tmp_path)) for a in args]
    result = cli.train(*args)
    line = cli.error(result, "holds Python objects other than weights", "refused")
    assert "io.open" in line or "builtins.open" in line
    assert not marker.exists(), f"train {name} ran the checkpoint's code"


def test_checkpoints_train_run_writes_load_with_the_safe_loader(trained_run):
    """Nothing but tensors and plain values: torch's safe loader reads them with no allow-list."""
    for path in sorted(trained_run.glob("stage*/*.pt")):
        state = torch.load(path, weights_only=True)
        assert isinstance(state["rng"]["numpy"]["keys"], torch.Tensor)
        assert isinstance(state["rng"]["torch"], torch.Tensor)


def test_a_checkpoint_of_an_earlier_release_still_loads(tmp_path, trained_run):
    """Earlier releases kept NumPy's RNG state as a numpy array: allow-listed, so it loads."""
    state = torch.load(trained_run / "stage1" / "last.pt", weights_only=True)
    state["rng"] = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    old = tmp_path / "old.pt"
    torch.save(state, old)
    loaded = load_checkpoint(old)
    assert loaded["rng"]["numpy"][1].dtype == np.uint32
    for key, value in state["net"].items():
        assert torch.equal(loaded["net"][key], value)


def test_a_truncated_checkpoint_is_one_line(cli, tmp_path, trained_run, split_dataset):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run, ignore=shutil.ignore_patterns("epoch-*", "tensorboard"))
    best = run / "stage1" / "best.pt"
    best.write_bytes(best.read_bytes()[:1000])
    result = cli.train("eval", "pipeline", "--run", run, "--data", split_dataset, "--device", "cpu")
    cli.error(result, "is not a readable checkpoint", str(best))
