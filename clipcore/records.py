"""The record types that flow from every capture backend to the shard writer and back.

Shapes and units are stated once, here:

=================  ===========  =========  ===============================================
field              shape        dtype      meaning
=================  ===========  =========  ===============================================
``rgb``            (H, W, 3)    uint8      colour image, RGB channel order
``semantic``       (H, W)       uint8      raw CARLA 0.9.16 tag ids (0..28)
``depth``          (H, W)       float32    planar z-depth in metres, far plane 1000 m
``cam_to_world``   (4, 4)       float64    OpenCV camera -> right-handed world, metres
``carla_transform`` (6,)        float64    raw sensor pose x, y, z (m), pitch, yaw, roll (deg)
``frame``          scalar       int        simulator frame number
``timestamp``      scalar       float      simulation time in seconds
``intrinsics``     (3, 3)       float64    pinhole matrix (see :mod:`clipcore.geometry`)
=================  ===========  =========  ===============================================

Every modality but ``rgb``, ``frame`` and ``timestamp`` is optional (``None``): data imported from
elsewhere may have no depth, no pose, or labels on some frames only. A clip's intrinsics are
``None`` when the camera is not calibrated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


def _frozen(array: np.ndarray, dtype: np.dtype | type) -> np.ndarray:
    out = np.ascontiguousarray(array, dtype=dtype)
    out.setflags(write=False)
    return out


#: Per-frame fields that may be ``None``, with their dtypes.
OPTIONAL = {
    "semantic": np.uint8,
    "depth": np.float32,
    "cam_to_world": np.float64,
    "carla_transform": np.float64,
}


@dataclass(frozen=True)
class Frame:
    """One synchronized measurement of all sensors at one simulator tick."""

    rgb: np.ndarray
    semantic: np.ndarray | None
    depth: np.ndarray | None
    cam_to_world: np.ndarray | None
    carla_transform: np.ndarray | None
    frame: int
    timestamp: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "rgb", _frozen(self.rgb, np.uint8))
        for name, dtype in OPTIONAL.items():
            if getattr(self, name) is not None:
                object.__setattr__(self, name, _frozen(getattr(self, name), dtype))
        object.__setattr__(self, "frame", int(self.frame))
        object.__setattr__(self, "timestamp", float(self.timestamp))

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) of the images."""
        return self.rgb.shape[0], self.rgb.shape[1]


@dataclass(frozen=True)
class Clip:
    """A sequence of frames from one camera, plus everything needed to interpret them.

    ``attrs`` holds backend-specific metadata (seeds, versions, map name) that is stored
    as clip attributes; values must be str, int, float or bool.
    """

    clip_id: str
    town: str
    backend: str
    seed: int
    fps: float
    frame_stride: int
    intrinsics: np.ndarray | None
    weather: dict[str, Any]
    camera: dict[str, Any]
    frames: tuple[Frame, ...]
    attrs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.intrinsics is not None:
            object.__setattr__(self, "intrinsics", _frozen(self.intrinsics, np.float64))
        object.__setattr__(self, "frames", tuple(self.frames))

    def __len__(self) -> int:
        return len(self.frames)

    def stack(self, name: str) -> np.ndarray:
        """Stack one per-frame field over time: e.g. ``stack("rgb")`` is (T, H, W, 3).

        Raises ``ValueError`` if a frame lacks it (see :meth:`valid`).
        """
        values = [getattr(f, name) for f in self.frames]
        if any(v is None for v in values):
            raise ValueError(
                f"clip {self.clip_id}: {name} is missing on some frames; check clip.valid({name!r})"
            )
        return np.stack(values)

    def valid(self, name: str) -> np.ndarray:
        """(T,) bool: which frames carry the field ``name``."""
        return np.array([getattr(f, name) is not None for f in self.frames], dtype=bool)

    def has(self, name: str) -> bool:
        """True when at least one frame carries the field ``name``."""
        return bool(self.valid(name).any())

    def arrays(self) -> dict[str, Any]:
        """The clip as a reader returns it (``ShardReader.read_arrays``).

        Stacked per-frame fields, each optional one it has with a ``<name>_valid`` (T,) mask (zeros
        where invalid), ``intrinsics`` and ``attrs`` (``fps``, ``frame_stride`` and :attr:`attrs`).
        """
        out: dict[str, Any] = {name: self.stack(name) for name in ("rgb", "frame", "timestamp")}
        for name in OPTIONAL:
            valid = self.valid(name)
            if valid.any():
                zero = np.zeros_like(getattr(self.frames[int(np.argmax(valid))], name))
                out[name] = np.stack(
                    [zero if getattr(f, name) is None else getattr(f, name) for f in self.frames]
                )
                out[f"{name}_valid"] = valid
        out["intrinsics"] = self.intrinsics
        out["attrs"] = {**self.attrs, "fps": self.fps, "frame_stride": self.frame_stride}
        return out
