"""Does the temporal memory earn its place? Record synthetic clips, train ``tiny`` on CPU, and
compare on the test town (Town02), clean and under per-frame corruptions, at equal steps on the
same training windows (stage 4's recipe: per-frame-independent corruption, checkpoint chosen
on clean and corrupted validation):

- (0) the frame-by-frame models after stages 1-3 (what stage 4 starts from);
- (a') ``memory_off``: stage 4 with the memory switched off, the matched control: it trains
  what stage 4 trains besides the memory (the depth decoder) on the same windows, as long;
- (b) ``unaligned``: the memory at fixed pixel positions;
- (c) ``aligned_estimated``: the memory warped by the estimated pose and depth;
- (d) ``aligned_truth``: the memory warped by the true pose and depth (an oracle);
- references that train nothing (``train.pipeline.average``): the frame model's logits (or, when
  the headline fusion is ``image``, the frames it reads) averaged over the clip at one rate
  (chosen on the corrupted validation town), (e) ``average_truth`` aligned by the true pose and
  depth: what blending gains at the frame model's quality; (f) ``average_estimated`` by the
  frame model's own depth and ego-motion and (g) ``average_unaligned`` at fixed pixels: the
  trivial baselines of (c) and (b);

(b)-(d) for the first fusion option in ``--fusions`` (the headline; where the memory fuses:
``scores``, the heads' score and depth maps at stride 4, ``bottleneck``, the backbone's
features, or ``image``, the frames themselves), and (b), (c) for the others; all from the same
stages 1-3, differing only in ``model.memory_fusion`` and ``model.memory_alignment``.

    python benchmarks/learning.py [--clips 4] [--out /tmp/carla-temporal-learning]
    python benchmarks/learning.py --smoke      # every step in a minute, for the tests

Writes benchmarks/results/learning.json (with a ``headline`` block: headline[condition][variant]
[metric] for the first fusion option, the default) and all of docs/learning.md (tables and
verdicts come from the numbers of this run).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import argparse  # noqa: E402
import json  # noqa: E402
import multiprocessing  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402

import torch  # noqa: E402
from alignment import alignment_figures  # noqa: E402
from common import RESULTS, split_of_towns, write_result  # noqa: E402
from learning_doc import goal_checks, write_doc  # noqa: E402

from carla_capture.config import CaptureConfig  # noqa: E402
from carla_capture.record import record  # noqa: E402
from carla_capture.split import build_manifest, load_splits, write_manifest  # noqa: E402
from dataset.config import Perturbation  # noqa: E402
from dataset.labels import load_label_map  # noqa: E402
from train.pipeline.average import RunningAverage, level_of  # noqa: E402
from train.pipeline.evaluate import row_mean_depth, score_models, whole_clips  # noqa: E402
from train.pipeline.run import resolve_config, train  # noqa: E402
from train.pipeline.trained import FrameModel, load_run, temporal_model  # noqa: E402
from train.run_folder import load_checkpoint  # noqa: E402

TOWNS = split_of_towns()
COMMON = ['device="cpu"', "tensorboard=false"]
#: The benchmark's schedule (CPU-sized): stage 1 longer than the tiny preset's, stage 4 capped
#: (8 epochs instead of 5 changed no test figure: docs/training.md).
SCHEDULE = [
    "data.size=[96,192]",
    "stages.stage1.epochs=8",
    "stages.stage4.epochs=5",
    "stages.stage4.max_steps=60",
]
SMOKE = [
    "data.size=[32,64]",
    *(
        f"stages.stage{i}.{k}={v}"
        for i in range(1, 5)
        for k, v in (("epochs", 1), ("max_steps", 1))
    ),
]
ALIGNMENTS = {
    "unaligned": "none",
    "aligned_estimated": "estimated",
    "aligned_truth": "ground_truth",
}
VARIANTS = ("memory_off", *ALIGNMENTS)
#: Fusion options compared by default, the headline's first: the default memory and the
#: previous default (``image`` and ``bottleneck`` too would take the run past 30 minutes on 2
#: cores; ``--fusions image+scores,scores,image,bottleneck`` compares all four).
DEFAULT_FUSIONS = "image+scores,scores"
#: Stage-4 variants trained at once on the 2-core machine, one thread each.
PARALLEL = 2
#: The untrained references: the frame model's logits averaged over the clip, (e) aligned by
#: the truth, (f) by the frame model's estimates, (g) not at all; their rates are tried on the
#: validation town.
AVERAGES = {
    "average_truth": "ground_truth",
    "average_estimated": "estimated",
    "average_unaligned": "none",
}
AVERAGE_RATES = (0.5, 0.6, 0.7, 0.8, 0.9)
HEADLINE_METRICS = {
    "miou": ("segmentation", "miou"),
    "pixel_accuracy": ("segmentation", "pixel_accuracy"),
    "occluded_pixel_accuracy": ("segmentation", "occluded_pixel_accuracy"),
    "abs_rel": ("depth", "cap_80m", "abs_rel"),
    "log_rmse": ("depth", "cap_80m", "log_rmse"),
    "stable_flip_rate": ("temporal", "stable_flip_rate"),
    "mca": ("temporal", "mean_consistent_accuracy"),
}


def cpu_seconds() -> float:
    """CPU seconds of this process (all threads) and of its children that ended."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class Clock:
    """Wall time and CPU time (this process, all threads, and its ended children) per phase,
    in minutes."""

    def __init__(self) -> None:
        self.wall, self.cpu, self.minutes = time.perf_counter(), cpu_seconds(), {}

    def lap(self, name: str) -> None:
        wall, cpu = time.perf_counter(), cpu_seconds()
        self.minutes[name] = {"wall": (wall - self.wall) / 60, "cpu": (cpu - self.cpu) / 60}
        self.wall, self.cpu = wall, cpu


