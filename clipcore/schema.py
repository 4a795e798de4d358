"""What a valid clip group of a ``carla-clips`` shard looks like, and the checks.

The format is described in ``docs/format.md``.

The writer (:mod:`clipcore.shards`), the reader and ``capture verify`` all use the checks
here, so "valid" means one thing. Two kinds:

- :func:`structure_faults`: datasets, shapes, dtypes, frame counts, chunking and attributes of one
  clip group; reads only metadata, so it is cheap enough to run on every clip a reader opens.
- :func:`content_faults`: values of decoded arrays (NaN / inf, depth range, rigid poses, frame
  order and tags); cheap enough for the data loader on every window.

Depth is stored (format 2 and later) as CARLA's own 24-bit depth code in a uint32 dataset;
readers return float32 metres ``float32(code) * float32(1000 / (2^24 - 1))`` (one float32
rounding: about 0.06 mm steps, the far-plane code decodes to exactly 1000 m). Format 3 adds a
``predictor`` attribute to image datasets (:mod:`clipcore.predictors`) and a ``crc32`` dataset:
each frame's CRC-32 of its rgb, semantic and depth values (:func:`frame_crc32`), which
``capture verify`` compares, so that a changed pixel that still looks valid is found.
"""

from __future__ import annotations

import json
import zlib
from typing import Any

import numpy as np

from clipcore.geometry import FAR_PLANE_M
from clipcore.predictors import NONE, PREDICTORS
from clipcore.tags import NUM_TAGS

FORMAT = "carla-clips"
FORMAT_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)
COMPLETE_ATTR = "complete"

DEPTH_CODE_MAX = 2**24 - 1
DEPTH_SCALE_M = FAR_PLANE_M / DEPTH_CODE_MAX
_SCALE32 = np.float32(DEPTH_SCALE_M)
DEPTH_ENCODING = "carla-24bit"

REQUIRED = ("rgb", "frame", "timestamp")
#: Optional per-frame modalities; each present one has a ``<name>_valid`` (T,) bool dataset.
OPTIONAL = ("semantic", "depth", "cam_to_world", "carla_transform")
IMAGES = ("rgb", "semantic", "depth")
#: Format 3: (T, 3) uint32, CRC-32 of each frame's IMAGES values (0 where a frame lacks one).
CHECKSUMS = "crc32"
RIGID_ATOL = 1e-5
_IDENTITY = np.eye(4)


def decode_depth(code: np.ndarray) -> np.ndarray:
    """uint32 24-bit depth codes -> float32 planar depth in metres (a new array)."""
    # one pass; each code converts to float32 exactly (24 bits), then one float32 product
    return np.multiply(np.asarray(code), _SCALE32, dtype=np.float32)


def frame_crc32(value: np.ndarray) -> int:
    """CRC-32 of one frame's values.

    CRC-32 (zlib) of one frame's values (rgb, semantic tags or depth codes) as little-endian
    bytes in C order.
    """
    data = np.ascontiguousarray(value, dtype=value.dtype.newbyteorder("<"))
    return zlib.crc32(data.view(np.uint8).reshape(-1))


def predictor_of(dataset: Any) -> str | None:
    """The ``predictor`` attribute of an h5py dataset as text, or None if it has none."""
    value = dataset.attrs.get("predictor")
    if isinstance(value, bytes | np.bytes_):
        value = value.decode("utf-8", "replace")
    return value if isinstance(value, str) else None if value is None else repr(value)


