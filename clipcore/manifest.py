"""Split manifests, the reading side: ``<data>/split.json`` lists the shards and clips of each
split (``capture split`` writes it, see :mod:`carla_capture.split`); training and evaluation
read it through :func:`load_manifest`, which refuses a manifest whose shards are gone or changed:
each shard's size, format version, modification time and SHA-256 are recorded, and a shard whose
size differs, or whose time differs and whose SHA-256 then differs too, is refused.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from clipcore.errors import CaptureError, ConfigError

MANIFEST_NAME = "split.json"
MANIFEST_FORMAT = "carla-clips-split"
MANIFEST_VERSION = 2
READABLE_MANIFESTS = (1, 2)


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
    if (
        not isinstance(manifest, dict)
        or manifest.get("format") != MANIFEST_FORMAT
        or manifest.get("version") not in READABLE_MANIFESTS
    ):
        raise CaptureError(f"{path} is not a split manifest this version reads; {hint}")
    for split in manifest["splits"].values():
        for shard in split["shards"]:
            _check_shard(Path(data_dir), shard, verify_checksums, hint)
    return manifest
