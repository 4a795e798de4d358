"""Final shard names of a town folder.

``<town>-NNNNN.h5`` (importers), ``<town>-<writer>-NNNNN.h5`` (``capture record``: each writer
numbers its own), numbered from 1, never reused.

The importers take their next number here (claimed by exclusive creation); a recording writer's
names carry its own name (:mod:`carla_capture.writer`), so no two processes ever write, publish or
remove the same file.
"""

from __future__ import annotations

import re
from pathlib import Path

from clipcore.codecs import CODECS
from clipcore.shards import ShardWriter

SHARD_RE = re.compile(r"^(?P<town>.+)-(?P<num>\d{5})\.h5(\.partial)?$")


def shard_paths(town_dir: Path) -> list[Path]:
    """Final shard files of a town folder, in shard-number order."""
    return sorted(p for p in Path(town_dir).glob("*.h5") if SHARD_RE.match(p.name))


def next_shard_number(town_dir: Path) -> int:
    """One more than the highest number of a final or unfinished shard in ``town_dir``."""
    numbers = [int(m["num"]) for p in Path(town_dir).iterdir() if (m := SHARD_RE.match(p.name))]
    return max(numbers, default=0) + 1


def open_next_shard(town_dir: Path, town: str, codec: str = CODECS[0]) -> ShardWriter:
    """A :class:`ShardWriter` on ``town_dir/<town>-NNNNN.h5`` with the next free number.

    The writer creates its partial file exclusively; when another process takes the same
    number first, the next one is tried.
    """
    while True:
        path = Path(town_dir) / f"{town}-{next_shard_number(town_dir):05d}.h5"
        try:
            return ShardWriter(path, town, codec)
        except FileExistsError:  # another process took this number
            continue


def writer_shard_re(town: str, writer: str) -> re.Pattern[str]:
    """Final and unfinished shards of one writer: ``<town>-<writer>-NNNNN.h5[.partial]``."""
    return re.compile(rf"^{re.escape(town)}-{re.escape(writer)}-(?P<num>\d{{5}})\.h5(\.partial)?$")


def unscoped_shard_re(town: str) -> re.Pattern[str]:
    """Final shards that belong to no writer.

    ``<town>-NNNNN.h5`` (the importers', and every shard of a release before writers were named).
    """
    return re.compile(rf"^{re.escape(town)}-(?P<num>\d{{5}})\.h5$")
