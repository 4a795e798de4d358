"""``train run``: resolve the configuration, check the inputs, train the requested stages."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from clipcore.errors import CaptureError, ConfigError
from clipcore.fsutil import atomic_write_text
from clipcore.manifest import load_manifest, require_clips
from clipcore.settings import apply_overrides, build, deep_merge, read_toml
from models.config import ModelConfig
from train.config import FLAT_DATA_KEYS, TrainConfig, nest_data_keys, upgrade_saved
from train.engine import run_stage, setup
from train.run_folder import refuse_overwrite
from train.schedules import preset_defaults

log = logging.getLogger(__name__)

STAGE_ORDER = ("stage1", "stage2", "stage3", "stage4")


def resolve_config(
    preset: str | None,
    options: dict[str, Any],
    config_file: Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
) -> TrainConfig:
    """Preset < config file < command-line options < ``--set`` overrides, merged deeply,
    validated. The preset is ``preset``, else the file's, else ``tiny``; ``options`` may give the
    dataset folder as ``data``."""
    file = nest_data_keys(read_toml(config_file)) if config_file else {}
    preset = preset or file.get("preset") or TrainConfig.model_fields["preset"].default
    data = deep_merge(preset_defaults(preset), file)
    data = deep_merge(data, nest_data_keys({k: v for k, v in options.items() if v is not None}))
    data = apply_overrides(TrainConfig, data, [_nested_key(item) for item in overrides])
    cfg = build(TrainConfig, data, "train config")
    asked = _asked_num_classes(file, overrides, data)
    if asked is not None and asked != cfg.model.num_classes:
        raise ConfigError(
            f"model.num_classes={asked}, but the label map {cfg.data.label_map!r} has "
            f"{cfg.model.num_classes} classes and the segmentation head follows it: leave "
            "model.num_classes out, or choose a label map of that many classes (--label-map)"
        )
    return cfg


def _asked_num_classes(file: dict, overrides: Sequence[str], data: dict) -> Any:
    """``model.num_classes`` as a config file or ``--set`` gave it (None when neither did: the
    preset's value is only a default)."""
    given = "num_classes" in file.get("model", {}) or any(
        item.partition("=")[0].strip() == "model.num_classes" for item in overrides
    )
    return data.get("model", {}).get("num_classes") if given else None


def _nested_key(override: str) -> str:
    """``label_map=...`` (a data field once at the top level) -> ``data.label_map=...``."""
    key = override.partition("=")[0].strip()
    if key in FLAT_DATA_KEYS:
        log.warning("--set %s is now --set data.%s", key, key)
        return f"data.{override.strip()}"
    return override


def save_config(cfg: TrainConfig) -> None:
    """Write the resolved config to ``<out>/config.json``; refuse a run folder of another model."""
    path = Path(cfg.out) / "config.json"
    if path.exists():
        before = upgrade_saved(json.loads(path.read_text()))
        if (
            ModelConfig.model_validate(before["model"]) != cfg.model
            or before["data"].get("label_map", "carla22") != cfg.data.label_map
        ):
            raise ConfigError(
                f"{cfg.out} holds a run of another model or label map (preset {before['preset']}); "
                "use the same --preset and --set values, or another --out"
            )
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, cfg.model_dump_json(indent=2))  # a full disk never truncates it


def train(cfg: TrainConfig, stage: str, resume: bool = False) -> list[Path]:
    """Train ``stage`` (or ``all`` four in order); returns the best checkpoints.

    Without clips in the validation split it trains without validation (with a warning): each
    stage's ``best.pt`` is then its last epoch."""
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
    return [run_stage(cfg, name, ctx, resume, validate) for name in _check_needs(cfg, stages)]


def _check_needs(cfg: TrainConfig, stages: tuple[str, ...]) -> tuple[str, ...]:
    """Refuse a stage whose ``needs`` are neither trained in ``out`` nor trained earlier in this
    call."""
    for i, name in enumerate(stages):
        for need in cfg.stages[name].needs:
            if need not in stages[:i] and not (Path(cfg.out) / need / "best.pt").exists():
                raise ConfigError(
                    f"{name} starts from {need}, but {Path(cfg.out) / need / 'best.pt'} does not "
                    "exist; "
                    f"run: train run {need} (same --out), or train run all"
                )
    return stages
