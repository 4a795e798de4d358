"""Summaries and pictures of shards: what ``capture inspect`` shows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from carla_capture.errors import CaptureError
from carla_capture.geometry import FAR_PLANE_M
from carla_capture.records import Clip
from carla_capture.shards import ShardReader
from carla_capture.tags import NUM_TAGS, TAG_NAMES, colorize


QUARANTINE = "quarantine"


def find_shards(path: Path) -> list[Path]:
    """A shard file itself, or every final shard below a dataset folder (sorted), leaving out
    staging folders (``.staging-*``) and shards moved to ``quarantine/`` by ``capture verify``."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise CaptureError(f"{path} does not exist; pass a shard file or a dataset folder")
    shards = sorted(p for p in path.rglob("*.h5")
                    if not any(part.startswith(".") or part == QUARANTINE for part in p.relative_to(path).parent.parts))
    if not shards:
        raise CaptureError(f"no .h5 shards under {path}; record some with: capture record --backend synthetic --out {path}")
    return shards


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
        "class_histogram": {TAG_NAMES[i]: round(float(share[i]), 6) for i in range(NUM_TAGS) if hist[i]},
    }


def format_summary(info: dict[str, Any]) -> str:
    """A readable multi-line rendering of :func:`summarize`'s result."""
    lines = [
        f"{info['path']}: {info['clips']} clips, {info['frames']} frames, "
        f"{', '.join(info['resolution'])}, {info['bytes'] / 2**20:.1f} MiB "
        f"({info['bytes_per_frame'] / 1024:.0f} KiB/frame), codec {', '.join(info['codec'])}",
        "town        shards  clips  frames",
    ]
    lines += [f"{town:<11} {t['shards']:>6} {t['clips']:>6} {t['frames']:>7}" for town, t in sorted(info["towns"].items())]
    lines.append("classes (share of pixels):")
    ranked = sorted(info["class_histogram"].items(), key=lambda kv: -kv[1])
    lines += [f"  {name:<13} {share:7.2%}" for name, share in ranked]
    return "\n".join(lines)


def depth_to_rgb(depth: np.ndarray) -> np.ndarray:
    """Colour-map (..., H, W) metres to (..., H, W, 3) uint8 RGB on a log scale (1 m .. far plane)."""
    import cv2

    scaled = np.clip(np.log(np.maximum(depth, 1.0)) / np.log(FAR_PLANE_M), 0.0, 1.0)
    flat = (255 * (1.0 - scaled)).astype(np.uint8).reshape(-1, depth.shape[-1])
    bgr = cv2.applyColorMap(flat, cv2.COLORMAP_MAGMA)
    return bgr[..., ::-1].reshape(*depth.shape, 3)


def frame_panel(rgb: np.ndarray, semantic: np.ndarray | None, depth: np.ndarray | None) -> np.ndarray:
    """One row RGB | semantic (CARLA palette) | depth, as (H, 3W, 3) uint8 RGB; a missing
    modality is drawn grey."""
    grey = np.full_like(rgb, 128)
    return np.concatenate([rgb, grey if semantic is None else colorize(semantic),
                           grey if depth is None else depth_to_rgb(depth)], axis=1)


def load_clip(path: Path, clip_id: str | None = None) -> Clip:
    """A clip by id from a shard or dataset folder (the first clip if ``clip_id`` is None)."""
    for shard in find_shards(path):
        with ShardReader(shard) as reader:
            ids = reader.clip_ids()
            if clip_id is None and ids:
                return reader.read_clip(ids[0])
            if clip_id in ids:
                return reader.read_clip(clip_id)
    raise CaptureError(f"clip {clip_id!r} is not in {path}; list clips with capture inspect {path} --json")


def contact_sheet(clip: Clip, rows: int = 4) -> np.ndarray:
    """``rows`` evenly spaced frames of a clip, each RGB | semantic | depth; (rows*H, 3W, 3) uint8."""
    picks = np.linspace(0, len(clip) - 1, num=min(rows, len(clip))).round().astype(int)
    return np.concatenate([frame_panel(f.rgb, f.semantic, f.depth) for f in (clip.frames[i] for i in picks)], axis=0)


def write_image(path: Path, rgb: np.ndarray) -> None:
    """Write an RGB uint8 image (PNG or JPEG by suffix)."""
    import cv2

    if not cv2.imwrite(str(path), np.ascontiguousarray(rgb[..., ::-1])):
        raise CaptureError(f"could not write {path}: use a .png or .jpg name in a writable folder")


def write_video(path: Path, panels: list[np.ndarray], fps: float) -> None:
    """Write RGB uint8 frames as ``.mp4`` (OpenCV) or ``.gif`` (Pillow) at ``fps`` frames per second."""
    suffix = Path(path).suffix.lower()
    if suffix == ".gif":
        from PIL import Image

        images = [Image.fromarray(p) for p in panels]
        images[0].save(path, save_all=True, append_images=images[1:], duration=int(round(1000 / fps)), loop=0)
        return
    if suffix != ".mp4":
        raise CaptureError(f"--video {path}: use a .mp4 or .gif file name")
    import cv2

    height, width = panels[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        raise CaptureError(f"could not open {path} for writing: check the folder exists and is writable")
    for panel in panels:
        writer.write(np.ascontiguousarray(panel[..., ::-1]))
    writer.release()
