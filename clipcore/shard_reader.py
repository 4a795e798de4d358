"""The one shard reader (``docs/format.md``, formats 1 to 3).

Every program that reads shards (the training loader, verify, inspect, split, eval, predict) reads
through :class:`ShardReader`, which refuses a file or clip that :mod:`clipcore.schema` finds faulty
and undoes each image's predictor (:mod:`clipcore.predictors`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import hdf5plugin  # noqa: F401 - registers the Blosc filters that compressed chunks need
import numpy as np

from clipcore.codecs import decodes_directly, read_frames
from clipcore.errors import ShardFormatError
from clipcore.predictors import NONE, unpredict
from clipcore.records import Clip, Frame
from clipcore.schema import (
    CHECKSUMS,
    COMPLETE_ATTR,
    FORMAT,
    IMAGES,
    OPTIONAL,
    READABLE_VERSIONS,
    content_faults,
    decode_depth,
    frame_crc32,
    predictor_of,
    structure_faults,
)


@dataclass(frozen=True)
class _ClipMeta:
    """Per-clip metadata a reader keeps after the first read."""

    group: h5py.Group
    datasets: dict[str, h5py.Dataset]
    modalities: tuple[str, ...]
    frames: int
    valid: dict[str, np.ndarray]
    intrinsics: np.ndarray | None
    attrs: dict[str, Any]
    small: dict[
        str, np.ndarray
    ]  # per-frame arrays of a few KiB (frame, timestamp, poses), read once
    predictors: dict[str, str]  # image datasets stored through a predictor -> its name
    direct: frozenset[str]  # image datasets decoded without HDF5 (clipcore.codecs.read_frames)
    layout: dict[str, tuple[tuple[int, ...], np.dtype]]  # image dataset -> (frame shape, dtype)


#: A per-frame dataset at most this big is read once per clip, not once per window.
_SMALL_BYTES = 1 << 16

#: Clip attributes that :meth:`ShardReader.read_clip` turns into :class:`Clip` fields.
_CLIP_FIELDS = {
    "town",
    "backend",
    "seed",
    "fps",
    "frame_stride",
    "weather",
    "camera",
    COMPLETE_ATTR,
}


class ShardReader:
    """Read-only access to one shard, the only way the project reads shards.

    Opening checks the file (HDF5, ``carla-clips``, a readable ``format_version``); every clip is
    checked for structure (:func:`~clipcore.schema.structure_faults`) when first read, and
    every read for content (:func:`~clipcore.schema.content_faults`) unless ``check=False``.
    A fault raises :class:`ShardFormatError` naming the file, clip, frame and fault.
    ``cache_bytes`` sizes HDF5's cache of decoded chunks per dataset (None: HDF5's 1 MiB).
    """

    def __init__(self, path: Path, cache_bytes: int | None = None) -> None:
        self.path = Path(path)
        try:
            cache = {} if cache_bytes is None else {"rdcc_nbytes": cache_bytes}
            self._h5 = h5py.File(self.path, "r", **cache)
        except (OSError, RuntimeError) as exc:
            raise ShardFormatError(
                f"{self.path} is not a readable HDF5 file ({str(exc).split(' (')[0]}): "
                "it is truncated or not a shard; run capture verify --quarantine or re-record it"
            ) from None
        attrs = self._h5.attrs
        if attrs.get("format") != FORMAT:
            self._h5.close()
            raise ShardFormatError(
                f"{self.path} is an HDF5 file but not a {FORMAT} shard; "
                "move it out of the dataset folder"
            )
        raw = attrs.get("format_version", -1)
        raw = raw.item() if isinstance(raw, np.generic) else raw
        self.version = raw if isinstance(raw, int) else -1
        if self.version not in READABLE_VERSIONS:
            self._h5.close()
            raise ShardFormatError(
                f"{self.path} has format_version {raw!r}, this software reads "
                f"{', '.join(map(str, READABLE_VERSIONS))}; use the carla-temporal release that "
                "wrote it "
                "or re-record the clips"
            )
        self.town = str(attrs.get("town", "?"))
        self.codec = str(attrs.get("codec", "unknown"))
        self._faults: dict[str, list[str]] = {}
        self._metas: dict[str, _ClipMeta] = {}

    def __enter__(self) -> ShardReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the file."""
        self._h5.close()

    def root_attrs(self) -> dict[str, Any]:
        """The shard's root attributes as stored (``town`` may be missing from a damaged one)."""
        return dict(self._h5.attrs)

    def _all_ids(self) -> list[str]:
        clips = self._h5.get("clips")
        return sorted(clips) if clips is not None else []

    def clip_ids(self) -> list[str]:
        """Ids of the complete clips in this shard, sorted."""
        return [k for k in self._all_ids() if self._h5["clips"][k].attrs.get(COMPLETE_ATTR, False)]

    def incomplete_ids(self) -> list[str]:
        """Ids of clip groups without the completion marker (a write that never finished)."""
        return [
            k for k in self._all_ids() if not self._h5["clips"][k].attrs.get(COMPLETE_ATTR, False)
        ]

    def group(self, clip_id: str) -> h5py.Group:
        """The raw HDF5 group of a clip (for copying; read data with :meth:`read_arrays`)."""
        try:
            return self._h5["clips"][clip_id]
        except (KeyError, OSError):
            raise ShardFormatError(
                f"{self.path} has no clip {clip_id!r}; run capture inspect {self.path} to list them"
            ) from None

    def faults(self, clip_id: str) -> list[str]:
        """Structural faults of a clip (cached); empty when it is well formed."""
        if clip_id not in self._faults:
            group = self.group(clip_id)
            marker = (
                []
                if group.attrs.get(COMPLETE_ATTR, False)
                else ["no completion marker: its write never finished"]
            )
            self._faults[clip_id] = marker + structure_faults(group, self.version)
        return self._faults[clip_id]

    def _refuse(self, clip_id: str, faults: list[str]) -> None:
        raise ShardFormatError(
            f"{self.path}: clip {clip_id}: {'; '.join(faults)}; run capture verify "
            "--quarantine on the dataset, then re-record or re-import the clip"
        )

    def _meta(self, clip_id: str) -> _ClipMeta:
        """What every read of a clip needs, read once: checked structure, masks, calibration."""
        if clip_id not in self._metas:
            faults = self.faults(clip_id)
            if faults:
                self._refuse(clip_id, faults)
            group = self.group(clip_id)
            try:
                modalities = tuple(name for name in OPTIONAL if name in group)
                frames = group["rgb"].shape[0]
                valid = {
                    name: group[f"{name}_valid"][()] if self.version >= 2 else np.ones(frames, bool)
                    for name in modalities
                }
                intrinsics = group["intrinsics"][()] if "intrinsics" in group else None
                datasets = {
                    name: group[name] for name in ("rgb", "frame", "timestamp", *modalities)
                }
                small = {
                    name: ds[()]
                    for name, ds in datasets.items()
                    if name not in IMAGES and ds.size * ds.dtype.itemsize <= _SMALL_BYTES
                }
                predictors = {
                    name: p
                    for name in IMAGES
                    if name in datasets and (p := predictor_of(datasets[name]) or NONE) != NONE
                }
                self._metas[clip_id] = _ClipMeta(
                    group,
                    datasets,
                    modalities,
                    frames,
                    valid,
                    intrinsics,
                    dict(group.attrs),
                    small,
                    predictors,
                    frozenset(n for n in IMAGES if n in datasets and decodes_directly(datasets[n])),
                    {
                        name: (datasets[name].shape[1:], datasets[name].dtype)
                        for name in ("rgb", *modalities)
                        if name in IMAGES
                    },
                )
            except (KeyError, OSError, ValueError, RuntimeError) as exc:
                self._refuse(clip_id, [f"unreadable metadata ({str(exc).split(' (')[0]})"])
        return self._metas[clip_id]

    def modalities(self, clip_id: str) -> tuple[str, ...]:
        """The optional modalities a clip stores (see :data:`~clipcore.schema.OPTIONAL`)."""
        return self._meta(clip_id).modalities

    def num_frames(self, clip_id: str) -> int:
        """Frames in a clip (structure checked)."""
        return self._meta(clip_id).frames

    def read_arrays(
        self,
        clip_id: str,
        start: int = 0,
        stop: int | None = None,
        check: bool = True,
        only: tuple[str, ...] | None = None,
        depth_codes: bool = False,
        out: dict[str, np.ndarray] | None = None,
    ) -> dict[str, Any]:
        """Frames ``start:stop`` of a clip as arrays (reads only their chunks).

        Keys: ``rgb``, ``frame``, ``timestamp``, each stored modality (depth decoded to float32
        metres) with its ``<name>_valid`` (T,) mask, ``intrinsics`` ((3, 3) or None) and ``attrs``;
        ``only`` restricts the other modalities read (``frame`` and ``timestamp`` are always read).
        ``check`` refuses NaN / inf, out-of-range depth, non-rigid poses and frames out of order.
        ``depth_codes``: depth as format 2+ stores it, uint32 24-bit codes (``decode_depth`` turns
        them into metres), for a consumer that decodes elsewhere; format 1 gives float32 metres.
        ``out``: arrays to read image modalities into (a batch's shared memory), each shaped and
        typed as :meth:`frame_layout` says for ``stop - start`` frames; they are the values
        returned (depth stays as stored: pass ``depth_codes=True``).
        """
        meta = self._meta(clip_id)
        names = (
            "frame",
            "timestamp",
            *(n for n in ("rgb", *meta.modalities) if only is None or n in only),
        )
        into = self._targets(clip_id, start, stop, out or {}, depth_codes)
        try:
            arrays: dict[str, Any] = {
                name: self._load(meta, name, start, stop, into) for name in names
            }
        except (KeyError, OSError, ValueError, RuntimeError) as exc:
            self._refuse(clip_id, [f"unreadable data ({str(exc).split(' (')[0]})"])
        for name in meta.modalities:
            if name in arrays:
                arrays[f"{name}_valid"] = meta.valid[name][start:stop]
        for name, predictor in meta.predictors.items():
            if name in arrays:
                unpredict(arrays[name], predictor)
        if check:  # before decoding: depth codes are checked as integers
            faults = content_faults(arrays, start or 0)
            if faults:
                self._refuse(clip_id, faults)
        if "depth" in arrays and self.version >= 2 and not depth_codes:
            arrays["depth"] = decode_depth(arrays["depth"])
        arrays["intrinsics"], arrays["attrs"] = meta.intrinsics, meta.attrs
        return arrays

    def frame_layout(self, clip_id: str) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        """(shape of one frame, stored dtype) of the clip's image modalities (rgb first)."""
        return dict(self._meta(clip_id).layout)

    def _targets(
        self,
        clip_id: str,
        start: int,
        stop: int | None,
        out: dict[str, np.ndarray],
        depth_codes: bool,
    ) -> dict[str, np.ndarray]:
        """``out`` checked against the frames ``start:stop`` of the clip's stored modalities."""
        if not out:
            return out
        layout = self.frame_layout(clip_id)
        frames = len(range(self._meta(clip_id).frames)[start:stop])
        for name, target in out.items():
            if name not in layout:
                raise ValueError(f"out has {name!r}, which clip {clip_id} does not store")
            shape, dtype = layout[name]
            if target.shape != (frames, *shape) or target.dtype != dtype:
                raise ValueError(
                    f"out[{name!r}] is {target.dtype} {target.shape}; reading frames "
                    f"{start}:{stop} of {clip_id} needs {dtype} {(frames, *shape)}"
                )
            if not target.flags.c_contiguous or not target.flags.writeable:
                raise ValueError(f"out[{name!r}] must be a writeable C-contiguous array")
        if "depth" in out and self.version >= 2 and not depth_codes:
            raise ValueError("out['depth'] holds depth codes: pass depth_codes=True")
        return out

    @staticmethod
    def _load(
        meta: _ClipMeta, name: str, start: int, stop: int | None, into: dict[str, np.ndarray]
    ) -> np.ndarray:
        """Frames ``start:stop`` of one dataset: small ones copied, others read (into ``into``)."""
        if name in meta.small:
            return meta.small[name][start:stop].copy()
        if name in meta.direct:
            frames, (shape, dtype) = range(meta.frames)[start:stop], meta.layout[name]
            out = into.get(name)
            if out is None:
                out = np.empty((len(frames), *shape), dtype)
            return read_frames(meta.datasets[name], frames, out)
        if name in into:
            meta.datasets[name].read_direct(into[name], np.s_[start:stop])
            return into[name]
        return meta.datasets[name][start:stop]

    def checksum_faults(self, clip_id: str) -> list[str]:
        """Frames whose values differ from the CRC-32 written with them, or went missing.

        The rgb, semantic or depth values, or frames written and now marked missing (format 3; reads
        the clip frame by frame, so it is for ``capture verify``, not the loader). A fault names the
        modality and frames; empty when all match.
        """
        meta = self._meta(clip_id)
        if self.version < 3:
            return []
        try:
            stored = meta.group[CHECKSUMS][()]
            changed = {name: [] for name in IMAGES if name in meta.datasets}
            for k in range(meta.frames):
                for name, frames in changed.items():
                    if name in meta.valid and not meta.valid[name][k]:
                        if stored[k, IMAGES.index(name)] != 0:  # written, then marked missing
                            frames.append(k)
                        continue
                    value = meta.datasets[name][k : k + 1]
                    unpredict(value, meta.predictors.get(name, NONE))
                    if frame_crc32(value[0]) != stored[k, IMAGES.index(name)]:
                        frames.append(k)
        except (KeyError, OSError, ValueError, RuntimeError) as exc:
            return [f"checksums could not be compared ({str(exc).split(' (')[0]})"]
        return [
            f"{name} of frame{'s' if len(ks) > 1 else ''} {', '.join(map(str, ks[:5]))}"
            f"{' ...' if len(ks) > 5 else ''} differs from its CRC-32 (changed after writing)"
            for name, ks in changed.items()
            if ks
        ]

    def read_clip(
        self, clip_id: str, start: int = 0, stop: int | None = None, check: bool = True
    ) -> Clip:
        """Frames ``start:stop`` of a clip as a :class:`Clip` (a missing modality is None)."""
        data = self.read_arrays(clip_id, start, stop, check)
        a = data["attrs"]

        def value(name: str, k: int) -> np.ndarray | None:
            return data[name][k] if name in data and data[f"{name}_valid"][k] else None

        frames = tuple(
            Frame(
                data["rgb"][k],
                value("semantic", k),
                value("depth", k),
                value("cam_to_world", k),
                value("carla_transform", k),
                data["frame"][k],
                data["timestamp"][k],
            )
            for k in range(len(data["frame"]))
        )
        try:
            return Clip(
                clip_id=clip_id,
                town=str(a.get("town", self.town)),
                backend=str(a.get("backend", "unknown")),
                seed=int(a.get("seed", 0)),
                fps=float(a["fps"]),
                frame_stride=int(a["frame_stride"]),
                intrinsics=data["intrinsics"],
                weather=json.loads(a.get("weather", "{}")),
                camera=json.loads(a.get("camera", "{}")),
                frames=frames,
                attrs={k: v for k, v in a.items() if k not in _CLIP_FIELDS},
            )
        except (KeyError, ValueError) as exc:
            self._refuse(clip_id, [f"bad clip attributes ({exc})"])
            raise  # unreachable: _refuse raises
