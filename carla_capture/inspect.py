"""Summaries and pictures of shards: what ``capture inspect`` shows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from clipcore.errors import CaptureError
from clipcore.folder import find_shards, load_clip
from clipcore.pictures import (
    IMAGE_SUFFIXES,
    VIDEO_SUFFIXES,
    check_output,
    contact_sheet,
    frame_panel,
    write_image,
    write_video,
)
from clipcore.shards import ShardReader
from clipcore.tags import NUM_TAGS, TAG_NAMES


def check_options(
    path: Path,
    clip_id: str | None = None,
    sheet: Path | None = None,
    video: Path | None = None,
    save: Path | None = None,
) -> None:
    """Refuse bad ``capture inspect`` options before anything is printed.

    A ``--clip`` that is not in ``path``, a ``--sheet`` / ``--video`` / ``--save`` of the wrong kind
    or in a folder that does not exist.
    """
    for option, out, suffixes in (
        ("--sheet", sheet, IMAGE_SUFFIXES),
        ("--video", video, VIDEO_SUFFIXES),
        ("--save", save, (".rrd",)),
    ):
        if out is not None:
            check_output(out, option, suffixes)
    if clip_id is not None:
        for shard in find_shards(path):
            with ShardReader(shard) as reader:
                if clip_id in reader.clip_ids():
                    return
        raise CaptureError(
            f"--clip {clip_id}: no such clip in {path}; list them with capture inspect {path} "
            "--json"
        )


def summarize(path: Path) -> dict[str, Any]:
    """Towns, clips, frames, resolutions, bytes on disk, codecs and a class histogram."""
    towns: dict[str, dict[str, int]] = {}
    hist = np.zeros(NUM_TAGS, dtype=np.int64)
    sizes: set[str] = set()
    codecs: set[str] = set()
    total_bytes = 0
    for shard in find_shards(path):
        total_bytes += shard.stat().st_size
        with ShardReader(shard) as reader:
            entry = towns.setdefault(reader.town, {"shards": 0, "clips": 0, "frames": 0})
            entry["shards"] += 1
            codecs.add(reader.codec)
            for cid in reader.clip_ids():
                arrays = reader.read_arrays(cid, only=("semantic",))
                if "semantic" in arrays:
                    tags = arrays["semantic"][arrays["semantic_valid"]]
                    hist += np.bincount(tags.ravel(), minlength=NUM_TAGS)[:NUM_TAGS]
                height, width = reader.group(cid)["rgb"].shape[1:3]
                entry["clips"] += 1
                entry["frames"] += len(arrays["frame"])
                sizes.add(f"{width}x{height}")
    frames = sum(t["frames"] for t in towns.values())
    share = hist / max(hist.sum(), 1)
    return {
        "path": str(path),
        "towns": towns,
        "clips": sum(t["clips"] for t in towns.values()),
        "frames": frames,
        "resolution": sorted(sizes),
        "bytes": total_bytes,
        "bytes_per_frame": total_bytes / max(frames, 1),
        "codec": sorted(codecs),
        "class_histogram": {
            TAG_NAMES[i]: round(float(share[i]), 6) for i in range(NUM_TAGS) if hist[i]
        },
    }


def format_summary(info: dict[str, Any]) -> str:
    """A readable multi-line rendering of :func:`summarize`'s result."""
    lines = [
        f"{info['path']}: {info['clips']} clips, {info['frames']} frames, "
        f"{', '.join(info['resolution'])}, {info['bytes'] / 2**20:.1f} MiB "
        f"({info['bytes_per_frame'] / 1024:.0f} KiB/frame), codec {', '.join(info['codec'])}",
        "town        shards  clips  frames",
    ]
    lines += [
        f"{town:<11} {t['shards']:>6} {t['clips']:>6} {t['frames']:>7}"
        for town, t in sorted(info["towns"].items())
    ]
    lines.append("classes (share of pixels):")
    ranked = sorted(info["class_histogram"].items(), key=lambda kv: -kv[1])
    lines += [f"  {name:<13} {share:7.2%}" for name, share in ranked]
    return "\n".join(lines)


def write_picture(path: Path, clip_id: str | None, out: Path, video: bool, rows: int = 4) -> str:
    """Write a contact sheet or a video of one clip; returns the clip's id.

    A contact sheet of ``rows`` frames or, with ``video``, a video of RGB | semantic | depth of one
    clip of a shard or dataset folder (the first if ``clip_id`` is None).
    """
    clip = load_clip(path, clip_id)
    if video:
        write_video(out, [frame_panel(f.rgb, f.semantic, f.depth) for f in clip.frames], clip.fps)
    else:
        write_image(out, contact_sheet(clip, rows))
    return clip.clip_id
