"""Sim2real training: ``train run sim2real-vae`` (stage 1) and ``sim2real-tasks`` (stage 2).

Stage 1 trains the twin VAE (both encoders and decoders) on sim frames of ``data`` (our
shards, labels unused) and unlabelled target images (``target``). Stage 2 starts from stage 1's
weights and trains the depth and segmentation decoders with the encoders, the image decoders
frozen, on sim frames with labels and their translation to the target domain. Each loss term is
a named weight in the stage's config (``train/sim2real_losses.py``), so ablations are config
changes (``--set stages.sim2real-tasks.losses.mmd=0``). A stage with no weight on any
translated term and ``from_vae = false`` is the source-only baseline.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from torch.utils.data import DataLoader, RandomSampler

from clipcore.errors import ConfigError
from clipcore.fsutil import atomic_write, atomic_write_text
from clipcore.normalize import denormalize
from clipcore.settings import TextPath, apply_overrides, build, deep_merge, read_toml
from dataset import ClipWindows
from dataset.labels import load_label_map
from dataset.target_images import TargetImages
from models.sim2real import SIM2REAL_PRESETS, Sim2RealModelConfig, TwinVAE, build_sim2real
from train.engine import resolve_device
from train.metrics import ConfusionMatrix, DepthMetrics
from train.run_folder import load_checkpoint as read_checkpoint
from train.sim2real_losses import TASK_LOSSES, VAE_LOSSES, task_terms, vae_terms, weighted_total

log = logging.getLogger(__name__)

Sim2RealStageName = Literal["sim2real-vae", "sim2real-tasks"]
SIM2REAL_STAGES = ("sim2real-vae", "sim2real-tasks")


class Sim2RealStage(BaseModel):
    """One sim2real stage: loss weights and schedule (Adam)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    losses: dict[str, float] = Field(
        description="Loss name -> weight (see train/sim2real_losses.py)."
    )
    epochs: int = Field(2, ge=1, description="Epochs (one epoch = one pass over the sim frames).")
    batch_size: int = Field(8, ge=1, description="Images per domain per batch.")
    lr: float = Field(1e-4, gt=0, description="Adam learning rate (betas 0.9, 0.999).")
    max_steps: int | None = Field(None, ge=1, description="Cap on optimiser steps per epoch.")
    frozen: tuple[str, ...] = Field((), description="Submodules not trained (e.g. decoders).")
    from_vae: bool = Field(True, description="sim2real-tasks: start from sim2real-vae's weights.")


class Sim2RealConfig(BaseModel):
    """Everything the sim2real stages need; saved as ``<out>/sim2real-config.json``."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    data: TextPath = Field(
        Path("data"), description="Source dataset folder (split.json): sim frames with labels."
    )
    target: TextPath | None = Field(
        None, description="Target domain: folder of JPG/PNG images or of shards (unlabelled)."
    )
    out: TextPath = Field(Path("runs/sim2real"), description="Run folder.")
    preset: str = Field("tiny", description="Model and schedule preset: paper, small, tiny.")
    model: Sim2RealModelConfig = Field(
        default_factory=Sim2RealModelConfig, description="Model sizes."
    )
    stages: dict[Sim2RealStageName, Sim2RealStage] = Field(
        description="The two stages (from the preset)."
    )
    source_split: str = Field("train", description="Manifest split of the source frames.")
    label_map: str = Field("common12", description="Label map of the segmentation targets.")
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes.")
    seed: int = Field(0, description="Seed of sampling order and initialisation.")
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N.")

    @field_validator("stages")
    @classmethod
    def _known_losses(cls, value: dict[str, Sim2RealStage]) -> dict[str, Sim2RealStage]:
        for name, known in (("sim2real-vae", VAE_LOSSES), ("sim2real-tasks", TASK_LOSSES)):
            if name in value:
                unknown = set(value[name].losses) - set(known)
                if unknown or not any(value[name].losses.values()):
                    raise ValueError(
                        f"{name} losses must weight some of {', '.join(known)}; "
                        f"got {sorted(value[name].losses)}"
                    )
        return value

    @model_validator(mode="after")
    def _classes_from_label_map(self) -> Sim2RealConfig:
        """The segmentation decoder has as many classes as the label map."""
        classes = load_label_map(self.label_map).num_classes
        if self.model.num_classes != classes:
            self.model = self.model.model_copy(update={"num_classes": classes})
        return self


def preset_defaults(preset: str) -> dict[str, Any]:
    """Model sizes and the paper's schedule (``paper``) or a CPU-sized one (``small``, ``tiny``)."""
    if preset not in SIM2REAL_PRESETS:
        raise ConfigError(
            f"unknown preset {preset!r}; choose one of: {', '.join(SIM2REAL_PRESETS)}"
        )
    vae = {"kl": 0.01, "vae_recon": 10.0, "mse_recon": 10.0, "mmd": 1.0, "cycle": 10.0}
    tasks = {
        "depth": 1.0,
        "seg": 1.0,
        "depth_translated": 1.0,
        "seg_translated": 1.0,
        "kl": 0.01,
        "mmd": 1.0,
    }
    epochs = {"paper": (300, 25), "small": (30, 10), "tiny": (2, 2)}[preset]
    return {
        "preset": preset,
        "model": SIM2REAL_PRESETS[preset].model_dump(),
        "stages": {
            "sim2real-vae": {"losses": vae, "epochs": epochs[0]},
            "sim2real-tasks": {"losses": tasks, "epochs": epochs[1], "frozen": ["decoders"]},
        },
    }


