"""The files of one writer in a town folder, which no other process writes, publishes or removes.

A writer (task ``k`` of ``N`` of a plan of ``seed``: ``s<seed>-t<k>of<N>``, or ``s<seed>``) keeps,
under its lease (:mod:`carla_capture.lease`):

- ``.writer-<name>/<clip id>.h5``: each finished clip, written as its own small shard under a
  ``.partial`` name, validated, fsynced and renamed (``kill -9`` loses at most the clip being
  recorded);
- ``<Town>-<name>-NNNNN.h5``: its final shards, numbered by itself. Every ``clips_per_shard``
  staged clips are copied into ``<Town>-<name>-NNNNN.h5.partial``, which is fsynced and renamed;
  then the shard goes into ``.writer-<name>/index.json`` (shard -> clip ids), and only then are
  the staged copies removed;
- ``.writer-<name>/index.json``: so that no start has to open the town's shards.

Recovery (:meth:`WriterFolder.recover`) removes only this writer's ``.partial`` files, indexes a
final shard published just before a crash (the only shard it opens), and drops staged copies that
are already in a final shard.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
from collections.abc import Callable
from pathlib import Path

from carla_capture.claims import INDEX, read_index, staged_ids, writer_dir
from carla_capture.shard_names import writer_shard_re
from clipcore.fsutil import replace_text
from clipcore.records import OPTIONAL, Clip, Frame
from clipcore.shards import ShardReader, ShardWriter

log = logging.getLogger(__name__)


class ClipStream:
    """Writes one clip's frames into its staged shard from a background thread.

    The simulator loop hands frames over through a queue of 4 (it waits when the writer is that
    far behind); the writer encodes them in its thread pool (:mod:`clipcore.chunks`) while the
    simulator renders the next ones. The clip is validated as a whole and marked complete in
    :meth:`finish`.
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
        """Finish the clip and publish its file.

        Wait for the frames, validate the clip, write its metadata and marker, publish the
        file.
        """
        self._join()
        if self._error is not None:
            raise self._error
        self.writer.close_clip(self._group, clip)
        self.writer.close()

    def abort(self) -> None:
        """Stop the writer thread and delete the partial file."""
        self._join()
        self.writer.abort()


class WriterFolder:
    """Staged clips, final shards and the index of writer ``name`` in ``town_dir``."""

    def __init__(self, town_dir: Path, town: str, name: str, codec: str, per_shard: int) -> None:
        self.town_dir, self.town, self.name = Path(town_dir), town, name
        self.codec, self.per_shard = codec, per_shard
        self.dir = writer_dir(town_dir, name)
        self.pattern = writer_shard_re(town, name)
        self.written: list[Path] = []

    def _shards(self, partial: bool = False) -> list[str]:
        return sorted(
            n
            for n in os.listdir(self.town_dir)
            if (m := self.pattern.match(n)) and bool(m.group(2)) == partial
        )

    def index(self) -> dict[str, list[str]]:
        """Final shard name -> clip ids of this writer (as last saved)."""
        return read_index(self.dir) or {}

    def _save_index(self, index: dict[str, list[str]]) -> None:
        replace_text(self.dir / INDEX, json.dumps(index, indent=1, sort_keys=True))

    def recover(self) -> set[str]:
        """Recover this writer's leftovers after a crash.

        Remove this writer's partial files, bring its index up to date, drop staged copies
        already in a final shard; return the clip ids in its final shards.
        """
        for name in os.listdir(self.dir):
            if name.endswith(".partial"):
                log.info("removing unfinished %s/%s", self.dir.name, name)
                (self.dir / name).unlink()
        for name in self._shards(partial=True):
            log.info("removing unfinished %s", name)
            (self.town_dir / name).unlink()
        index, finals = self.index(), self._shards()
        changed = any(shard not in finals for shard in index)
        index = {shard: ids for shard, ids in index.items() if shard in finals}
        for shard in finals:
            if shard not in index:  # published just before a crash, not yet indexed
                with ShardReader(self.town_dir / shard) as reader:
                    index[shard] = reader.clip_ids()
                changed = True
        if changed:
            self._save_index(index)
        indexed = {cid for ids in index.values() for cid in ids}
        for cid in staged_ids(self.dir):
            if cid in indexed:
                (self.dir / f"{cid}.h5").unlink()
        return indexed

    def stream(self, cid: str, frames: int) -> ClipStream:
        """A :class:`ClipStream` into the staged shard of clip ``cid``."""
        return ClipStream(ShardWriter(self.dir / f"{cid}.h5", self.town, self.codec), cid, frames)

    def staged(self) -> list[str]:
        """Clip ids staged and waiting for assembly."""
        return staged_ids(self.dir)

    def adopt_staged(self, path: Path) -> None:
        """Move a complete staged clip of a release before writers into this folder."""
        os.rename(path, self.dir / path.name)

    def assemble(self, check: Callable[[], None] = lambda: None) -> None:
        """Assemble the staged clips into final shards.

        Copy every staged clip into new final shard(s) of this writer, index them, then
        delete the staged copies; ``check`` runs before each shard is published (the lease
        check).
        """
        staged = self.staged()
        for start in range(0, len(staged), self.per_shard):
            batch = staged[start : start + self.per_shard]
            numbers = [int(self.pattern.match(n)["num"]) for n in self._shards()]
            path = self.town_dir / f"{self.town}-{self.name}-{max(numbers, default=0) + 1:05d}.h5"
            check()
            with ShardWriter(path, self.town, self.codec) as writer:
                for cid in batch:
                    with ShardReader(self.dir / f"{cid}.h5") as reader:
                        writer.add_copy(reader, cid)
                check()
            index = self.index()
            index[path.name] = batch
            self._save_index(index)
            self.written.append(path)
            for cid in batch:
                (self.dir / f"{cid}.h5").unlink()

    def remove_if_empty(self) -> None:
        """Remove the folder when it holds nothing (a run that recorded nothing)."""
        try:
            self.dir.rmdir()
        except OSError:
            pass