def model_name(variant: str, fusion: str) -> str:
    """A column of the tables: ``memory_off`` or ``<fusion>/<variant>``."""
    return variant if variant == "memory_off" else f"{fusion}/{variant}"


def model_overrides(variant: str, fusion: str) -> list[str]:
    """The ``--set`` values that make a stage-4 variant."""
    if variant == "memory_off":
        return ['model.memory_fusion="off"']
    return [f'model.memory_fusion="{fusion}"', f'model.memory_alignment="{ALIGNMENTS[variant]}"']


def copy_stages(src: Path, dst: Path) -> None:
    """Start another run folder from ``src``'s checkpoints of stages 1-3."""
    for stage in ("stage1", "stage2", "stage3"):
        (dst / stage).mkdir(parents=True, exist_ok=True)
        for name in ("best.pt", "last.pt"):
            shutil.copy2(src / stage / name, dst / stage / name)


def train_all(
    data: Path,
    out: Path,
    fusions: list[str],
    sets: list[str],
    clock: Clock,
    preset: str = "tiny",
    parallel: int = 1,
) -> tuple[dict, dict]:
    """Stages 1-3 once, then stage 4 of every variant from them.

    ``parallel`` > 1: that many variants at a time, each in a process of its own on one thread
    (on a CPU two one-thread runs use 2 cores better than one two-thread run); 1: one after
    another in this process. Returns (name -> run folder, name -> that stage 4's wall and CPU
    minutes).
    """
    base = out / "run-frame"
    cfg = resolve_config(preset, {"data": data, "out": base}, None, sets)
    for stage in ("stage1", "stage2", "stage3"):
        train(cfg, stage, resume=True)
    clock.lap("train stages 1-3")
    runs, jobs = {"frame_by_frame": base}, {}
    for fusion in fusions:
        # the oracle (d) for the default only: (c) against (b) is what every option must show
        variants = VARIANTS if fusion == fusions[0] else ("unaligned", "aligned_estimated")
        for variant in variants:
            name = model_name(variant, fusion)
            if name in runs:
                continue
            runs[name] = out / f"run-{name.replace('/', '-')}"
            copy_stages(base, runs[name])
            jobs[name] = (preset, data, runs[name], [*sets, *model_overrides(variant, fusion)])
    if parallel > 1:  # the slowest first, so that the processes finish close together
        order = sorted(jobs, key=slowest_first)
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(parallel, mp_context=context) as pool:
            done = pool.map(train_stage4, [(*jobs[k], 1) for k in order])
            spent = dict(zip(order, done, strict=True))
        clock.lap(f"train stage 4: {len(jobs)} variants, {parallel} at a time")
    else:
        spent = {name: train_stage4((*job, None)) for name, job in jobs.items()}
        clock.lap(f"train stage 4: {len(jobs)} variants")
    return runs, {name: spent[name] for name in jobs}


