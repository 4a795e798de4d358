"""The resumable record loop behind ``capture record``.

Crash safety: each finished clip is first written as its own small shard in
``<out>/<Town>/.staging-<seed>/`` (atomically renamed into place), so ``kill -9`` loses
at most the clip being rendered. When ``clips_per_shard`` clips are staged (or the run
ends) they are copied into ``<Town>-<NNNNN>.h5.partial``, which is renamed to its final
name; only then are the staged copies deleted. Re-running the same command finds what
exists (final shards, staged clips), cleans up partial files and records only the rest.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from carla_capture.backends import get_backend
from carla_capture.backends.base import Backend, clip_id
from carla_capture.config import CaptureConfig, TownConfig
from carla_capture.lock import RecordLock
from carla_capture.shard_names import open_next_shard, shard_paths
from clipcore.errors import CaptureError, ConfigError, RetryClip, ServerLost
from clipcore.fsutil import atomic_write_text
from clipcore.records import OPTIONAL, Clip, Frame
from clipcore.shards import ShardReader, ShardWriter

log = logging.getLogger(__name__)

#: Settings that change the data; a resumed run must use the same ones.
_DATA_KEYS = ("backend", "frames", "frame_stride", "fps", "appearance")


@dataclass(frozen=True)
class RecordSummary:
    """What one ``capture record`` run did."""

    town: str
    requested: int
    existing: int
    recorded: int
    shards_written: list[Path]
    frames_recorded: int
    seconds: float


def existing_clip_ids(town_dir: Path) -> set[str]:
    """Ids of complete clips in the town's final shards (a damaged shard raises)."""
    ids: set[str] = set()
    for path in shard_paths(town_dir):
        with ShardReader(path) as reader:
            ids.update(reader.clip_ids())
    return ids


def _check_config(town_dir: Path, cfg: CaptureConfig, town: TownConfig) -> bool:
    """Save the resolved config; refuse to resume with settings that change the data.

    Returns True when this call created the file (nothing of this seed was recorded before)."""
    path = town_dir / f"record-{cfg.seed}.json"
    created = not path.exists()
    resolved = {
        "capture": json.loads(cfg.model_dump_json()),
        "town": json.loads(town.model_dump_json()),
    }
    if path.exists():
        before = json.loads(path.read_text())
        for key in _DATA_KEYS:
            old = before["capture"].get(key, CaptureConfig.model_fields[key].default)
            if old != resolved["capture"][key]:
                raise ConfigError(
                    f"{town_dir} already holds seed {cfg.seed} clips recorded with "
                    f"{key}={old}; "
                    f"use the same value, another --seed, or another --out"
                )
        if before["town"] != resolved["town"]:
            raise ConfigError(
                f"the town file of {town.name} changed since seed {cfg.seed} was recorded in "
                f"{town_dir}; "
                "restore it, or record with another --seed or --out"
            )
    atomic_write_text(path, json.dumps(resolved, indent=2, sort_keys=True))
    return created