def resolve_config(
    preset: str,
    options: dict[str, Any],
    config_file: Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
) -> Sim2RealConfig:
    """Preset < config file < command-line options < ``--set`` overrides, validated."""
    data = preset_defaults(preset)
    if config_file:
        data = deep_merge(data, read_toml(config_file))
    data = deep_merge(data, {k: v for k, v in options.items() if v is not None})
    data = apply_overrides(Sim2RealConfig, data, list(overrides))
    return build(Sim2RealConfig, data, "sim2real config")


def _device(cfg: Sim2RealConfig) -> torch.device:
    return torch.device(resolve_device(cfg.device))


def source_loader(
    cfg: Sim2RealConfig,
    stage: Sim2RealStage,
    epoch: int,
    split: str | None = None,
    data: Path | None = None,
    training: bool = True,
) -> DataLoader:
    """Single frames of the source split (labels in ``cfg.label_map``) at the model's input size."""
    ds = ClipWindows(
        data or cfg.data,
        split or cfg.source_split,
        window=1,
        label_map=cfg.label_map,
        size=cfg.model.input_size,
        seed=cfg.seed,
    )
    sampler = (
        RandomSampler(ds, generator=torch.Generator().manual_seed(cfg.seed * 100_003 + epoch))
        if training
        else None
    )
    return DataLoader(
        ds,
        batch_size=stage.batch_size,
        sampler=sampler,
        num_workers=cfg.num_workers,
        drop_last=training and len(ds) > stage.batch_size,
    )


def target_loader(cfg: Sim2RealConfig, stage: Sim2RealStage, epoch: int) -> DataLoader:
    """Unlabelled target images, reshuffled each epoch."""
    if cfg.target is None:
        raise ConfigError(
            "sim2real-vae needs target-domain images; pass --target FOLDER (JPG/PNG or shards)"
        )
    ds = TargetImages(cfg.target, cfg.model.input_size)
    sampler = RandomSampler(ds, generator=torch.Generator().manual_seed(cfg.seed * 100_019 + epoch))
    return DataLoader(ds, batch_size=stage.batch_size, sampler=sampler, num_workers=cfg.num_workers)


