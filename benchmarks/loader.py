"""Training-loader throughput: ClipWindows windows/s per worker, with and without augmentation,
against the same windows decoded from a PNG folder as CARLA's ``save_to_disk`` writes it.

    python benchmarks/loader.py [--clips 4]

Writes benchmarks/results/loader.json (one worker = one process on one core; median of 3 passes).
The goal: feed about 400 frames/s (DeepLabv3-ResNet50 at 256x512 on an H100) with at most 4 workers.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import median_time, pin_one_core, write_doc_section, write_result  # noqa: E402

pin_one_core()

import argparse  # noqa: E402
import math  # noqa: E402
import tempfile  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from storage import write_pngs  # noqa: E402

from carla_capture.config import CaptureConfig  # noqa: E402
from carla_capture.record import record  # noqa: E402
from carla_capture.split import build_manifest, load_splits, write_manifest  # noqa: E402
from clipcore.normalize import normalize  # noqa: E402
from dataset import AugmentConfig, ClipWindows  # noqa: E402
from dataset.labels import load_label_map  # noqa: E402

torch.set_num_threads(1)
cv2.setNumThreads(1)
WINDOW = 6
TARGET_FPS = 400


def png_window(folder: Path, clip_id: str, frames: list[int], label_map) -> dict:  # noqa: ANN001
    """The same item as ClipWindows (eval), decoded from PNGs."""
    rgb, labels, depth = [], [], []
    for f in frames:
        stem = folder / f"{clip_id}-{f:08d}"
        rgb.append(cv2.imread(f"{stem}-rgb.png", cv2.IMREAD_COLOR)[..., ::-1])
        labels.append(label_map(cv2.imread(f"{stem}-semantic.png", cv2.IMREAD_UNCHANGED)[..., 2]))
        d = cv2.imread(f"{stem}-depth.png", cv2.IMREAD_UNCHANGED).astype(np.float32)
        depth.append((d[..., 2] + d[..., 1] * 256 + d[..., 0] * 65536) / (256**3 - 1) * 1000)
    x = torch.from_numpy(np.ascontiguousarray(np.stack(rgb), dtype=np.float32) / 255).permute(
        0, 3, 1, 2
    )
    return {
        "rgb": normalize(x),
        "labels": torch.from_numpy(np.stack(labels).astype(np.int64)),
        "depth": torch.from_numpy(np.stack(depth)).unsqueeze(1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clips", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        record(CaptureConfig(backend="synthetic", town="Town03", clips=args.clips, out=data))
        write_manifest(data, build_manifest(data, load_splits()))
        plain = ClipWindows(data, "train", window=WINDOW, stride=WINDOW)
        augmented = ClipWindows(
            data, "train", window=WINDOW, stride=WINDOW, augment=AugmentConfig()
        )
        png = Path(tmp) / "png"
        png.mkdir()
        clips = {}
        for rel, cid, _, _ in plain.clips:
            from clipcore.shards import ShardReader

            with ShardReader(data / rel) as reader:
                clips[cid] = reader.read_clip(cid)
        write_pngs(png, list(clips.values()))
        label_map = load_label_map("carla22")
        windows = [
            (plain.clips[c][1], [f.frame for f in clips[plain.clips[c][1]].frames[s : s + WINDOW]])
            for c, s in plain.index
        ]
        n = len(plain)
        runs = {
            "hdf5_eval": lambda: [plain[i] for i in range(n)],
            "hdf5_train_augment": lambda: [augmented[i] for i in range(n)],
            "png_eval": lambda: [
                png_window(png, cid, frames, label_map) for cid, frames in windows
            ],
        }
        results = {}
        for name, fn in runs.items():
            seconds = median_time(fn, 3)
            results[name] = {
                "windows_per_s": n / seconds,
                "frames_per_s": n * WINDOW / seconds,
                "workers_for_400_fps": math.ceil(TARGET_FPS / (n * WINDOW / seconds)),
            }
    base = results["png_eval"]["frames_per_s"]
    for r in results.values():
        r["vs_png"] = r["frames_per_s"] / base
    out = write_result(
        "loader",
        {
            "what": f"{WINDOW}-frame windows at 512x256, one process, one thread",
            "windows": n,
            "target_frames_per_s": TARGET_FPS,
            "results": results,
        },
    )
    for name, r in results.items():
        print(
            f"{name:<20} {r['windows_per_s']:7.1f} windows/s {r['frames_per_s']:7.1f} frames/s  "
            f"x{r['vs_png']:.1f} vs PNG  "
            f"workers for {TARGET_FPS} frames/s: {r['workers_for_400_fps']}"
        )
    print(f"-> {out}")
    print(f"-> {write_doc_section('dataset.md', 'loader-table', doc_lines(results))}")


def doc_lines(results: dict[str, dict]) -> list[str]:
    """The throughput table of docs/dataset.md."""
    labels = {
        "hdf5_eval": "shards, no augmentation",
        "hdf5_train_augment": "shards, `train` augmentation",
        "png_eval": "PNG folder (CARLA `save_to_disk` layout), no augmentation",
    }
    lines = [
        f"{WINDOW}-frame windows at 512x256, one process on one core (`python "
        "benchmarks/loader.py`, `benchmarks/results/loader.json`):",
        "",
        f"| source | frames/s per worker | vs the PNG folder | workers for {TARGET_FPS} frames/s |",
        "|---|---|---|---|",
    ]
    for name, r in results.items():
        lines.append(
            f"| {labels[name]} | {r['frames_per_s']:.0f} | {r['vs_png']:.1f}x | "
            f"{r['workers_for_400_fps']} |"
        )
    return lines


if __name__ == "__main__":
    main()
