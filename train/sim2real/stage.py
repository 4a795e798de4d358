"""``train run sim2real``: the twin VAE's two stages on the engine.

Stage 1 (``sim2real-vae``) trains the twin VAE (both encoders and decoders) on sim frames of
``data`` (our shards, labels unused) and unlabelled target images (``target``, a second loader
cycled beside the source frames). Stage 2 (``sim2real-tasks``) starts from stage 1's weights and
trains the depth and segmentation decoders with the encoders, the image decoders frozen, on sim
frames with labels and their translation to the target domain. A stage is validated only with
``validation`` (its weighted loss on the val split; then ``lr_patience`` may lower the rate): else
best.pt is the last epoch. Checkpoints: ``<out>/<stage>/`` in the engine's format (component
``twin_vae``); a stage folder of an earlier release holds ``model.pt`` instead, which still
loads (:func:`load_sim2real`).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from clipcore.errors import ConfigError
from clipcore.manifest import load_manifest
from clipcore.normalize import denormalize
from dataset import ClipWindows
from dataset.target_images import TargetImages
from models.sim2real import TwinVAE, build_sim2real
from train import config as run_config
from train.context import Context, setup
from train.engine import Schedule, Stage, make_loader, run_stage
from train.run_folder import load_checkpoint, refuse_overwrite, save_config
from train.sim2real.config import SIM2REAL_STAGES, Sim2RealConfig, preset_defaults
from train.sim2real.losses import task_terms, vae_terms, weighted_total

CONFIG = "sim2real-config.json"
COMPONENT = "twin_vae"
#: Seed multiplier of the target images' order (the source frames': the engine's default).
TARGET_SALT = 100_019


def frames(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A source batch of 1-frame windows -> rgb (B, 3, H, W) in [0, 1], depth, valid, labels."""
    return {
        "rgb": denormalize(batch["rgb"][:, 0]).clamp(0, 1),
        "depth": batch["depth"][:, 0],
        "valid": batch["valid_depth"][:, 0],
        "labels": batch["labels"][:, 0],
    }


