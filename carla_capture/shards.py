"""HDF5 shard format v1 (``docs/format.md``): a validating writer and a version-checking reader.

A shard holds whole clips of one town under ``/clips/<clip_id>``. Every per-frame dataset
is chunked one frame per chunk, so reading a 6-frame window decodes 6 chunks.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import h5py
import hdf5plugin
import numpy as np

from carla_capture import __version__
from carla_capture.errors import ClipValidationError, ShardFormatError
from carla_capture.geometry import FAR_PLANE_M
from carla_capture.records import Clip, Frame
from carla_capture.tags import NUM_TAGS, SEMANTIC_SCHEMA

log = logging.getLogger(__name__)

FORMAT = "carla-clips"
FORMAT_VERSION = 1
COMPLETE_ATTR = "complete"
PER_FRAME = ("rgb", "semantic", "depth", "cam_to_world", "carla_transform", "frame", "timestamp")


def codec_options(name: str) -> dict[str, Any]:
    """h5py ``create_dataset`` keyword arguments of a named lossless codec."""
    if name == "zstd":
        return dict(hdf5plugin.Blosc(cname="zstd", clevel=5, shuffle=hdf5plugin.Blosc.SHUFFLE))
    if name == "lz4":
        return dict(hdf5plugin.Blosc(cname="lz4", clevel=5, shuffle=hdf5plugin.Blosc.SHUFFLE))
    if name == "gzip":
        return {"compression": "gzip", "compression_opts": 4, "shuffle": True}
    if name == "lzf":
        return {"compression": "lzf", "shuffle": True}
    if name == "none":
        return {}
    raise ValueError(f"unknown codec {name!r}; choose zstd, lz4, gzip, lzf or none")


def validate_clip(clip: Clip) -> None:
    """Raise :class:`ClipValidationError` if ``clip`` breaks the format's shapes, dtypes or ranges."""

    def fail(msg: str) -> None:
        raise ClipValidationError(f"clip {clip.clip_id!r}: {msg}; this is a bug in the capture backend")

    if not clip.frames:
        fail("has no frames")
    if not clip.clip_id or "/" in clip.clip_id:
        fail("clip id must be non-empty and contain no '/'")
    height, width = clip.frames[0].size
    if clip.intrinsics.shape != (3, 3) or not np.allclose(clip.intrinsics[2], [0, 0, 1]):
        fail(f"intrinsics must be a (3,3) pinhole matrix, got {clip.intrinsics.tolist()}")
    previous = None
    for k, f in enumerate(clip.frames):
        if f.rgb.shape != (height, width, 3) or f.semantic.shape != (height, width) or f.depth.shape != (height, width):
            fail(f"frame {k}: image shapes {f.rgb.shape}, {f.semantic.shape}, {f.depth.shape} disagree with ({height}, {width})")
        if int(f.semantic.max()) >= NUM_TAGS:
            fail(f"frame {k}: tag {int(f.semantic.max())} is outside the {SEMANTIC_SCHEMA} schema (0..{NUM_TAGS - 1})")
        if not np.all(np.isfinite(f.depth)) or f.depth.min() <= 0 or f.depth.max() > FAR_PLANE_M * (1 + 1e-6):
            fail(f"frame {k}: depth must be finite in (0, {FAR_PLANE_M:g}] metres")
        rot = f.cam_to_world[:3, :3]
        if f.cam_to_world.shape != (4, 4) or not np.allclose(f.cam_to_world[3], [0, 0, 0, 1]) \
                or not np.allclose(rot @ rot.T, np.eye(3), atol=1e-6) or np.linalg.det(rot) < 0:
            fail(f"frame {k}: cam_to_world is not a rigid transform with a proper rotation")
        if f.carla_transform.shape != (6,):
            fail(f"frame {k}: carla_transform must have 6 values (x, y, z, pitch, yaw, roll)")
        if previous is not None and (f.frame <= previous.frame or f.timestamp <= previous.timestamp):
            fail(f"frame {k}: frame numbers and timestamps must increase ({previous.frame} -> {f.frame})")
        previous = f


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ShardWriter:
    """Writes clips of one town into ``path`` atomically.

    Data goes to ``<path>.partial`` (created exclusively, so two writers never share a file);
    :meth:`close` flushes, fsyncs and renames it to ``path``, refusing to replace an existing
    file. Leaving the ``with`` block through an exception deletes the partial file.
    """

    def __init__(self, path: Path, town: str, codec: str = "zstd") -> None:
        self.path, self.town, self._codec = Path(path), town, codec_options(codec)
        self.codec_name = codec
        self.partial = self.path.with_name(self.path.name + ".partial")
        if self.path.exists():
            raise FileExistsError(f"{self.path} exists; shards are never overwritten")
        fd = os.open(self.partial, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        os.close(fd)
        self._h5 = h5py.File(self.partial, "w")
        attrs = self._h5.attrs
        attrs.update(format=FORMAT, format_version=FORMAT_VERSION, town=town,
                     semantic_schema=SEMANTIC_SCHEMA, software_version=__version__, codec=codec)
        self._clips = self._h5.create_group("clips")
        self.count = 0

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def add(self, clip: Clip) -> None:
        """Validate ``clip`` and write it; its completion marker is written last."""
        validate_clip(clip)
        height, width = clip.frames[0].size
        group = self.open_clip(clip.clip_id, len(clip), height, width)
        for k, frame in enumerate(clip.frames):
            self.write_frame(group, k, frame)
        self.close_clip(group, clip)

    def open_clip(self, clip_id: str, num_frames: int, height: int, width: int) -> h5py.Group:
        """Create an empty clip group whose frames are then written one by one."""
        if clip_id in self._clips:
            raise ClipValidationError(f"clip {clip_id!r} is already in {self.path.name}")
        group = self._clips.create_group(clip_id)
        image = {"rgb": ((height, width, 3), np.uint8), "semantic": ((height, width), np.uint8),
                 "depth": ((height, width), np.float32)}
        for name, (shape, dtype) in image.items():
            group.create_dataset(name, shape=(num_frames, *shape), dtype=dtype, chunks=(1, *shape), **self._codec)
        for name, shape, dtype in (("cam_to_world", (4, 4), np.float64), ("carla_transform", (6,), np.float64),
                                   ("frame", (), np.int64), ("timestamp", (), np.float64)):
            group.create_dataset(name, shape=(num_frames, *shape), dtype=dtype)
        return group

    @staticmethod
    def write_frame(group: h5py.Group, k: int, frame: Frame) -> None:
        """Write frame ``k`` of an open clip group (one chunk per image dataset)."""
        for name in PER_FRAME:
            group[name][k] = getattr(frame, name)

    def close_clip(self, group: h5py.Group, clip: Clip) -> None:
        """Validate the whole clip against what was written, then add metadata and the marker."""
        validate_clip(clip)
        if clip.town != self.town:
            raise ClipValidationError(f"clip {clip.clip_id!r} is from {clip.town}, this shard holds {self.town}")
        written = group["frame"][()]
        if len(written) != len(clip) or not np.array_equal(written, [f.frame for f in clip.frames]):
            raise ClipValidationError(f"clip {clip.clip_id!r}: frames written {written.tolist()} differ from the clip's")
        group.create_dataset("intrinsics", data=clip.intrinsics)
        group.attrs.update(
            town=clip.town, backend=clip.backend, seed=clip.seed, fps=clip.fps, frame_stride=clip.frame_stride,
            weather=json.dumps(clip.weather, sort_keys=True), camera=json.dumps(clip.camera, sort_keys=True),
            num_frames=len(clip), height=clip.frames[0].size[0], width=clip.frames[0].size[1],
        )
        group.attrs.update(dict(clip.attrs))
        group.attrs[COMPLETE_ATTR] = True
        self.count += 1

    def add_copy(self, source: h5py.Group) -> None:
        """Copy an already written, complete clip group (chunks are copied, not re-encoded)."""
        if not source.attrs.get(COMPLETE_ATTR, False):
            raise ClipValidationError(f"clip {source.name} is incomplete and cannot be copied")
        name = source.name.rsplit("/", 1)[-1]
        self._h5.copy(source, self._clips, name=name)
        self.count += 1

    def close(self) -> Path:
        """Finish the shard and make it visible under its final name."""
        self._h5.flush()
        self._h5.close()
        with open(self.partial, "rb+") as fh:
            os.fsync(fh.fileno())
        if self.path.exists():
            raise FileExistsError(f"{self.path} appeared while writing; left the data in {self.partial}")
        os.rename(self.partial, self.path)
        _fsync_dir(self.path.parent)
        log.debug("wrote %s (%d clips)", self.path, self.count)
        return self.path

    def abort(self) -> None:
        """Drop the partial file (nothing under the final name is touched)."""
        try:
            self._h5.close()
        finally:
            self.partial.unlink(missing_ok=True)


class ShardReader:
    """Read-only access to one shard; refuses files of another format or version."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            self._h5 = h5py.File(self.path, "r")
        except OSError as exc:
            raise ShardFormatError(
                f"{self.path} is not a readable HDF5 file ({str(exc).split(' (')[0]}): "
                "it is truncated or not a shard; move it out of the dataset or re-record it"
            ) from None
        attrs = self._h5.attrs
        if attrs.get("format") != FORMAT:
            self._h5.close()
            raise ShardFormatError(f"{self.path} is an HDF5 file but not a {FORMAT} shard; move it out of the dataset folder")
        version = int(attrs.get("format_version", -1))
        if version != FORMAT_VERSION:
            self._h5.close()
            raise ShardFormatError(
                f"{self.path} has format_version {version}, this software reads {FORMAT_VERSION}; "
                "use the carla-temporal release that wrote it or re-record the clips"
            )
        self.town = str(attrs["town"])
        self.codec = str(attrs.get("codec", "unknown"))

    def __enter__(self) -> "ShardReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the file."""
        self._h5.close()

    def clip_ids(self) -> list[str]:
        """Ids of the complete clips in this shard, sorted."""
        clips = self._h5.get("clips")
        if clips is None:
            return []
        return sorted(k for k in clips if clips[k].attrs.get(COMPLETE_ATTR, False))

    def group(self, clip_id: str) -> h5py.Group:
        """The raw HDF5 group of a clip (for copying or custom reads)."""
        try:
            return self._h5["clips"][clip_id]
        except KeyError:
            raise ShardFormatError(f"{self.path} has no clip {clip_id!r}; run capture inspect {self.path} to list them") from None

    def read_clip(self, clip_id: str, start: int = 0, stop: int | None = None) -> Clip:
        """Frames ``start:stop`` of a clip as a :class:`Clip` (reads only those chunks)."""
        g = self.group(clip_id)
        try:
            data = {name: g[name][start:stop] for name in PER_FRAME}
            a = dict(g.attrs)
            frames = tuple(
                Frame(data["rgb"][k], data["semantic"][k], data["depth"][k], data["cam_to_world"][k],
                      data["carla_transform"][k], data["frame"][k], data["timestamp"][k])
                for k in range(len(data["frame"]))
            )
            known = {"town", "backend", "seed", "fps", "frame_stride", "weather", "camera", COMPLETE_ATTR}
            return Clip(
                clip_id=clip_id, town=str(a["town"]), backend=str(a["backend"]), seed=int(a["seed"]),
                fps=float(a["fps"]), frame_stride=int(a["frame_stride"]), intrinsics=g["intrinsics"][()],
                weather=json.loads(a["weather"]), camera=json.loads(a["camera"]), frames=frames,
                attrs={k: v for k, v in a.items() if k not in known},
            )
        except (KeyError, OSError, ValueError) as exc:
            raise ShardFormatError(f"{self.path}: clip {clip_id!r} is damaged ({exc}); re-record it or quarantine the shard") from None
