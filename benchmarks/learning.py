"""Does the temporal model earn its place? Record synthetic clips, train ``tiny`` on CPU, and
compare at equal total epochs, on the test town (Town02), clean and under per-frame corruptions:

- (0) the frame-by-frame models after stages 1-3 (what stage 4 starts from);
- (a) the frame-by-frame models trained as long as stages 1 + 4 together (stage 1 for e1 + e4
  epochs, the stage-2 depth decoder for e2 + e4 epochs);
- (b) stage 4 with the memory at fixed pixel positions (no alignment);
- (c) stage 4 with the memory aligned by the estimated pose and depth (the default);
- (d) stage 4 with the memory aligned by the ground-truth pose and depth (an oracle).

(b), (c) and (d) share stages 1-3 and differ only in ``model.memory_alignment``.

    python benchmarks/learning.py [--clips 4] [--out /tmp/carla-temporal-learning]

Writes benchmarks/results/learning.json and all of docs/learning.md (tables and verdicts come from
the numbers of this run).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import argparse  # noqa: E402
import shutil  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402
from common import load_average, split_of_towns, write_result  # noqa: E402

from carla_capture.config import CaptureConfig  # noqa: E402
from carla_capture.record import record  # noqa: E402
from carla_capture.split import build_manifest, load_splits, write_manifest  # noqa: E402
from dataset.labels import load_label_map  # noqa: E402
from train.evaluate import (  # noqa: E402
    baseline_lines,
    comparison_table,
    score_models,
    whole_clips,
)
from train.perturb import Perturbation  # noqa: E402
from train.run import resolve_config, train  # noqa: E402
from train.run_folder import FrameModel, load_run, temporal_model  # noqa: E402
from train.temporal import HEADLINE, LOWER_IS_BETTER  # noqa: E402

TOWNS = split_of_towns()
DOC = Path(__file__).resolve().parents[1] / "docs" / "learning.md"
COMMON = ['device="cpu"', "tensorboard=false"]
VARIANTS = {"b": "none", "c": "estimated", "d": "ground_truth"}
LABELS = {
    "0": "(0) stages 1-3, frame by frame",
    "a": "(a) frame by frame, trained as long",
    "b": "(b) memory, no alignment",
    "c": "(c) memory aligned, estimated",
    "d": "(d) memory aligned, ground truth",
}
NAMES = {
    "mean_consistent_accuracy": "mCA",
    "consistent_depth_accuracy": "consistent depth accuracy",
    "depth_log_change": "depth log change",
}


class Clock:
    """Wall time and this process's CPU time (all threads) per phase, in minutes."""

    def __init__(self) -> None:
        self.wall, self.cpu, self.minutes = time.perf_counter(), time.process_time(), {}

    def lap(self, name: str) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        self.minutes[name] = {"wall": (wall - self.wall) / 60, "cpu": (cpu - self.cpu) / 60}
        self.wall, self.cpu = wall, cpu


def copy_stages(src: Path, dst: Path, stages: tuple[str, ...]) -> None:
    """Start another run folder from ``src``'s checkpoints of ``stages``."""
    for stage in stages:
        (dst / stage).mkdir(parents=True, exist_ok=True)
        for name in ("best.pt", "last.pt"):
            shutil.copy2(src / stage / name, dst / stage / name)


