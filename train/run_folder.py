"""A run folder (``train run --out RUN``): its resolved config, the checkpoint components of its
stages, and the models built from them; the one place that builds stage models from checkpoints,
for the later stages of training, ``train eval``, ``train predict`` and ``train live``.

Layout: ``RUN/config.json`` (the resolved :class:`~train.config.TrainConfig`) and, per stage,
``RUN/<stage>/best.pt`` and ``last.pt`` whose ``components`` hold one state dict per module.
"""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import ValidationError

from clipcore.errors import CaptureError, ConfigError
from models.depth import build_depth
from models.ego_motion import build_ego_motion
from models.geometry_filter import build_geometry_filter
from models.pipeline import TemporalPipeline, build_pipeline
from models.segmentation import build_segmentation
from train.config import TrainConfig, upgrade_saved

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
    """``torch.load`` of a checkpoint with torch's safe loader (``weights_only=True``): tensors,
    plain values and the allow-listed numpy arrays only, so a checkpoint that would run code
    when unpickled (a pickled callable) is refused in one line without running anything; a
    truncated or foreign file is one line with the fix too."""
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


def load_component(run_dir: Path, stage: str, component: str) -> dict[str, torch.Tensor]:
    """The state dict of ``component`` in ``<run>/<stage>/best.pt``; a clear error if it is
    missing."""
    path = Path(run_dir) / stage / "best.pt"
    if not path.exists():
        raise CaptureError(
            f"{path} does not exist: train {stage} first (train run {stage} --out {run_dir} ...)"
        )
    return load_checkpoint(path)["components"][component]


def load_run(run_dir: Path) -> TrainConfig:
    """The resolved config a run was trained with."""
    path = Path(run_dir) / "config.json"
    if not path.exists():
        raise CaptureError(f"{path} does not exist: is {run_dir} a run folder of train run?")
    try:
        return TrainConfig.model_validate(upgrade_saved(json.loads(path.read_text())))
    except (ValidationError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CaptureError(
            f"{path} is not a config train run wrote ({str(exc).splitlines()[0]}): restore it "
            "from the run's copy or train the run again"
        ) from None


def temporal_model(cfg: TrainConfig, run_dir: Path) -> TemporalPipeline:
    """Stage 4's GeometryFilter with its ego-motion filter, in eval mode."""
    geometry = build_geometry_filter(cfg.model)
    geometry.load_state_dict(load_component(run_dir, "stage4", "geometry_filter"))
    ego = build_ego_motion(cfg.model, geometry.backbone.channels)
    ego.load_state_dict(load_component(run_dir, "stage4", "ego_motion"))
    return build_pipeline(cfg.model, geometry, ego).eval()


class FrameModel(torch.nn.Module):
    """Stages 1 and 2 frame by frame, and stage 3's ego-motion on stage 1's embeddings."""

    def __init__(self, cfg: TrainConfig, run_dir: Path) -> None:
        super().__init__()
        self.segmentation, self.depth = build_segmentation(cfg.model), build_depth(cfg.model)
        self.segmentation.load_state_dict(load_component(run_dir, "stage1", "segmentation"))
        self.depth.load_state_dict(load_component(run_dir, "stage2", "depth"))
        self.ego = build_ego_motion(cfg.model, self.segmentation.backbone.channels)
        self.ego.load_state_dict(load_component(run_dir, "stage3", "ego_motion"))
        self.eval()

    def forward(self, window: torch.Tensor) -> dict[str, torch.Tensor]:
        frames = window.flatten(0, 1)
        b, t = window.shape[:2]
        seg = self.segmentation(frames)["seg_logits"].unflatten(0, (b, t))
        embeddings = self.segmentation.backbone(frames)["out"].unflatten(0, (b, t))
        eye = torch.eye(4, dtype=window.dtype, device=window.device).expand(b, 1, 4, 4)
        rel = torch.cat([eye, self.ego(embeddings)["rel_pose"]], 1)
        return {
            "seg_logits": seg,
            "depth": self.depth(frames)["depth"].unflatten(0, (b, t)),
            "rel_pose": rel,
        }


def refuse_overwrite(out: Path, stages: tuple[str, ...]) -> None:
    """A stage already trained under ``out`` (its ``<stage>/last.pt``) is never trained over
    without ``--resume``: its checkpoints would be lost."""
    done = [name for name in stages if (Path(out) / name / "last.pt").exists()]
    if done:
        raise ConfigError(
            f"{out} already holds trained {', '.join(done)}; pass --resume to continue "
            "(a finished stage is kept as it is) or give another --out"
        )
