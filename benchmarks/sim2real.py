"""Sim2real proxy on the embedded simulator: does the twin VAE carry depth and segmentation from
appearance A (the default look, labelled) to appearance B (``textured``, unlabelled)?

    python benchmarks/sim2real.py [--steps 150] [--out /tmp/carla-temporal-sim2real]

Re-running with the same --out reuses the recorded data and the finished stages.

Source = A (Town01, Town03, seed 0) with labels; target = B (Town01, Town03, seed 1) without
labels; evaluation on B's labels in Town02 (seed 2, never trained on). Four rows, all the same
depth and segmentation decoders on the shared latent: a constant predictor, source-only (trained
on A, applied to B), the twin VAE (stage 1 on A + unlabelled B, stage 2 on A and A translated to B,
applied to B through the real encoder) and an oracle trained on B's labels. Metrics over
``common12``, depth up to 80 m. Writes benchmarks/results/sim2real.json and the table in
docs/sim2real.md; the verdict lines are computed here.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import argparse
import re
import time

import torch
from common import RESULTS, load_average, write_result
from torch.utils.data import DataLoader

from carla_capture.config import CaptureConfig, default_town_dir
from carla_capture.record import record
from carla_capture.split import build_manifest, load_splits, write_manifest
from models.sim2real import Sim2RealModelConfig
from train.sim2real.config import Sim2RealConfig
from train.sim2real.evaluate import score
from train.sim2real.stage import load_sim2real, source_frames, train

DOC = Path(__file__).resolve().parents[1] / "docs" / "sim2real.md"
START, END = "<!-- sim2real-table:start -->", "<!-- sim2real-table:end -->"
METRICS = ("abs_rel", "sq_rel", "rmse", "log_rmse", "miou", "pixel_accuracy")
LOWER_BETTER = {"abs_rel", "sq_rel", "rmse", "log_rmse"}
#: Model of this proxy: 32 x 64 frames, a narrow stem and 2-deep packing (CPU budget).
MODEL = Sim2RealModelConfig(
    preset="proxy", input_size=(32, 64), channels=(8, 32, 64), latent_channels=32, pack_depth=2
)


def write_towns(folder: Path, width: int = 128, height: int = 64) -> Path:
    """Packaged town files with a small camera."""
    folder.mkdir(parents=True, exist_ok=True)
    for src in default_town_dir().glob("Town*.toml"):
        text = re.sub(r"(?m)^width = \d+", f"width = {width}", src.read_text())
        (folder / src.name).write_text(re.sub(r"(?m)^height = \d+", f"height = {height}", text))
    return folder


def record_domain(
    out: Path, towns: Path, names: tuple[str, ...], appearance: str, seed: int, clips: int
) -> Path:
    """Record ``clips`` clips of 10 frames of each town in one appearance, then write split.json."""
    for town in names:
        record(
            CaptureConfig(
                backend="synthetic",
                town=town,
                clips=clips,
                frames=10,
                frame_stride=4,
                out=out,
                seed=seed,
                town_dir=towns,
                appearance=appearance,
            )
        )
    write_manifest(out, build_manifest(out, load_splits()))
    return out


class Constant(torch.nn.Module):
    """Trivial predictor: the source's median depth and most frequent class everywhere."""

    def __init__(self, depth_m: float, label: int, num_classes: int) -> None:
        super().__init__()
        self.depth_m, self.label, self.k = depth_m, label, num_classes
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor, domain: str = "real") -> dict[str, torch.Tensor]:
        b, _, h, w = x.shape
        logits = torch.zeros(b, self.k, h, w)
        logits[:, self.label] = 1
        return {"depth": torch.full((b, 1, h, w), self.depth_m), "seg_logits": logits}


def constant_from(cfg: Sim2RealConfig) -> Constant:
    """Median valid depth (<= 80 m) and majority class of the source's training frames."""
    depths, counts = [], torch.zeros(256, dtype=torch.int64)
    for batch in DataLoader(source_frames(cfg, cfg.data.train_split), batch_size=8):
        d, v = batch["depth"], batch["valid_depth"] & (batch["depth"] <= 80)
        depths.append(d[v])
        counts += torch.bincount(batch["labels"].flatten(), minlength=256)
    counts[255] = 0
    return Constant(float(torch.cat(depths).median()), int(counts.argmax()), cfg.model.num_classes)


