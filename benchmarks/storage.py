"""Storage size and read throughput of the shard codecs against a CARLA-style PNG folder.

The PNG baseline is what ``carla.Image.save_to_disk`` produces: one BGRA PNG per sensor per
frame (RGB image; semantic tags in the red channel; depth encoded as R + G*256 + B*256^2).
Reading a frame means decoding all three and converting to RGB, tags and metres.

    python benchmarks/storage.py [--clips 4] [--frames 20]

Writes benchmarks/results/storage.json (medians of several runs, one core).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import median_time, pin_one_core, write_result  # noqa: E402

pin_one_core()

import argparse  # noqa: E402
import tempfile  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from carla_capture.backends.synthetic import SyntheticBackend  # noqa: E402
from carla_capture.config import CaptureConfig  # noqa: E402
from carla_capture.shards import ShardReader, ShardWriter  # noqa: E402

cv2.setNumThreads(1)
CODECS = ("zstd", "lz4", "gzip", "lzf", "none")
WINDOW = 6


def encode_depth_png(depth: np.ndarray) -> np.ndarray:
    """Metres -> CARLA's 24-bit depth encoding as a BGRA image."""
    code = np.round(depth / 1000.0 * (256**3 - 1)).astype(np.uint32)
    r, g, b = code & 255, (code >> 8) & 255, (code >> 16) & 255
    return np.stack([b, g, r, np.full_like(r, 255)], -1).astype(np.uint8)


def write_pngs(folder: Path, clips: list) -> None:
    for clip in clips:
        for f in clip.frames:
            stem = folder / f"{clip.clip_id}-{f.frame:08d}"
            alpha = np.full(f.semantic.shape + (1,), 255, np.uint8)
            cv2.imwrite(f"{stem}-rgb.png", np.concatenate([f.rgb[..., ::-1], alpha], -1))
            tag = np.zeros(f.semantic.shape + (4,), np.uint8)
            tag[..., 2], tag[..., 3] = f.semantic, 255
            cv2.imwrite(f"{stem}-semantic.png", tag)
            cv2.imwrite(f"{stem}-depth.png", encode_depth_png(f.depth))


def read_pngs(folder: Path, clips: list) -> int:
    n = 0
    for clip in clips:
        for f in clip.frames:
            stem = folder / f"{clip.clip_id}-{f.frame:08d}"
            _ = cv2.imread(f"{stem}-rgb.png", cv2.IMREAD_COLOR)[..., ::-1]
            _ = cv2.imread(f"{stem}-semantic.png", cv2.IMREAD_UNCHANGED)[..., 2]
            d = cv2.imread(f"{stem}-depth.png", cv2.IMREAD_UNCHANGED).astype(np.float32)
            _ = (d[..., 2] + d[..., 1] * 256 + d[..., 0] * 65536) / (256**3 - 1) * 1000
            n += 1
    return n


def read_shard(path: Path) -> int:
    n = 0
    with ShardReader(path) as reader:
        for cid in reader.clip_ids():
            g = reader.group(cid)
            total = g["rgb"].shape[0]
            for start in range(0, total, WINDOW):
                for name in ("rgb", "semantic", "depth"):
                    g[name][start : start + WINDOW]
                n += min(WINDOW, total - start)
    return n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=4)
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--town", default="Town03")
    args = parser.parse_args()
    cfg = CaptureConfig(backend="synthetic", town=args.town, frames=args.frames)
    backend = SyntheticBackend(cfg, cfg.town_config())
    clips = [backend.record_clip(i) for i in range(args.clips)]
    frames = sum(len(c) for c in clips)
    raw = clips[0].frames[0].rgb.nbytes + clips[0].frames[0].semantic.nbytes + clips[0].frames[0].depth.nbytes
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        png = Path(tmp) / "png"
        png.mkdir()
        write_pngs(png, clips)
        png_bytes = sum(p.stat().st_size for p in png.iterdir())
        png_time = median_time(lambda: read_pngs(png, clips))
        results["png_folder"] = {"bytes_per_frame": png_bytes / frames, "read_frames_per_s": frames / png_time}
        for codec in CODECS:
            path = Path(tmp) / f"{codec}.h5"
            with ShardWriter(path, args.town, codec) as writer:
                for clip in clips:
                    writer.add(clip)
            read_s = median_time(lambda: read_shard(path))
            size = path.stat().st_size
            results[codec] = {
                "bytes_per_frame": size / frames,
                "read_frames_per_s": frames / read_s,
                "size_vs_png": size / png_bytes,
                "read_speedup_vs_png": (frames / read_s) / results["png_folder"]["read_frames_per_s"],
            }
    out = write_result("storage", {
        "what": "bytes per frame (rgb + semantic + float32 depth) and single-core read throughput, "
                f"{WINDOW}-frame windows, median of 5 reads",
        "town": args.town, "clips": args.clips, "frames": frames, "raw_bytes_per_frame": raw,
        "resolution": list(clips[0].frames[0].size[::-1]), "results": results,
    })
    for name, r in results.items():
        extra = f"  size x{r['size_vs_png']:.2f}  read x{r['read_speedup_vs_png']:.1f}" if name != "png_folder" else ""
        print(f"{name:<11} {r['bytes_per_frame'] / 1024:8.1f} KiB/frame {r['read_frames_per_s']:8.1f} frames/s{extra}")
    print(f"-> {out}")


if __name__ == "__main__":
    main()
