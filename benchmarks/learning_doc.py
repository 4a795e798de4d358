"""docs/learning.md from a ``benchmarks/learning.py`` result: tables and verdicts of that run."""

from __future__ import annotations

import json

from common import DOCS, RESULTS, load_average

from train.pipeline.evaluate import baseline_lines, comparison_table

LABELS = {
    "frame_by_frame": "(0) stages 1-3, frame by frame",
    "memory_off": "(a') memory off",
    "unaligned": "(b) unaligned",
    "aligned_estimated": "(c) aligned, estimated",
    "aligned_truth": "(d) aligned, ground truth",
    "average_truth": "(e) frame model averaged, true geometry (untrained oracle)",
    "average_estimated": "(f) frame model averaged, estimated geometry (untrained baseline)",
    "average_unaligned": "(g) frame model averaged at fixed pixels (untrained baseline)",
}
METRICS = {
    "miou": ("mIoU", "{:.3f}"),
    "pixel_accuracy": ("pixel accuracy", "{:.3f}"),
    "occluded_pixel_accuracy": ("pixel accuracy under the occluders", "{:.3f}"),
    "abs_rel": ("depth AbsRel (<= 80 m)", "{:.3f}"),
    "log_rmse": ("depth log-RMSE (<= 80 m)", "{:.3f}"),
    "stable_flip_rate": ("flip rate where the truth is stable", "{:.4f}"),
    "mca": ("mean consistent accuracy (mCA)", "{:.3f}"),
}


def label(name: str) -> str:
    """A column header for a model of the result (``<fusion>/<variant>`` or a variant)."""
    fusion, _, variant = name.rpartition("/")
    return f"{LABELS[variant]} [{fusion}]" if fusion else LABELS[name]


def columns(models: dict) -> dict:
    """The models of a condition by column header, the references (e)-(g) after the variants."""
    order = sorted(models, key=lambda name: name.startswith("average_"))
    return {label(name): models[name] for name in order}


def headline_table(head: dict, condition: str) -> list[str]:
    """The headline figures of one condition: a row per variant, a column per metric."""
    metrics = [m for m in METRICS if m in next(iter(head[condition].values()))]
    lines = [
        "| variant | " + " | ".join(METRICS[m][0] for m in metrics) + " |",
        "|---" * (len(metrics) + 1) + "|",
    ]
    for variant, figures in head[condition].items():
        cells = [METRICS[m][1].format(figures[m]) for m in metrics]
        lines.append(f"| {LABELS[variant]} | " + " | ".join(cells) + " |")
    return lines


def fusion_table(result: dict, fusions: list[str]) -> list[str]:
    """(b), (c), (d) of every fusion option beside (a'), on the headline metrics."""
    names = ["memory_off"] + [
        f"{f}/{v}" for f in fusions for v in LABELS if v not in ("frame_by_frame", "memory_off")
    ]
    names = [n for n in names if n in result["clean"]["models"]]
    lines = [
        "| model | "
        + " | ".join(
            f"{METRICS[m][0]}, {c}"
            for c in ("clean", "corrupted")
            for m in ("miou", "occluded_pixel_accuracy", "abs_rel", "stable_flip_rate")
            if not (c == "clean" and m == "occluded_pixel_accuracy")
        )
        + " |"
    ]
    lines.append("|---" * (len(lines[0].split("|")) - 2) + "|")
    for name in names:
        cells = []
        for c in ("clean", "corrupted"):
            m = result[c]["models"][name]
            cells += [f"{m['segmentation']['miou']:.3f}"]
            if c == "corrupted":
                cells += [f"{m['segmentation']['occluded_pixel_accuracy']:.3f}"]
            cells += [
                f"{m['depth']['cap_80m']['abs_rel']:.3f}",
                f"{m['temporal']['stable_flip_rate']:.4f}",
            ]
        lines.append(f"| {label(name)} | " + " | ".join(cells) + " |")
    return lines