def train_all(data: Path, out: Path, clock: Clock) -> dict[str, Path]:
    """The five runs; returns their folders."""
    runs = {k: out / f"run-{k}" for k in ("a", "b", "c", "d")}
    cfg = resolve_config("tiny", {"data": data, "out": runs["c"]}, None, COMMON)
    for stage in ("stage1", "stage2", "stage3"):
        train(cfg, stage, resume=True)
    clock.lap("train stages 1-3")
    train(cfg, "stage4", resume=True)
    clock.lap("train stage 4 (c)")
    for key in ("b", "d"):
        copy_stages(runs["c"], runs[key], ("stage1", "stage2", "stage3"))
        variant = resolve_config(
            "tiny",
            {"data": data, "out": runs[key]},
            None,
            [*COMMON, f'model.memory_alignment="{VARIANTS[key]}"'],
        )
        train(variant, "stage4", resume=True)
        clock.lap(f"train stage 4 ({key})")
    e = {name: cfg.stages[name].epochs for name in cfg.stages}
    if not (runs["a"] / "stage1" / "best.pt").exists():
        copy_stages(runs["c"], runs["a"], ("stage1", "stage2", "stage3"))
    longer = resolve_config(
        "tiny",
        {"data": data, "out": runs["a"]},
        None,
        [
            *COMMON,
            f"stages.stage1.epochs={e['stage1'] + e['stage4']}",
            f"stages.stage2.epochs={e['stage2'] + e['stage4']}",
        ],
    )
    train(longer, "stage1", resume=True)
    train(longer, "stage2", resume=True)
    clock.lap("train (a): stages 1 and 2 continued")
    return runs


def stage4_selection(runs: dict[str, Path]) -> dict[str, dict]:
    """Per memory variant: the epoch its stage-4 ``best.pt`` holds (-1: the starting state, the
    identity) and the validation losses of every epoch."""
    out = {}
    for key in VARIANTS:
        state = torch.load(runs[key] / "stage4" / "best.pt", map_location="cpu", weights_only=True)
        last = torch.load(runs[key] / "stage4" / "last.pt", map_location="cpu", weights_only=True)
        out[key] = {
            "kept_epoch": state["epoch"],
            "val": {h["epoch"]: h["val"] for h in last["history"]},
        }
    return out


def selection_lines(selection: dict[str, dict]) -> list[str]:
    """One line per variant: validation losses per stage-4 epoch and the epoch kept."""
    lines = []
    for key, sel in selection.items():
        epochs = "; ".join(
            f"{'start' if int(e) < 0 else 'epoch ' + str(int(e) + 1)}: CE {v['ce']:.3f}, "
            f"depth {v['depth']:.3f}"
            for e, v in sel["val"].items()
        )
        kept = "the start (identity)" if sel["kept_epoch"] < 0 else f"epoch {sel['kept_epoch'] + 1}"
        lines.append(f"- {LABELS[key]}: kept {kept}. Validation losses: {epochs}.")
    return lines


def evaluate_all(runs: dict[str, Path], data: Path, clock: Clock) -> dict:
    """Every variant on the test split, clean and perturbed, with baselines."""
    cfg = resolve_config("tiny", {"data": data, "out": runs["c"]}, None, COMMON)
    ds = whole_clips(cfg, data, "test")
    names = load_label_map(cfg.data.label_map).class_names
    models = {"0": FrameModel(cfg, runs["c"]), "a": FrameModel(cfg, runs["a"])}
    for key in VARIANTS:
        models[key] = temporal_model(load_run(runs[key]), runs[key])
    perturbation = Perturbation()
    result = {
        "windows": len(ds),
        "frames_per_window": ds.window,
        "frame_size": list(cfg.frame_size()),
        "epochs": {k: v.epochs for k, v in cfg.stages.items()},
        "perturbation": perturbation.model_dump(),
        "clean": score_models(models, ds, names),
        "perturbed": score_models(models, ds, names, "cpu", perturbation),
        "stage4_selection": stage4_selection(runs),
    }
    clock.lap("evaluate")
    return result


def _better(key: str, x: float, y: float) -> bool:
    return x < y if key in LOWER_IS_BETTER else x > y


