"""Which clips of a town folder are committed, and who records the others.

A writer claims clip ``cid`` before recording it by creating ``<Town>/.claims/<cid>`` (a hard link
of a complete temporary file: atomic and exclusive, also on NFS, no ``flock``). The claim names the
writer and stays: the clip is committed once even when two tasks race for it. Only the claim's
writer (or a process that took over a dead writer's lease) removes it, when it knows the clip was
not recorded.

A clip is *done* when it is in a writer's final shard (its ``index.json`` says so and the shard is
there), staged in a writer's folder, or in a shard that belongs to no writer (the importers', or
one of a release before writers were named). Finding that opens no writer's shard: only the
indexes, the folder listings and the (usually no) unscoped shards.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path

from carla_capture.shard_names import unscoped_shard_re
from clipcore.fsutil import create_text
from clipcore.shards import ShardReader

log = logging.getLogger(__name__)

CLAIMS = ".claims"
WRITER_PREFIX = ".writer-"
INDEX = "index.json"


class Claims:
    """The claims of one town folder."""

    def __init__(self, town_dir: Path) -> None:
        self.dir = Path(town_dir) / CLAIMS

    def take(self, cid: str, writer: str) -> bool:
        """Claim ``cid`` for ``writer``; False when it is claimed already (by anyone)."""
        self.dir.mkdir(exist_ok=True)
        record = {"writer": writer, "host": socket.gethostname(), "pid": os.getpid()}
        return create_text(self.dir / cid, json.dumps(record))

    def owner(self, cid: str) -> str | None:
        """The writer that claimed ``cid``, None when nobody did."""
        try:
            return json.loads((self.dir / cid).read_text()).get("writer")
        except FileNotFoundError:
            return None
        except ValueError:
            return "?"

    def release(self, cid: str) -> None:
        """Drop a claim (only its writer, or whoever holds that writer's lease, does this)."""
        (self.dir / cid).unlink(missing_ok=True)

    def listed(self, prefix: str) -> set[str]:
        """Claimed clip ids that start with ``prefix``."""
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return set()
        return {n for n in names if n.startswith(prefix) and not n.startswith(".")}

    def remove_if_empty(self) -> None:
        """Remove the claims folder when it holds nothing (a run that recorded nothing)."""
        try:
            self.dir.rmdir()
        except OSError:
            pass


def writer_dir(town_dir: Path, writer: str) -> Path:
    """The private folder of ``writer`` in a town folder."""
    return Path(town_dir) / f"{WRITER_PREFIX}{writer}"


def read_index(folder: Path) -> dict[str, list[str]] | None:
    """A writer's index (final shard name -> clip ids), None when missing or unreadable."""
    try:
        data = json.loads((Path(folder) / INDEX).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def staged_ids(folder: Path) -> list[str]:
    """Clip ids staged (complete) in a writer's folder."""
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    return sorted(n[:-3] for n in names if n.endswith(".h5"))


@dataclass
class Scan:
    """What a town folder holds of one seed."""

    done: set[str] = field(default_factory=set)
    writers: list[str] = field(default_factory=list)


def _writer_of_seed(name: str, seed: int) -> bool:
    return re.fullmatch(rf"s{seed}(-t\d+of\d+)?", name) is not None


def scan(town_dir: Path, town: str, seed: int) -> Scan:
    """The clips of ``seed`` that are done in ``town_dir`` and the writers of ``seed`` there."""
    town_dir = Path(town_dir)
    names = set(os.listdir(town_dir))
    found = Scan()
    for entry in sorted(names):
        if not entry.startswith(WRITER_PREFIX):
            continue
        writer = entry[len(WRITER_PREFIX) :]
        if not _writer_of_seed(writer, seed):
            continue
        found.writers.append(writer)
        folder = town_dir / entry
        index = read_index(folder) or {}
        for shard, ids in index.items():
            if shard in names:
                found.done.update(ids)
        found.done.update(staged_ids(folder))
    found.done.update(staged_ids(town_dir / f".staging-{seed}"))  # a release before writers
    unscoped = unscoped_shard_re(town)
    for entry in sorted(names):
        if unscoped.match(entry):
            with ShardReader(town_dir / entry) as reader:
                found.done.update(reader.clip_ids())
    return found