def slowest_first(name: str) -> tuple[bool, ...]:
    """Sort key: the slowest stage-4 variants first, as measured on the 2-core machine (one
    thread, two at a time: the memories that fuse the frames, which run the backbone twice and
    back through it, the chain 7.5-9.3 min (benchmarks/results/learning.json), image 6.5-7.5;
    bottleneck 4.9-6.4 (both at 922167a); the scores variants 5.0-5.5, memory_off 3.5)."""
    return (
        name == "memory_off",
        not name.startswith("image+scores/"),
        not name.startswith("image/"),
        not name.startswith("bottleneck/"),
        "aligned_estimated" not in name,
    )


def train_stage4(job: tuple[str, Path, Path, list[str], int | None]) -> dict:
    """Stage 4 of one variant (preset, data, run folder, overrides, threads or None: as set);
    its wall and CPU minutes."""
    preset, data, run, sets, threads = job
    if threads:
        torch.set_num_threads(threads)
    wall, cpu = time.perf_counter(), time.process_time()
    train(resolve_config(preset, {"data": data, "out": run}, None, sets), "stage4", resume=True)
    return {"wall": (time.perf_counter() - wall) / 60, "cpu": (time.process_time() - cpu) / 60}


def stage4_choice(run: Path) -> dict:
    """The epoch stage 4's best.pt holds (0: the start, the identity) and every validated
    epoch's figures."""
    best = load_checkpoint(run / "stage4" / "best.pt")
    last = load_checkpoint(run / "stage4" / "last.pt")
    return {
        "kept_epoch": best["epoch"] + 1,
        "val": {h["epoch"] + 1: h["val"] for h in last["history"] if h["val"]},
    }


def average_rates(
    frame: FrameModel,
    cfg,
    data: Path,
    perturbation: Perturbation,
    device: str = "cpu",
    level: str = "scores",
) -> dict:
    """Per reference of :data:`AVERAGES` (averaging at ``level``): the rate with the highest
    corrupted mIoU on the validation town (the test corruption's strengths), and every tried
    rate's mIoU there."""
    ds = whole_clips(cfg, data, cfg.data.val_split)
    names = load_label_map(cfg.data.label_map).class_names
    refine = cfg.model.pose_refine_iterations
    models = {
        (name, str(r)): RunningAverage(frame, r, alignment, level, refine)
        for name, alignment in AVERAGES.items()
        for r in AVERAGE_RATES
    }
    scored = score_models(models, ds, names, device, perturbation)["models"]
    out = {}
    for name in AVERAGES:
        miou = {r: scored[(n, r)]["segmentation"]["miou"] for n, r in models if n == name}
        out[name] = {"rate": float(max(miou, key=miou.get)), "val_corrupted_miou": miou}
    return out


