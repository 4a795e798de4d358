"""A run folder (``train run TASK --out RUN``).

Its resolved configs, its stages' checkpoints and the reports of ``train eval``; the one place that
reads checkpoints (torch's safe loader).

Layout: each task's resolved config (``RUN/config.json`` of the pipeline, ``RUN/<forecaster>/
config.json``, ``RUN/sim2real-config.json``) and, per stage, ``RUN/<stage>/best.pt``, ``last.pt``
and ``epoch-NNN.pt`` in the engine's one format (:mod:`train.engine`), whose ``components``
hold one state dict per module.
"""

from __future__ import annotations

import json
import pickle
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel

from clipcore.errors import CaptureError, ConfigError
from clipcore.fsutil import atomic_write_text

if TYPE_CHECKING:
    import torch

#: What a checkpoint may hold besides tensors and plain values: the numpy arrays of the NumPy
#: RNG state that checkpoints of earlier releases kept (arrays of numbers, never code).
_ALLOWED_GLOBALS = [
    np.zeros(1).__reduce__()[0],  # numpy's array reconstructor (numpy.core or numpy._core)
    np.ndarray,
    np.dtype,
    type(np.dtype(np.uint32)),
]
_UNSAFE = re.compile(r"(?:Unsupported global: GLOBAL|but got) <?(?:class )?'?([\w.]+)")


def load_checkpoint(path: Path, map_location: object = "cpu") -> Any:
    """``torch.load`` of a checkpoint with torch's safe loader (``weights_only=True``).

    Tensors, plain values and the allow-listed numpy arrays only, so a checkpoint that would run
    code when unpickled (a pickled callable) is refused in one line without running anything; a
    truncated or foreign file is one line with the fix too.
    """
    import torch

    try:
        with torch.serialization.safe_globals(_ALLOWED_GLOBALS):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        found = _UNSAFE.search(str(exc))
        if found:
            raise CaptureError(
                f"{path} holds Python objects other than weights ({found.group(1)}): refused, "
                "because loading it could run code; use checkpoints written by train run (a "
                "file you trust can be re-saved as tensors and plain values)"
            ) from None
        raise _unreadable(path, exc) from None
    except (RuntimeError, EOFError, ValueError, KeyError) as exc:
        raise _unreadable(path, exc) from None


def _unreadable(path: Path, exc: BaseException) -> CaptureError:
    return CaptureError(
        f"{path} is not a readable checkpoint ({str(exc).splitlines()[0][:80]}): it is "
        "truncated or not one; restore it, or delete it and train that stage again"
    )


def load_component(
    run_dir: Path, stage: str, component: str, trains_it: str = "train run"
) -> dict[str, torch.Tensor]:
    """The state dict of ``component`` in ``<run>/<stage>/best.pt``.

    A missing checkpoint is one line naming the command that trains it (``trains_it``).
    """
    path = Path(run_dir) / stage / "best.pt"
    if not path.exists():
        raise CaptureError(
            f"{path} does not exist: train {stage} first ({trains_it} --out {run_dir} ...)"
        )
    return load_checkpoint(path)["components"][component]


def refuse_overwrite(out: Path, stages: tuple[str, ...]) -> None:
    """Never train over a stage already trained under ``out`` without ``--resume``.

    Its ``<stage>/last.pt`` says it is trained; its checkpoints would be lost.
    """
    done = [name for name in stages if (Path(out) / name / "last.pt").exists()]
    if done:
        raise ConfigError(
            f"{out} already holds trained {', '.join(done)}; pass --resume to continue "
            "(a finished stage is kept as it is) or give another --out"
        )


def same_model(
    cfg: Any, path: Path, upgrade: Callable[[dict[str, Any]], dict[str, Any]] = dict
) -> None:
    """Refuse ``cfg`` when the config saved at ``path`` has another model or label map.

    ``upgrade`` reads it (no file: nothing to compare); ``cfg`` would not fit the run's checkpoints.
    """
    if not path.exists():
        return
    before = upgrade(json.loads(path.read_text()))
    model = type(cfg.model).model_validate(before["model"])
    label_map = type(cfg.data).model_validate(before.get("data") or {}).label_map
    if model != cfg.model or label_map != cfg.data.label_map:
        raise ConfigError(
            f"{cfg.out} holds a run of another model or label map (preset "
            f"{before.get('preset')}); use the same --preset and --set values, or another --out"
        )


def save_config(
    cfg: BaseModel, path: Path, upgrade: Callable[[dict[str, Any]], dict[str, Any]] = dict
) -> None:
    """Write the resolved config to ``path``, after :func:`same_model` with what it holds."""
    same_model(cfg, path, upgrade)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, cfg.model_dump_json(indent=2))  # a full disk never truncates it


def write_report(
    report: dict[str, Any],
    out_dir: Path,
    name: str,
    markdown: Callable[[dict[str, Any]], str],
) -> tuple[Path, Path]:
    """``<name>.json`` and ``<name>.md`` (``markdown(report)``) in ``out_dir``.

    Each written atomically.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    js, md = out_dir / f"{name}.json", out_dir / f"{name}.md"
    atomic_write_text(js, json.dumps(report, indent=2) + "\n")
    atomic_write_text(md, markdown(report))
    return js, md
