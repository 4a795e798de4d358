"""The resumable record loop behind ``capture record``: one task's share of a dataset plan.

A plan (:mod:`carla_capture.plan`) fixes every clip's id and content; task ``k`` of ``N`` records
clips ``k, k+N, ...`` of each town as its own writer (:mod:`carla_capture.writer`), claiming each
clip before recording it (:mod:`carla_capture.claims`) and holding its writer's lease
(:mod:`carla_capture.lease`). Crash safety: a finished clip is staged as its own small shard
before anything else happens to it, so ``kill -9`` loses at most the clip being rendered.
Re-running the same command (any number of tasks, any task again) records only the missing clips;
a start first takes over what dead writers of the same plan left (staged clips, claims of clips
they never finished), then recovers its own leftovers.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from carla_capture.backends import get_backend
from carla_capture.backends.base import Backend, clip_id
from carla_capture.claims import Claims, Scan, scan
from carla_capture.config import CaptureConfig
from carla_capture.lease import Lease
from carla_capture.plan import WRITER_RE, Task, check_plan, plan_towns, resolve_task
from carla_capture.shard_names import shard_paths
from carla_capture.writer import WriterFolder
from clipcore.errors import CaptureError, FreshProcess, RetryClip, ServerLost
from clipcore.records import Clip
from clipcore.shards import ShardReader

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RecordSummary:
    """What one ``capture record`` run did in one town."""

    town: str
    requested: int
    existing: int
    recorded: int
    shards_written: list[Path]
    frames_recorded: int
    seconds: float
    task: Task = field(default_factory=Task)
    elsewhere: int = 0


def existing_clip_ids(town_dir: Path) -> set[str]:
    """Ids of complete clips in the town's final shards (opens every shard; a damaged shard raises).

    The importers use it; a recording writer reads indexes instead (:func:`scan`).
    """
    ids: set[str] = set()
    for path in shard_paths(town_dir):
        with ShardReader(path) as reader:
            ids.update(reader.clip_ids())
    return ids


def clips_done(cfg: CaptureConfig, task: Task) -> int:
    """Clips of the task's share of the plan that the final shards already hold (for progress).

    A shard that cannot be read counts as holding none (recording reports it in its own words).
    """
    done = 0
    for town in plan_towns(cfg):
        try:
            ids = existing_clip_ids(Path(cfg.out) / town)
        except (CaptureError, OSError):
            continue
        done += sum(1 for i in task.share(cfg.clips) if clip_id(town, cfg.seed, i) in ids)
    return done


class _Attempts:
    """Retries of a clip after :class:`RetryClip`, reconnects after :class:`ServerLost` (per run).

    A process whose CARLA client holds a Traffic Manager never reconnects itself: the lost server's
    Traffic Manager stays in the client library, so :class:`FreshProcess` is raised and the
    supervisor reconnects from a new worker process.
    """

    def __init__(self, cfg: CaptureConfig) -> None:
        self.cfg, self.restarts, self.reconnect = cfg, 0, False

    def record(self, folder: WriterFolder, backend: Backend, index: int, cid: str) -> Clip:
        tries = 0
        while True:
            try:
                if self.reconnect:  # inside the try: losing the server again counts too
                    backend.restart(self.restarts)
                    self.reconnect = False
                return _record_clip(folder, backend, index, cid, self.cfg.frames)
            except RetryClip as exc:
                tries += 1
                log.warning("clip %d, try %d: %s", index, tries, exc)
                if tries >= self.cfg.carla.clip_attempts:
                    raise CaptureError(
                        f"clip {index} failed {tries} times ({exc}); finished clips are kept, "
                        "check the server and run the same command again"
                    ) from None
            except ServerLost as exc:
                if not getattr(backend, "reconnects_in_process", lambda: True)():
                    raise FreshProcess(str(exc)) from None
                self.restarts += 1
                if self.restarts > self.cfg.carla.max_restarts:
                    raise CaptureError(
                        f"{exc}; gave up after {self.cfg.carla.max_restarts} reconnects. Finished "
                        "clips are kept: restart the server and run the same command again"
                    ) from None
                log.warning(
                    "%s; reconnecting (%d of %d)", exc, self.restarts, self.cfg.carla.max_restarts
                )
                self.reconnect = True


def _record_clip(folder: WriterFolder, backend: Backend, index: int, cid: str, frames: int) -> Clip:
    """Record clip ``index`` straight into its staged single-clip shard (published atomically)."""
    stream = folder.stream(cid, frames)
    try:
        clip = backend.record_clip(index, on_frame=stream.put)
        stream.finish(clip)
    except BaseException:
        stream.abort()
        raise
    return clip


def record_plan(
    cfg: CaptureConfig,
    progress: Callable[[str], None] | None = None,
    task: Task | None = None,
) -> list[RecordSummary]:
    """Record this task's share of every town of the plan, one town after another."""
    task = task or resolve_task(cfg)
    return [
        record(cfg.model_copy(update={"town": town, "towns": ()}), progress, task)
        for town in plan_towns(cfg)
    ]