#: The goal's items for (c) against (a'): verdict name -> (headline metric, condition, the
#: least gain in points; None: (c) must be lower, as a flip rate).
GOAL = {
    "corrupted: (c) mIoU at least 2 points above (a')": ("miou", "corrupted", 2.0),
    "corrupted: (c) pixel accuracy under the occluders at least 10 points above (a')": (
        "occluded_pixel_accuracy",
        "corrupted",
        10.0,
    ),
    "corrupted: (c) stable flip rate below (a')": ("stable_flip_rate", "corrupted", None),
    "clean: (c) mIoU at most 0.5 points below (a')": ("miou", "clean", -0.5),
}
KEPT = "stage 4 (c) keeps a trained epoch, not the start"


def goal_margins(result: dict, fusion: str) -> dict[str, float]:
    """By how much ``fusion``'s (c) ``aligned_estimated`` meets each item of :data:`GOAL`
    against (a') ``memory_off`` (points; negative: missed by that much), and :data:`KEPT`
    (the epoch kept)."""
    name = f"{fusion}/aligned_estimated"
    out = {}
    for item, (metric, condition, least) in GOAL.items():
        models = result[condition]["models"]
        group = "temporal" if metric == "stable_flip_rate" else "segmentation"
        c, off = (models[k][group][metric] for k in (name, "memory_off"))
        out[item] = 100 * (off - c) if least is None else 100 * (c - off) - least
    out[KEPT] = result["stage4_choice"][name]["kept_epoch"]
    return out


def goal_checks(result: dict, fusion: str) -> dict[str, bool]:
    """The goal, item by item, for ``fusion``'s (c) against (a'): verdict name -> met."""
    margins = goal_margins(result, fusion)
    return {k: v > 0 if k == KEPT or GOAL[k][2] is None else v >= -1e-9 for k, v in margins.items()}


def default_lines(result: dict, fusions: list[str]) -> list[str]:
    """Why the headline is the default: the goal's items that each fusion option's (c) meets,
    and by how much it misses the others."""
    rank = {}
    lines = [
        "## Why the default",
        "",
        "The default fusion option should be the one whose (c), aligned by the estimated geometry "
        "as a user runs it, meets the most items of the goal against the memory off, and among "
        "those the one that misses the others by the fewest points; in this run:",
        "",
    ]
    for f in fusions:
        checks, margins = goal_checks(result, f), goal_margins(result, f)
        missed = {k: margins[k] for k, v in checks.items() if not v}
        short = sum(-v for k, v in missed.items() if k != KEPT)
        rank[f] = (-sum(checks.values()), short)
        lines.append(
            f"- `{f}`: {sum(checks.values())} of {len(checks)}"
            + "".join(
                f"; misses: {k}" + ("" if k == KEPT else f" (by {-v:.2f} points)")
                for k, v in missed.items()
            )
            + "."
        )
    best = min(rank.values())
    lines += [
        "",
        f"The default (`{fusions[0]}`) is that option: "
        f"**{'yes' if rank[fusions[0]] == best else 'no'}**. The figures behind each item are in "
        "the tables above; depth is not in the goal (see its columns).",
        "",
    ]
    return lines


def choice_lines(result: dict) -> list[str]:
    """Per stage-4 run: the epoch best.pt kept and every validated epoch's score."""
    lines = []
    for name, choice in result["stage4_choice"].items():
        scores = "; ".join(
            f"{'start' if int(e) == 0 else 'epoch ' + str(e)}: {v['score']:.4f} "
            f"(mIoU {v['miou']:.3f} / {v['corrupted_miou']:.3f}, log-L1 depth {v['depth']:.3f} / "
            f"{v['corrupted_depth']:.3f})"
            for e, v in choice["val"].items()
        )
        kept = "the start" if choice["kept_epoch"] == 0 else f"epoch {choice['kept_epoch']}"
        lines.append(f"- {label(name)}: kept {kept}. {scores}.")
    return lines