class _ClipStream:
    """Writes one clip's frames into its staged shard from a background thread.

    HDF5 compression releases the GIL, so frame k is encoded while the simulator renders
    frame k+1; the clip is validated as a whole and marked complete in :meth:`finish`.
    """

    def __init__(self, writer: ShardWriter, cid: str, num_frames: int) -> None:
        self.writer, self.cid, self.num_frames = writer, cid, num_frames
        self._queue: queue.Queue[Frame | None] = queue.Queue(maxsize=4)
        self._error: BaseException | None = None
        self._group = None
        self._thread = threading.Thread(target=self._run, name=f"write-{cid}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        k = 0
        while (frame := self._queue.get()) is not None:
            if self._error is not None:
                continue
            try:
                if self._group is None:
                    modalities = tuple(n for n in OPTIONAL if getattr(frame, n) is not None)
                    self._group = self.writer.open_clip(
                        self.cid, self.num_frames, *frame.size, modalities, frame.rgb
                    )
                self.writer.write_frame(self._group, k, frame)
                k += 1
            except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
                self._error = exc

    def put(self, frame: Frame) -> None:
        """Queue a frame for writing (blocks if the writer is 4 frames behind)."""
        if self._error is not None:
            raise self._error
        self._queue.put(frame)

    def _join(self) -> None:
        self._queue.put(None)
        self._thread.join()

    def finish(self, clip: Clip) -> None:
        """Wait for the frames, validate the clip, write its metadata and marker, publish the
        file."""
        self._join()
        if self._error is not None:
            raise self._error
        self.writer.close_clip(self._group, clip)
        self.writer.close()

    def abort(self) -> None:
        """Stop the writer thread and delete the partial file."""
        self._join()
        self.writer.abort()


class _Stager:
    """Staged single-clip shards of one (town, seed) and their assembly into final shards."""

    def __init__(self, town_dir: Path, cfg: CaptureConfig, town: str) -> None:
        self.town_dir, self.cfg, self.town = town_dir, cfg, town
        self.dir = town_dir / f".staging-{cfg.seed}"
        self.dir.mkdir(exist_ok=True)
        self.written: list[Path] = []

    def recover(self, done: set[str]) -> list[str]:
        """Drop partial files and staged clips already in a final shard; return staged clip ids."""
        for partial in list(self.dir.glob("*.partial")) + list(self.town_dir.glob("*.h5.partial")):
            log.info("removing unfinished %s", partial.name)
            partial.unlink()
        staged = []
        for path in sorted(self.dir.glob("*.h5")):
            if path.stem in done:
                path.unlink()
            else:
                staged.append(path.stem)
        return staged

    def record(self, backend: Backend, index: int) -> Clip:
        """Record clip ``index`` straight into a staged single-clip shard (published atomically)."""
        cid = clip_id(self.town, self.cfg.seed, index)
        stream = _ClipStream(
            ShardWriter(self.dir / f"{cid}.h5", self.town, self.cfg.compression),
            cid,
            self.cfg.frames,
        )
        try:
            clip = backend.record_clip(index, on_frame=stream.put)
            stream.finish(clip)
        except BaseException:
            stream.abort()
            raise
        return clip

    def count(self) -> int:
        """Staged clips waiting for assembly."""
        return len(list(self.dir.glob("*.h5")))

    def assemble(self) -> None:
        """Copy every staged clip into new final shard(s), then delete the staged copies."""
        staged = sorted(self.dir.glob("*.h5"))
        per = self.cfg.clips_per_shard
        for start in range(0, len(staged), per):
            batch = staged[start : start + per]
            writer = open_next_shard(self.town_dir, self.town, self.cfg.compression)
            path = writer.path
            with writer:
                for item in batch:
                    with ShardReader(item) as reader:
                        for cid in reader.clip_ids():
                            writer.add_copy(reader, cid)
            self.written.append(path)
            for item in batch:
                item.unlink()

    def cleanup(self) -> None:
        """Remove the staging folder once it is empty."""
        if self.dir.exists() and not any(self.dir.iterdir()):
            self.dir.rmdir()

    def empty(self) -> bool:
        """True when this run has staged and written nothing."""
        return not self.written and not (self.dir.exists() and any(self.dir.glob("*.h5")))


class _Attempts:
    """Retries of a clip after :class:`RetryClip`, reconnects after :class:`ServerLost` (per
    run)."""

    def __init__(self, cfg: CaptureConfig) -> None:
        self.cfg, self.restarts, self.reconnect = cfg, 0, False

    def record(self, stager: _Stager, backend: Backend, index: int) -> Clip:
        tries = 0
        while True:
            try:
                if (
                    self.reconnect
                ):  # inside the try: losing the server again while reconnecting counts too
                    backend.restart(self.restarts)
                    self.reconnect = False
                return stager.record(backend, index)
            except RetryClip as exc:
                tries += 1
                log.warning("clip %d, try %d: %s", index, tries, exc)
                if tries >= self.cfg.carla.clip_attempts:
                    raise CaptureError(
                        f"clip {index} failed {tries} times ({exc}); finished clips are kept, "
                        "check the server and run the same command again"
                    ) from None
            except ServerLost as exc:
                self.restarts += 1
                if self.restarts > self.cfg.carla.max_restarts:
                    raise CaptureError(
                        f"{exc}; gave up after {self.cfg.carla.max_restarts} reconnects. Finished "
                        "clips "
                        "are kept: restart the server and run the same command again"
                    ) from None
                log.warning(
                    "%s; reconnecting (%d of %d)", exc, self.restarts, self.cfg.carla.max_restarts
                )
                self.reconnect = True


def _index_of(cid: str, town: str, seed: int) -> float:
    """The clip index of one of this (town, seed)'s clip ids; infinity for any other id."""
    prefix = clip_id(town, seed, 0)[:-6]
    tail = cid[len(prefix) :]
    return int(tail) if cid.startswith(prefix) and tail.isdigit() else float("inf")


def _todo(town: str, seed: int, clips: int, have: set[str]) -> Iterator[int]:
    """Indices of the clips still to record, lazily (``clips`` may be large)."""
    return (i for i in range(clips) if clip_id(town, seed, i) not in have)


def record(cfg: CaptureConfig, progress: Callable[[str], None] | None = None) -> RecordSummary:
    """Record until ``<out>/<Town>`` holds ``cfg.clips`` clips of ``cfg.seed``; resumable.

    One process per (town, seed) and folder at a time (:class:`RecordLock`). ``progress`` is
    called with each clip id once that clip is safely staged. A run that fails before staging
    anything leaves nothing behind, so a later run (with other settings) starts clean.
    """
    town = cfg.town_config()
    backend_cls = get_backend(cfg.backend)
    town_dir = cfg.out / town.name
    new_dir = not town_dir.exists()
    town_dir.mkdir(parents=True, exist_ok=True)
    try:
        with RecordLock(town_dir, cfg.seed):
            created = _check_config(town_dir, cfg, town)
            stager = _Stager(town_dir, cfg, town.name)
            try:
                return _record_locked(cfg, town.name, town_dir, stager, backend_cls, progress)
            except BaseException:
                if created and stager.empty():
                    (town_dir / f"record-{cfg.seed}.json").unlink(missing_ok=True)
                    stager.cleanup()
                raise
    except BaseException:
        if new_dir and town_dir.is_dir() and not any(town_dir.iterdir()):
            town_dir.rmdir()
        raise


def _record_locked(
    cfg: CaptureConfig,
    town: str,
    town_dir: Path,
    stager: _Stager,
    backend_cls: type[Backend],
    progress: Callable[[str], None] | None,
) -> RecordSummary:
    done = existing_clip_ids(town_dir)
    have = done | set(stager.recover(done))
    existing = sum(1 for cid in have if _index_of(cid, town, cfg.seed) < cfg.clips)
    log.info(
        "%s: %d of %d clips exist, recording %d", town, existing, cfg.clips, cfg.clips - existing
    )
    started, frames, recorded = time.perf_counter(), 0, 0
    if existing < cfg.clips:
        attempts = _Attempts(cfg)
        with backend_cls(cfg, cfg.town_config()) as backend:
            for index in _todo(town, cfg.seed, cfg.clips, have):
                clip = attempts.record(stager, backend, index)
                frames, recorded = frames + len(clip), recorded + 1
                if progress:
                    progress(clip.clip_id)
                if stager.count() >= cfg.clips_per_shard:
                    stager.assemble()
    stager.assemble()
    stager.cleanup()
    return RecordSummary(
        town, cfg.clips, existing, recorded, stager.written, frames, time.perf_counter() - started
    )
