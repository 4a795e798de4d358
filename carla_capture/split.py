"""Split manifests: which shards and clips of a dataset are train, val and test.

``capture split`` writes ``<data>/split.json``; training reads it through
:func:`load_manifest`, which refuses a manifest whose shards are gone or changed: each shard's
size, format version, modification time and SHA-256 are recorded, and a shard whose size differs,
or whose time differs and whose SHA-256 then differs too, is refused.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from carla_capture.config import default_town_dir
from carla_capture.errors import CaptureError, ConfigError
from carla_capture.fsutil import atomic_write_text
from carla_capture.inspect import find_shards
from carla_capture.settings import build, read_toml
from carla_capture.shards import ShardReader

log = logging.getLogger(__name__)

MANIFEST_NAME = "split.json"
MANIFEST_FORMAT = "carla-clips-split"
MANIFEST_VERSION = 2
READABLE_MANIFESTS = (1, 2)


class SplitConfig(BaseModel):
    """``splits.toml``: split name -> towns. A town may appear in one split only."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    splits: dict[str, tuple[str, ...]] = Field(description="Split name -> list of town names.")

    @field_validator("splits")
    @classmethod
    def _disjoint(cls, value: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        if not value:
            raise ValueError("no splits defined; add e.g. train = [\"Town01\"] under [splits]")
        owner: dict[str, str] = {}
        for name, towns in value.items():
            for town in towns:
                if town in owner:
                    raise ValueError(f"{town} is in both {owner[town]!r} and {name!r}; a town may be in one split only")
                owner[town] = name
        return value

    def split_of(self, town: str) -> str | None:
        """The split that holds ``town``, or None."""
        return next((name for name, towns in self.splits.items() if town in towns), None)


def load_splits(path: Path | None = None) -> SplitConfig:
    """Read and validate a splits file (default: the packaged ``town_configs/splits.toml``)."""
    path = path or default_town_dir() / "splits.toml"
    return build(SplitConfig, read_toml(path), str(path))


def sha256(path: Path, block: int = 1 << 20) -> str:
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def _shard_entry(path: Path, data_dir: Path, seen: dict[str, str]) -> dict[str, Any]:
    """A manifest entry of one shard: file identity and each clip's size and modalities."""
    rel = str(path.relative_to(data_dir))
    with ShardReader(path) as reader:
        clips = []
        for cid in reader.clip_ids():
            if cid in seen:
                raise CaptureError(f"clip {cid} is in both {seen[cid]} and {rel}; remove one copy, then split again")
            seen[cid] = rel
            modalities = reader.modalities(cid)
            rgb = reader.group(cid)["rgb"]
            clips.append({"id": cid, "frames": int(rgb.shape[0]), "size": [int(rgb.shape[1]), int(rgb.shape[2])],
                          "modalities": list(modalities)})
        stat = path.stat()
        return {"path": rel, "town": reader.town, "format_version": reader.version, "bytes": stat.st_size,
                "mtime_ns": stat.st_mtime_ns, "sha256": sha256(path), "clips": clips}


def build_manifest(data_dir: Path, splits: SplitConfig) -> dict[str, Any]:
    """Assign every shard under ``data_dir`` to its town's split; refuse any leakage."""
    data_dir = Path(data_dir)
    result: dict[str, Any] = {name: {"towns": {}, "shards": [], "clips": 0, "frames": 0} for name in splits.splits}
    seen: dict[str, str] = {}
    for path in find_shards(data_dir):
        entry = _shard_entry(path, data_dir, seen)
        split = splits.split_of(entry["town"])
        if split is None:
            raise ConfigError(f"{entry['path']}: town {entry['town']} is in no split; add it to one in the splits file")
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
            log.warning("split %r has no clips: no shards of %s under %s", name,
                        ", ".join(splits.splits[name]) or "any town", data_dir)
    return {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "splits_config": splits.model_dump(mode="json"),
            "splits": result}


def require_clips(manifest: dict[str, Any], data_dir: Path, split: str, purpose: str) -> int:
    """The number of clips of ``split``; a missing or empty split raises a one-line fix."""
    if split not in manifest["splits"]:
        raise ConfigError(f"split {split!r} is not in {Path(data_dir) / MANIFEST_NAME}; it has "
                          f"{', '.join(manifest['splits'])}: pick one of those for {purpose}")
    clips = int(manifest["splits"][split]["clips"])
    if not clips:
        towns = ", ".join(manifest.get("splits_config", {}).get("splits", {}).get(split, ())) or "its towns"
        raise CaptureError(f"split {split!r} of {data_dir} has no clips, so there is nothing for {purpose}; record "
                           f"{towns} (capture record --town ...), then run capture split {data_dir}")
    return clips


def empty_splits(manifest: dict[str, Any]) -> list[str]:
    """Names of the splits that hold no clip."""
    return [name for name, split in manifest["splits"].items() if not split["clips"]]


def write_manifest(data_dir: Path, manifest: dict[str, Any]) -> bool:
    """Write ``split.json`` atomically; returns False when an identical manifest is already there."""
    path = Path(data_dir) / MANIFEST_NAME
    text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    if path.exists() and path.read_text() == text:
        return False
    atomic_write_text(path, text)
    return True


def _check_shard(data_dir: Path, shard: dict[str, Any], verify_checksums: bool, hint: str) -> None:
    file = Path(data_dir) / shard["path"]
    if not file.exists():
        raise CaptureError(f"{shard['path']} is listed in {MANIFEST_NAME} but gone; restore it or {hint}")
    stat = file.stat()
    changed = stat.st_size != shard["bytes"]
    if not changed and (verify_checksums or stat.st_mtime_ns != shard.get("mtime_ns", stat.st_mtime_ns)):
        changed = sha256(file) != shard["sha256"]
    if changed:
        raise CaptureError(f"{shard['path']} changed since {MANIFEST_NAME} was written (size or checksum differs); "
                           f"restore it or {hint}")


def load_manifest(data_dir: Path, verify_checksums: bool = False) -> dict[str, Any]:
    """Read ``split.json`` and check that every listed shard exists unchanged: same size, and the
    same SHA-256 where its modification time moved (always, with ``verify_checksums``)."""
    path = Path(data_dir) / MANIFEST_NAME
    hint = f"run: capture split {data_dir}"
    if not path.exists():
        raise CaptureError(f"{path} does not exist; {hint}")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CaptureError(f"{path} is unreadable ({exc}); {hint}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT \
            or manifest.get("version") not in READABLE_MANIFESTS:
        raise CaptureError(f"{path} is not a split manifest this version reads; {hint}")
    for split in manifest["splits"].values():
        for shard in split["shards"]:
            _check_shard(Path(data_dir), shard, verify_checksums, hint)
    return manifest


def split_table(manifest: dict[str, Any]) -> str:
    """Counts per split and per town, as text."""
    lines = ["split   town        clips  frames"]
    for name, split in manifest["splits"].items():
        for town, counts in sorted(split["towns"].items()):
            lines.append(f"{name:<7} {town:<11} {counts['clips']:>5} {counts['frames']:>7}")
        lines.append(f"{name:<7} {'(all)':<11} {split['clips']:>5} {split['frames']:>7}")
    return "\n".join(lines)