def make_config(
    data: Path,
    out: Path,
    target: Path | None,
    steps: int,
    tasks: dict[str, float],
    from_vae: bool,
    device: str = "cpu",
    seed: int = 0,
) -> Sim2RealConfig:
    """One run of the proxy: ``steps`` optimiser steps per stage, batch 8, lr 1e-3 (short).

    ``seed``: the training seed (initial weights, batch order, samples); the data stay the same.
    """
    stage = {"epochs": 1000, "max_steps": None, "batch_size": 8, "lr": 1e-3}
    vae = {"kl": 0.01, "vae_recon": 10.0, "mse_recon": 10.0, "mmd": 1.0, "cycle": 10.0}
    cfg = Sim2RealConfig(
        data=data,
        target=target,
        out=out,
        preset="proxy",
        seed=seed,
        model=MODEL,
        device=device,
        tensorboard=False,
        stages={
            "sim2real-vae": {**stage, "losses": vae},
            "sim2real-tasks": {
                **stage,
                "losses": tasks,
                "from_vae": from_vae,
                "frozen": ["decoders"] if from_vae else [],
            },
        },
    )
    return _with_steps(cfg, steps)


def _with_steps(cfg: Sim2RealConfig, steps: int) -> Sim2RealConfig:
    """Epochs of the frames available so that each stage runs about ``steps`` steps."""
    frames = len(source_frames(cfg, cfg.data.train_split))
    per_epoch = max(1, frames // 8)
    for stage in cfg.stages.values():
        stage.epochs = max(1, round(steps / per_epoch))
        if steps < per_epoch:  # fewer steps than an epoch: one epoch of that many
            stage.max_steps = steps
    return cfg


def gap_closed(source: dict, adapted: dict, oracle: dict) -> dict[str, float | None]:
    """Share of the source-to-oracle gap the adapted model closes, per metric (None where the
    oracle is not better than source-only: there is no gap to close)."""
    out = {}
    for m in METRICS:
        gap = oracle[m] - source[m]
        oracle_better = gap < 0 if m in LOWER_BETTER else gap > 0
        out[m] = (adapted[m] - source[m]) / gap if oracle_better and abs(gap) > 1e-12 else None
    return out


def table(rows: dict[str, dict], closed: dict[str, float | None]) -> str:
    """The Markdown table of the proxy."""
    head = "| model | AbsRel | SqRel | RMSE (m) | log RMSE | mIoU | pixel acc. |\n"
    head += "|---|---|---|---|---|---|---|\n"
    body = "".join(
        f"| {name} | " + " | ".join(f"{r[m]:.3f}" for m in METRICS) + " |\n"
        for name, r in rows.items()
    )
    share = " | ".join("n/a" if closed[m] is None else f"{100 * closed[m]:.0f} %" for m in METRICS)
    return head + body + f"| gap closed by the twin VAE | {share} |\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--steps", type=int, default=60, help="Optimiser steps per stage (batch 8)."
    )
    parser.add_argument(
        "--clips", type=int, default=6, help="Clips of 10 frames per town and domain."
    )
    parser.add_argument("--out", type=Path, default=Path("/tmp/carla-temporal-sim2real"))
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="Training seed (same data). Another seed measures run-to-run noise: it writes "
        "benchmarks/results/sim2real-seed<N>.json, which the doc's noise paragraph reads.",
    )
    parser.add_argument(
        "--render-only",
        action="store_true",
        help="Only redo the table and verdicts from benchmarks/results/sim2real.json.",
    )
    args = parser.parse_args()
    if args.render_only:
        rerender()
        return
    torch.set_num_threads(2)
    proxy = run_proxy(args.out, args.steps, args.clips, seed=args.seed)
    cpu_minutes = time.process_time() / 60
    if args.seed:
        publish_seed(
            proxy["rows"], proxy["minutes"], args.steps, args.clips, cpu_minutes, args.seed
        )
        rerender()
        return
    publish(proxy["rows"], proxy["minutes"], args.steps, args.clips, cpu_minutes)


