"""HDF5 shards: the validating writer and the one reader.

The writer writes format 3 (``docs/format.md``); the one reader (:mod:`clipcore.shard_reader`)
reads formats 1 to 3.

A shard holds whole clips of one town under ``/clips/<clip_id>``. Every per-frame image dataset
is chunked one frame per chunk, so reading a 6-frame window decodes 6 chunks; the writer encodes
those chunks in a thread pool and stores them with HDF5's direct chunk write
(:mod:`clipcore.chunks`). Every program that reads shards (the training loader, verify, inspect,
split, eval, predict) reads through :class:`ShardReader`, which refuses a file or clip that
:mod:`clipcore.schema` finds faulty.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np

from clipcore import __version__
from clipcore.chunks import Encoded, PendingFrames, choose_rgb, pool
from clipcore.codecs import CODECS, Storage, choices, storage
from clipcore.errors import ClipValidationError, ShardFormatError
from clipcore.fsutil import as_os_error, fault_errno
from clipcore.geometry import FAR_PLANE_M
from clipcore.records import Clip, Frame
from clipcore.schema import (
    CHECKSUMS,
    COMPLETE_ATTR,
    DEPTH_ENCODING,
    DEPTH_SCALE_M,
    FORMAT,
    FORMAT_VERSION,
    IMAGES,
    OPTIONAL,
    content_faults,
    expected_shapes,
)
from clipcore.shard_reader import ShardReader
from clipcore.tags import SEMANTIC_SCHEMA

__all__ = [
    "FORMAT_VERSION",
    "PER_FRAME",
    "ShardFormatError",
    "ShardReader",
    "ShardWriter",
    "validate_clip",
]

log = logging.getLogger(__name__)

PER_FRAME = ("rgb", "semantic", "depth", "cam_to_world", "carla_transform", "frame", "timestamp")


def validate_clip(clip: Clip) -> None:
    """Validate a whole clip before it is written.

    Raise :class:`ClipValidationError` if ``clip`` breaks the format's shapes, dtypes or ranges.
    """

    def fail(msg: str) -> None:
        raise ClipValidationError(
            f"clip {clip.clip_id!r}: {msg}; this is a bug in the capture backend or importer"
        )

    if not clip.frames:
        fail("has no frames")
    if not clip.clip_id or "/" in clip.clip_id:
        fail("clip id must be non-empty and contain no '/'")
    height, width = clip.frames[0].size
    K = clip.intrinsics
    if K is not None and (K.shape != (3, 3) or not np.allclose(K[2], [0, 0, 1])):
        fail(f"intrinsics must be a (3,3) pinhole matrix, got {K.tolist()}")
    shapes = expected_shapes(len(clip), height, width, FORMAT_VERSION)
    for k, f in enumerate(clip.frames):
        for name in ("rgb", *OPTIONAL):
            value = getattr(f, name)
            if value is not None and value.shape != shapes[name][0][1:]:
                fail(f"frame {k}: {name} has shape {value.shape}, expected {shapes[name][0][1:]}")
    faults = _content_faults(clip)
    if faults:
        fail("; ".join(faults))


def _content_faults(clip: Clip) -> list[str]:
    """Content faults of a clip, checked frame by frame.

    :func:`~clipcore.schema.content_faults` of the whole clip without stacking its images (a
    copy of the clip): each frame's images are checked in the encoding pool, the small per-frame
    values of all frames at once.
    """
    small: dict[str, np.ndarray] = {name: clip.stack(name) for name in ("frame", "timestamp")}
    for name in OPTIONAL:
        valid = clip.valid(name)
        if name not in IMAGES and valid.any():
            zero = np.zeros_like(getattr(clip.frames[int(np.argmax(valid))], name))
            values = (getattr(f, name) for f in clip.frames)
            small[name] = np.stack([zero if v is None else v for v in values])
            small[f"{name}_valid"] = valid
    per_frame = pool().map(lambda k: content_faults(_frame_images(clip, k), k), range(len(clip)))
    return [fault for faults in per_frame for fault in faults] + content_faults(small)


def _frame_images(clip: Clip, k: int) -> dict[str, np.ndarray]:
    """One frame's labels as a one-frame clip.

    Frame ``k``'s semantic tags and depth, as a one-frame clip's arrays (its frame number and
    timestamp are checked with the other frames').
    """
    f = clip.frames[k]
    arrays = {"frame": np.zeros(1), "timestamp": np.zeros(1)}
    for name in ("semantic", "depth"):
        value = getattr(f, name)
        if value is not None:
            arrays[name] = value[None]
    return arrays


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclasses.dataclass
class _OpenClip:
    """A clip group being written.

    Its datasets, how each image is stored, and the first RGB
    frame's chunk (encoded while choosing how RGB is stored).
    """

    datasets: dict[str, h5py.Dataset]
    how: dict[str, Storage]
    first_rgb: tuple[np.ndarray, Encoded] | None = None


class ShardWriter:
    """Writes clips of one town into ``path`` atomically.

    Data goes to ``<path>.partial`` (created exclusively, so two writers never share a file);
    :meth:`close` flushes, fsyncs and renames it to ``path``, refusing to replace an existing
    file. Leaving the ``with`` block through an exception deletes the partial file. Frames are
    encoded in a thread pool, at most ``in_flight`` at a time (default: two per core), and stored
    in order by the thread that calls the writer (:mod:`clipcore.chunks`); HDF5 is only ever
    called from that thread.
    """

    def __init__(
        self, path: Path, town: str, codec: str = CODECS[0], in_flight: int | None = None
    ) -> None:
        self.path, self.town = Path(path), town
        storage(codec)  # an unknown name fails here
        self.codec_name = codec
        self.partial = self.path.with_name(self.path.name + ".partial")
        if self.path.exists():
            raise FileExistsError(f"{self.path} exists; shards are never overwritten")
        fd = os.open(self.partial, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        os.close(fd)
        try:
            with self._io():
                self._h5 = h5py.File(self.partial, "w")
        except BaseException:
            self.partial.unlink(missing_ok=True)
            raise
        attrs = self._h5.attrs
        attrs.update(
            format=FORMAT,
            format_version=FORMAT_VERSION,
            town=town,
            semantic_schema=SEMANTIC_SCHEMA,
            software_version=__version__,
            codec=codec,
        )
        self._clips = self._h5.create_group("clips")
        self._open: dict[str, _OpenClip] = {}
        self._pending = PendingFrames(in_flight)
        self.count = 0

    def __enter__(self) -> ShardWriter:
        return self

    @contextlib.contextmanager
    def _io(self) -> Iterator[None]:
        """HDF5 faults (full disk, ...) as ``OSError`` naming this shard's partial file."""
        try:
            yield
        except (OSError, RuntimeError) as exc:
            if (
                isinstance(exc, FileExistsError)
                or fault_errno(exc) is None
                and isinstance(exc, RuntimeError)
            ):
                raise
            raise as_os_error(exc, self.partial) from exc

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is not None:
            self.abort()
            return
        try:
            self.close()
        except BaseException:  # a full disk can fail the close itself: drop the partial file
            self.abort()
            raise

    def add(self, clip: Clip) -> None:
        """Validate ``clip`` and write it; its completion marker is written last."""
        validate_clip(clip)
        height, width = clip.frames[0].size
        modalities = tuple(name for name in OPTIONAL if clip.has(name))
        group = self.open_clip(
            clip.clip_id, len(clip), height, width, modalities, clip.frames[0].rgb
        )
        for k, frame in enumerate(clip.frames):
            self.write_frame(group, k, frame)
        self._close_clip(group, clip)

    def open_clip(
        self,
        clip_id: str,
        num_frames: int,
        height: int,
        width: int,
        modalities: tuple[str, ...] = OPTIONAL,
        sample_rgb: np.ndarray | None = None,
    ) -> h5py.Group:
        """Create an empty clip group.

        The group has datasets for rgb, frame, timestamp and
        ``modalities`` (each with a ``<name>_valid`` mask), whose frames are then written
        one by one; the RGB codec adapts to ``sample_rgb`` (the first frame) and the level to the
        frame size, see :func:`~clipcore.codecs.choices`.
        """
        if clip_id in self._clips:
            raise ClipValidationError(f"clip {clip_id!r} is already in {self.path.name}")
        unknown = set(modalities) - set(OPTIONAL)
        if unknown:
            raise ClipValidationError(f"clip {clip_id!r}: unknown modalities {sorted(unknown)}")
        first_rgb, pixels = None, height * width
        if sample_rgb is not None:  # encoded in the pool: no HDF5 call while it runs
            how_rgb, encoded = choose_rgb(sample_rgb, choices(self.codec_name, "rgb", pixels))
            first_rgb = None if encoded is None else (sample_rgb, encoded)
        else:
            how_rgb = storage(self.codec_name, "rgb", pixels)
        group = self._clips.create_group(clip_id)
        shapes = expected_shapes(num_frames, height, width, FORMAT_VERSION)
        clip = _OpenClip({}, {}, first_rgb)
        for name in ("rgb", "frame", "timestamp", *modalities):
            shape, dtype = shapes[name]
            if len(shape) <= 2:
                clip.datasets[name] = group.create_dataset(name, shape=shape, dtype=dtype)
                continue
            how = how_rgb if name == "rgb" else storage(self.codec_name, name, pixels)
            chunks = (1, *shape[1:])
            data = group.create_dataset(
                name, shape=shape, dtype=dtype, chunks=chunks, **how.options
            )
            clip.datasets[name], clip.how[name] = data, how
            if name in IMAGES:
                data.attrs["predictor"] = how.predictor
        for name in (CHECKSUMS, *(f"{name}_valid" for name in modalities)):
            shape, dtype = shapes[name]
            clip.datasets[name] = group.create_dataset(name, shape=shape, dtype=dtype)
        if "depth" in modalities:
            group["depth"].attrs.update(
                encoding=DEPTH_ENCODING, scale_m=DEPTH_SCALE_M, far_plane_m=FAR_PLANE_M
            )
        self._open[group.name] = clip
        return group

    def write_frame(self, group: h5py.Group, k: int, frame: Frame) -> None:
        """Write one frame of an open clip group.

        Write frame ``k`` of a clip group opened by :meth:`open_clip` (one chunk per image
        dataset); a modality the frame lacks stays zero with its ``<name>_valid`` flag
        False. Its images are encoded in the pool and stored later, in order (at the latest
        by :meth:`close_clip`); this waits while the writer is ``in_flight`` frames behind.
        """
        clip = self._open.get(group.name)
        if clip is None:
            raise ClipValidationError(f"clip group {group.name} was not opened by this writer")
        for name in OPTIONAL:
            if name not in clip.datasets and getattr(frame, name) is not None:
                raise ClipValidationError(
                    f"frame {k} has {name}, which clip {group.name} was opened without"
                )
        images: dict[str, tuple[np.ndarray, Storage] | Encoded] = {}
        for name in IMAGES:
            value = getattr(frame, name)
            if name in clip.how and value is not None:
                first = clip.first_rgb
                reuse = name == "rgb" and first is not None and first[0] is value
                images[name] = first[1] if reuse else (value, clip.how[name])
        if "rgb" in images:
            clip.first_rgb = None  # the sample is frame 0's, or never used

        def store(encoded: dict[str, Encoded]) -> None:
            self._store(clip, k, frame, encoded)

        with self._io():
            self._pending.submit(images, store)

    @staticmethod
    def _store(clip: _OpenClip, k: int, frame: Frame, encoded: dict[str, Encoded]) -> None:
        """Write frame ``k``'s encoded images and its small values (in the writer's thread)."""
        data = clip.datasets
        for name, image in encoded.items():
            if image.chunk is None:  # a filter only HDF5 has (lzf)
                data[name][k] = image.stored
            else:
                data[name].id.write_direct_chunk((k,) + (0,) * (data[name].ndim - 1), image.chunk)
        data["frame"][k], data["timestamp"][k] = frame.frame, frame.timestamp
        for name in OPTIONAL:
            if name in data:
                value = getattr(frame, name)
                if value is not None and name not in IMAGES:
                    data[name][k] = value
                data[f"{name}_valid"][k] = value is not None
        data[CHECKSUMS][k] = [encoded[n].crc if n in encoded else 0 for n in IMAGES]

    def _store_pending(self) -> None:
        """Store every frame written so far (waits for their encoding)."""
        with self._io():
            self._pending.drain()

    def close_clip(self, group: h5py.Group, clip: Clip) -> None:
        """Validate the whole clip against what was written, then add metadata and the marker."""
        validate_clip(clip)
        self._close_clip(group, clip)

    def _close_clip(self, group: h5py.Group, clip: Clip) -> None:
        """:meth:`close_clip` of a clip already validated."""
        if clip.town != self.town:
            raise ClipValidationError(
                f"clip {clip.clip_id!r} is from {clip.town}, this shard holds {self.town}"
            )
        self._store_pending()
        self._open.pop(group.name, None)
        written = group["frame"][()]
        if len(written) != len(clip) or not np.array_equal(written, [f.frame for f in clip.frames]):
            raise ClipValidationError(
                f"clip {clip.clip_id!r}: frames written {written.tolist()} differ from the clip's"
            )
        with self._io():
            self._finish_clip(group, clip)
        self.count += 1

    @staticmethod
    def _finish_clip(group: h5py.Group, clip: Clip) -> None:
        if clip.intrinsics is not None:
            group.create_dataset("intrinsics", data=clip.intrinsics)
        group.attrs.update(
            town=clip.town,
            backend=clip.backend,
            seed=clip.seed,
            fps=clip.fps,
            frame_stride=clip.frame_stride,
            weather=json.dumps(clip.weather, sort_keys=True),
            camera=json.dumps(clip.camera, sort_keys=True),
            num_frames=len(clip),
            height=clip.frames[0].size[0],
            width=clip.frames[0].size[1],
            modalities=json.dumps([name for name in OPTIONAL if name in group]),
            has_intrinsics="intrinsics" in group,
        )
        group.attrs.update(dict(clip.attrs))
        group.attrs[COMPLETE_ATTR] = True

    def add_copy(self, reader: ShardReader, clip_id: str) -> None:
        """Copy a complete clip of another shard.

        Copy a complete clip of another shard: its chunks as they are when that shard has
        this format version (``capture verify`` finds what is wrong in them), else read
        (validated) and written anew in this one.
        """
        source = reader.group(clip_id)
        if not source.attrs.get(COMPLETE_ATTR, False):
            raise ClipValidationError(f"clip {source.name} is incomplete and cannot be copied")
        if reader.version != FORMAT_VERSION:
            self.add(reader.read_clip(clip_id))
            return
        with self._io():
            self._h5.copy(source, self._clips, name=clip_id)
        self.count += 1

    def close(self) -> Path:
        """Finish the shard and make it visible under its final name."""
        with self._io():
            self._pending.drain()
            self._open.clear()
            self._h5.flush()
            self._h5.close()
            with open(self.partial, "rb+") as fh:
                os.fsync(fh.fileno())
        if self.path.exists():
            raise FileExistsError(
                f"{self.path} appeared while writing; left the data in {self.partial}"
            )
        os.rename(self.partial, self.path)
        _fsync_dir(self.path.parent)
        log.debug("wrote %s (%d clips)", self.path, self.count)
        return self.path

    def abort(self) -> None:
        """Drop the partial file (nothing under the final name is touched)."""
        self._pending.drop()
        self._open.clear()
        self._clips = None  # no handle into the file may outlive it (HDF5 crashes at exit)
        try:
            with contextlib.suppress(OSError, RuntimeError, ValueError):  # a full disk fails it too
                self._h5.close()
        finally:
            self.partial.unlink(missing_ok=True)