def frames(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """A source batch of 1-frame windows -> rgb (B, 3, H, W) in [0, 1], depth, valid, labels."""
    return {
        "rgb": denormalize(batch["rgb"][:, 0]).clamp(0, 1).to(device),
        "depth": batch["depth"][:, 0].to(device),
        "valid": batch["valid_depth"][:, 0].to(device),
        "labels": batch["labels"][:, 0].to(device),
    }


def _trainable(model: TwinVAE, stage: Sim2RealStage) -> list[torch.nn.Parameter]:
    frozen = {id(p) for name in stage.frozen for p in model.get_submodule(name).parameters()}
    return [p for p in model.parameters() if id(p) not in frozen]


def _step(
    model: TwinVAE,
    name: str,
    stage: Sim2RealStage,
    src: dict[str, torch.Tensor],
    target: torch.Tensor | None,
) -> dict[str, torch.Tensor]:
    if name == "sim2real-vae":
        return vae_terms(model, {"sim": src["rgb"], "real": target})
    translated = bool(
        stage.losses.get("depth_translated")
        or stage.losses.get("seg_translated")
        or stage.losses.get("mmd")
    )
    return task_terms(model, src["rgb"], src["depth"], src["valid"], src["labels"], translated)


def train_stage(cfg: Sim2RealConfig, name: str, model: TwinVAE | None = None) -> Path:
    """Train stage ``name``; writes ``<out>/<name>/model.pt`` (returned) and ``history.json``."""
    stage = cfg.stages[name]
    device = _device(cfg)
    torch.manual_seed(cfg.seed)
    if model is None:
        model = build_sim2real(cfg.model)
        if name == "sim2real-tasks" and stage.from_vae:
            model.load_state_dict(
                load_checkpoint(Path(cfg.out) / "sim2real-vae" / "model.pt")[0].state_dict()
            )
    model.to(device)
    optimizer = torch.optim.Adam(_trainable(model, stage), lr=stage.lr, betas=(0.9, 0.999))
    history = []
    for epoch in range(stage.epochs):
        model.train()
        for module in stage.frozen:
            model.get_submodule(module).eval()
        targets = (
            itertools.cycle(target_loader(cfg, stage, epoch)) if name == "sim2real-vae" else None
        )
        sums: dict[str, float] = {}
        steps, start = 0, time.perf_counter()
        for batch in source_loader(cfg, stage, epoch):
            if stage.max_steps is not None and steps >= stage.max_steps:
                break
            src = frames(batch, device)
            tgt = next(targets)["rgb"].to(device) if targets is not None else None
            terms = _step(model, name, stage, src, tgt)
            loss = weighted_total(terms, stage.losses)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            for key, value in {**terms, "total": loss}.items():
                sums[key] = sums.get(key, 0.0) + float(value.detach())
            steps += 1
        row = {
            "epoch": epoch,
            "steps": steps,
            "seconds": time.perf_counter() - start,
            **{k: v / max(steps, 1) for k, v in sums.items()},
        }
        history.append(row)
        log.info("%s epoch %d: %s", name, epoch, {k: round(v, 4) for k, v in row.items()})
    return save_checkpoint(cfg, name, model, history)


def save_checkpoint(cfg: Sim2RealConfig, name: str, model: TwinVAE, history: list[dict]) -> Path:
    """``<out>/<name>/model.pt`` (weights and model config) and ``history.json``."""
    folder = Path(cfg.out) / name
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.pt"
    state = {"model": model.state_dict(), "model_config": cfg.model.model_dump(), "stage": name}
    atomic_write(path, lambda tmp: torch.save(state, tmp))
    atomic_write_text(folder / "history.json", json.dumps(history, indent=2))
    return path


def load_checkpoint(path: Path) -> tuple[TwinVAE, dict]:
    """A trained twin VAE (eval mode) and its checkpoint dict."""
    if not Path(path).exists():
        raise ConfigError(
            f"{path} does not exist; train it first: train run sim2real-vae (same --out)"
        )
    ckpt = read_checkpoint(path)
    model = build_sim2real(Sim2RealModelConfig(**ckpt["model_config"]))
    model.load_state_dict(ckpt["model"])
    return model.eval(), ckpt


def train(cfg: Sim2RealConfig, stage: str) -> Path:
    """``train run sim2real-vae`` / ``sim2real-tasks``: save the config, train the stage."""
    if stage == "sim2real-vae":
        target_loader(cfg, cfg.stages[stage], 0)  # refuse a missing or empty target before any work
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "sim2real-config.json", cfg.model_dump_json(indent=2))
    return train_stage(cfg, stage)


@torch.no_grad()
def evaluate(
    model: TwinVAE, loader: DataLoader, domain: str, num_classes: int, max_depth_m: float = 80.0
) -> dict[str, float]:
    """Depth (AbsRel, SqRel, RMSE, log RMSE up to ``max_depth_m``) and segmentation (mIoU, pixel
    accuracy) of ``model`` reading labelled frames through ``domain``'s encoder."""
    model.eval()
    depth_metrics, confusion = DepthMetrics(caps=(max_depth_m,)), ConfusionMatrix(num_classes)
    device = next(model.parameters()).device
    for batch in loader:
        src = frames(batch, device)
        out = model(src["rgb"], domain)
        depth_metrics.update(out["depth"].cpu(), src["depth"].cpu(), src["valid"].cpu())
        confusion.update(out["seg_logits"].argmax(1).cpu(), src["labels"].cpu())
    depth = depth_metrics.result()[f"cap_{max_depth_m:g}m"]
    seg = confusion.result()
    return {
        "abs_rel": depth["abs_rel"],
        "sq_rel": depth["sq_rel"],
        "rmse": depth["rmse"],
        "log_rmse": depth["log_rmse"],
        "miou": seg["miou"],
        "pixel_accuracy": seg["pixel_accuracy"],
        "depth_pixels": depth["pixels"],
    }