def record(
    cfg: CaptureConfig,
    progress: Callable[[str], None] | None = None,
    task: Task | None = None,
) -> RecordSummary:
    """Record until ``<out>/<Town>`` holds this task's share of ``cfg.clips`` clips of ``cfg.seed``.

    Resumable.

    One process per writer (task of a plan) and folder at a time (:class:`Lease`). ``progress``
    is called with each clip id once that clip is safely staged. A run that fails before staging
    anything leaves nothing behind, so a later run (with other settings) starts clean.
    """
    task = task or resolve_task(cfg)
    town = cfg.town_config()
    backend_cls = get_backend(cfg.backend)
    town_dir = cfg.out / town.name
    new_dir = not town_dir.exists()
    town_dir.mkdir(parents=True, exist_ok=True)
    name = task.writer(cfg.seed)
    folder = WriterFolder(town_dir, town.name, name, cfg.compression, cfg.clips_per_shard)
    of_task = "" if task.count == 1 else f" ({task})"
    label = f"{town.name} seed {cfg.seed}{of_task} in {cfg.out}"
    claims = Claims(town_dir)
    try:
        with Lease(folder.dir, label, cfg.lease_timeout) as lease:
            created = check_plan(town_dir, cfg, town)
            try:
                return _record_leased(cfg, task, folder, claims, lease, backend_cls, progress)
            except BaseException:
                if created and _nothing_of_seed(town_dir, town.name, cfg.seed, claims):
                    (town_dir / f"record-{cfg.seed}.json").unlink(missing_ok=True)
                raise
    except BaseException:
        if not folder.staged() and not folder.index():
            folder.remove_if_empty()
        claims.remove_if_empty()
        if new_dir and town_dir.is_dir() and not any(town_dir.iterdir()):
            town_dir.rmdir()
        raise


def _nothing_of_seed(town_dir: Path, town: str, seed: int, claims: Claims) -> bool:
    return not scan(town_dir, town, seed).done and not claims.listed(f"{town}-{seed}-")


def _adopt(cfg: CaptureConfig, town_dir: Path, town: str, me: str, claims: Claims) -> Scan:
    """Take over the leftovers of dead writers of this seed with another task count.

    The plan is being finished by another layout of tasks, so they will not run again: with their
    lease taken (it is free or stale), assemble their staged clips, release their claims of clips
    they never finished. Writers of this task count are left to themselves: a task run again
    recovers its own. Clips staged by a release before writers become this writer's. Returns the
    folder's scan.
    """
    found = scan(town_dir, town, cfg.seed)
    open_claims = claims.listed(f"{town}-{cfg.seed}-") - found.done
    owners: dict[str, list[str]] = {}
    for cid in open_claims:
        owners.setdefault(claims.owner(cid) or "", []).append(cid)
    adopted = False
    for writer in found.writers:
        other = WriterFolder(town_dir, town, writer, cfg.compression, cfg.clips_per_shard)
        leftover = (
            owners.get(writer)
            or other.staged()
            or any(n.endswith(".partial") for n in _listing(other.dir))
        )
        if _task_count(writer) == _task_count(me) or not leftover:
            continue
        lease = Lease(other.dir, f"{town} writer {writer}", cfg.lease_timeout, role="adopt")
        if not lease.try_adopt():
            continue
        try:
            log.warning("taking over what writer %s of %s left: it is gone", writer, town)
            other.recover()
            other.assemble(lease.check)
            for cid in owners.get(writer, []):
                claims.release(cid)
            adopted = True
        finally:
            lease.release()
    if _adopt_legacy(cfg, town_dir, town, me, claims, found):
        adopted = True
    return scan(town_dir, town, cfg.seed) if adopted else found


