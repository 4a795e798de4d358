"""Image chunks encoded outside HDF5, in parallel, and stored in order.

HDF5 compresses a chunk inside its own call, behind h5py's lock, so one writer thread compressing
through HDF5 keeps every other core idle. Here each frame's ``rgb``, ``semantic`` and ``depth``
are encoded by a small thread pool (one thread per core, shared by the process's writers): depth
metres to codes, the CRC-32 of the values, the predictor, then the compression of the dataset's
filters (:meth:`clipcore.codecs.Storage.encode`; Blosc, zlib and numpy release the GIL). The one
thread that writes the shard stores finished chunks, oldest frame first, with HDF5's direct chunk
write: the file is the one HDF5's filters would have written, read by any reader with the filters
(``lzf``, whose filter only HDF5 has, is compressed by HDF5 as the chunk is stored).

:class:`PendingFrames` bounds what is in flight: a writer that is ``limit`` frames behind stores
the oldest before taking another, so a producer (the simulator loop, an importer) waits for it.
"""

from __future__ import annotations

import dataclasses
import math
import os
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from clipcore.codecs import Storage
from clipcore.predictors import NONE, predict
from clipcore.schema import encode_depth, frame_crc32

_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def workers() -> int:
    """Threads of the encoding pool: the cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def pool() -> ThreadPoolExecutor:
    """The process's encoding pool, started at its first use."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(workers(), thread_name_prefix="chunks")
        return _POOL


def _forget_pool() -> None:
    """In a forked child (the recorder's worker): the parent's pool threads are not there."""
    global _POOL, _POOL_LOCK
    _POOL, _POOL_LOCK = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_pool)


@dataclasses.dataclass(frozen=True)
class Encoded:
    """One frame's image, ready to store."""

    crc: int  # CRC-32 of the values (depth: codes), schema.frame_crc32
    chunk: bytes | None  # the compressed chunk, or None where only HDF5's filters make it
    stored: np.ndarray | None  # the values through the predictor, where ``chunk`` is None
    size: int  # bytes stored


def encode_image(name: str, value: np.ndarray, how: Storage) -> Encoded:
    """One frame's ``rgb``, ``semantic`` or ``depth`` (float metres) -> its stored chunk."""
    if name == "depth":
        value = encode_depth(value)
    stored = value if how.predictor == NONE else predict(value[None], how.predictor)[0]
    chunk = how.encode(stored)
    size = stored.nbytes if chunk is None else len(chunk)
    return Encoded(frame_crc32(value), chunk, stored if chunk is None else None, size)


#: A first RGB frame above this many bytes is judged on about this many bytes of its row pairs.
SAMPLE_BYTES = 1 << 20


def rgb_sample(image: np.ndarray) -> np.ndarray:
    """The sample of an RGB frame that its storage is chosen on.

    What RGB's storage is chosen on: the frame, or evenly spaced row pairs of it (pairs, so the
    ``row-pairs`` predictor sees what it sees in the frame) of about :data:`SAMPLE_BYTES`.
    """
    step = 2 * math.ceil(image.nbytes / SAMPLE_BYTES)
    if step <= 2:
        return image
    first = np.arange(0, image.shape[0] - 1, step)
    return image[np.stack([first, first + 1], 1).reshape(-1)]


def choose_rgb(image: np.ndarray, choices: tuple[Storage, ...]) -> tuple[Storage, Encoded | None]:
    """Choose how a clip's RGB is stored.

    The choice that packs the clip's first RGB frame (its :func:`rgb_sample`) smallest, the
    first of equals, as :func:`clipcore.codecs.storage` chooses, encoded in parallel; with the
    frame's chunk where the whole frame was encoded to choose.
    """
    if len(choices) == 1:
        return choices[0], None
    sample = rgb_sample(image)
    jobs = [pool().submit(encode_image, "rgb", sample, how) for how in choices]
    done = [job.result() for job in jobs]
    best = min(range(len(choices)), key=lambda i: done[i].size)
    return choices[best], done[best] if sample is image else None


@dataclasses.dataclass
class Pending:
    """A frame whose images are being encoded; ``store`` writes it once they are."""

    jobs: dict[str, Future[Encoded]]
    store: Callable[[dict[str, Encoded]], None]


class PendingFrames:
    """Frames in flight, oldest first, at most ``limit`` (default: two per pool thread)."""

    def __init__(self, limit: int | None = None) -> None:
        self.limit = limit or 2 * workers()
        self._frames: deque[Pending] = deque()

    def __len__(self) -> int:
        return len(self._frames)

    def submit(
        self,
        images: dict[str, tuple[np.ndarray, Storage] | Encoded],
        store: Callable[[dict[str, Encoded]], None],
    ) -> None:
        """Queue one frame's images for encoding and storing.

        Encode ``images`` (name -> (value, storage), or what is already encoded) in the pool
        and queue ``store``; first store the oldest frames while ``limit`` are in flight.
        """
        while len(self._frames) >= self.limit:
            self.store_oldest()
        jobs: dict[str, Future[Encoded]] = {}
        for name, item in images.items():
            if isinstance(item, Encoded):
                jobs[name] = Future()
                jobs[name].set_result(item)
            else:
                jobs[name] = pool().submit(encode_image, name, *item)
        self._frames.append(Pending(jobs, store))

    def store_oldest(self) -> None:
        """Store the oldest frame in flight.

        Wait for the oldest frame's images and store them (an encoding error is raised
        here).
        """
        frame = self._frames.popleft()
        frame.store({name: job.result() for name, job in frame.jobs.items()})

    def drain(self) -> None:
        """Store every frame in flight, oldest first."""
        while self._frames:
            self.store_oldest()

    def drop(self) -> None:
        """Forget every frame in flight (what is being encoded finishes unseen)."""
        for frame in self._frames:
            for job in frame.jobs.values():
                job.cancel()
        self._frames.clear()
