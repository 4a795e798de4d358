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

from dataset import ClipWindows
from dataset.labels import load_label_map
from train.config import StageConfig, TrainConfig
from train.losses import total_loss
from train.metrics import ConfusionMatrix
from train.nets import build_stage_net, stage_forward
from train.panels import panel

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


def setup(cfg: TrainConfig) -> Context:
    """Pick the device, start the process group under torchrun, switch on determinism if asked."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    name = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
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


def make_loader(cfg: TrainConfig, stage: StageConfig, split: str, training: bool, epoch: int, ctx: Context) -> DataLoader:
    """Windows of ``split`` for one epoch, in an order fixed by (seed, epoch)."""
    ds = ClipWindows(cfg.data, split, window=stage.window, label_map=cfg.label_map,
                     augment="train" if training and cfg.augment else None,
                     stride=max(1, stage.window // 2) if training else stage.window, seed=cfg.seed, size=cfg.frame_size())
    ds.set_epoch(epoch)
    if ctx.distributed:
        sampler = DistributedSampler(ds, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=training, seed=cfg.seed)
        sampler.set_epoch(epoch)
    elif training:
        sampler = RandomSampler(ds, generator=torch.Generator().manual_seed(cfg.seed * 100_003 + epoch))
    else:
        sampler = SequentialSampler(ds)
    return DataLoader(ds, batch_size=stage.batch_size, sampler=sampler, num_workers=cfg.num_workers,
                      drop_last=training and len(ds) > stage.batch_size, pin_memory=ctx.device.type == "cuda")


def set_mode(net: nn.Module, stage: StageConfig, training: bool) -> None:
    """Train (or eval) mode, with the stage's frozen modules always in eval mode."""
    net.train(training)
    for name in stage.frozen:
        net.get_submodule(name).eval()


