"""Does the pipeline learn on the embedded simulator? Record, split, train ``tiny`` through all four
stages on CPU, evaluate on Town02, and compare with trivial baselines.

    python benchmarks/learning.py [--clips 6] [--out /tmp/learning]

Writes benchmarks/results/learning.json and docs/learning.md (the evaluation table, the baselines,
and whether stage 4 beats the frame-by-frame models on temporal consistency).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402

import argparse  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402

from carla_capture.config import CaptureConfig  # noqa: E402
from carla_capture.record import record  # noqa: E402
from carla_capture.split import build_manifest, load_splits, write_manifest  # noqa: E402
from train.evaluate import evaluate_run, to_markdown  # noqa: E402
from train.run import resolve_config, train  # noqa: E402

TOWNS = {"Town01": "train", "Town03": "train", "Town04": "train", "Town05": "train", "Town06": "train", "Town07": "train",
         "Town10HD": "val", "Town02": "test"}
DOC = Path(__file__).resolve().parents[1] / "docs" / "learning.md"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=6, help="Clips per train town (val and test get 4).")
    parser.add_argument("--out", type=Path, default=Path("/tmp/carla-temporal-learning"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    data, run = args.out / "data", args.out / "run"
    start = time.perf_counter()
    for town, split in TOWNS.items():
        record(CaptureConfig(backend="synthetic", town=town, clips=args.clips if split == "train" else 4, out=data, seed=1))
    write_manifest(data, build_manifest(data, load_splits()))
    recorded = time.perf_counter()
    cfg = resolve_config("tiny", {"data": data, "out": run}, None, ['device="cpu"'])
    train(cfg, "all", resume=True)
    trained = time.perf_counter()
    report = evaluate_run(run, "test", data)
    done = time.perf_counter()
    frame, temporal = report["models"]["frame_by_frame"], report["models"]["temporal"]
    base = report["baselines"]
    verdict = {
        "segmentation_beats_majority": temporal["segmentation"]["miou"] > 2 * base["majority_class_miou"],
        "depth_beats_mean": temporal["depth"]["cap_80m"]["abs_rel"] < base["mean_depth_abs_rel_cap_80m"],
        "pose_beats_no_motion": temporal["ego_motion"]["rpe_translation_m"] < base["no_motion"]["rpe_translation_m"],
        "stage4_more_consistent_than_stage1": temporal["temporal"]["label_flip_rate"] < frame["temporal"]["label_flip_rate"],
    }
    minutes = {"record": (recorded - start) / 60, "train": (trained - recorded) / 60, "eval": (done - trained) / 60}
    out = write_result("learning", {"command": "python benchmarks/learning.py --clips %d" % args.clips, "minutes": minutes,
                                    "verdict": verdict, "report": report})
    table = to_markdown(report).replace(f"# Evaluation of {run}", "# Evaluation of the tiny run")
    DOC.write_text(
        "# Learning on the embedded simulator\n\n"
        f"Command: `python benchmarks/learning.py --clips {args.clips}` (on this project's 2-core CPU machine, no GPU).\n\n"
        f"Data: synthetic clips of the six train towns ({args.clips} each), Town10HD (4, validation) and Town02 (4, test), "
        "20 frames at 512x256, trained at 128x256. Preset `tiny`, its schedule (epochs 4, 4, 4, 3; see `train/schedules.py`).\n\n"
        f"Time: recording {minutes['record']:.1f} min, training {minutes['train']:.1f} min, evaluation {minutes['eval']:.1f} min.\n\n"
        "Verdict: " + ", ".join(f"{k.replace('_', ' ')}: {'yes' if v else 'no'}" for k, v in verdict.items()) + ".\n\n"
        + table.replace("# Evaluation", "## Evaluation") + f"\nRaw numbers: `benchmarks/results/{out.name}`.\n")
    print(table)
    print(verdict, minutes)


if __name__ == "__main__":
    main()
