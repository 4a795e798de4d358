"""``train run pipeline``.

Resolve the configuration, check the inputs, train the requested stages (stage 1 to 4 in order,
``all``) on the engine.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from clipcore.errors import CaptureError, ConfigError
from clipcore.manifest import load_manifest, require_clips
from train import config as run_config
from train.context import setup
from train.engine import run_stage
from train.pipeline.config import STAGE_ORDER, TrainConfig, upgrade_pipeline
from train.pipeline.schedules import preset_defaults
from train.pipeline.stages import PipelineStage
from train.run_folder import refuse_overwrite
from train.run_folder import save_config as write_config

log = logging.getLogger(__name__)


def resolve_config(
    preset: str | None,
    options: dict[str, Any],
    config_file: Path | None = None,
    overrides: Sequence[str] = (),
) -> TrainConfig:
    """Preset < config file < command-line options < ``--set`` overrides, validated.

    Merged deeply (:func:`train.config.resolve`). The preset is ``preset``, else the file's, else
    ``tiny``; ``options`` may give the dataset folder as ``data``.
    """
    return run_config.resolve(TrainConfig, preset_defaults, preset, options, config_file, overrides)


def save_config(cfg: TrainConfig) -> None:
    """Write the resolved config to ``<out>/config.json``; refuse a run folder of another model."""
    write_config(cfg, Path(cfg.out) / "config.json", upgrade_pipeline)


def train(cfg: TrainConfig, stage: str = "all", resume: bool = False) -> list[Path]:
    """Train ``stage`` (or ``all`` four in order); returns the best checkpoints.

    Without clips in the validation split it trains without validation (with a warning): each
    stage's ``best.pt`` is then its last epoch.
    """
    data = cfg.data
    manifest = load_manifest(data.root)  # a missing dataset or manifest fails here, with the fix
    require_clips(manifest, data.root, data.train_split, "training")
    try:
        validate = require_clips(manifest, data.root, data.val_split, "validation") > 0
    except CaptureError as exc:
        log.warning("training without validation (best.pt is the last epoch): %s", exc)
        validate = False
    stages = STAGE_ORDER if stage == "all" else (stage,)
    if not resume:
        refuse_overwrite(Path(cfg.out), stages)
    ctx = setup(cfg)
    if ctx.main:
        save_config(cfg)
    return [
        run_stage(PipelineStage(cfg, name, validate), ctx, resume)
        for name in _check_needs(cfg, stages)
    ]


def _check_needs(cfg: TrainConfig, stages: tuple[str, ...]) -> tuple[str, ...]:
    """Refuse a stage whose ``needs`` are not trained.

    Neither trained in ``out`` nor trained earlier in this call.
    """
    for i, name in enumerate(stages):
        for need in cfg.stages[name].needs:
            if need not in stages[:i] and not (Path(cfg.out) / need / "best.pt").exists():
                raise ConfigError(
                    f"{name} starts from {need}, but {Path(cfg.out) / need / 'best.pt'} does not "
                    f"exist; run: train run pipeline --stage {need} (same --out), or train run "
                    "pipeline"
                )
    return stages