def noise_lines(payload: dict) -> list[str]:
    """The goal's figures of this run beside runs of the same command with other training seeds
    (``learning.py --seed N``: ``benchmarks/results/learning-seed<N>.json``), or nothing."""
    others = []
    for path in sorted(RESULTS.glob("learning-seed*.json")):
        saved = json.loads(path.read_text())
        if saved["schedule"] == payload["schedule"] and saved["fusions"] == payload["fusions"]:
            others.append(saved)
    if not others:
        return []
    lines = [
        "## Run-to-run noise",
        "",
        "The same command with other training seeds (`--seed N`: initial weights, batch order, "
        "training corruption; same data and test corruption), (c) against (a') on the test town:",
        "",
        "| seed | corrupted mIoU (c) - (a') | corrupted occluded accuracy (c) - (a') | corrupted "
        "stable flip rate (c) / (a') | clean mIoU (c) - (a') | corrupted mIoU (e) - (a') | "
        "corrupted mIoU (c) - (f) |",
        "|---|---|---|---|---|---|---|",
    ]
    for run in (payload, *others):
        head = run["headline"]
        c, off = head["corrupted"]["aligned_estimated"], head["corrupted"]["memory_off"]
        clean_c, clean_off = head["clean"]["aligned_estimated"], head["clean"]["memory_off"]
        lines.append(
            f"| {run.get('seed', 0)} | {100 * (c['miou'] - off['miou']):+.1f} | "
            f"{100 * (c['occluded_pixel_accuracy'] - off['occluded_pixel_accuracy']):+.1f} | "
            f"{c['stable_flip_rate']:.3f} / {off['stable_flip_rate']:.3f} | "
            f"{100 * (clean_c['miou'] - clean_off['miou']):+.2f} | {reference_gains(head)} |"
        )
    flips = [  # a verdict an older run did not have does not count
        k for k, v in payload["verdict"].items() if any(o["verdict"].get(k, v) != v for o in others)
    ]
    lines += [
        "",
        "Verdicts that change with the seed: "
        + (", ".join(flips) if flips else "none")
        + ". (Points: percentage points.)",
        "",
    ]
    return lines


def reference_gains(head: dict) -> str:
    """Corrupted mIoU of (e) minus (a')'s and of (c) minus (f)'s, in points ("-" for older runs)."""
    corrupted = head["corrupted"]
    if "average_truth" not in corrupted:
        return "- | -"
    e, f = corrupted["average_truth"]["miou"], corrupted["average_estimated"]["miou"]
    off, c = corrupted["memory_off"]["miou"], corrupted["aligned_estimated"]["miou"]
    return f"{100 * (e - off):+.1f} | {100 * (c - f):+.1f}"


def reference_lines(result: dict) -> list[str]:
    """The bullet on the references (e)-(g): what they are and the rates the validation town
    chose."""
    averages = result.get("averages")
    if not averages:
        return []

    def chosen(name: str) -> str:
        tried = ", ".join(f"{r}: {v:.3f}" for r, v in averages[name]["val_corrupted_miou"].items())
        return f"{averages[name]['rate']} ({tried})"

    level = result.get("average_level", "scores")
    image = level != "scores"
    what = {
        "scores": "the frame model's segmentation logits averaged over the clip",
        "image": "the frames the frame model reads averaged over the clip (then the frame model "
        "run on them)",
        "image+scores": "the frames the frame model reads averaged over the clip, then the frame "
        "model's logits on them averaged in turn",
    }[level]
    memory = f"the `{level}` memory does" + (" with the frames" if level == "image" else "")
    return [
        f"- (e), (f), (g): references that train nothing (`train/pipeline/average.py`): {what}, "
        "each frame blended with the running average of the frames before it, warped in at one "
        "rate for every pixel, the rate with the best corrupted mIoU on the validation town. (e) "
        f"warps by the true depth and pose: what blending without learning where, as {memory}, "
        f"gains at this frame model's quality (rate {chosen('average_truth')}). (f) warps by the "
        "frame model's own depth and ego-motion (its rotation refined photometrically, "
        "`model.pose_refine_iterations`), the estimates (c) reads: the trivial baseline "
        f"the learned memory must beat (rate {chosen('average_estimated')}). (g) does not warp: "
        f"the trivial baseline of (b) (rate {chosen('average_unaligned')}). Their ego-motion is "
        "the frame model's"
        + (
            ", their depth the frame model's on the averaged frames."
            if image
            else ", and their depth."
        ),
    ]