def _autocast(cfg: TrainConfig, ctx: Context) -> contextlib.AbstractContextManager:
    if cfg.amp and ctx.device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _to_device(batch: dict, ctx: Context) -> dict:
    return {k: v.to(ctx.device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def train_one_epoch(net: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer, stage: StageConfig,
                    cfg: TrainConfig, ctx: Context, desc: str) -> dict[str, float]:
    """One pass over ``loader`` (at most ``stage.max_steps`` steps); mean losses and frames/s."""
    set_mode(net, stage, True)
    sums: dict[str, float] = {}
    steps, frames, start = 0, 0, time.perf_counter()
    bar = tqdm(loader, desc=desc, disable=not ctx.main, leave=False, dynamic_ncols=True)
    for batch in bar:
        if stage.max_steps is not None and steps >= stage.max_steps:
            break
        batch = _to_device(batch, ctx)
        with _autocast(cfg, ctx):
            out = stage_forward(net, batch)
        loss, parts = total_loss(stage.losses, out, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        steps += 1
        frames += batch["rgb"].shape[0] * batch["rgb"].shape[1]
        for k, v in {"loss": float(loss.detach()), **parts}.items():
            sums[k] = sums.get(k, 0.0) + v
        bar.set_postfix(loss=f"{sums['loss'] / steps:.3f}", fps=f"{frames / (time.perf_counter() - start):.1f}")
    result = {k: v / max(steps, 1) for k, v in sums.items()}
    result["frames_per_s"] = frames * ctx.world_size / max(time.perf_counter() - start, 1e-9)
    return result


@torch.no_grad()
def evaluate(net: nn.Module, loader: DataLoader, stage: StageConfig, cfg: TrainConfig, ctx: Context) -> dict[str, float]:
    """Mean loss over the split and, for stages with a segmentation loss, mIoU from one confusion matrix."""
    set_mode(net, stage, False)
    label_map = load_label_map(cfg.label_map)
    confusion = ConfusionMatrix(label_map.num_classes)
    loss_sum, count = torch.zeros(1, dtype=torch.float64), 0
    for batch in loader:
        batch = _to_device(batch, ctx)
        with _autocast(cfg, ctx):
            out = stage_forward(net, batch)
        loss, _ = total_loss(stage.losses, out, batch)
        loss_sum += float(loss) * len(batch["rgb"])
        count += len(batch["rgb"])
        if "seg_logits" in out:
            confusion.update(out["seg_logits"].argmax(2).cpu(), batch["labels"].cpu())
    totals = torch.cat([loss_sum, torch.tensor([float(count)], dtype=torch.float64)])
    if ctx.distributed:
        dist.all_reduce(totals)
        dist.all_reduce(confusion.matrix)
    result = {"loss": float(totals[0] / max(float(totals[1]), 1.0))}
    if "ce" in stage.losses:
        result["miou"] = confusion.result()["miou"]
    return result


def unwrap(net: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel wrapper, or the module itself."""
    return net.module if isinstance(net, nn.parallel.DistributedDataParallel) else net


def save_checkpoint(path: Path, net: nn.Module, optimizer: torch.optim.Optimizer, scheduler: object, epoch: int,
                    best: float | None, history: list[dict], cfg: TrainConfig) -> None:
    """Write everything needed to resume (and each component's weights) atomically."""
    inner = unwrap(net)
    state = {
        "components": {name: m.state_dict() for name, m in inner.components().items()},
        "net": inner.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
        "epoch": epoch, "best": best, "history": history, "config": cfg.model_dump(mode="json"),
        "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()},
    }
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _score(stage: StageConfig, val: dict[str, float]) -> float:
    return val["miou"] if "ce" in stage.losses else -val["loss"]


def run_stage(cfg: TrainConfig, name: str, ctx: Context, resume: bool = False, validate: bool = True) -> Path:
    """Train one stage to ``<out>/<name>/``; returns its best checkpoint (the last epoch's
    when ``validate`` is False: no validation split)."""
    stage, stage_dir = cfg.stages[name], Path(cfg.out) / name
    stage_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.seed)
    net = build_stage_net(stage, cfg.model, Path(cfg.out)).to(ctx.device)
    for frozen in stage.frozen:
        net.get_submodule(frozen).requires_grad_(False)
    if cfg.channels_last and ctx.device.type == "cuda":
        net = net.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=stage.lr)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.1, patience=cfg.lr_patience)
    start, best, history = 0, None, []
    if resume and (stage_dir / "last.pt").exists():
        state = torch.load(stage_dir / "last.pt", map_location=ctx.device, weights_only=False)
        net.load_state_dict(state["net"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start, best, history = state["epoch"] + 1, state["best"], state["history"]
        log.info("%s: resuming after epoch %d", name, state["epoch"])
    if ctx.distributed:
        net = nn.parallel.DistributedDataParallel(net, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
    writer = _writer(cfg, name, ctx)
    for epoch in range(start, stage.epochs):
        seed_everything(cfg.seed * 1000 + epoch)
        train = train_one_epoch(net, make_loader(cfg, stage, cfg.train_split, True, epoch, ctx), optimizer, stage, cfg, ctx,
                                f"{name} epoch {epoch + 1}/{stage.epochs}")
        val_loader = make_loader(cfg, stage, cfg.val_split, False, epoch, ctx) if validate else None
        val = evaluate(net, val_loader, stage, cfg, ctx) if val_loader is not None else {}
        if val:
            scheduler.step(val["loss"])
        improved = not val or best is None or _score(stage, val) > best
        best = _score(stage, val) if val and improved else best
        history.append({"epoch": epoch, "train": train, "val": val, "lr": optimizer.param_groups[0]["lr"]})
        if ctx.main:
            save_checkpoint(stage_dir / "last.pt", net, optimizer, scheduler, epoch, best, history, cfg)
            (stage_dir / f"epoch-{epoch:03d}.pt").write_bytes((stage_dir / "last.pt").read_bytes())
            if improved:
                (stage_dir / "best.pt").write_bytes((stage_dir / "last.pt").read_bytes())
            _log_epoch(writer, name, epoch, train, val, optimizer, net, val_loader, cfg, ctx)
    if ctx.distributed:
        dist.barrier()
    return stage_dir / "best.pt"


def _writer(cfg: TrainConfig, name: str, ctx: Context) -> object | None:
    if not (ctx.main and cfg.tensorboard):
        return None
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(Path(cfg.out) / "tensorboard" / name))


def _log_epoch(writer: object | None, name: str, epoch: int, train: dict, val: dict, optimizer: torch.optim.Optimizer,
               net: nn.Module, val_loader: DataLoader | None, cfg: TrainConfig, ctx: Context) -> None:
    log.info("%s epoch %d: train %s | val %s | %.1f frames/s", name, epoch + 1,
             ", ".join(f"{k} {v:.4f}" for k, v in train.items() if k != "frames_per_s"),
             ", ".join(f"{k} {v:.4f}" for k, v in val.items()), train["frames_per_s"])
    if writer is None:
        return
    for k, v in train.items():
        writer.add_scalar(f"train/{k}", v, epoch)
    for k, v in val.items():
        writer.add_scalar(f"val/{k}", v, epoch)
    writer.add_scalar("lr", optimizer.param_groups[0]["lr"], epoch)
    image = panel(unwrap(net), next(iter(val_loader)), cfg, ctx.device) if val_loader is not None else None
    if image is not None:
        writer.add_image("val/panel", image, epoch, dataformats="HWC")
    writer.flush()