def _task_count(writer: str) -> int:
    found = WRITER_RE.match(writer)
    return int(found["count"] or 1) if found else 0


def _listing(folder: Path) -> list[str]:
    try:
        return sorted(p.name for p in folder.iterdir())
    except FileNotFoundError:
        return []


def _adopt_legacy(
    cfg: CaptureConfig, town_dir: Path, town: str, me: str, claims: Claims, found: Scan
) -> bool:
    """Clips staged in ``.staging-<seed>/`` by a release before writers become this writer's."""
    legacy = town_dir / f".staging-{cfg.seed}"
    if not legacy.is_dir() or _legacy_lock_held(town_dir / f".lock-{cfg.seed}"):
        return False
    folder = WriterFolder(town_dir, town, me, cfg.compression, cfg.clips_per_shard)
    for path in sorted(legacy.iterdir()):
        if path.name.endswith(".partial"):
            path.unlink()
        elif path.suffix == ".h5" and (claims.take(path.stem, me) or claims.owner(path.stem) == me):
            folder.adopt_staged(path)
    with contextlib.suppress(OSError):
        legacy.rmdir()
        (town_dir / f".lock-{cfg.seed}").unlink(missing_ok=True)
    return True


def _legacy_lock_held(path: Path) -> bool:
    """Whether a recorder of a release before writers holds its ``flock`` on ``path``."""
    import fcntl

    if not path.exists():
        return False
    with open(path) as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
    return False


def _record_leased(
    cfg: CaptureConfig,
    task: Task,
    folder: WriterFolder,
    claims: Claims,
    lease: Lease,
    backend_cls: type[Backend],
    progress: Callable[[str], None] | None,
) -> RecordSummary:
    town, me = folder.town, folder.name
    done = _adopt(cfg, folder.town_dir, town, me, claims).done
    done |= folder.recover()
    share = task.share(cfg.clips)
    existing = sum(1 for i in share if clip_id(town, cfg.seed, i) in done)
    log.info(
        "%s %s: %d of %d clips of its share exist, recording %d",
        town,
        task,
        existing,
        len(share),
        len(share) - existing,
    )
    started, frames, recorded, elsewhere = time.perf_counter(), 0, 0, 0
    if existing < len(share):
        attempts = _Attempts(cfg)
        with backend_cls(cfg, cfg.town_config()) as backend:
            for index in share:
                cid = clip_id(town, cfg.seed, index)
                if cid in done:
                    continue
                lease.check()
                if not claims.take(cid, me) and claims.owner(cid) != me:
                    log.info("%s is being recorded by writer %s", cid, claims.owner(cid))
                    elsewhere += 1
                    continue
                try:
                    clip = attempts.record(folder, backend, index, cid)
                except BaseException:
                    if cid not in folder.staged():  # ours, not recorded (kill -9: recover())
                        claims.release(cid)
                    raise
                frames, recorded = frames + len(clip), recorded + 1
                if progress:
                    progress(clip.clip_id)
                if len(folder.staged()) >= cfg.clips_per_shard:
                    folder.assemble(lease.check)
    folder.assemble(lease.check)
    return RecordSummary(
        town,
        len(share),
        existing,
        recorded,
        folder.written,
        frames,
        time.perf_counter() - started,
        task,
        elsewhere,
    )