ALIGNMENT_ROWS = {
    "no_motion": "no motion",
    "estimated": "ego-motion filter",
    "refined": "ego-motion filter, rotation refined (what (c) and (f) use)",
    "truth_pose": "true pose",
    "truth": "true pose and true depth",
}


def alignment_lines(result: dict) -> list[str]:
    """How well the estimated geometry places a memory (``result["alignment"]``), as a table."""
    figures = result.get("alignment")
    if not figures:
        return []
    conditions = ("clean", "corrupted")
    lines = [
        "## Where the estimated alignment places the memory",
        "",
        "Per consecutive pair of the test clips (`benchmarks/alignment.py`): the pose error "
        "against the truth, and the photometric error of the clean frame t-1 warped into the "
        "clean frame t by the frame model's depth (on the frames as they are) and each pose "
        "(last row: by the true depth). The true rotation averages "
        + " / ".join(f"{figures[c]['true_rotation_deg']:.2f}" for c in conditions)
        + " degrees per frame (clean / corrupted); the refinement was kept for "
        + " / ".join(f"{100 * figures[c]['refined_share']:.0f} %" for c in conditions)
        + " of the pairs.",
        "",
        "| pose | rotation error (deg), clean | corrupted | translation error (m), clean | "
        "corrupted | photometric error, clean | corrupted |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, name in ALIGNMENT_ROWS.items():
        cells = []
        for group, digits in (("rotation_error_deg", 2), ("translation_error_m", 3)):
            for c in conditions:
                value = figures[c][group].get(key)
                cells.append("" if value is None else f"{value:.{digits}f}")
        cells += [f"{figures[c]['photometric'][key]:.4f}" for c in conditions]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def stage4_minutes(payload: dict) -> str:
    """The sentence on each stage-4 variant's own minutes (runs trained side by side)."""
    spent = payload.get("stage4_minutes")
    if not spent:
        return ""
    return (
        " Stage 4 trains its variants side by side, one thread each (two one-thread runs use the "
        "2 cores better than one two-thread run); each variant's wall / CPU: "
        + "; ".join(f"{k} {v['wall']:.1f} / {v['cpu']:.1f}" for k, v in spent.items())
        + "."
    )


def write_doc(payload: dict, out_name: str, load: float | None = None) -> None:
    """Write docs/learning.md from ``payload`` (what learning.py wrote to ``out_name``).

    ``load``: the 1-minute load average of the run (default: now, at the end of a new run).
    """
    result, head, minutes = payload["result"], payload["headline"], payload["minutes"]
    total_wall = sum(v["wall"] for v in minutes.values())
    total_cpu = sum(v["cpu"] for v in minutes.values())
    fusions = payload["fusions"]
    size = result["frame_size"]
    lines = [
        "# Learning on the embedded simulator: does the temporal memory earn its place?",
        "",
        f"Generated by `{payload['command']}`; every number, table and verdict below comes from "
        f"that run (`benchmarks/results/{out_name}`). Do not edit by hand.",
        "",
        "## The question and the comparison",
        "",
        "Stage 4 adds a ConvGRU memory to the frame-by-frame models; it should make segmentation "
        "and depth steadier and more robust over a clip. Each variant below trains stage 4 "
        "from the same stages 1-3, on the same windows (per-frame-independent corruption: "
        f"{result['stage4_perturb']}), for the same steps ({result['epochs']['stage4']} epochs "
        f"of {result['stage4_steps_per_epoch']} steps), with the same frozen modules (backbone, "
        "segmentation head, ego-motion) and the same checkpoint choice; only the memory differs:",
        "",
        "- (a') memory off: the matched control. It trains what stage 4 trains besides the memory "
        "(the depth decoder) on the same windows, as long.",
        "- (b) the memory at fixed pixel positions; (c) warped into each frame by the estimated "
        "pose and depth (the default); (d) by the true pose and depth (an oracle; for the "
        "default fusion option only).",
        "- (0) the frame-by-frame models after stages 1-3, and trivial baselines.",
        *reference_lines(result),
        "",
        f"Fusion options: {', '.join(fusions)} (the headline is `{fusions[0]}`, the default; "
        "`image` fuses the frames themselves at full resolution before the backbone, "
        "`image+scores` fuses the frames and then the heads' maps of the fused frames, `scores` "
        "the heads' segmentation logits and log-depth at stride 4, `bottleneck` the backbone's "
        "features at stride 16: see [models.md](models.md)).",
        "",
        f"Data: synthetic clips of the six train towns, Town10HD (validation) and Town02 (test: "
        f"{result['windows']} clips of {result['frames_per_window']} frames), trained and "
        f"evaluated at {size[0]}x{size[1]}, preset `tiny` from scratch (no pretrained weights). "
        f"Corruption of the test clips (independent per frame): {result['perturbation']}.",
        "",
        f"Time on the project's 2-core CPU machine (1-minute load average at the end: "
        f"{load_average() if load is None else load}; above 2, other jobs shared the machine): "
        f"{total_wall:.1f} min wall, "
        f"{total_cpu:.1f} min CPU time. Per phase (wall / CPU): "
        + "; ".join(f"{k} {v['wall']:.1f} / {v['cpu']:.1f}" for k, v in minutes.items())
        + "."
        + stage4_minutes(payload),
        "",
        "## Verdicts (computed)",
        "",
        *[f"- {k}: **{'yes' if v else 'no'}**" for k, v in payload["verdict"].items()],
        "",
        *noise_lines(payload),
        f"## Headline: clean test clips ({fusions[0]})",
        "",
        *headline_table(head, "clean"),
        "",
        f"## Headline: corrupted test clips ({fusions[0]})",
        "",
        *headline_table(head, "corrupted"),
        "",
        "## Every fusion option",
        "",
        *fusion_table(result, fusions),
        "",
        *default_lines(result, fusions),
        *alignment_lines(result),
        "## Which epoch stage 4 kept",
        "",
        "Each run validates its start (the identity: the frame-by-frame quality) and every epoch "
        "on clean and on corrupted Town10HD windows (a fixed draw) and keeps the highest score, "
        "mIoU - 0.5 x log-L1 depth averaged over both (`train/engine.py`). Score (mIoU clean / "
        "corrupted, log-L1 depth clean / corrupted):",
        "",
        *choice_lines(result),
        "",
        "## All figures, clean test clips",
        "",
        *comparison_table(columns(result["clean"]["models"]), result["clean"]),
        "",
        "## All figures, corrupted test clips",
        "",
        *comparison_table(columns(result["corrupted"]["models"]), result["corrupted"]),
        "",
        "## Baselines",
        "",
        *baseline_lines(result["clean"]["baselines"]),
        "",
        "## How to read this",
        "",
        "- Pixel accuracy under the occluders counts the pixels that the corruption hid "
        "(occluders and dropped frames); there a frame-by-frame model can only guess, and a "
        "memory can remember.",
        "- The flip rate where the truth is stable counts label changes between corresponding "
        "pixels of consecutive frames (by the true depth and poses) whose true class does not "
        "change; a constant prediction scores 0, so read it beside mIoU. mCA needs correctness "
        "(a constant cannot win it).",
        "- The per-row mean depth (the mean depth of each image row over the training split) is "
        "the honest trivial baseline for driving depth: the ground plane's depth depends mostly "
        "on the row.",
        "- This is a CPU-sized run of a small model trained from scratch on a few clips; it says "
        "whether the mechanism works at this scale, not what the `paper` preset reaches on a GPU.",
        "",
    ]
    (DOCS / "learning.md").write_text("\n".join(lines))
