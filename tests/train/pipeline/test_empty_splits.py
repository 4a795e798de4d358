"""Training and evaluation with a split that is missing or empty: one line, or a warned fallback."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from carla_capture.split import build_manifest, load_splits, write_manifest
from train.pipeline.run import resolve_config, train


def _resplit(src: Path, dst: Path, towns: dict[str, list[str]]) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("split.json"))
    splits = dst / "splits.toml"
    splits.write_text(
        "[splits]\n" + "".join(f"{k} = {v!r}\n".replace("'", '"') for k, v in towns.items())
    )
    write_manifest(dst, build_manifest(dst, load_splits(splits)))
    return dst


def _config(data: Path, out: Path):  # noqa: ANN202
    fast = ["stages.stage1.epochs=1", "stages.stage1.max_steps=1", "stages.stage1.batch_size=2"]
    return resolve_config(
        "tiny",
        {"data": data, "out": out},
        None,
        [*fast, "data.size=[32, 64]", "tensorboard=false", 'device="cpu"'],
    )


def test_train_without_val_split_warns_and_keeps_last_epoch(tmp_path, tiny_dataset, caplog):
    data = _resplit(
        tiny_dataset,
        tmp_path / "data",
        {"train": ["Town01"], "val": ["Town05"], "test": ["Town02"], "extra": ["Town10HD"]},
    )
    (best,) = train(_config(data, tmp_path / "run"), "stage1")
    assert "training without validation" in caplog.text and "'val'" in caplog.text
    state = torch.load(best, weights_only=True)
    assert state["epoch"] == 0 and state["history"][0]["val"] == {}


def test_train_refuses_empty_or_missing_train_split(cli, tmp_path, tiny_dataset):
    data = _resplit(
        tiny_dataset,
        tmp_path / "data",
        {"train": ["Town05"], "val": ["Town10HD"], "test": ["Town02"], "extra": ["Town01"]},
    )
    args = [
        "run",
        "pipeline",
        "--stage",
        "stage1",
        "--data",
        data,
        "--out",
        tmp_path / "run",
        "--size",
        "32,64",
    ]
    cli.error(cli.train(*args), "split 'train'", "no clips", "Town05", "capture split")
    cli.error(cli.train(*args, "--train-split", "holdout"), "'holdout' is not in")
    assert not (tmp_path / "run" / "stage1").exists()


@pytest.mark.parametrize(
    "split,words", [("holdout", "'holdout' is not in"), ("empty", "has no clips")]
)
def test_eval_of_missing_or_empty_split_is_one_line(
    cli, tmp_path, trained_run, split_dataset, split, words
):
    data = _resplit(
        split_dataset,
        tmp_path / "data",
        {"train": ["Town01"], "val": ["Town10HD"], "test": ["Town02"], "empty": ["Town05"]},
    )
    cli.error(
        cli.train("eval", "pipeline", "--run", trained_run, "--data", data, "--split", split), words
    )
