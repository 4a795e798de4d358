"""A dataset folder: its shards (staging and quarantine left out) and a clip by id."""

from __future__ import annotations

from pathlib import Path

from clipcore.errors import CaptureError
from clipcore.records import Clip
from clipcore.shards import ShardReader

QUARANTINE = "quarantine"


def find_shards(path: Path) -> list[Path]:
    """A shard file itself, or every final shard below a dataset folder (sorted).

    Staging folders (``.staging-*``) and shards moved to ``quarantine/`` by ``capture verify`` are
    left out.
    """
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise CaptureError(f"{path} does not exist; pass a shard file or a dataset folder")
    shards = sorted(
        p
        for p in path.rglob("*.h5")
        if not any(
            part.startswith(".") or part == QUARANTINE for part in p.relative_to(path).parent.parts
        )
    )
    if not shards:
        raise CaptureError(
            f"no .h5 shards under {path}; record some with: capture record --backend synthetic "
            f"--out {path}"
        )
    return shards


def load_clip(path: Path, clip_id: str | None = None) -> Clip:
    """A clip by id from a shard or dataset folder (the first clip if ``clip_id`` is None)."""
    for shard in find_shards(path):
        with ShardReader(shard) as reader:
            ids = reader.clip_ids()
            if clip_id is None and ids:
                return reader.read_clip(ids[0])
            if clip_id in ids:
                return reader.read_clip(clip_id)
    raise CaptureError(
        f"clip {clip_id!r} is not in {path}; list clips with capture inspect {path} --json"
    )