def run_proxy(out: Path, steps: int, clips: int, device: str = "cpu", seed: int = 0) -> dict:
    """Record both domains, train the three models and score them with the constant.

    Returns ``rows`` (model -> figures), ``minutes``, ``gap_closed`` and ``verdict``.
    """
    start = time.perf_counter()
    towns = write_towns(out / "towns")
    a = record_domain(out / "A", towns, ("Town01", "Town03"), "default", 0, clips)
    b = record_domain(out / "B", towns, ("Town01", "Town03"), "textured", 1, clips)
    b_test = record_domain(out / "B-test", towns, ("Town02",), "textured", 2, clips)
    recorded = time.perf_counter()
    plain = {"depth": 1.0, "seg": 1.0}
    twin_losses = {
        "depth": 1.0,
        "seg": 1.0,
        "depth_translated": 1.0,
        "seg_translated": 1.0,
        "kl": 0.01,
        "mmd": 1.0,
    }
    runs = {
        "source-only (A labels)": (
            make_config(a, out / "source", None, steps, plain, False, device, seed),
            "sim",
        ),
        "twin VAE (A labels + unlabelled B)": (
            make_config(a, out / "twin", b, steps, twin_losses, True, device, seed),
            "real",
        ),
        "oracle (B labels)": (
            make_config(b, out / "oracle", None, steps, plain, False, device, seed),
            "sim",
        ),
    }
    rows, minutes = {}, {"record": (recorded - start) / 60}
    src_cfg = runs["source-only (A labels)"][0]
    test_loader = DataLoader(source_frames(src_cfg, "test", data=b_test), batch_size=8)
    rows["constant (A's median depth, majority class)"] = score(
        constant_from(src_cfg), test_loader, "real", MODEL.num_classes
    )
    for name, (cfg, domain) in runs.items():
        t0 = time.perf_counter()
        train(cfg, "all" if cfg.target is not None else "sim2real-tasks", resume=True)
        model, _ = load_sim2real(cfg.out)
        rows[name] = score(model.to(device), test_loader, domain, MODEL.num_classes)
        minutes[name] = (time.perf_counter() - t0) / 60
    constant, source, twin, oracle = rows.values()
    return {
        "rows": rows,
        "minutes": minutes,
        "gap_closed": gap_closed(source, twin, oracle),
        "verdict": verdicts(rows),
    }


def verdicts(rows: dict[str, dict]) -> dict[str, bool]:
    """The twin VAE and the oracle against source-only, source-only against the constant."""
    constant, source, twin, oracle = rows.values()
    return {
        "twin_beats_source_only_on_abs_rel": twin["abs_rel"] < source["abs_rel"],
        "twin_beats_source_only_on_miou": twin["miou"] > source["miou"],
        "oracle_beats_source_only_on_abs_rel": oracle["abs_rel"] < source["abs_rel"],
        "oracle_beats_source_only_on_miou": oracle["miou"] > source["miou"],
        "source_only_beats_constant_on_abs_rel": source["abs_rel"] < constant["abs_rel"],
        "source_only_beats_constant_on_miou": source["miou"] > constant["miou"],
    }


