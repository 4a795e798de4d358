"""A tiny run trained through all four stages once per session (64x128 frames, 2 steps per
stage)."""

from __future__ import annotations

from pathlib import Path

import pytest

from train.run import resolve_config, train

FAST = [
    f"stages.stage{i}.{k}={v}"
    for i in range(1, 5)
    for k, v in (("epochs", 1), ("max_steps", 2), ("batch_size", 2))
]


def make_tiny_config(data: Path, out: Path, *extra: str):  # noqa: ANN201
    """The tiny preset at 64x128, 2 steps of batch 2 per stage, CPU, no TensorBoard."""
    return resolve_config(
        "tiny",
        {"data": data, "out": out},
        None,
        [*FAST, "data.size=[64, 128]", "tensorboard=false", 'device="cpu"', *extra],
    )


@pytest.fixture(scope="session")
def tiny_config():  # noqa: ANN201
    """``tiny_config(data, out, *set_overrides)``: see :func:`make_tiny_config`."""
    return make_tiny_config


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory, split_dataset: Path) -> Path:
    out = tmp_path_factory.mktemp("run")
    train(make_tiny_config(split_dataset, out), "all")
    return out