def verdicts(result: dict) -> dict[str, bool]:
    """Yes / no answers computed from the numbers."""
    out = {}
    for condition in ("clean", "perturbed"):
        m = result[condition]["models"]
        t = lambda k, f, m=m: m[k]["temporal"][f]  # noqa: E731
        out[f"{condition}: (c) beats (a) on every headline temporal figure"] = all(
            _better(f, t("c", f), t("a", f)) for f in HEADLINE
        )
        out[f"{condition}: (c) mIoU no worse than (a)"] = (
            m["c"]["segmentation"]["miou"] >= m["a"]["segmentation"]["miou"]
        )
        out[f"{condition}: (c) depth AbsRel no worse than (a)"] = (
            m["c"]["depth"]["cap_80m"]["abs_rel"] <= m["a"]["depth"]["cap_80m"]["abs_rel"]
        )
        out[f"{condition}: (c) beats (b) on every headline temporal figure"] = all(
            _better(f, t("c", f), t("b", f)) for f in HEADLINE
        )
        out[f"{condition}: (d) beats (b) on every headline temporal figure"] = all(
            _better(f, t("d", f), t("b", f)) for f in HEADLINE
        )
        trivial = result[condition]["baselines"]["temporal"].values()
        out[f"{condition}: every model beats both constant baselines on every headline figure"] = (
            all(_better(f, m[k]["temporal"][f], b[f]) for k in m for b in trivial for f in HEADLINE)
        )
    m = result["clean"]["models"]
    out["stage 4 depth (c) no worse than stage 2 depth (0) on AbsRel"] = (
        m["c"]["depth"]["cap_80m"]["abs_rel"] <= m["0"]["depth"]["cap_80m"]["abs_rel"]
    )
    base = result["clean"]["baselines"]
    out["segmentation (c) beats 2x the majority-class mIoU"] = (
        m["c"]["segmentation"]["miou"] > 2 * base["majority_class_miou"]
    )
    out["depth (c) beats the mean-depth AbsRel"] = (
        m["c"]["depth"]["cap_80m"]["abs_rel"] < base["mean_depth_abs_rel_cap_80m"]
    )
    return out


def differences(result: dict) -> list[str]:
    """Sentences comparing (c) with (a) and (b) on each headline figure, from the numbers."""
    lines = []
    for condition in ("clean", "perturbed"):
        m = result[condition]["models"]
        for other in ("a", "b"):
            parts = []
            for f in HEADLINE:
                c, o = m["c"]["temporal"][f], m[other]["temporal"][f]
                verdict = "better" if _better(f, c, o) else "not better"
                parts.append(f"{NAMES[f]} {c:.4f} vs {o:.4f} ({verdict})")
            lines.append(f"- {condition}, (c) against ({other}): " + "; ".join(parts) + ".")
    return lines


