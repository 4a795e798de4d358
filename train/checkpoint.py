"""The one checkpoint format of every task's stages: writing it, and loading it to resume.

``<run>/<stage>/last.pt`` (and ``best.pt``, ``epoch-NNN.pt``) hold tensors and plain values only,
read by :func:`train.run_folder.load_checkpoint` with torch's safe loader. Keys: ``components``
(one state dict per module the stage trains, what later stages, evaluation and prediction load),
``net``, ``optimizer``, ``scheduler`` (empty without one), ``epoch``, ``best``, ``history``,
``config`` (the run's resolved config) and ``rng``.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from clipcore.fsutil import atomic_write
from train.config import RunConfig
from train.context import unwrap


def _numpy_rng_state() -> dict:
    """NumPy's global RNG state as a tensor and plain values.

    Checkpoints hold nothing that torch's safe loader (``weights_only=True``) refuses.
    """
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "bit_generator": name,
        "keys": torch.from_numpy(keys.astype(np.int64)),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "cached_gaussian": float(cached),
    }


def save_checkpoint(
    path: Path,
    net: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    epoch: int,
    best: float | None,
    history: list[dict],
    cfg: RunConfig,
) -> None:
    """Write everything needed to resume (and each component's weights) atomically."""
    inner = unwrap(net)
    state = {
        "components": {name: m.state_dict() for name, m in inner.components().items()},
        "net": inner.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else {},
        "epoch": epoch,
        "best": best,
        "history": history,
        "config": cfg.model_dump(mode="json"),
        "rng": {
            "torch": torch.get_rng_state(),
            "numpy": _numpy_rng_state(),
            "python": random.getstate(),
        },
    }
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_state(net: nn.Module, optimizer: Any, scheduler: Any, state: dict) -> None:
    """Load a ``last.pt`` into the network, optimizer and scheduler.

    A checkpoint of an earlier release without ``net`` (a forecaster's) loads its components.
    """
    if "net" in state:
        net.load_state_dict(state["net"])
    else:
        for name, module in net.components().items():
            module.load_state_dict(state["components"][name])
    optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state.get("scheduler"):
        scheduler.load_state_dict(state["scheduler"])
