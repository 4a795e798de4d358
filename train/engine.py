"""Training loop: ``train_one_epoch``, ``evaluate``, ``save_checkpoint``, ``run_stage``.

Every random choice of an epoch (sampling order, augmentation, dropout) derives from
(seed, epoch), so a run resumed from its ``last.pt`` at an epoch boundary ends with the same
weights as one that was never interrupted (tested bit for bit on CPU in deterministic mode).
Under ``torchrun`` it trains with DistributedDataParallel; rank 0 logs and writes checkpoints.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, SequentialSampler
from tqdm import tqdm

from clipcore.errors import ConfigError
from clipcore.fsutil import atomic_copy, atomic_write
from dataset import ClipWindows
from dataset.config import Perturbation
from dataset.labels import load_label_map
from dataset.perturb import corrupt
from train.board import Board
from train.config import StageConfig, TrainConfig
from train.losses import total_loss
from train.metrics import ConfusionMatrix
from train.nets import build_stage_net, stage_forward
from train.panels import panel
from train.run_folder import load_checkpoint

log = logging.getLogger(__name__)


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
        return self.world_size > 1


def resolve_device(name: str) -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``; ``cpu``, ``cuda`` and ``cuda:N``
    as given when there is such a device, else a :class:`ConfigError` with the fix."""
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


def setup(cfg: TrainConfig) -> Context:
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


