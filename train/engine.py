"""The training engine every task runs on.

A task describes each of its stages as a :class:`Stage`: how to build its network (from the run
folder's earlier checkpoints), its data, forward pass and losses, and how it is validated. The
engine does everything else the same way for every task: the device and DistributedDataParallel
under ``torchrun`` (rank 0 logs and writes files), bf16 autocast on CUDA, the loaders and their
sampling order, Adam with a linear warmup and ReduceLROnPlateau, TensorBoard, checkpoints and
resume.

Every random choice of an epoch (sampling order, augmentation, dropout, a VAE's samples) derives
from (seed, epoch), so a run resumed from its ``last.pt`` ends with the same weights as one that
was never interrupted (tested bit for bit on CPU in deterministic mode, for every task).

Every stage writes one checkpoint format (:mod:`train.checkpoint`); the device, DDP and seeds are
:mod:`train.context`'s.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import (
    DataLoader,
    Dataset,
    DistributedSampler,
    RandomSampler,
    SequentialSampler,
)
from tqdm import tqdm

from clipcore.errors import ConfigError
from clipcore.fsutil import atomic_copy
from dataset import ClipWindows, device_augment
from dataset.handover import SharedBatches, ring_slots
from train.board import Board
from train.checkpoint import load_state, save_checkpoint
from train.config import RunConfig
from train.context import Context, seed_everything, unwrap
from train.run_folder import load_checkpoint

log = logging.getLogger(__name__)

#: Batches each loader worker prepares ahead (DataLoader's ``prefetch_factor``).
PREFETCH = 2


@dataclass(frozen=True)
class Schedule:
    """How the engine trains one stage: what a task's stage config says, in the engine's terms."""

    epochs: int
    batch_size: int  # items per batch (per process under DDP)
    lr: float  # Adam's learning rate
    max_steps: int | None = None  # cap on optimiser steps per epoch
    warmup_epochs: float = 0.0  # linear warmup over this many epochs' steps
    lr_patience: int | None = None  # ReduceLROnPlateau (factor 0.1) patience; None: no schedule
    frozen: tuple[str, ...] = ()  # submodules kept frozen and in eval mode
    frozen_stats: tuple[str, ...] = ()  # submodules whose BatchNorm layers stay in eval mode
    validate_start: bool = False  # validate before training; the start is a best.pt candidate
    lr_scale: tuple[tuple[str, float], ...] = ()  # (submodule, learning-rate multiplier) pairs

    @classmethod
    def of(cls, spec: Any, **more: Any) -> Schedule:
        """The schedule of a task's stage config ``spec``, and the fields ``more`` gives.

        ``spec`` gives ``epochs``, ``batch_size``, ``lr``, ``max_steps`` and ``warmup_epochs``.
        """
        keys = ("epochs", "batch_size", "lr", "max_steps", "warmup_epochs")
        return cls(**{key: getattr(spec, key) for key in keys}, **more)


class Meter(Protocol):
    """Validation figures beyond the losses (e.g. mIoU), accumulated over batches."""

    def update(self, out: dict[str, torch.Tensor], batch: dict[str, Any]) -> None:
        """Add one batch's outputs and targets."""

    def reduce(self) -> None:
        """Sum the accumulated counts over the processes of a distributed run."""

    def result(self) -> dict[str, float]:
        """The figures, by name."""


