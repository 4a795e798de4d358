"""Split manifests, the writing side: which shards and clips of a dataset are train, val and test.

``capture split`` writes ``<data>/split.json``; it is read through
:func:`clipcore.manifest.load_manifest`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from carla_capture.config import default_town_dir
from clipcore.errors import CaptureError, ConfigError
from clipcore.folder import find_shards
from clipcore.fsutil import atomic_write_text
from clipcore.manifest import (
    MANIFEST_FORMAT,
    MANIFEST_NAME,
    MANIFEST_VERSION,
    content_digest,
    sha256,
)
from clipcore.settings import build, read_toml
from clipcore.shards import ShardReader

log = logging.getLogger(__name__)


class SplitConfig(BaseModel):
    """``splits.toml``: split name -> towns. A town may appear in one split only."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    splits: dict[str, tuple[str, ...]] = Field(description="Split name -> list of town names.")

    @field_validator("splits")
    @classmethod
    def _disjoint(cls, value: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        if not value:
            raise ValueError('no splits defined; add e.g. train = ["Town01"] under [splits]')
        owner: dict[str, str] = {}
        for name, towns in value.items():
            for town in towns:
                if town in owner:
                    raise ValueError(
                        f"{town} is in both {owner[town]!r} and {name!r}; a town may be in one "
                        "split only"
                    )
                owner[town] = name
        return value

    def split_of(self, town: str) -> str | None:
        """The split that holds ``town``, or None."""
        return next((name for name, towns in self.splits.items() if town in towns), None)


def load_splits(path: Path | None = None) -> SplitConfig:
    """Read and validate a splits file (default: the packaged ``town_configs/splits.toml``)."""
    path = path or default_town_dir() / "splits.toml"
    return build(SplitConfig, read_toml(path), str(path))


def _shard_entry(path: Path, data_dir: Path, seen: dict[str, str]) -> dict[str, Any]:
    """A manifest entry of one shard: file identity and each clip's size and modalities."""
    rel = str(path.relative_to(data_dir))
    with ShardReader(path) as reader:
        clips = []
        for cid in reader.clip_ids():
            if cid in seen:
                raise CaptureError(
                    f"clip {cid} is in both {seen[cid]} and {rel}; remove one copy, then split "
                    "again"
                )
            seen[cid] = rel
            modalities = reader.modalities(cid)
            rgb = reader.group(cid)["rgb"]
            clips.append(
                {
                    "id": cid,
                    "frames": int(rgb.shape[0]),
                    "size": [int(rgb.shape[1]), int(rgb.shape[2])],
                    "modalities": list(modalities),
                }
            )
        stat = path.stat()
        return {
            "path": rel,
            "town": reader.town,
            "format_version": reader.version,
            "bytes": stat.st_size,
            "mtime_ns": stat.st_mtime_ns,
            "sha256": sha256(path),
            "clips": clips,
        }


def build_manifest(data_dir: Path, splits: SplitConfig) -> dict[str, Any]:
    """Assign every shard under ``data_dir`` to its town's split; refuse any leakage."""
    data_dir = Path(data_dir)
    result: dict[str, Any] = {
        name: {"towns": {}, "shards": [], "clips": 0, "frames": 0} for name in splits.splits
    }
    seen: dict[str, str] = {}
    for path in find_shards(data_dir):
        entry = _shard_entry(path, data_dir, seen)
        split = splits.split_of(entry["town"])
        if split is None:
            raise ConfigError(
                f"{entry['path']}: town {entry['town']} is in no split; add it to one in the "
                "splits file"
            )
        bucket = result[split]
        bucket["shards"].append(entry)
        frames = sum(c["frames"] for c in entry["clips"])
        town = bucket["towns"].setdefault(entry["town"], {"clips": 0, "frames": 0})
        town["clips"] += len(entry["clips"])
        town["frames"] += frames
        bucket["clips"] += len(entry["clips"])
        bucket["frames"] += frames
    for name, bucket in result.items():
        if not bucket["clips"]:
            log.info(  # the capture split command warns once, in its own words
                "split %r has no clips: no shards of %s under %s",
                name,
                ", ".join(splits.splits[name]) or "any town",
                data_dir,
            )
    manifest = {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "splits_config": splits.model_dump(mode="json"),
        "splits": result,
    }
    return {**manifest, "digest": content_digest(manifest)}


def write_manifest(data_dir: Path, manifest: dict[str, Any]) -> bool:
    """Write ``split.json`` atomically; False when an identical manifest is already there."""
    path = Path(data_dir) / MANIFEST_NAME
    text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    if path.exists() and path.read_text() == text:
        return False
    atomic_write_text(path, text)
    return True


def split_table(manifest: dict[str, Any]) -> str:
    """Counts per split and per town, as text."""
    lines = ["split   town        clips  frames"]
    for name, split in manifest["splits"].items():
        for town, counts in sorted(split["towns"].items()):
            lines.append(f"{name:<7} {town:<11} {counts['clips']:>5} {counts['frames']:>7}")
        lines.append(f"{name:<7} {'(all)':<11} {split['clips']:>5} {split['frames']:>7}")
    return "\n".join(lines)


def split_dataset(data_dir: Path, splits_file: Path | None = None) -> tuple[dict[str, Any], bool]:
    """Build and write ``split.json`` of ``data_dir``.

    Splits come from ``splits_file`` (default: the packaged one); returns the manifest and whether
    the file changed.
    """
    manifest = build_manifest(data_dir, load_splits(splits_file))
    return manifest, write_manifest(data_dir, manifest)