class TwinVAENet(nn.Module):
    """The twin VAE as a stage network.

    A batch in, the stage's loss terms out (so that every step goes through ``forward``, as
    DistributedDataParallel needs).
    """

    def __init__(self, vae: TwinVAE, stage: str, translated: bool) -> None:
        """``stage``'s terms; ``translated``: sim2real-tasks computes the translated terms."""
        super().__init__()
        self.vae, self.stage, self.translated = vae, stage, translated

    def components(self) -> dict[str, nn.Module]:
        """What a checkpoint stores: the twin VAE."""
        return {COMPONENT: self.vae}

    def forward(
        self,
        rgb: torch.Tensor,
        depth: torch.Tensor,
        valid: torch.Tensor,
        labels: torch.Tensor,
        target: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """The stage's loss terms on sim frames (and, stage 1, target images).

        ``rgb`` (B, 3, H, W) in [0, 1] with ``depth`` (B, 1, H, W) metres, its validity and
        ``labels`` (B, H, W), and target images ``target``.
        """
        if self.stage == "sim2real-vae":
            return vae_terms(self.vae, {"sim": rgb, "real": target})
        return task_terms(self.vae, rgb, depth, valid, labels, self.translated)


class TwinVAEStage(Stage):
    """Stage ``name`` of the twin VAE (sim2real-vae or sim2real-tasks)."""

    #: Stage 1 leaves the task decoders out of its loss; stage 2 the real encoder, without
    #: translated terms.
    find_unused_parameters = True

    def __init__(self, cfg: Sim2RealConfig, name: str) -> None:
        """The stage's schedule from its config; frozen names are the twin VAE's."""
        spec = cfg.stages[name]
        self.cfg, self.name, self.key, self.spec = cfg, name, f"stages.{name}", spec
        frozen = tuple(f"vae.{module}" for module in spec.frozen)
        self.schedule = Schedule.of(spec, lr_patience=spec.lr_patience, frozen=frozen)
        self.train_split = cfg.data.train_split
        self.val_split = cfg.data.val_split if spec.validation else None

    def build(self) -> nn.Module:
        """A fresh twin VAE, or (sim2real-tasks with ``from_vae``) stage 1's."""
        vae = build_sim2real(self.cfg.model)
        if self.name == "sim2real-tasks" and self.spec.from_vae:
            vae.load_state_dict(load_sim2real(Path(self.cfg.out), "sim2real-vae")[0].state_dict())
        losses = self.spec.losses
        translated = bool(
            losses.get("depth_translated") or losses.get("seg_translated") or losses.get("mmd")
        )
        return TwinVAENet(vae, self.name, translated)

    def dataset(self, split: str, training: bool, epoch: int) -> ClipWindows:
        """Single source frames of ``split`` at the run's frame size."""
        ds = source_frames(self.cfg, split, training)
        ds.set_epoch(epoch)
        return ds

    def batches(self, loader: DataLoader, epoch: int, ctx: Context) -> Iterable[dict[str, Any]]:
        """Stage 1: each source batch with target images (cycled, reshuffled each epoch)."""
        if self.name != "sim2real-vae":
            return loader
        targets = itertools.cycle(target_loader(self.cfg, self.schedule.batch_size, epoch, ctx))
        return _with_targets(loader, targets)

    def forward(self, net: nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """The stage's loss terms."""
        src = frames(batch)
        return net(src["rgb"], src["depth"], src["valid"], src["labels"], batch.get("target"))

    def loss(
        self, out: dict[str, torch.Tensor], batch: dict[str, Any]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The stage's weighted terms (a weight of 0 switches a term off; it is still logged)."""
        total = weighted_total(out, self.spec.losses)
        return total, {name: float(term.detach()) for name, term in out.items()}

    def selection(self) -> str:
        """The lowest validation loss (with ``validation``)."""
        return "lowest validation loss"


def _with_targets(
    loader: DataLoader, targets: Iterator[dict[str, torch.Tensor]]
) -> Iterator[dict[str, Any]]:
    for batch in loader:
        yield {**batch, "target": next(targets)["rgb"]}


def source_frames(
    cfg: Sim2RealConfig, split: str, training: bool = False, data: Path | None = None
) -> ClipWindows:
    """Single frames of a source split at the config's frame size.

    Of ``data`` (default the config's dataset folder), labels in the config's label map, augmented
    only when ``training``.
    """
    source = cfg.data.model_copy(update={"root": Path(data)}) if data else cfg.data
    return ClipWindows.from_config(
        source, split, 1, training=training, seed=cfg.seed, size=cfg.frame_size()
    )


def target_images(cfg: Sim2RealConfig) -> TargetImages:
    """The unlabelled target images; a missing or empty target is one line."""
    if cfg.target is None:
        raise ConfigError(
            "sim2real-vae needs target-domain images; pass --target FOLDER (JPG/PNG or shards)"
        )
    return TargetImages(cfg.target, cfg.frame_size())


def target_loader(cfg: Sim2RealConfig, batch_size: int, epoch: int, ctx: Context) -> DataLoader:
    """Target images for one epoch, in an order of their own (reshuffled each epoch)."""
    return make_loader(
        target_images(cfg),
        batch_size,
        training=True,
        epoch=epoch,
        ctx=ctx,
        seed=cfg.seed,
        num_workers=cfg.data.num_workers,
        salt=TARGET_SALT,
        drop_last=False,
    )


def load_sim2real(run_dir: Path, stage: str = "sim2real-tasks") -> tuple[TwinVAE, Sim2RealConfig]:
    """A trained twin VAE (eval mode) of ``stage`` in ``run_dir`` and its config.

    Its ``best.pt``, or the ``model.pt`` (beside ``sim2real-config.json``) that earlier releases
    wrote.
    """
    folder = Path(run_dir) / stage
    if (folder / "best.pt").exists():
        state = load_checkpoint(folder / "best.pt")
        config, weights = state["config"], state["components"][COMPONENT]
    elif (folder / "model.pt").exists():
        state = load_checkpoint(folder / "model.pt")
        saved = Path(run_dir) / CONFIG
        config = json.loads(saved.read_text()) if saved.exists() else preset_defaults("tiny")
        config, weights = {**config, "model": state["model_config"]}, state["model"]
    else:
        raise ConfigError(
            f"{folder} holds no trained twin VAE; train it first: train run sim2real --stage "
            f"{stage} --out {run_dir}"
        )
    cfg = Sim2RealConfig.model_validate(config)
    model = build_sim2real(cfg.model)
    model.load_state_dict(weights)
    return model.eval(), cfg


def resolve_config(
    preset: str | None,
    options: dict[str, Any],
    config_file: Path | None = None,
    overrides: Sequence[str] = (),
) -> Sim2RealConfig:
    """Preset < config file < command-line options < ``--set`` overrides, validated."""
    return run_config.resolve(
        Sim2RealConfig, preset_defaults, preset, options, config_file, overrides
    )


def _upgrade(saved: dict[str, Any]) -> dict[str, Any]:
    """A saved sim2real config, validated as today's (earlier layouts too)."""
    return Sim2RealConfig.model_validate(saved).model_dump(mode="json")


def train(cfg: Sim2RealConfig, stage: str = "all", resume: bool = False) -> list[Path]:
    """``train run sim2real``: save the config, train ``stage`` (or both in order)."""
    stages = SIM2REAL_STAGES if stage == "all" else (stage,)
    load_manifest(cfg.data.root)  # a missing dataset or manifest fails here, with the fix
    if "sim2real-vae" in stages:
        target_images(cfg)  # refuse a missing or empty target before any work
    elif cfg.stages["sim2real-tasks"].from_vae:
        load_sim2real(Path(cfg.out), "sim2real-vae")  # stage 1 is there
    if not resume:
        refuse_overwrite(Path(cfg.out), stages)
    ctx = setup(cfg)
    if ctx.main:
        save_config(cfg, Path(cfg.out) / CONFIG, _upgrade)
    return [run_stage(TwinVAEStage(cfg, name), ctx, resume) for name in stages]