def publish(
    rows: dict[str, dict],
    minutes: dict[str, float],
    steps: int,
    clips: int,
    cpu_minutes: float,
    load: float | None = None,
) -> None:
    """Gap closed and verdicts computed from ``rows``; JSON result and the table in the docs.

    ``load``: the 1-minute load average of a saved run being rendered again (its JSON is kept);
    None for a new run.
    """
    constant, source, twin, oracle = rows.values()
    closed = gap_closed(source, twin, oracle)
    verdict = verdicts(rows)
    command = f"python benchmarks/sim2real.py --steps {steps} --clips {clips}"
    out = RESULTS / "sim2real.json"
    if load is None:
        load = load_average()
        write_result(
            "sim2real",
            {
                "command": command,
                "note": "2-core CPU machine, at times shared with other jobs; times are indicative",
                "cpu_minutes": cpu_minutes,
                "model": MODEL.model_dump(),
                "steps_per_stage": steps,
                "clips": clips,
                "minutes": minutes,
                "rows": rows,
                "gap_closed": closed,
                "verdict": verdict,
            },
        )
    lines = [f"- {k.replace('_', ' ')}: **{'yes' if v else 'no'}**" for k, v in verdict.items()]
    total = sum(minutes.values())
    section = (
        f"{START}\nCommand: `{command}` ({total:.1f} min wall, {cpu_minutes:.1f} min CPU, on the "
        f"project's 2-core CPU machine, 1-minute load average {load}). Test: Town02 in "
        "appearance B, "
        f"{clips} clips x 10 frames, at {MODEL.input_size[0]}x{MODEL.input_size[1]}; depth up to "
        f"80 m; segmentation over common12. Gap closed: n/a where the oracle is not better than "
        f"source-only.\n\n"
        + table(rows, closed)
        + "\nVerdict (computed by the script):\n\n"
        + "\n".join(lines)
        + noise_paragraph(rows, verdict, steps, clips)
        + f"\n\nRaw numbers: `benchmarks/results/{out.name}`.\n{END}"
    )
    text = DOC.read_text()
    DOC.write_text(text[: text.index(START)] + section + text[text.index(END) + len(END) :])
    print(table(rows, closed))
    print(verdict, minutes)


def publish_seed(
    rows: dict[str, dict],
    minutes: dict[str, float],
    steps: int,
    clips: int,
    cpu_minutes: float,
    seed: int,
) -> None:
    """The result of a run with another training seed, beside the main one's."""
    write_result(
        f"sim2real-seed{seed}",
        {
            "command": "python benchmarks/sim2real.py "
            f"--steps {steps} --clips {clips} --seed {seed}",
            "seed": seed,
            "cpu_minutes": cpu_minutes,
            "steps_per_stage": steps,
            "clips": clips,
            "minutes": minutes,
            "rows": rows,
            "verdict": verdicts(rows),
        },
    )


def noise_paragraph(rows: dict[str, dict], verdict: dict[str, bool], steps: int, clips: int) -> str:
    """How the figures and verdicts move with the training seed (runs of ``--seed N`` at the same
    steps and clips), or nothing when there are none."""
    import json

    others = {}
    for path in sorted(RESULTS.glob("sim2real-seed*.json")):
        saved = json.loads(path.read_text())
        if (saved["steps_per_stage"], saved["clips"]) == (steps, clips):
            others[saved["seed"]] = saved
    if not others:
        return ""
    seeds = ", ".join(str(k) for k in others)
    parts = []
    for name, figures in rows.items():
        if name.startswith("constant"):
            continue  # no training: the same for every seed
        for metric, label in (("abs_rel", "AbsRel"), ("miou", "mIoU")):
            values = [figures[metric]] + [o["rows"][name][metric] for o in others.values()]
            parts.append(
                f"{name.split(' (')[0]} {label} "
                + " / ".join(f"{v:.3f}" for v in values)
                + f" (spread {max(values) - min(values):.3f})"
            )
    flips = [k for k, v in verdict.items() if any(o["verdict"][k] != v for o in others.values())]
    return (
        f"\n\nRun-to-run noise: the same command with training seeds 0 (above) and {seeds} "
        f"(`--seed N`, same data): "
        + "; ".join(parts)
        + ". Verdicts that change with the seed: "
        + (", ".join(k.replace("_", " ") for k in flips) if flips else "none")
        + "."
    )


def rerender() -> None:
    """Recompute gap, verdicts and the noise paragraph from the last run's JSON (no training;
    the JSON is kept)."""
    import json

    saved = json.loads((RESULTS / "sim2real.json").read_text())
    clips = saved.get("clips") or int(saved["command"].split("--clips ")[1])
    publish(
        saved["rows"],
        saved["minutes"],
        saved["steps_per_stage"],
        clips,
        saved["cpu_minutes"],
        saved["machine"]["load_average_1min"],
    )


if __name__ == "__main__":
    main()