def write_doc(
    args: argparse.Namespace, result: dict, verdict: dict[str, bool], minutes: dict, out_name: str
) -> None:
    total_wall = sum(v["wall"] for v in minutes.values())
    total_cpu = sum(v["cpu"] for v in minutes.values())
    clean = result["clean"]
    depth_pixels = clean["models"]["c"]["depth"]["cap_1000m"]["pixels"]
    frame_pixels = (
        result["windows"]
        * result["frames_per_window"]
        * result["frame_size"][0]
        * result["frame_size"][1]
    )
    sets = "".join(f" --set {o}" for o in args.overrides)
    lines = [
        "# Learning on the embedded simulator: does the temporal model earn its place?",
        "",
        f"Generated by `python benchmarks/learning.py --clips {args.clips}{sets}`; every number, "
        f"table and verdict below comes from that run (`benchmarks/results/{out_name}`). Do not "
        "edit by hand.",
        "",
        f"Data: synthetic clips of the six train towns ({args.clips} each), Town10HD (4, "
        "validation) and Town02 (4, test), 20 frames at 512x256, trained and evaluated at "
        f"{result['frame_size'][0]}x{result['frame_size'][1]}. Preset `tiny` from scratch (no "
        f"pretrained weights), epochs per stage {result['epochs']}.",
        "",
        "Variants at equal total epochs: "
        + "; ".join(f"{v}" for v in LABELS.values())
        + ". (a) trains stage 1 for "
        "e1 + e4 epochs and the stage-2 depth decoder for e2 + e4 epochs; (b)-(d) freeze "
        "backbone, segmentation head and ego-motion in stage 4 and train the memory and the depth "
        "decoder for e4 epochs.",
        "",
        "Stage 4 validates its starting state (the identity: stage 1 + 2 quality) and keeps it "
        "unless an epoch has a lower validation loss (CE + 0.5 depth) with neither loss worse "
        "than at the start (`train/engine.py`); the kept epoch of each variant:",
        "",
        *selection_lines(result["stage4_selection"]),
        "",
        f"Time on the project's 2-core CPU machine (1-minute load average at the end: "
        f"{load_average()}; above 2, other jobs shared the machine and inflated wall time): "
        f"{total_wall:.1f} min wall, {total_cpu:.1f} min CPU time of this process. "
        "Per phase (wall / CPU): "
        + "; ".join(f"{k} {v['wall']:.1f} / {v['cpu']:.1f}" for k, v in minutes.items())
        + ".",
        "",
        "## Verdicts (computed)",
        "",
        *[f"- {k}: **{'yes' if v else 'no'}**" for k, v in verdict.items()],
        "",
        *differences(result),
        "",
        "## Clean test clips",
        "",
        *comparison_table({LABELS[k]: v for k, v in clean["models"].items()}, clean),
        "",
        "## Under per-frame corruptions",
        "",
        f"Independent per frame: {result['perturbation']} (see `train/perturb.py`).",
        "",
        *comparison_table(
            {LABELS[k]: v for k, v in result["perturbed"]["models"].items()}, result["perturbed"]
        ),
        "",
        "## Baselines",
        "",
        *baseline_lines(clean["baselines"]),
        "",
        "## How to read this",
        "",
        "- **Bold** rows are the headline temporal figures: they need correctness, and the "
        "constant-class / zero-depth / clip-median-depth columns show what a trivial prediction "
        "scores on them. The other temporal rows are won by a constant (their label says by "
        "which), so read them only beside the headline rows.",
        "- Correspondences between frames come from the ground-truth depth and poses (static "
        "classes, in view, unoccluded), so the camera's motion does not count as inconsistency "
        "(`train/temporal.py`).",
        "- Depth figures count only pixels with valid depth (the sky never is, at any size): the "
        f"'all valid' AbsRel of (c) counts {depth_pixels:,} of {frame_pixels:,} pixels of the "
        "test frames.",
        "- Pose rows of (a) read stage 3's ego-motion on a backbone trained further than the one "
        "it was trained on; pose is not part of this comparison.",
        "- This is a CPU-sized run of a small model trained from scratch; it says whether the "
        "mechanism works at this scale, not what the `paper` preset reaches on a GPU.",
        "",
    ]
    DOC.write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--clips", type=int, default=4, help="Clips per train town (val and test get 4)."
    )
    parser.add_argument("--out", type=Path, default=Path("/tmp/carla-temporal-learning"))
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="Extra train config override (e.g. for a quick check: stages.stage1.max_steps=1).",
    )
    args = parser.parse_args()
    COMMON.extend(args.overrides)
    torch.set_num_threads(2)
    data = args.out / "data"
    clock = Clock()
    if not (data / "split.json").exists():
        for town, split in TOWNS.items():
            record(
                CaptureConfig(
                    backend="synthetic",
                    town=town,
                    clips=args.clips if split == "train" else 4,
                    out=data,
                    seed=1,
                )
            )
        write_manifest(data, build_manifest(data, load_splits()))
    clock.lap("record")
    runs = train_all(data, args.out, clock)
    result = evaluate_all(runs, data, clock)
    verdict = verdicts(result)
    out = write_result(
        "learning",
        {
            "command": f"python benchmarks/learning.py --clips {args.clips}"
            + "".join(f" --set {o}" for o in args.overrides),
            "minutes": clock.minutes,
            "verdict": verdict,
            "variants": LABELS,
            "result": result,
        },
    )
    write_doc(args, result, verdict, clock.minutes, out.name)
    for k, v in verdict.items():
        print(f"{k}: {v}")


if __name__ == "__main__":
    main()