def evaluate_all(
    runs: dict[str, Path], data: Path, clock: Clock, device: str = "cpu", level: str = "scores"
) -> dict:
    """Every model on the test split, clean and corrupted, with baselines (on ``device``); the
    references average at ``level`` (:func:`~train.pipeline.average.level_of`)."""
    cfg = load_run(runs["frame_by_frame"])
    ds = whole_clips(cfg, data, "test")
    names = load_label_map(cfg.data.label_map).class_names
    frame = FrameModel(cfg, runs["frame_by_frame"])
    perturbation, refine = Perturbation(), cfg.model.pose_refine_iterations
    averages = average_rates(frame, cfg, data, perturbation, device, level)
    models = {
        "frame_by_frame": frame,
        **{k: temporal_model(load_run(v), v) for k, v in runs.items() if k != "frame_by_frame"},
        **{
            name: RunningAverage(frame, averages[name]["rate"], alignment, level, refine)
            for name, alignment in AVERAGES.items()
        },
    }
    row_depth = row_mean_depth(cfg, data)
    result = {
        "windows": len(ds),
        "frames_per_window": ds.window,
        "frame_size": list(cfg.frame_size()),
        "epochs": {k: v.epochs for k, v in cfg.stages.items()},
        "stage4_steps_per_epoch": cfg.stages["stage4"].max_steps,
        "stage4_perturb": cfg.stages["stage4"].perturb.model_dump(),
        "perturbation": perturbation.model_dump(),
        "clean": score_models(models, ds, names, device, row_depth=row_depth),
        "corrupted": score_models(models, ds, names, device, perturbation, row_depth),
        "stage4_choice": {k: stage4_choice(v) for k, v in runs.items() if k != "frame_by_frame"},
        "averages": averages,
        "average_level": level,
        "alignment": {
            "clean": alignment_figures(frame, ds, refine),
            "corrupted": alignment_figures(frame, ds, refine, perturbation),
        },
    }
    clock.lap("evaluate")
    return result


def _get(d: dict, path: tuple[str, ...]) -> float | None:
    for key in path:
        d = d.get(key) if isinstance(d, dict) else None
    return d


def headline(result: dict, fusion: str) -> dict:
    """``headline[condition][variant][metric]`` and ``headline["stage4_choice"][variant]`` for
    ``fusion``, readable without knowing the tables; ``headline[condition]`` also holds the
    references of :data:`AVERAGES`."""
    out: dict = {"fusion": fusion}
    for condition in ("clean", "corrupted"):
        models = result[condition]["models"]
        names = {v: model_name(v, fusion) for v in VARIANTS}
        names = {"frame_by_frame": "frame_by_frame", **names, **{a: a for a in AVERAGES}}
        out[condition] = {
            variant: {
                metric: _get(models[name], path)
                for metric, path in HEADLINE_METRICS.items()
                if condition == "corrupted" or metric != "occluded_pixel_accuracy"
            }
            for variant, name in names.items()
            if variant not in AVERAGES or name in models  # older runs have none
        }
    out["stage4_choice"] = {
        variant: result["stage4_choice"][model_name(variant, fusion)]["kept_epoch"]
        for variant in VARIANTS
    }
    return out


