"""Split manifests, the reading side.

``<data>/split.json`` lists the shards and clips of each split (``capture split`` writes it, see
:mod:`carla_capture.split`); training and evaluation read it through :func:`load_manifest`, which
refuses a manifest whose shards are gone or changed: each shard's size, format version, modification
time and SHA-256 are recorded, and a shard whose size differs, or whose time differs and whose
SHA-256 then differs too, is refused. The manifest is checked too: its structure (a hand-edited file
that lost a key fails in one line, not deep in a loader), shard paths inside the data folder, each
shard in the split of its town and in one split only, clip counts that add up, and a digest of its
content, so an edit by hand is refused.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path, PurePosixPath
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from clipcore.errors import CaptureError, ConfigError

MANIFEST_NAME = "split.json"
MANIFEST_FORMAT = "carla-clips-split"
MANIFEST_VERSION = 2
READABLE_MANIFESTS = (1, 2)


class _Clip(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    id: str
    frames: int = Field(ge=1)


class _Shard(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    path: str = Field(min_length=1)
    bytes: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    town: str
    clips: list[_Clip] = Field(min_length=1)


class _Split(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    clips: int = Field(ge=0)
    shards: list[_Shard]


class _Manifest(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    splits: dict[str, _Split]


def content_digest(manifest: dict[str, Any]) -> str:
    """SHA-256 of what a manifest says (its splits and their towns), as ``capture split`` wrote it.

    Stored under ``digest`` so that a manifest edited by hand is refused.
    """
    content = {k: manifest.get(k) for k in ("splits", "splits_config")}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def _manifest_fault(manifest: dict[str, Any]) -> str | None:
    """What is wrong with a manifest's content, or None."""
    try:
        parsed = _Manifest.model_validate(manifest)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(part) for part in err["loc"])
        return f"{where}: {err['msg'].lower()}"
    if "digest" in manifest and manifest["digest"] != content_digest(manifest):
        return "it was edited after capture split wrote it (its digest differs)"
    towns = (manifest.get("splits_config") or {}).get("splits") or {}
    owner: dict[str, str] = {}
    for name, split in parsed.splits.items():
        for shard in split.shards:
            rel = PurePosixPath(shard.path)
            if rel.is_absolute() or ".." in rel.parts:
                return f"shard path {shard.path!r} leads outside the data folder"
            if owner.setdefault(shard.path, name) != name:
                return f"{shard.path} is in both split {owner[shard.path]!r} and split {name!r}"
            if name in towns and shard.town not in towns[name]:
                return f"{shard.path} (town {shard.town}) is in split {name!r}, not its town's"
        if split.clips != sum(len(shard.clips) for shard in split.shards):
            return f"split {name!r} says {split.clips} clips but its shards list another number"
    return None


def sha256(path: Path, block: int = 1 << 20) -> str:
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def require_clips(manifest: dict[str, Any], data_dir: Path, split: str, purpose: str) -> int:
    """The number of clips of ``split``; a missing or empty split raises a one-line fix."""
    if split not in manifest["splits"]:
        raise ConfigError(
            f"split {split!r} is not in {Path(data_dir) / MANIFEST_NAME}; it has "
            f"{', '.join(manifest['splits'])}: pick one of those for {purpose}"
        )
    clips = int(manifest["splits"][split]["clips"])
    if not clips:
        towns = (
            ", ".join(manifest.get("splits_config", {}).get("splits", {}).get(split, ()))
            or "its towns"
        )
        raise CaptureError(
            f"split {split!r} of {data_dir} has no clips, so there is nothing for {purpose}; "
            "record "
            f"{towns} (capture record --town ...), then run capture split {data_dir}"
        )
    return clips


def empty_splits(manifest: dict[str, Any]) -> list[str]:
    """Names of the splits that hold no clip."""
    return [name for name, split in manifest["splits"].items() if not split["clips"]]


def _check_shard(data_dir: Path, shard: dict[str, Any], verify_checksums: bool, hint: str) -> None:
    file = Path(data_dir) / shard["path"]
    if not file.exists():
        raise CaptureError(
            f"{shard['path']} is listed in {MANIFEST_NAME} but gone; restore it or {hint}"
        )
    stat = file.stat()
    changed = stat.st_size != shard["bytes"]
    if not changed and (
        verify_checksums or stat.st_mtime_ns != shard.get("mtime_ns", stat.st_mtime_ns)
    ):
        changed = sha256(file) != shard["sha256"]
    if changed:
        raise CaptureError(
            f"{shard['path']} changed since {MANIFEST_NAME} was written (size or checksum "
            "differs); "
            f"restore it or {hint}"
        )


def load_manifest(data_dir: Path, verify_checksums: bool = False) -> dict[str, Any]:
    """Read ``split.json`` and check that every listed shard exists unchanged.

    Same size, and the same SHA-256 where its modification time moved (always, with
    ``verify_checksums``).
    """
    path = Path(data_dir) / MANIFEST_NAME
    hint = f"run: capture split {data_dir}"
    if not path.exists():
        raise CaptureError(f"{path} does not exist; {hint}")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CaptureError(f"{path} is unreadable ({exc}); {hint}") from None
    if (
        not isinstance(manifest, dict)
        or manifest.get("format") != MANIFEST_FORMAT
        or manifest.get("version") not in READABLE_MANIFESTS
    ):
        raise CaptureError(f"{path} is not a split manifest this version reads; {hint}")
    fault = _manifest_fault(manifest)
    if fault:
        raise CaptureError(f"{path} is not a manifest capture split wrote ({fault}); {hint}")
    for split in manifest["splits"].values():
        for shard in split["shards"]:
            _check_shard(Path(data_dir), shard, verify_checksums, hint)
    return manifest
