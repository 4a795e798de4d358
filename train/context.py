"""Where a process trains: the device, its place in a distributed run (``torchrun``), its seeds."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from clipcore.errors import ConfigError
from train.config import RunConfig


@dataclass(frozen=True)
class Context:
    """Where this process trains: device and its place in a distributed run."""

    device: torch.device
    rank: int = 0
    world_size: int = 1

    @property
    def main(self) -> bool:
        """True on the process that logs and writes files."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True under ``torchrun`` with more than one process."""
        return self.world_size > 1


def resolve_device(name: str) -> str:
    """The device ``name`` means here, or a :class:`ConfigError` with the fix.

    ``auto`` is ``cuda`` when a GPU is visible, else ``cpu``; ``cpu``, ``cuda`` and ``cuda:N``
    are returned as given when there is such a device.
    """
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    kind, _, index = name.partition(":")
    if name != "cpu" and not (kind == "cuda" and (not index or index.isdigit())):
        raise ConfigError(f"unknown device {name!r}: use auto, cpu, cuda or cuda:N")
    if kind == "cuda" and int(index or 0) >= torch.cuda.device_count():
        raise ConfigError(
            f"device {name!r} is not there ({torch.cuda.device_count()} CUDA device(s) visible): "
            "use --device auto or cpu"
        )
    return name


def setup(cfg: RunConfig) -> Context:
    """Pick the device, start the process group under torchrun, switch on determinism if asked."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    name = resolve_device(cfg.device)
    device = torch.device(f"cuda:{local}" if name == "cuda" and world > 1 else name)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True)
    return Context(device, dist.get_rank() if world > 1 else 0, world)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def unwrap(net: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel wrapper, or the module itself."""
    return net.module if isinstance(net, nn.parallel.DistributedDataParallel) else net