def verdicts(result: dict, fusions: list[str]) -> dict[str, bool]:
    """Yes / no answers computed from the numbers: the goal of the default fusion option, then
    (c) against (b) for every fusion option, then the trivial baselines."""
    head = headline(result, fusions[0])
    c, off = head["corrupted"]["aligned_estimated"], head["corrupted"]["memory_off"]
    clean_c = head["clean"]["aligned_estimated"]
    out = goal_checks(result, fusions[0])
    if "average_truth" in head["corrupted"]:
        reference, baseline = (head["corrupted"][a] for a in ("average_truth", "average_estimated"))
        out[
            "reference: corrupted (e), the frame model averaged by the true geometry, mIoU at "
            "least 2 points above (a')"
        ] = reference["miou"] - off["miou"] >= 0.02
        out["corrupted: (c) mIoU above (f), the untrained average by the estimated geometry"] = (
            c["miou"] > baseline["miou"]
        )
        out["corrupted: (c) pixel accuracy under the occluders above (f)"] = (
            c["occluded_pixel_accuracy"] > baseline["occluded_pixel_accuracy"]
        )
        out["clean: (c) mIoU above (f)"] = (
            clean_c["miou"] > head["clean"]["average_estimated"]["miou"]
        )
        out["corrupted: (b) mIoU above (g), the untrained average at fixed pixels"] = (
            head["corrupted"]["unaligned"]["miou"] > head["corrupted"]["average_unaligned"]["miou"]
        )
    for fusion in fusions:
        models = result["corrupted"]["models"]
        est, una = models[f"{fusion}/aligned_estimated"], models[f"{fusion}/unaligned"]
        out[f"{fusion}: corrupted (c) mIoU above (b)"] = (
            est["segmentation"]["miou"] > una["segmentation"]["miou"]
        )
        out[f"{fusion}: corrupted (c) pixel accuracy under the occluders above (b)"] = (
            est["segmentation"]["occluded_pixel_accuracy"]
            > una["segmentation"]["occluded_pixel_accuracy"]
        )
    base = result["clean"]["baselines"]
    out["clean: (c) depth AbsRel below the per-row mean depth's"] = (
        clean_c["abs_rel"] < base["row_mean_depth_abs_rel_cap_80m"]
    )
    out["clean: (c) mIoU above 2x the majority class's"] = (
        clean_c["miou"] > 2 * base["majority_class_miou"]
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--clips", type=int, default=4, help="Clips per train town (val and test get 4)."
    )
    parser.add_argument("--out", type=Path, default=Path("/tmp/carla-temporal-learning"))
    parser.add_argument(
        "--fusions",
        default=DEFAULT_FUSIONS,
        help="Fusion options to compare, the default first (its variants make the headline).",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="Tiny frames and one step a stage: writes OUT/learning.json, not the repository's.",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="Training seed (same data and test corruption). Another seed measures run-to-run "
        "noise: it writes benchmarks/results/learning-seed<N>.json, which the doc's noise "
        "section reads.",
    )
    parser.add_argument(
        "--render-only",
        action="store_true",
        help="Only write docs/learning.md again from benchmarks/results/learning.json.",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="Extra train config override, after the benchmark's schedule.",
    )
    args = parser.parse_args()
    if args.render_only:
        render_again()
        return
    fusions = args.fusions.split(",")
    seed = [f"seed={args.seed}"] if args.seed else []
    sets = [*COMMON, *(SMOKE if args.smoke else SCHEDULE), *seed, *args.overrides]
    torch.set_num_threads(2)
    data = args.out / "data"
    clock = Clock()
    if not (data / "split.json").exists():
        for town, split in TOWNS.items():
            clips = 1 if args.smoke else (args.clips if split == "train" else 4)
            frames = {"frames": 8} if args.smoke else {}
            record(
                CaptureConfig(
                    backend="synthetic", town=town, clips=clips, out=data, seed=1, **frames
                )
            )
        write_manifest(data, build_manifest(data, load_splits()))
    clock.lap("record")
    runs, stage4_minutes = train_all(data, args.out, fusions, sets, clock, parallel=PARALLEL)
    result = evaluate_all(runs, data, clock, level=level_of(fusions[0]))
    verdict = verdicts(result, fusions)
    payload = {
        "command": "python benchmarks/learning.py"
        + (f" --clips {args.clips}" if args.clips != 4 else "")
        + (f" --fusions {args.fusions}" if args.fusions != DEFAULT_FUSIONS else "")
        + (f" --seed {args.seed}" if args.seed else "")
        + "".join(f" --set {o}" for o in args.overrides),
        "schedule": SCHEDULE,
        "seed": args.seed,
        "fusions": fusions,
        "minutes": clock.minutes,
        "stage4_minutes": stage4_minutes,
        "headline": headline(result, fusions[0]),
        "verdict": verdict,
        "result": result,
    }
    for k, v in verdict.items():
        print(f"{k}: {'yes' if v else 'no'}")
    if args.smoke:
        (args.out / "learning.json").write_text(json.dumps(payload, indent=2))
        return
    if args.seed:
        write_result(f"learning-seed{args.seed}", payload)
        render_again()
        return
    out = write_result("learning", payload)
    write_doc(payload, out.name)


def render_again() -> None:
    """docs/learning.md from the saved benchmarks/results/learning.json (kept as it is)."""
    payload = json.loads((RESULTS / "learning.json").read_text())
    write_doc(payload, "learning.json", payload["machine"]["load_average_1min"])


if __name__ == "__main__":
    main()
