"""Training-loader cost: CPU time per frame in a worker, and frames/s that 2 workers deliver,
for augmentation in the workers (``data.augment_on="loader"``) and on the training device
(``"device"``: workers decode and draw, the GPU augments), beside the decode floor.

    python benchmarks/loader.py [--clips 4] [--rounds 7] [--batches 72]

Paired rounds in one run: every round measures each path once, in turn, so a change in the
machine's load hits all of them alike; figures are medians over rounds. Per frame: CPU time
(``time.process_time``, one thread) of a worker's work for 6-frame windows at 256x512: decoding
the window through ``ShardReader`` (the floor), building the item and collating a batch of 4.
2 workers: wall-clock frames/s of a ``DataLoader`` with 2 persistent workers (batch 4) whose
batches the main process only receives and copies out, over an epoch of 72 batches (the windows
round again), and the workers' CPU per frame there (IPC included).
The machine's load and the CPU share other jobs took during the run are recorded beside them.

Writes benchmarks/results/loader.json and the table of docs/dataset.md. The goal (issue 28): with
augmentation on the device at most 1.2 ms of worker CPU per frame, so that 2 workers deliver at
least 1,600 frames/s.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import load_average, pin_one_core, write_doc_section, write_result  # noqa: E402

pin_one_core()

import argparse  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from storage import write_pngs  # noqa: E402
from torch.utils.data import DataLoader, default_collate  # noqa: E402

from carla_capture.config import CaptureConfig  # noqa: E402
from carla_capture.record import record  # noqa: E402
from carla_capture.split import build_manifest, load_splits, write_manifest  # noqa: E402
from clipcore.normalize import normalize  # noqa: E402
from clipcore.shards import ShardReader  # noqa: E402
from dataset import AugmentConfig, ClipWindows  # noqa: E402
from dataset.handover import SharedBatches, ring_slots  # noqa: E402
from dataset.labels import load_label_map  # noqa: E402
from train.engine import PREFETCH  # noqa: E402

torch.set_num_threads(1)
cv2.setNumThreads(1)
WINDOW = 6
BATCH = 4
WORKERS = 2
GOAL_MS = 1.2
GOAL_FPS = 1600
LABELS = {
    "decode_floor": "decode only (`ShardReader.read_arrays`), the floor",
    "loader_eval": "shards, no augmentation (validation items)",
    "loader_augment": 'augmentation in the worker (`augment_on="loader"`)',
    "device_augment": 'augmentation on the device (`augment_on="device"`): worker part',
    "device_augment_shared": "the same, collated into new shared memory and pickled as a "
    "worker hands a batch over (PyTorch's default collation)",
    "device_augment_reused": "the same, images read straight into the worker's reused shared "
    "buffers, the rest collated into its reused arenas, pickled (`dataset/handover.py`, a CUDA "
    "run's loader)",
    "png_eval": "PNG folder (CARLA `save_to_disk` layout), no augmentation",
}


#: The 2-worker loaders' rows.
TWO_LABELS = {
    "loader_augment": 'augmentation in the workers (`augment_on="loader"`)',
    "device_augment": 'augmentation on the device (`augment_on="device"`), PyTorch\'s default '
    "collation",
    "device_augment_reused": "the same, images read straight into reused shared buffers and "
    "handed over through them (`dataset/handover.py`, a CUDA run's loader)",
}


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


def batched(make: Callable[[int], object], n: int) -> Callable[[], object]:
    """A pass over ``n`` items made by ``make``, collated in batches of :data:`BATCH`."""
    return lambda: [
        default_collate([make(i) for i in range(s, min(s + BATCH, n))]) for s in range(0, n, BATCH)
    ]


def shared_batches(
    ds: ClipWindows, n: int, collate: Callable[[list], object] = default_collate
) -> Callable[[], object]:
    """A pass as a worker makes it: batches fetched as a loader fetches them
    (``__getitems__``), collated by ``collate`` in a worker's context (into shared memory) and
    pickled for the pipe."""
    import io
    from multiprocessing.reduction import ForkingPickler

    from torch.utils.data._utils import worker

    def run() -> None:
        worker._worker_info = worker.WorkerInfo(id=0, num_workers=1, seed=0, dataset=None)
        try:
            for s in range(0, n, BATCH):
                batch = collate(ds.__getitems__(list(range(s, min(s + BATCH, n)))))
                ForkingPickler(io.BytesIO()).dump(batch)
        finally:
            worker._worker_info = None

    return run


def cpu_seconds(fn: Callable[[], object]) -> float:
    """CPU time of this process (one thread) spent in ``fn()``."""
    start = time.process_time()
    fn()
    return time.process_time() - start


def fresh_page_us(megabytes: int = 64) -> float:
    """CPU microseconds to fault in (and zero) one fresh 4 KiB page of memory on this machine.

    A batch handed over through shared memory lands in fresh pages, so this prices the hand-over.
    """
    import mmap

    start = time.process_time()
    for _ in range(3):
        with mmap.mmap(-1, megabytes << 20) as area:
            view = np.frombuffer(area, np.uint8)
            view[::4096] = 1
            del view
    return 1e6 * (time.process_time() - start) / (3 * (megabytes << 20) // 4096)


def busy_jiffies() -> tuple[int, int]:
    """(busy, total) CPU jiffies of the whole machine since boot (/proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def worker_cpu(loader: DataLoader) -> float:
    """CPU seconds the loader's (persistent) workers have used so far (/proc/<pid>/stat)."""
    total = 0
    for worker in loader._iterator._workers:  # noqa: SLF001 - the worker processes' ids
        fields = Path(f"/proc/{worker.pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


class CopyOut:
    """What the pin-memory thread does with each batch on CUDA: copy its tensors into buffers
    it reuses (PyTorch's caching host allocator; here plain memory, as this machine has no GPU)."""

    def __init__(self) -> None:
        self.buffers: dict[tuple, torch.Tensor] = {}

    def __call__(self, batch: dict) -> None:
        for key, value in batch.items():
            if isinstance(value, torch.Tensor):
                slot = (key, value.shape, value.dtype)
                if slot not in self.buffers:
                    self.buffers[slot] = torch.empty_like(value)
                self.buffers[slot].copy_(value)


class Cycle:
    """A sampler of ``length`` window indices, going round the dataset's ``n`` in order."""

    def __init__(self, n: int, length: int) -> None:
        self.n, self.length = n, length

    def __iter__(self):  # noqa: ANN204
        return iter([i % self.n for i in range(self.length)])

    def __len__(self) -> int:
        return self.length


def delivered(ds: ClipWindows, batches: int, reuse: bool) -> tuple[float, float, float]:
    """2 workers: (frames/s the main process receives and copies out, the workers' and the main
    process's CPU ms per frame).

    Over one epoch of ``batches`` batches (the dataset's windows in turn, round again), timed
    from its start to its last batch, after a first epoch that starts the workers, opens the
    files and fills every worker's rings of shared buffers (at least workers x slots batches:
    a training run allocates them once). An epoch as long as a real dataset's: the start and the
    end of an epoch, where a worker waits for the other's last batch, weigh little. ``reuse``:
    the workers hand batches over through their reused arenas, as ``train.engine.make_loader``
    builds a CUDA run's loader; else PyTorch's default collation.
    """
    extra = {"collate_fn": SharedBatches(ring_slots(PREFETCH))} if reuse else {}
    sampler = Cycle(len(ds), max(len(ds), WORKERS * ring_slots(PREFETCH) * BATCH))
    loader = DataLoader(
        ds,
        batch_size=BATCH,
        sampler=sampler,
        num_workers=WORKERS,
        persistent_workers=True,
        prefetch_factor=PREFETCH,
        **extra,
    )
    copy_out = CopyOut()
    for batch in loader:
        copy_out(batch)
    sampler.length = batches * BATCH
    before, frames, start = worker_cpu(loader), 0, time.perf_counter()
    main0 = time.process_time()
    for batch in loader:
        copy_out(batch)
        frames += int(np.prod(batch["frames"].shape))
    seconds = time.perf_counter() - start
    main = time.process_time() - main0
    cpu = worker_cpu(loader) - before
    return frames / seconds, 1000 * cpu / frames, 1000 * main / frames


def record_data(tmp: Path, clips: int) -> Path:
    """Synthetic Town03 clips at 256x512 with their split manifest."""
    data = tmp / "data"
    record(CaptureConfig(backend="synthetic", town="Town03", clips=clips, out=data))
    write_manifest(data, build_manifest(data, load_splits()))
    return data


def measure(data: Path, tmp: Path, rounds: int, batches: int) -> dict:
    """Per-frame CPU of every path and 2 workers' frames/s, in paired rounds."""
    kw = {"window": WINDOW, "stride": WINDOW}
    plain = ClipWindows(data, "train", **kw)
    augmented = ClipWindows(data, "train", augment=AugmentConfig(), **kw)
    compact = ClipWindows(data, "train", augment=AugmentConfig(), augment_on="device", **kw)
    shared = ClipWindows(data, "train", augment=AugmentConfig(), augment_on="device", **kw)
    shared.share_batches(ring_slots(PREFETCH))  # a CUDA run's: images read into shared memory
    png = tmp / "png"
    png.mkdir()
    clips = {}
    for rel, cid, _, _ in plain.clips:
        with ShardReader(data / rel) as reader:
            clips[cid] = reader.read_clip(cid)
    write_pngs(png, list(clips.values()))
    label_map = load_label_map("carla22")
    windows = [
        (plain.clips[c][1], [f.frame for f in clips[plain.clips[c][1]].frames[s : s + WINDOW]])
        for c, s in plain.index
    ]
    n = len(plain)

    def decode(i: int) -> dict:
        clip, start = plain.index[i]
        rel, clip_id, _, _ = plain.clips[clip]
        return plain._read(rel, clip_id, start)

    cpu_runs = {
        "decode_floor": lambda: [decode(i) for i in range(n)],
        "loader_eval": batched(plain.__getitem__, n),
        "loader_augment": batched(augmented.__getitem__, n),
        "device_augment": batched(compact.__getitem__, n),
        "device_augment_shared": shared_batches(compact, n),
        "device_augment_reused": shared_batches(shared, n, SharedBatches(ring_slots(PREFETCH))),
        "png_eval": lambda: [png_window(png, cid, frames, label_map) for cid, frames in windows],
    }
    for fn in [*cpu_runs.values()] * 2:  # warm: files open, caches, noise bank and rings filled
        fn()
    cpu: dict[str, list[float]] = {name: [] for name in cpu_runs}
    two = {  # the 2-worker paths: dataset, reused arenas
        "loader_augment": (augmented, False),
        "device_augment": (compact, False),
        "device_augment_reused": (shared, True),
    }
    fps: dict[str, list[float]] = {name: [] for name in two}
    worker_ms: dict[str, list[float]] = {name: [] for name in two}
    main_ms: dict[str, list[float]] = {name: [] for name in two}
    busy0, wall0, ours0 = busy_jiffies(), time.perf_counter(), os.times()
    loads = [load_average()]
    names = list(cpu_runs)
    for k in range(rounds):
        for name in names[k % len(names) :] + names[: k % len(names)]:  # each first in turn
            cpu[name].append(1000 * cpu_seconds(cpu_runs[name]) / (n * WINDOW))
        for name, (ds, reuse) in two.items():
            frames_per_s, ms, main = delivered(ds, batches, reuse)
            fps[name].append(frames_per_s)
            worker_ms[name].append(ms)
            main_ms[name].append(main)
        loads.append(load_average())
    busy1, ours1 = busy_jiffies(), os.times()
    tick = os.sysconf("SC_CLK_TCK")
    ours = sum(ours1[:4]) - sum(ours0[:4])
    machine_busy = (busy1[0] - busy0[0]) / tick
    capacity = (busy1[1] - busy0[1]) / tick
    return {
        "windows": n,
        "epoch_batches": batches,
        "cpu_ms_per_frame": {k: _summary(v) for k, v in cpu.items()},
        "two_workers": {
            name: {
                "frames_per_s": _summary(fps[name]),
                "worker_cpu_ms_per_frame": _summary(worker_ms[name]),
                "main_cpu_ms_per_frame": _summary(main_ms[name]),
            }
            for name in fps
        },
        "fresh_page_us": fresh_page_us(),
        "load": {
            "load_average_1min": loads,
            "wall_s": time.perf_counter() - wall0,
            "machine_cpu_busy_share": machine_busy / capacity,
            "other_jobs_cpu_share": max(0.0, machine_busy - ours) / capacity,
        },
    }


def _summary(values: list[float]) -> dict:
    """Median, low and high of one figure's rounds, and every round's value."""
    return {
        "median": statistics.median(values),
        "low": min(values),
        "high": max(values),
        "rounds": values,
    }


def main() -> None:
    """Record, measure, write the JSON and the doc table."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clips", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument(
        "--batches", type=int, default=72, help="batches of the epoch each 2-worker figure times"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = record_data(Path(tmp), args.clips)
        results = measure(data, Path(tmp), args.rounds, args.batches)
    results["goal"] = goal(results)
    out = write_result(
        "loader",
        {
            "what": f"{WINDOW}-frame windows at 256x512 (H x W), batches of {BATCH}, one thread "
            f"per process; medians of {args.rounds} paired rounds",
            **results,
        },
    )
    for name, r in results["cpu_ms_per_frame"].items():
        print(f"{name:<16} {r['median']:6.2f} ms CPU/frame ({r['low']:.2f}-{r['high']:.2f})")
    for name, r in results["two_workers"].items():
        print(
            f"2 workers, {name:<16} {r['frames_per_s']['median']:7.0f} frames/s, "
            f"{r['worker_cpu_ms_per_frame']['median']:.2f} ms worker CPU/frame"
        )
    print(f"load: {results['load']}")
    print(f"-> {out}")
    print(f"-> {write_doc_section('dataset.md', 'loader-table', doc_lines(results))}")


def goal(results: dict) -> dict:
    """Issue 28's goal on the path a CUDA run takes (reused arenas), hand-over included."""
    reused_ms = results["cpu_ms_per_frame"]["device_augment_reused"]["median"]
    two = results["two_workers"]["device_augment_reused"]
    return {
        "worker_cpu_ms_per_frame_at_most": GOAL_MS,
        "two_workers_frames_per_s_at_least": GOAL_FPS,
        "cpu_met": reused_ms <= GOAL_MS,
        "two_workers_cpu_met": two["worker_cpu_ms_per_frame"]["median"] <= GOAL_MS,
        "two_workers_met": two["frames_per_s"]["median"] >= GOAL_FPS,
        "two_workers_at_the_measured_cpu": WORKERS * 1000 / reused_ms,
    }


def doc_lines(results: dict) -> list[str]:
    """The cost table of docs/dataset.md."""
    cpu, two, load = results["cpu_ms_per_frame"], results["two_workers"], results["load"]
    floor = cpu["decode_floor"]["median"]
    lines = [
        f"{WINDOW}-frame windows at 256x512, one thread per process, medians of paired rounds "
        "(`python benchmarks/loader.py`, `benchmarks/results/loader.json`; the machine's load "
        f"average {min(load['load_average_1min']):.1f}-{max(load['load_average_1min']):.1f} on "
        f"its {os.cpu_count()} cores, other jobs took {100 * load['other_jobs_cpu_share']:.0f}% "
        "of its CPU during the run):",
        "",
        "| path | CPU per frame in a worker | x the decode floor | frames/s per core |",
        "|---|---|---|---|",
    ]
    for name, r in cpu.items():
        ms = r["median"]
        lines.append(f"| {LABELS[name]} | {ms:.2f} ms | {ms / floor:.1f}x | {1000 / ms:.0f} |")
    lines += [
        "",
        f"{WORKERS} workers (batches of {BATCH}, {PREFETCH} in flight per worker) whose batches "
        "the main process receives and copies out, as the pin-memory thread of a CUDA run does, "
        f"timed over an epoch of {results['epoch_batches']} batches:",
        "",
        "| path | frames/s delivered | worker CPU per frame (IPC included) | main process CPU per "
        "frame |",
        "|---|---|---|---|",
    ]
    for name, r in two.items():
        lines.append(
            f"| {TWO_LABELS[name]} | {r['frames_per_s']['median']:.0f} | "
            f"{r['worker_cpu_ms_per_frame']['median']:.2f} ms | "
            f"{r['main_cpu_ms_per_frame']['median']:.2f} ms |"
        )
    g = results["goal"]
    saved = cpu["device_augment_shared"]["median"] - cpu["device_augment_reused"]["median"]
    lines += [
        "",
        f"Goal (augmentation on the device, the reused arenas of a CUDA run): at most {GOAL_MS} ms "
        f"of worker CPU per frame, hand-over included: {'met' if g['cpu_met'] else 'not met'} "
        f"(in the {WORKERS}-worker loader: {'met' if g['two_workers_cpu_met'] else 'not met'}); "
        f"{WORKERS} workers at least {GOAL_FPS} frames/s: "
        f"{'met' if g['two_workers_met'] else 'not met'} "
        f"({g['two_workers_at_the_measured_cpu']:.0f} frames/s for {WORKERS} free cores at the "
        "measured worker CPU per frame; here the main process shares the 2 cores). PyTorch's "
        "default collation stacks each batch into new shared memory, about 1 MB per frame in "
        f"fresh pages (a fresh page costs {results['fresh_page_us']:.1f} us of CPU on this "
        f"machine); the reused arenas save the worker {saved:.2f} ms per frame.",
    ]
    return lines


if __name__ == "__main__":
    main()
