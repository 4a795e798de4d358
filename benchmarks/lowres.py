"""The lowres preset (UNet) on a CPU: stage-1 training and streaming inference, frames/s.

Measured at 64x128 and 128x256, beside the tiny preset (MobileNetV3-Small) measured in the same
run as the baseline. Training: one Adam step of stage 1 (cross-entropy) on a batch of 8 random
frames; inference: the segmentation model alone, and the full temporal pipeline's ``step`` (what
``train predict --video`` and a live view run per frame). Median of 5 timed repeats after a
warm-up, wall time and process CPU time, with torch on 2 threads. Writes
``benchmarks/results/lowres.json``.

    python benchmarks/lowres.py
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import argparse  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from common import median_time, write_result  # noqa: E402

from models import MODELS, PRESETS  # noqa: E402

SIZES = ((64, 128), (128, 256))
BATCH = 8


def _train_fps(preset: str, size: tuple[int, int], repeats: int) -> dict[str, float]:
    torch.manual_seed(0)
    net = MODELS["segmentation"](PRESETS[preset]).train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    x = torch.randn(BATCH, 3, *size)
    y = torch.randint(0, 22, (BATCH, *size))

    def step() -> None:
        loss = F.cross_entropy(net(x)["seg_logits"], y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()
    wall = median_time(step, repeats)
    cpu = median_time(step, repeats, time.process_time)
    return {"frames_per_s": BATCH / wall, "cpu_s_per_frame": cpu / BATCH}


@torch.no_grad()
def _infer_fps(preset: str, size: tuple[int, int], repeats: int) -> dict[str, float]:
    torch.manual_seed(0)
    cfg = PRESETS[preset]
    seg = MODELS["segmentation"](cfg).eval()
    pipe = MODELS["pipeline"](cfg).eval()
    frame = torch.randn(1, 3, *size)
    h, w = size
    K = torch.tensor([[w / 2, 0, w / 2], [0, w / 2, h / 2], [0, 0, 1.0]])[None]
    state = pipe.init_state(1, h, w)
    _, state = pipe.step(frame, state, K)  # the first frame has no memory to align

    def run_pipe() -> None:
        pipe.step(frame, state, K)

    def run_seg() -> None:
        seg(frame)

    run_seg()
    run_pipe()
    out = {}
    for name, fn in (("segmentation", run_seg), ("pipeline", run_pipe)):
        out[f"{name}_frames_per_s"] = 1 / median_time(fn, repeats)
        out[f"{name}_cpu_s_per_frame"] = median_time(fn, repeats, time.process_time)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(2)
    rows = []
    for preset in ("tiny", "lowres"):
        for size in SIZES:
            row = {
                "preset": preset,
                "size": list(size),
                "train_stage1": _train_fps(preset, size, args.repeats),
                "inference": _infer_fps(preset, size, args.repeats),
            }
            rows.append(row)
            print(row)
    path = write_result(
        "lowres",
        {
            "command": "python benchmarks/lowres.py",
            "threads": 2,
            "batch": BATCH,
            "note": "median of repeats; wall-time frames/s are pessimistic when other jobs share "
            "the machine (machine.load_average_1min above 2); cpu_s_per_frame is this process's "
            "CPU time (both threads) per frame",
            "results": rows,
        },
    )
    print(f"-> {path}")


if __name__ == "__main__":
    main()