def make_loader(
    cfg: TrainConfig, stage: StageConfig, split: str, training: bool, epoch: int, ctx: Context
) -> DataLoader:
    """Windows of ``split`` for one epoch, in an order fixed by (seed, epoch)."""
    ds = ClipWindows.from_config(
        cfg.data,
        split,
        stage.window,
        training=training,
        stride=max(1, stage.window // 2) if training else stage.window,
        seed=cfg.seed,
        size=cfg.frame_size(),
    )
    ds.set_epoch(epoch)
    if ctx.distributed:
        sampler = DistributedSampler(
            ds, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=training, seed=cfg.seed
        )
        sampler.set_epoch(epoch)
    elif training:
        sampler = RandomSampler(
            ds, generator=torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
        )
    else:
        sampler = SequentialSampler(ds)
    return DataLoader(
        ds,
        batch_size=stage.batch_size,
        sampler=sampler,
        num_workers=cfg.data.num_workers,
        drop_last=training and len(ds) > stage.batch_size,
        pin_memory=ctx.device.type == "cuda",
    )


def set_mode(net: nn.Module, stage: StageConfig, training: bool) -> None:
    """Train (or eval) mode, with the stage's frozen modules, and the BatchNorm layers of its
    ``frozen_stats`` modules, always in eval mode."""
    net.train(training)
    for name in stage.frozen:
        net.get_submodule(name).eval()
    for name in stage.frozen_stats:
        for module in net.get_submodule(name).modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()


def _autocast(cfg: TrainConfig, ctx: Context) -> contextlib.AbstractContextManager:
    if cfg.amp and ctx.device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _to_device(batch: dict, ctx: Context) -> dict:
    return {
        k: v.to(ctx.device, non_blocking=True) if isinstance(v, torch.Tensor) else v
        for k, v in batch.items()
    }


def steps_per_epoch(loader: DataLoader, stage: StageConfig) -> int:
    """Optimiser steps of one epoch: the loader's batches, at most ``stage.max_steps``."""
    return min(len(loader), stage.max_steps) if stage.max_steps is not None else len(loader)


def warmup_factor(stage: StageConfig, step: int, per_epoch: int) -> float:
    """Learning-rate factor of the stage's ``step``-th optimiser step (0-based): linear from
    1 / n to 1 over the first n = ``warmup_epochs`` x ``per_epoch`` steps, then 1."""
    n = round(stage.warmup_epochs * per_epoch)
    return min(1.0, (step + 1) / n) if n > 0 else 1.0


def train_one_epoch(
    net: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    stage: StageConfig,
    cfg: TrainConfig,
    ctx: Context,
    desc: str,
    epoch: int = 0,
) -> dict[str, float]:
    """One pass over ``loader`` (at most ``stage.max_steps`` steps), the first steps of the stage
    warmed up (:func:`warmup_factor`; ``epoch`` places them); mean losses and frames/s."""
    set_mode(net, stage, True)
    per_epoch = steps_per_epoch(loader, stage)
    sums: dict[str, float] = {}
    steps, frames, start = 0, 0, time.perf_counter()
    bar = tqdm(loader, desc=desc, disable=not ctx.main, leave=False, dynamic_ncols=True)
    for batch in bar:
        if stage.max_steps is not None and steps >= stage.max_steps:
            break
        batch = _to_device(batch, ctx)
        if stage.perturb is not None:
            keys = [(cfg.seed, epoch, int(i)) for i in batch["index"]]
            batch["rgb"], _ = corrupt(batch["rgb"], stage.perturb, keys)
        with _autocast(cfg, ctx):
            out = stage_forward(net, batch)
        loss, parts = total_loss(stage.losses, out, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        factor = warmup_factor(stage, epoch * per_epoch + steps, per_epoch)
        rates = [group["lr"] for group in optimizer.param_groups]
        for group, rate in zip(optimizer.param_groups, rates, strict=True):
            group["lr"] = rate * factor
        optimizer.step()
        for group, rate in zip(
            optimizer.param_groups, rates, strict=True
        ):  # the schedule's rate, unwarmed
            group["lr"] = rate
        steps += 1
        frames += batch["rgb"].shape[0] * batch["rgb"].shape[1]
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
    stage: StageConfig,
    cfg: TrainConfig,
    ctx: Context,
    perturb: Perturbation | None = None,
) -> dict[str, float]:
    """Mean weighted loss over the split, each loss's mean (``ce``, ``depth``, ``pose``) and, for
    stages with a segmentation loss, mIoU from one confusion matrix; with ``perturb``, on every
    window corrupted by a draw fixed by its index (the same in every epoch)."""
    set_mode(net, stage, False)
    label_map = load_label_map(cfg.data.label_map)
    confusion = ConfusionMatrix(label_map.num_classes)
    names = ("loss", *stage.losses)
    sums, count = torch.zeros(len(names), dtype=torch.float64), 0
    every = perturb.model_copy(update={"window_p": 1.0}) if perturb is not None else None
    for batch in loader:
        batch = _to_device(batch, ctx)
        if every is not None:
            batch["rgb"], _ = corrupt(batch["rgb"], every, [(int(i),) for i in batch["index"]])
        with _autocast(cfg, ctx):
            out = stage_forward(net, batch)
        loss, parts = total_loss(stage.losses, out, batch)
        sums += torch.tensor([float(loss), *parts.values()], dtype=torch.float64) * len(
            batch["rgb"]
        )
        count += len(batch["rgb"])
        if "seg_logits" in out:
            confusion.update(out["seg_logits"].argmax(2).cpu(), batch["labels"].cpu())
    totals = torch.cat([sums, torch.tensor([float(count)], dtype=torch.float64)])
    if ctx.distributed:
        dist.all_reduce(totals)
        dist.all_reduce(confusion.matrix)
    result = {
        k: float(v / max(float(totals[-1]), 1.0)) for k, v in zip(names, totals[:-1], strict=True)
    }
    if "ce" in stage.losses:
        result["miou"] = confusion.result()["miou"]
    return result


def unwrap(net: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel wrapper, or the module itself."""
    return net.module if isinstance(net, nn.parallel.DistributedDataParallel) else net


def _numpy_rng_state() -> dict:
    """NumPy's global RNG state as a tensor and plain values: checkpoints hold nothing that
    torch's safe loader (``weights_only=True``) refuses."""
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
    scheduler: object,
    epoch: int,
    best: float | None,
    history: list[dict],
    cfg: TrainConfig,
) -> None:
    """Write everything needed to resume (and each component's weights) atomically."""
    inner = unwrap(net)
    state = {
        "components": {name: m.state_dict() for name, m in inner.components().items()},
        "net": inner.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
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


CORRUPTED = "corrupted_"


def validate_epoch(
    net: nn.Module, loader: DataLoader, stage: StageConfig, cfg: TrainConfig, ctx: Context
) -> dict[str, float]:
    """The stage's validation figures (:func:`evaluate`): on clean windows, and for a stage
    trained on corrupted windows also on corrupted ones (keys prefixed ``corrupted_``); with the
    ``score`` that chooses best.pt (:func:`selection_score`)."""
    val = evaluate(net, loader, stage, cfg, ctx)
    if stage.perturb is not None:
        corrupted = evaluate(net, loader, stage, cfg, ctx, stage.perturb)
        val.update({CORRUPTED + k: v for k, v in corrupted.items()})
    val["score"] = selection_score(stage, val)
    return val


def selection_score(stage: StageConfig, val: dict[str, float]) -> float:
    """Higher is better, by the stage's ``select`` rule: mIoU; minus the weighted loss; or mIoU
    minus ``select_depth_weight`` x the log-L1 depth error. Averaged over the conditions ``val``
    holds (clean, and corrupted for a stage trained on corrupted windows)."""
    rule = stage.selection()
    conditions = ("", CORRUPTED) if CORRUPTED + "loss" in val else ("",)

    def one(prefix: str) -> float:
        if rule == "miou":
            return val[prefix + "miou"]
        if rule == "loss":
            return -val[prefix + "loss"]
        return val[prefix + "miou"] - stage.select_depth_weight * val[prefix + "depth"]

    return sum(one(prefix) for prefix in conditions) / len(conditions)


def choice_line(name: str, stage: StageConfig, history: list[dict], best: float | None) -> str:
    """What best.pt holds and why, for the log: the chosen epoch (or the start), its score and
    every validated epoch's."""
    scored = [h for h in history if "score" in h["val"]]
    if not scored:
        return f"{name}: no validation, best.pt is the last epoch"
    kept = max(scored, key=lambda h: h["val"]["score"])
    what = (
        "the start (no epoch scored higher)" if kept["epoch"] < 0 else f"epoch {kept['epoch'] + 1}"
    )
    scores = ", ".join(
        f"{'start' if h['epoch'] < 0 else h['epoch'] + 1}: {h['val']['score']:.4f}" for h in scored
    )
    conditions = "clean and corrupted" if stage.perturb is not None else "clean"
    return (
        f"{name}: best.pt is {what}, by {stage.selection()} on {conditions} validation "
        f"(scores {scores})"
    )


def param_groups(
    net: nn.Module, stage: StageConfig, name: str, lr: float | None = None
) -> list[dict]:
    """The trainable parameters in Adam's groups: those of each ``stage.lr_scale`` module at
    ``lr`` (default ``stage.lr``) x its scale, the rest at ``lr``. A module the network holds as
    None (a memory switched off) has no parameters to scale."""
    lr = stage.lr if lr is None else lr
    scaled: dict[int, float] = {}
    for module_name, scale in stage.lr_scale.items():
        module: nn.Module | None = net
        for part in module_name.split("."):
            if not hasattr(module, part):
                raise ConfigError(
                    f"stages.{name}.lr_scale: {name} has no submodule {module_name!r}"
                )
            module = getattr(module, part)
            if module is None:
                break
        for param in module.parameters() if module is not None else ():
            scaled[id(param)] = scale
    groups: dict[float, list] = {}
    for param in net.parameters():
        if param.requires_grad:
            groups.setdefault(scaled.get(id(param), 1.0), []).append(param)
    return [{"params": params, "lr": lr * scale} for scale, params in groups.items()]


def run_stage(
    cfg: TrainConfig, name: str, ctx: Context, resume: bool = False, validate: bool = True
) -> Path:
    """Train one stage to ``<out>/<name>/``; returns its best checkpoint (the last epoch's
    when ``validate`` is False: no validation split)."""
    stage, stage_dir = cfg.stages[name], Path(cfg.out) / name
    stage_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.seed)
    net = build_stage_net(stage, cfg.model, Path(cfg.out)).to(ctx.device)
    for frozen in stage.frozen:
        try:
            net.get_submodule(frozen).requires_grad_(False)
        except AttributeError:
            names = ", ".join(child for child, _ in net.named_children())
            raise ConfigError(
                f"stages.{name}.frozen: {name} has no submodule {frozen!r}; its modules: {names}"
            ) from None
    if cfg.channels_last and ctx.device.type == "cuda":
        net = net.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(param_groups(net, stage, name), lr=stage.lr)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, factor=0.1, patience=cfg.lr_patience
    )
    start, best, history = 0, None, []
    if resume and (stage_dir / "last.pt").exists():
        state = load_checkpoint(stage_dir / "last.pt", ctx.device)
        net.load_state_dict(state["net"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start, best, history = state["epoch"] + 1, state["best"], state["history"]
        log.info("%s: resuming after epoch %d", name, state["epoch"])
    if ctx.distributed:
        net = nn.parallel.DistributedDataParallel(
            net, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None
        )
    writer = _writer(cfg, name, ctx)
    if stage.validate_start and validate and start == 0:
        best = _validate_start(net, optimizer, scheduler, stage, stage_dir, history, cfg, ctx)
    for epoch in range(start, stage.epochs):
        seed_everything(cfg.seed * 1000 + epoch)
        train = train_one_epoch(
            net,
            make_loader(cfg, stage, cfg.data.train_split, True, epoch, ctx),
            optimizer,
            stage,
            cfg,
            ctx,
            f"{name} epoch {epoch + 1}/{stage.epochs}",
            epoch,
        )
        val_loader = (
            make_loader(cfg, stage, cfg.data.val_split, False, epoch, ctx) if validate else None
        )
        val = validate_epoch(net, val_loader, stage, cfg, ctx) if val_loader is not None else {}
        if val:
            scheduler.step(val["loss"])
        improved = not val or best is None or val["score"] > best
        best = val["score"] if val and improved else best
        history.append(
            {"epoch": epoch, "train": train, "val": val, "lr": optimizer.param_groups[0]["lr"]}
        )
        if ctx.main:
            save_checkpoint(
                stage_dir / "last.pt", net, optimizer, scheduler, epoch, best, history, cfg
            )
            atomic_copy(stage_dir / "last.pt", stage_dir / f"epoch-{epoch:03d}.pt")
            if improved:
                atomic_copy(stage_dir / "last.pt", stage_dir / "best.pt")
            _log_epoch(writer, name, epoch, train, val, optimizer, net, val_loader, cfg, ctx)
    if writer is not None:
        writer.close()
    if ctx.main and validate:
        log.info("%s", choice_line(name, stage, history, best))
    if ctx.distributed:
        dist.barrier()
    return stage_dir / "best.pt"


def _validate_start(
    net: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: object,
    stage: StageConfig,
    stage_dir: Path,
    history: list[dict],
    cfg: TrainConfig,
    ctx: Context,
) -> float:
    """Validate the weights the stage starts from; they become ``best.pt`` (epoch -1), so that
    training has to score higher to replace them. Returns their score."""
    loader = make_loader(cfg, stage, cfg.data.val_split, False, 0, ctx)
    val = validate_epoch(net, loader, stage, cfg, ctx)
    history.append({"epoch": -1, "train": {}, "val": val, "lr": optimizer.param_groups[0]["lr"]})
    best = val["score"]
    if ctx.main:
        log.info(
            "%s before training: val %s",
            stage_dir.name,
            ", ".join(f"{k} {v:.4f}" for k, v in val.items()),
        )
        save_checkpoint(stage_dir / "best.pt", net, optimizer, scheduler, -1, best, history, cfg)
    return best


def _writer(cfg: TrainConfig, name: str, ctx: Context) -> Board | None:
    """The stage's TensorBoard log (opened at its first value; a fault is one OSError line)."""
    if not (ctx.main and cfg.tensorboard):
        return None
    return Board(Path(cfg.out) / "tensorboard" / name)


def _log_epoch(
    writer: object | None,
    name: str,
    epoch: int,
    train: dict,
    val: dict,
    optimizer: torch.optim.Optimizer,
    net: nn.Module,
    val_loader: DataLoader | None,
    cfg: TrainConfig,
    ctx: Context,
) -> None:
    log.info(
        "%s epoch %d: train %s | val %s | %.1f frames/s",
        name,
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
        panel(unwrap(net), next(iter(val_loader)), cfg, ctx.device)
        if val_loader is not None
        else None
    )
    if image is not None:
        writer.add_image("val/panel", image, epoch, dataformats="HWC")
    writer.flush()
