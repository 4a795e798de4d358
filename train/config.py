"""What every task's config shares, and how a task's config is resolved.

:class:`RunConfig` holds the fields every task has (the training data, the run folder, the
preset, the seed and how the engine trains: device, determinism, bf16 autocast, channels_last,
TensorBoard); each task's config type extends it with its model and stages. :func:`resolve`
merges preset < config file < command-line options < ``--set`` overrides deeply and validates
the result, the same for every task; :func:`upgrade_saved` reads configs saved by earlier
releases.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from clipcore.errors import ConfigError
from clipcore.settings import TextPath, apply_overrides, build, deep_merge, read_toml
from dataset.config import DataConfig
from dataset.labels import load_label_map

log = logging.getLogger(__name__)

#: Data fields that configs of earlier releases kept at the top level.
FLAT_DATA_KEYS = ("label_map", "size", "train_split", "val_split", "augment", "num_workers")
#: Model fields added after runs were saved without them, with the value those runs were built
#: with (which may differ from today's default); for the tasks whose model is a ModelConfig.
LEGACY_MODEL_FIELDS = {"memory_fusion": "bottleneck"}


def nest_data_keys(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` with its data fields in ``data``.

    ``data`` given as a folder, and the data fields that configs of earlier releases kept at the top
    level (``label_map``, ``size``, ...), are moved into ``data``.
    """
    config = dict(config)
    data = config.get("data")
    if isinstance(data, (str, Path)):
        config["data"] = data = {"root": data}
    flat = {key: config.pop(key) for key in FLAT_DATA_KEYS if key in config}
    if flat:
        inner = data.model_dump() if isinstance(data, BaseModel) else (data or {})
        config["data"] = {**flat, **inner}
    return config


def upgrade_saved(config: dict[str, Any]) -> dict[str, Any]:
    """A saved ``config.json`` (as a dict) of a ModelConfig task in today's layout.

    Data fields nested, model fields added since filled with the value the run was built with.
    """
    if not isinstance(config, dict):
        return config  # refused by validation
    config = nest_data_keys(config)
    model = config.get("model")
    if isinstance(model, dict):
        config["model"] = {**LEGACY_MODEL_FIELDS, **model}
    return config


def _device_name(name: str) -> str:
    kind, _, index = name.partition(":")
    if name not in ("auto", "cpu") and not (kind == "cuda" and (not index or index.isdigit())):
        raise ValueError(f"unknown device {name!r}: use auto, cpu, cuda or cuda:N")
    return name


#: A device name: auto, cpu, cuda or cuda:N (whether it is there: :func:`train.context.setup`).
Device = Annotated[str, AfterValidator(_device_name)]


class RunConfig(BaseModel):
    """The fields of every task's config; saved beside every run."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    data: DataConfig = Field(
        default_factory=DataConfig,
        description="The training data: dataset folder, splits, label map, frame size, "
        "augmentations, loader workers.",
    )
    out: TextPath = Field(
        Path("runs/default"), description="Run folder: checkpoints, TensorBoard logs, config."
    )
    preset: str = Field("tiny", description="Model sizes and stage schedule.")
    seed: int = Field(
        0, ge=0, lt=2**32, description="Seed of sampling order, augmentation and initialisation."
    )
    deterministic: bool = Field(
        False, description="Deterministic algorithms (bit-exact resume on CPU)."
    )
    device: Device = Field("auto", description="auto, cpu, cuda or cuda:N.")
    amp: bool = Field(True, description="bf16 autocast on CUDA (ignored on CPU).")
    channels_last: bool = Field(False, description="channels_last memory format on CUDA.")
    tensorboard: bool = Field(True, description="Write TensorBoard scalars (and image panels).")

    @model_validator(mode="before")
    @classmethod
    def _nest_flat_data_keys(cls, value: Any) -> Any:
        """Configs saved before the data fields were nested still load."""
        return nest_data_keys(value) if isinstance(value, dict) else value

    @model_validator(mode="after")
    def _classes_from_label_map(self) -> RunConfig:
        """The segmentation head has as many classes as the label map.

        A ``model`` with ``num_classes`` follows it.
        """
        model = getattr(self, "model", None)
        classes = load_label_map(self.data.label_map).num_classes
        if model is not None and model.num_classes != classes:
            self.model = model.model_copy(update={"num_classes": classes})
        return self

    def frame_size(self) -> tuple[int, int]:
        """(H, W) of the frames the models see: ``data.size``, else the model's input size."""
        return tuple(self.data.size or self.model.input_size)  # type: ignore[attr-defined]


C = TypeVar("C", bound=RunConfig)


def resolve(
    config_type: type[C],
    preset_defaults: Callable[[str], dict[str, Any]],
    preset: str | None,
    options: dict[str, Any],
    config_file: Path | None = None,
    overrides: Sequence[str] = (),
) -> C:
    """Preset < config file < command-line options < ``--set`` overrides, validated.

    Merged deeply, validated as ``config_type``. The preset is ``preset``, else the file's, else the
    config's default; ``options`` may give the dataset folder as ``data``. A ``model.num_classes``
    that the file or ``--set`` gives must agree with the label map (the head follows the label map).
    """
    file = nest_data_keys(read_toml(config_file)) if config_file else {}
    preset = preset or file.get("preset") or config_type.model_fields["preset"].default
    data = deep_merge(preset_defaults(preset), file)
    data = deep_merge(data, nest_data_keys({k: v for k, v in options.items() if v is not None}))
    data = apply_overrides(config_type, data, [_nested_key(item) for item in overrides])
    cfg = build(config_type, data, "train config")
    asked = _asked_num_classes(file, overrides, data)
    if asked is not None and asked != cfg.model.num_classes:  # type: ignore[attr-defined]
        raise ConfigError(
            f"model.num_classes={asked}, but the label map {cfg.data.label_map!r} has "
            f"{cfg.model.num_classes} classes and the segmentation head follows it: leave "  # type: ignore[attr-defined]
            "model.num_classes out, or choose a label map of that many classes (--label-map)"
        )
    return cfg


def _asked_num_classes(file: dict, overrides: Sequence[str], data: dict) -> Any:
    """``model.num_classes`` as a config file or ``--set`` gave it.

    None when neither did: the preset's value is only a default.
    """
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


class EvalConfig(BaseModel):
    """What ``train eval TASK`` reads: a run folder and the data to score it on."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    run: TextPath = Field(description="Run folder of train run.")
    split: str = Field("test", description="Manifest split to evaluate on.")
    data: TextPath | None = Field(None, description="Dataset folder [default: the run's].")
    device: Device = Field(
        "auto", description="auto (cuda when a GPU is visible), cpu, cuda or cuda:N."
    )


class PredictConfig(BaseModel):
    """What ``train predict TASK`` reads and where it writes."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    run: TextPath = Field(description="Run folder of train run.")
    path: TextPath | None = Field(None, description="A shard or a dataset folder.")
    out: TextPath | None = Field(None, description="Output folder [default: RUN/predictions].")
    device: Device = Field(
        "auto", description="auto (cuda when a GPU is visible), cpu, cuda or cuda:N."
    )