def encode_depth(depth: np.ndarray) -> np.ndarray:
    """float32 metres in (0, 1000] -> uint32 codes, within half a code (0.03 mm).

    A value that is itself the decoding of a code (all CARLA depth) gets that code back, so
    ``decode_depth(encode_depth(d)) == d`` exactly for CARLA data; near the far plane two codes
    can decode to one float32, and either is returned.
    """
    d = np.asarray(depth, dtype=np.float32)
    code = np.divide(d, DEPTH_SCALE_M, dtype=np.float64)
    np.rint(code, out=code)
    np.clip(code, 0, DEPTH_CODE_MAX, out=code)
    # only values that are not the decoding of their nearest code (none of CARLA's) can have
    # another code that decodes to them: float32 rounding leaves it one step away
    miss = np.flatnonzero(decode_depth(code) != d)
    if miss.size:
        flat = code.reshape(-1)
        flat[miss] = _code_one_step_away(flat[miss], d.reshape(-1)[miss])
    return code.astype(np.uint32)


def _code_one_step_away(code: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Depth codes snapped to ones that decode to ``d``.

    Codes (float64, clipped) whose decoding is not ``d`` -> the neighbouring code whose decoding
    is, where one is; else the code itself.
    """
    for step in (-1.0, 1.0):
        other = np.clip(code + step, 0, DEPTH_CODE_MAX)
        better = (decode_depth(other) == d) & (decode_depth(code) != d)
        code = np.where(better, other, code)
    return code


def expected_shapes(
    num_frames: int, height: int, width: int, version: int
) -> dict[str, tuple[tuple, Any]]:
    """The datasets of a clip and their shapes and dtypes.

    Dataset name -> (shape, dtype) of a clip of ``num_frames`` frames of ``height`` x ``width``.
    """
    t = num_frames
    return {
        "rgb": ((t, height, width, 3), np.uint8),
        "semantic": ((t, height, width), np.uint8),
        "depth": ((t, height, width), np.uint32 if version >= 2 else np.float32),
        "cam_to_world": ((t, 4, 4), np.float64),
        "carla_transform": ((t, 6), np.float64),
        "frame": ((t,), np.int64),
        "timestamp": ((t,), np.float64),
        CHECKSUMS: ((t, len(IMAGES)), np.uint32),
        **{f"{name}_valid": ((t,), np.bool_) for name in OPTIONAL},
    }


def _lost_datasets(attrs: Any, names: set[str]) -> list[str]:
    """Datasets a clip says it has but lacks.

    Datasets the clip's own attributes say were written (``modalities``, ``has_intrinsics``) but
    that are not there: a lost dataset must not pass for a modality never recorded.
    """
    listed = set(json.loads(attrs["modalities"])) if "modalities" in attrs else set()
    if attrs.get("has_intrinsics", False):
        listed.add("intrinsics")
    lost = sorted(listed - names)
    return [f"{', '.join(lost)} listed in the clip's attributes but missing (lost)"] if lost else []


def _attribute_faults(attrs: Any) -> list[str]:
    """Faults of the clip attributes every reader relies on.

    The clip attributes every reader relies on: ``fps`` (a finite number > 0), ``frame_stride``
    (an integer >= 1), ``camera`` and ``weather`` (JSON objects).
    """
    faults = [f"attribute {key} is missing" for key in _REQUIRED_ATTRS if key not in attrs]
    if "fps" in attrs and not _number(attrs["fps"], lambda v: np.isfinite(v) and v > 0):
        faults.append(f"attribute fps is {_plain(attrs['fps'])!r}, not a frame rate > 0")
    if "frame_stride" in attrs and not _number(
        attrs["frame_stride"], lambda v: v >= 1 and float(v).is_integer()
    ):
        faults.append(
            f"attribute frame_stride is {_plain(attrs['frame_stride'])!r}, not an integer >= 1"
        )
    for key in ("camera", "weather"):
        if key in attrs and not isinstance(_json(attrs[key]), dict):
            faults.append(f"attribute {key} is not a JSON object: {str(attrs[key])[:40]!r}")
    return faults


_REQUIRED_ATTRS = ("fps", "frame_stride", "camera", "weather")


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _number(value: Any, ok: Any) -> bool:
    try:
        return bool(ok(float(value)))
    except (TypeError, ValueError):
        return False


def _json(value: Any) -> Any:
    """A JSON attribute's value, or None when it is not JSON text."""
    try:
        return json.loads(value.decode() if isinstance(value, bytes | np.bytes_) else value)
    except (TypeError, ValueError, UnicodeDecodeError):
        return None


def structure_faults(group: Any, version: int) -> list[str]:
    """Everything wrong with the layout of one clip group (h5py.Group); empty when it is valid."""
    faults: list[str] = []
    try:
        names = set(group.keys())
        missing = [n for n in REQUIRED + ((CHECKSUMS,) if version >= 3 else ()) if n not in names]
        if missing:
            return [f"missing dataset(s) {', '.join(missing)}"]
        rgb = group["rgb"]
        if rgb.ndim != 4 or rgb.shape[-1] != 3:
            return [f"rgb has shape {rgb.shape}, expected (frames, height, width, 3)"]
        t, height, width = rgb.shape[:3]
        attrs = group.attrs
        for key, value in (("num_frames", t), ("height", height), ("width", width)):
            if key in attrs and int(attrs[key]) != value:
                faults.append(f"attribute {key}={int(attrs[key])} but rgb holds {value}")
        shapes = expected_shapes(t, height, width, version)
        for name in sorted(names & set(shapes)):
            shape, dtype = shapes[name]
            data = group[name]
            if data.shape != shape:
                faults.append(
                    f"{name} has shape {data.shape}, expected {shape} (as rgb: {t} frames of "
                    f"{height}x{width})"
                )
            elif data.dtype != np.dtype(dtype):
                faults.append(f"{name} has dtype {data.dtype}, expected {np.dtype(dtype)}")
            elif name in IMAGES and (data.chunks is None or data.chunks[0] != 1):
                faults.append(f"{name} is chunked {data.chunks}, expected one frame per chunk")
        if version >= 2:
            for name in sorted(set(OPTIONAL)):
                if name in names and f"{name}_valid" not in names:
                    faults.append(f"{name} has no {name}_valid dataset")
                if name not in names and f"{name}_valid" in names:
                    faults.append(f"{name}_valid is there but {name} is missing (lost)")
            faults += _lost_datasets(attrs, names)
            if "depth" in names and group["depth"].attrs.get("encoding") != DEPTH_ENCODING:
                faults.append(f"depth has no encoding={DEPTH_ENCODING!r} attribute")
        elif not set(OPTIONAL) <= names:
            faults.append(f"format 1 clip lacks {', '.join(sorted(set(OPTIONAL) - names))}")
        for name in sorted(names & set(IMAGES)):
            predictor = predictor_of(group[name])
            if predictor is None and version >= 3:
                faults.append(f"{name} has no predictor attribute (format 3 writes one)")
            elif predictor not in (PREDICTORS if version >= 3 else (None, NONE)):
                faults.append(
                    f"{name} has predictor {predictor!r}, which format {version} does not know "
                    f"(format 3 knows {', '.join(PREDICTORS)})"
                )
        if "intrinsics" in names:
            k = group["intrinsics"]
            if (
                k.shape != (3, 3)
                or not np.allclose(k[()][2], [0, 0, 1])
                or not np.all(np.isfinite(k[()]))
            ):
                faults.append("intrinsics is not a finite (3, 3) pinhole matrix")
        faults += _attribute_faults(attrs)
    except (KeyError, OSError, ValueError, TypeError, AttributeError, RuntimeError) as exc:
        faults.append(f"unreadable ({exc})")
    return faults


def content_faults(arrays: dict[str, np.ndarray], start: int = 0) -> list[str]:
    """Faults of decoded arrays of frames.

    Faults of decoded arrays of frames ``start, start + 1, ...`` (keys as
    :func:`expected_shapes`, depth in metres, ``<name>_valid`` masks optional); each message
    names the frame(s).
    """
    faults: list[str] = []
    if len(arrays["frame"]) == 0:
        return faults

    def where(mask: np.ndarray) -> str:
        frames = (np.nonzero(mask)[0] + start).tolist()
        return f"frame{'s' if len(frames) > 1 else ''} {', '.join(map(str, frames[:5]))}" + (
            " ..." if len(frames) > 5 else ""
        )

    def valid(name: str) -> np.ndarray:
        return np.asarray(arrays.get(f"{name}_valid", np.ones(len(arrays[name]), bool)), bool)

    if "depth" in arrays and np.issubdtype(arrays["depth"].dtype, np.integer):  # undecoded codes
        c, ok = arrays["depth"], valid("depth")
        flat = c.reshape(len(c), -1)
        out = ((flat.min(axis=1) == 0) | (flat.max(axis=1) > DEPTH_CODE_MAX)) & ok
        if out.any():
            faults.append(f"depth outside (0, {FAR_PLANE_M:g}] m on {where(out)}")
    elif "depth" in arrays:
        d, ok = arrays["depth"], valid("depth")
        flat = d.reshape(len(d), -1)
        bad = ~np.isfinite(flat).all(axis=1) & ok
        if bad.any():
            faults.append(f"depth is NaN or inf on {where(bad)}")
        clean = np.where(np.isfinite(flat), flat, FAR_PLANE_M)
        # the far-plane code decodes to exactly FAR_PLANE_M; one code more is 0.06 mm beyond it
        out = ((clean.min(axis=1) <= 0) | (clean.max(axis=1) > FAR_PLANE_M)) & ok & ~bad
        if out.any():
            faults.append(f"depth outside (0, {FAR_PLANE_M:g}] m on {where(out)}")
    if "semantic" in arrays:
        s, ok = arrays["semantic"], valid("semantic")
        high = (s.reshape(len(s), -1).max(axis=1) >= NUM_TAGS) & ok
        if high.any():
            faults.append(f"semantic tag above {NUM_TAGS - 1} on {where(high)}")
    if "cam_to_world" in arrays:
        faults += _pose_faults(arrays["cam_to_world"], valid("cam_to_world"), where)
    for name in ("frame", "timestamp"):
        values = np.asarray(arrays[name], dtype=np.float64)
        if not np.all(np.isfinite(values)):
            faults.append(f"{name} is NaN or inf on {where(~np.isfinite(values))}")
        elif len(values) > 1 and np.any(np.diff(values) <= 0):
            faults.append(
                f"{name} does not increase at {where(np.r_[False, np.diff(values) <= 0])}"
            )
    return faults


def _pose_faults(poses: np.ndarray, ok: np.ndarray, where: Any) -> list[str]:
    finite = np.isfinite(poses).all(axis=(1, 2))
    if np.any(~finite & ok):
        return [f"cam_to_world is NaN or inf on {where(~finite & ok)}"]
    if len(poses) == 0:
        return []
    if not finite.all():  # frames without a pose: checked as the identity, never reported
        poses = np.where(finite[:, None, None], poses, _IDENTITY)
    rot = poses[:, :3, :3]
    gram = rot @ rot.transpose(0, 2, 1)
    ortho = np.abs(gram - _IDENTITY[:3, :3]).max(axis=(1, 2)) <= RIGID_ATOL
    det = np.linalg.det(rot)
    last = np.abs(poses[:, 3] - _IDENTITY[3]).max(axis=1) <= RIGID_ATOL
    if (ortho & (det >= 0) & last | ~ok).all():  # the common case: one test
        return []
    faults = []
    if np.any(~ortho & ok):
        faults.append(f"cam_to_world rotation is not orthonormal on {where(~ortho & ok)}")
    if np.any((det < 0) & ok):
        faults.append(
            f"cam_to_world rotation has determinant -1 (a flipped axis) on {where((det < 0) & ok)}"
        )
    if np.any(~last & ok):
        faults.append(f"cam_to_world last row is not (0, 0, 0, 1) on {where(~last & ok)}")
    return faults