class Stage(ABC):
    """One stage of a task, as the engine trains it.

    The task fills in its network, data, forward pass and losses; the defaults validate by the mean
    loss and change nothing else.
    """

    #: The run's resolved config (the task's config type).
    cfg: RunConfig
    #: Sub-folder of the run for checkpoints and TensorBoard logs, e.g. ``stage1``.
    name: str
    #: Where the stage's settings are in the config, for messages, e.g. ``stages.stage1``.
    key: str
    schedule: Schedule
    train_split: str
    #: Split validated after every epoch; None: no validation (best.pt is the last epoch).
    val_split: str | None
    #: Some trainable parameters take no part in some steps' loss (DDP then looks for them).
    find_unused_parameters: bool = False

    @abstractmethod
    def build(self) -> nn.Module:
        """The network, with earlier stages' weights loaded.

        Its ``components()`` names the modules a checkpoint stores.
        """

    @abstractmethod
    def dataset(self, split: str, training: bool, epoch: int) -> Dataset:
        """The items of ``split`` for ``epoch`` (augmented when ``training``)."""

    @abstractmethod
    def forward(self, net: nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Outputs of ``net`` (or its DDP wrapper: call it, never its methods) on a batch."""

    @abstractmethod
    def loss(
        self, out: dict[str, torch.Tensor], batch: dict[str, Any]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The weighted total loss and each part's value."""

    def batches(self, loader: DataLoader, epoch: int, ctx: Context) -> Iterable[dict[str, Any]]:
        """The training batches of an epoch (a stage with a second source adds it here)."""
        return loader

    def prepare(self, batch: dict[str, Any], epoch: int) -> dict[str, Any]:
        """A training batch on the device, changed before the forward pass (e.g. corrupted)."""
        return batch

    def meter(self) -> Meter | None:
        """Validation figures beyond the losses."""
        return None

    def validate(self, net: nn.Module, loader: DataLoader, ctx: Context) -> dict[str, float]:
        """Validation figures, with the ``score`` that chooses best.pt (higher is better)."""
        val = evaluate(net, loader, self, ctx)
        val["score"] = -val["loss"]
        return val

    def selection(self) -> str:
        """How best.pt is chosen, for the log."""
        return "lowest validation loss"

    def panel(self, net: nn.Module, batch: dict[str, Any], ctx: Context) -> np.ndarray | None:
        """An (H, W, 3) uint8 picture of the predictions for TensorBoard, or None."""
        return None


def make_loader(
    ds: Dataset,
    batch_size: int,
    *,
    training: bool,
    epoch: int,
    ctx: Context,
    seed: int,
    num_workers: int = 0,
    salt: int = 100_003,
    drop_last: bool | None = None,
) -> DataLoader:
    """A loader of ``ds`` in an order fixed by (seed, epoch).

    Shuffled when ``training`` (by a generator seeded ``seed * salt + epoch``; a second source of a
    stage takes another salt), sharded over the processes under DDP. The last partial batch of
    training is dropped unless ``drop_last`` says otherwise. With workers, each has
    :data:`PREFETCH` batches in flight; on CUDA (pinned memory) they hand batches over through
    reused shared-memory arenas (:mod:`dataset.handover`), windows' images read straight into
    them.
    """
    if ctx.distributed:
        sampler = DistributedSampler(
            ds, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=training, seed=seed
        )
        sampler.set_epoch(epoch)
    elif training:
        sampler = RandomSampler(ds, generator=torch.Generator().manual_seed(seed * salt + epoch))
    else:
        sampler = SequentialSampler(ds)
    if drop_last is None:
        drop_last = training and len(ds) > batch_size
    pin = ctx.device.type == "cuda"
    workers: dict[str, Any] = {}
    if num_workers > 0:
        workers["prefetch_factor"] = PREFETCH
        if pin:  # each batch is copied to pinned memory as it arrives: the arenas can be reused
            workers["collate_fn"] = SharedBatches(ring_slots(PREFETCH))
            if isinstance(ds, ClipWindows):  # images read straight into shared memory
                ds.share_batches(ring_slots(PREFETCH))
    return DataLoader(
        ds,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        drop_last=drop_last,
        pin_memory=pin,
        **workers,
    )


def stage_loader(stage: Stage, split: str, training: bool, epoch: int, ctx: Context) -> DataLoader:
    """The loader of ``split`` for one epoch of ``stage``."""
    return make_loader(
        stage.dataset(split, training, epoch),
        stage.schedule.batch_size,
        training=training,
        epoch=epoch,
        ctx=ctx,
        seed=stage.cfg.seed,
        num_workers=stage.cfg.data.num_workers,
    )


def set_mode(net: nn.Module, schedule: Any, training: bool) -> None:
    """Train (or eval) mode, the frozen modules and frozen statistics kept in eval mode.

    The ``frozen`` modules, and the BatchNorm layers of the ``frozen_stats`` modules (names inside a
    DDP wrapper's module).
    """
    net.train(training)
    inner = unwrap(net)
    for name in schedule.frozen:
        inner.get_submodule(name).eval()
    for name in schedule.frozen_stats:
        for module in inner.get_submodule(name).modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()


def autocast(cfg: RunConfig, ctx: Context) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA when ``cfg.amp``; nothing on the CPU."""
    if cfg.amp and ctx.device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def to_device(batch: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """The batch's tensors on the context's device (other values as they are).

    A batch of compact windows (``data.augment_on = "device"``) is augmented and normalised
    there (:func:`dataset.device_augment.finish`).
    """
    batch = {
        k: v.to(ctx.device, non_blocking=True) if isinstance(v, torch.Tensor) else v
        for k, v in batch.items()
    }
    return device_augment.finish(batch) if device_augment.is_compact(batch) else batch


def steps_per_epoch(loader: DataLoader, schedule: Any) -> int:
    """Optimiser steps of one epoch: the loader's batches, at most ``max_steps``."""
    return min(len(loader), schedule.max_steps) if schedule.max_steps is not None else len(loader)


def warmup_factor(schedule: Any, step: int, per_epoch: int) -> float:
    """Learning-rate factor of the stage's ``step``-th optimiser step (0-based).

    Linear from 1 / n to 1 over the first n = ``warmup_epochs`` x ``per_epoch`` steps, then 1.
    """
    n = round(schedule.warmup_epochs * per_epoch)
    return min(1.0, (step + 1) / n) if n > 0 else 1.0


def train_step(
    net: nn.Module,
    batch: dict[str, Any],
    optimizer: torch.optim.Optimizer,
    stage: Stage,
    ctx: Context,
    factor: float = 1.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """One optimiser step on ``batch`` at ``factor`` x the schedule's learning rate."""
    with autocast(stage.cfg, ctx):
        out = stage.forward(net, batch)
    loss, parts = stage.loss(out, batch)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    rates = [group["lr"] for group in optimizer.param_groups]
    for group, rate in zip(optimizer.param_groups, rates, strict=True):
        group["lr"] = rate * factor
    optimizer.step()
    for group, rate in zip(optimizer.param_groups, rates, strict=True):
        group["lr"] = rate  # the schedule's rate, unwarmed
    return loss, parts


def train_one_epoch(
    net: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    stage: Stage,
    ctx: Context,
    desc: str,
    epoch: int = 0,
) -> dict[str, float]:
    """One pass over ``loader`` (at most ``max_steps`` steps); mean losses and frames/s.

    The first steps of the stage are warmed up (:func:`warmup_factor`; ``epoch`` places them).
    """
    schedule = stage.schedule
    set_mode(net, schedule, True)
    per_epoch = steps_per_epoch(loader, schedule)
    sums: dict[str, float] = {}
    steps, frames, start = 0, 0, time.perf_counter()
    # zip stops at the cap before drawing another batch from the loader
    batches = zip(range(per_epoch), stage.batches(loader, epoch, ctx), strict=False)
    bar = tqdm(
        batches, total=per_epoch, desc=desc, disable=not ctx.main, leave=False, dynamic_ncols=True
    )
    for _, batch in bar:
        batch = stage.prepare(to_device(batch, ctx), epoch)
        factor = warmup_factor(schedule, epoch * per_epoch + steps, per_epoch)
        loss, parts = train_step(net, batch, optimizer, stage, ctx, factor)
        steps += 1
        frames += math.prod(batch["rgb"].shape[:-3])
        for k, v in {"loss": float(loss.detach()), **parts}.items():
            sums[k] = sums.get(k, 0.0) + v
        bar.set_postfix(
            loss=f"{sums['loss'] / steps:.3f}", fps=f"{frames / (time.perf_counter() - start):.1f}"
        )
    result = {k: v / max(steps, 1) for k, v in sums.items()}
    result["frames_per_s"] = frames * ctx.world_size / max(time.perf_counter() - start, 1e-9)
    return result


@torch.no_grad()
def evaluate(
    net: nn.Module,
    loader: DataLoader,
    stage: Stage,
    ctx: Context,
    transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> dict[str, float]:
    """Mean total loss, each loss part's mean and the meter's figures over a split.

    ``{}`` without a batch; with ``transform``, on every batch changed by it (e.g. corrupted). The
    batches are the stage's (:meth:`Stage.batches`: a second source drawn as in epoch 0, the same
    every epoch). Summed over the processes of a distributed run.
    """
    set_mode(net, stage.schedule, False)
    meter = stage.meter()
    names: tuple[str, ...] = ()
    sums, count = None, 0
    for batch in stage.batches(loader, 0, ctx):  # a second source in the order of epoch 0
        batch = to_device(batch, ctx)
        if transform is not None:
            batch = transform(batch)
        with autocast(stage.cfg, ctx):
            out = stage.forward(net, batch)
        loss, parts = stage.loss(out, batch)
        values = torch.tensor([float(loss), *parts.values()], dtype=torch.float64)
        if sums is None:
            names, sums = ("loss", *parts), torch.zeros(len(values), dtype=torch.float64)
        sums += values * len(batch["rgb"])
        count += len(batch["rgb"])
        if meter is not None:
            meter.update(out, batch)
    if sums is None:
        return {}
    totals = torch.cat([sums, torch.tensor([float(count)], dtype=torch.float64)])
    if ctx.distributed:
        dist.all_reduce(totals)
        if meter is not None:
            meter.reduce()
    result = {
        k: float(v / max(float(totals[-1]), 1.0)) for k, v in zip(names, totals[:-1], strict=True)
    }
    if meter is not None:
        result.update(meter.result())
    return result


def _build(stage: Stage, ctx: Context) -> nn.Module:
    """The stage's network on the device, its frozen modules frozen."""
    net = stage.build().to(ctx.device)
    for frozen in stage.schedule.frozen:
        try:
            net.get_submodule(frozen).requires_grad_(False)
        except AttributeError:
            names = ", ".join(child for child, _ in net.named_children())
            raise ConfigError(
                f"{stage.key}.frozen: {stage.name} has no submodule {frozen!r}; its modules: "
                f"{names}"
            ) from None
    if stage.cfg.channels_last and ctx.device.type == "cuda":
        net = net.to(memory_format=torch.channels_last)
    return net


def param_groups(net: nn.Module, schedule: Any, name: str, lr: float | None = None) -> list[dict]:
    """The trainable parameters of ``net`` in Adam's groups.

    Those of each ``schedule.lr_scale`` submodule learn at ``lr`` (default ``schedule.lr``) x its
    multiplier, the rest at ``lr``; ``schedule`` is a :class:`Schedule` or a stage config with
    ``lr`` and ``lr_scale`` (pairs or a mapping). A submodule the network holds as None (a memory
    switched off) has no parameters to scale; a name the network does not have is refused.
    """
    lr = schedule.lr if lr is None else lr
    scaled: dict[int, float] = {}
    for module_name, scale in dict(schedule.lr_scale).items():
        module: nn.Module | None = net
        for part in module_name.split("."):
            if not hasattr(module, part):
                raise ConfigError(f"lr_scale of {name}: {name} has no submodule {module_name!r}")
            module = getattr(module, part)
            if module is None:
                break
        for param in module.parameters() if module is not None else ():
            scaled[id(param)] = scale
    groups: dict[float, list[nn.Parameter]] = {}
    for param in net.parameters():
        if param.requires_grad:
            groups.setdefault(scaled.get(id(param), 1.0), []).append(param)
    return [{"params": params, "lr": lr * scale} for scale, params in groups.items()]


def run_stage(stage: Stage, ctx: Context, resume: bool = False) -> Path:
    """Train ``stage`` into ``<out>/<name>/``, continuing from its ``last.pt`` with ``resume``.

    Returns its best checkpoint (the last epoch's when the stage is not validated).
    """
    cfg, schedule = stage.cfg, stage.schedule
    folder = Path(cfg.out) / stage.name
    folder.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.seed)
    net = _build(stage, ctx)
    optimizer = torch.optim.Adam(param_groups(net, schedule, stage.name))
    scheduler = (
        torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, factor=0.1, patience=schedule.lr_patience
        )
        if schedule.lr_patience is not None
        else None
    )
    start, best, history = 0, None, []
    if resume and (folder / "last.pt").exists():
        state = load_checkpoint(folder / "last.pt", ctx.device)
        load_state(net, optimizer, scheduler, state)
        start, best, history = state["epoch"] + 1, state["best"], state["history"]
        log.info("%s: resuming after epoch %d", stage.name, state["epoch"])
    if ctx.distributed:
        net = nn.parallel.DistributedDataParallel(
            net,
            device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None,
            find_unused_parameters=stage.find_unused_parameters,
        )
    writer = (
        Board(Path(cfg.out) / "tensorboard" / stage.name) if ctx.main and cfg.tensorboard else None
    )
    validated = stage.val_split is not None
    if schedule.validate_start and validated and start == 0:
        best = _validate_start(net, optimizer, scheduler, stage, history, ctx)
    for epoch in range(start, schedule.epochs):
        seed_everything(cfg.seed * 1000 + epoch)
        train = train_one_epoch(
            net,
            stage_loader(stage, stage.train_split, True, epoch, ctx),
            optimizer,
            stage,
            ctx,
            f"{stage.name} epoch {epoch + 1}/{schedule.epochs}",
            epoch,
        )
        val_loader = stage_loader(stage, stage.val_split, False, epoch, ctx) if validated else None
        val = stage.validate(net, val_loader, ctx) if val_loader is not None else {}
        if val and scheduler is not None:
            scheduler.step(val["loss"])
        improved = not val or best is None or val["score"] > best
        best = val["score"] if val and improved else best
        history.append(
            {"epoch": epoch, "train": train, "val": val, "lr": optimizer.param_groups[0]["lr"]}
        )
        if ctx.main:
            last = folder / "last.pt"
            save_checkpoint(last, net, optimizer, scheduler, epoch, best, history, cfg)
            atomic_copy(last, folder / f"epoch-{epoch:03d}.pt")
            if improved:
                atomic_copy(last, folder / "best.pt")
            _log_epoch(writer, stage, epoch, train, val, optimizer, net, val_loader, ctx)
    if writer is not None:
        writer.close()
    if ctx.main and validated:
        log.info("%s", choice_line(stage, history))
    if ctx.distributed:
        dist.barrier()
    return folder / "best.pt"


def _validate_start(
    net: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    stage: Stage,
    history: list[dict],
    ctx: Context,
) -> float:
    """Validate the weights the stage starts from.

    They become ``best.pt`` (epoch -1), so that training has to score higher to replace them.
    Returns their score.
    """
    val = stage.validate(net, stage_loader(stage, stage.val_split, False, 0, ctx), ctx)
    history.append({"epoch": -1, "train": {}, "val": val, "lr": optimizer.param_groups[0]["lr"]})
    best = val["score"]
    if ctx.main:
        log.info(
            "%s before training: val %s",
            stage.name,
            ", ".join(f"{k} {v:.4f}" for k, v in val.items()),
        )
        path = Path(stage.cfg.out) / stage.name / "best.pt"
        save_checkpoint(path, net, optimizer, scheduler, -1, best, history, stage.cfg)
    return best


def choice_line(stage: Stage, history: list[dict]) -> str:
    """What best.pt holds and why, for the log.

    The chosen epoch (or the start), its score and every validated epoch's.
    """
    scored = [h for h in history if "score" in h["val"]]
    if not scored:
        return f"{stage.name}: no validation, best.pt is the last epoch"
    kept = max(scored, key=lambda h: h["val"]["score"])
    what = (
        "the start (no epoch scored higher)" if kept["epoch"] < 0 else f"epoch {kept['epoch'] + 1}"
    )
    scores = ", ".join(
        f"{'start' if h['epoch'] < 0 else h['epoch'] + 1}: {h['val']['score']:.4f}" for h in scored
    )
    return f"{stage.name}: best.pt is {what}, by {stage.selection()} (scores {scores})"


def _log_epoch(
    writer: Board | None,
    stage: Stage,
    epoch: int,
    train: dict,
    val: dict,
    optimizer: torch.optim.Optimizer,
    net: nn.Module,
    val_loader: DataLoader | None,
    ctx: Context,
) -> None:
    log.info(
        "%s epoch %d: train %s | val %s | %.1f frames/s",
        stage.name,
        epoch + 1,
        ", ".join(f"{k} {v:.4f}" for k, v in train.items() if k != "frames_per_s"),
        ", ".join(f"{k} {v:.4f}" for k, v in val.items()),
        train["frames_per_s"],
    )
    if writer is None:
        return
    for k, v in train.items():
        writer.add_scalar(f"train/{k}", v, epoch)
    for k, v in val.items():
        writer.add_scalar(f"val/{k}", v, epoch)
    writer.add_scalar("lr", optimizer.param_groups[0]["lr"], epoch)
    image = (
        stage.panel(unwrap(net), next(iter(val_loader)), ctx) if val_loader is not None else None
    )
    if image is not None:
        writer.add_image("val/panel", image, epoch, dataformats="HWC")
    writer.flush()
