"""Figures only a GPU can give, in one short run on one GPU (about 8 minutes).

    python benchmarks/gpu.py --out /tmp/carla-temporal-gpu        # on a GPU machine
    python benchmarks/gpu.py --smoke --out /tmp/gpu-smoke         # every part in seconds, CPU

Parts, in order (each timed; a part that fails is recorded with its error and the others go on,
except under ``--smoke``, which stops at the first error so the test sees it):

1. ``record``: synthetic clips of every town with the embedded simulator, one process per CPU
   core, at 256x512;
2. ``speed``: the ``paper`` preset's training step (stage 1, and a stage-4 window) in bf16
   autocast and in fp32, frames/s and peak memory, and streaming inference frames/s of the full
   pipeline at batch 1 and 8 (eager, and ``torch.compile`` where it compiles and is faster);
3. ``loader``: frames/s that 2 workers deliver with augmentation on the device
   (``data.augment_on="device"``, the batch finished on the GPU), beside stage 1's consumption;
4. ``learning``: ``benchmarks/learning.py``'s ablation (memory off, unaligned, aligned estimated,
   aligned truth; clean and corrupted) at the ``small`` preset, with its verdicts;
5. ``forecast``: ``benchmarks/forecast.py``'s forecasters against zero-motion and the other
   baselines at the mid and long horizons, on the learning run's stages 1-3;
6. ``sim2real``: ``benchmarks/sim2real.py``'s source-only, twin VAE and oracle, with verdicts.

Parts past ``--budget-min`` are skipped (recorded as such). Writes ``OUT/gpu.json``; a full run
also writes ``benchmarks/results/gpu.json`` and ``docs/gpu.md`` (device, driver, torch, date).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import argparse  # noqa: E402
import datetime  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from collections.abc import Callable  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from types import SimpleNamespace  # noqa: E402

import torch  # noqa: E402
from common import machine, split_of_towns, write_result  # noqa: E402

from carla_capture.config import CaptureConfig  # noqa: E402
from carla_capture.record import record  # noqa: E402
from carla_capture.split import build_manifest, load_splits, write_manifest  # noqa: E402
from models.config import preset  # noqa: E402
from train import engine  # noqa: E402
from train.checkpoint import save_checkpoint  # noqa: E402
from train.context import Context  # noqa: E402
from train.pipeline.average import level_of  # noqa: E402
from train.pipeline.nets import build_stage_net  # noqa: E402
from train.pipeline.run import resolve_config  # noqa: E402
from train.pipeline.stages import PipelineStage  # noqa: E402

log = logging.getLogger("gpu")
DOC = Path(__file__).resolve().parents[1] / "docs" / "gpu.md"
PARTS = ("record", "speed", "loader", "learning", "forecast", "sim2real")


@dataclass(frozen=True)
class Plan:
    """The sizes of one run: the GPU run's, or the smoke test's."""

    size: tuple[int, int]  # frames recorded and trained on, (H, W)
    clips: int  # clips per train town (val and test towns get the same)
    frames: int  # frames per clip
    speed_preset: str
    speed_steps: int  # timed steps (after 2 untimed)
    stream_frames: int  # timed streaming frames per batch size
    learn_preset: str
    learn_size: tuple[int, int]
    learn_sets: tuple[str, ...]
    forecast_steps: int
    sim2real_steps: int
    compile: bool
    horizons: tuple[str, ...] = ("mid", "long")  # forecasting horizons
    forecast_sets: tuple[str, ...] = ()  # extra overrides of the forecasters
    workers: int = 2  # loader workers of the speed part
    feed_seconds: float = 20.0  # how long the loader part measures
    towns: Path | None = None  # town files with a smaller camera (smoke)
    extra: dict = field(default_factory=dict)


GPU = Plan(
    size=(256, 512),
    clips=12,  # per town: 12 x 8 towns = 96 one-clip jobs over the cores
    frames=20,
    speed_preset="paper",
    speed_steps=10,
    stream_frames=40,
    learn_preset="small",
    learn_size=(128, 256),
    learn_sets=(
        "stages.stage1.epochs=12",
        "stages.stage2.epochs=6",
        "stages.stage3.epochs=4",
        "stages.stage4.epochs=4",
        "stages.stage4.max_steps=60",
    ),
    forecast_steps=300,
    sim2real_steps=300,
    compile=True,
)
SMOKE = Plan(
    size=(32, 64),
    clips=1,
    frames=14,  # the mid forecasting horizon's window (13 frames)
    speed_preset="tiny",
    speed_steps=1,
    stream_frames=2,
    learn_preset="tiny",
    learn_size=(32, 64),
    learn_sets=tuple(
        f"stages.stage{i}.{k}={v}"
        for i in range(1, 5)
        for k, v in (("epochs", 1), ("max_steps", 1))
    ),
    forecast_steps=1,
    sim2real_steps=1,
    compile=False,
    horizons=("mid",),
    forecast_sets=("forecast.width=8", "forecast.batch_size=2"),
    workers=0,
    feed_seconds=1.0,
)


def describe_device(device: torch.device) -> dict:
    """The accelerator, its driver and the software the figures were measured with."""
    out = {
        "device": str(device),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu_cores": os.cpu_count(),
        "host": machine(),
        "tf32": {  # fp32 figures: convolutions in TF32 where cuDNN allows it (PyTorch's default)
            "matmul": torch.backends.cuda.matmul.allow_tf32,
            "cudnn": torch.backends.cudnn.allow_tf32,
        },
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        out.update(name=props.name, memory_gib=round(props.total_memory / 2**30, 1))
        try:
            query = ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]
            out["driver"] = subprocess.run(
                query, capture_output=True, text=True, timeout=20, check=True
            ).stdout.split("\n")[0]
        except (OSError, subprocess.SubprocessError):
            out["driver"] = None
    else:
        out.update(name=platform.processor() or "cpu", driver=None)
    return out


# 1. record -------------------------------------------------------------------------------------


def _record_one(job: tuple[str, int, str, str | None, int, Path]) -> str:
    """One clip of one town (one job per clip, so that the jobs spread over the cores)."""
    town, seed, appearance, towns, frames, out = job
    extra = {"town_dir": Path(towns)} if towns else {}
    cfg = CaptureConfig(
        backend="synthetic",
        town=town,
        clips=1,
        frames=frames,
        out=out,
        seed=seed,
        appearance=appearance,
        **extra,
    )
    record(cfg)
    return town


def record_data(data: Path, plan: Plan, appearance: str = "default") -> dict:
    """Clips of every town, one process per core; the split manifest."""
    if (data / "split.json").exists():
        return {"kept": str(data)}
    jobs = [
        (
            town,
            100 * k + i,
            appearance,
            str(plan.towns) if plan.towns else None,
            plan.frames,
            data / f"{town}-{k}",
        )  # fmt: skip
        for i, town in enumerate(split_of_towns())
        for k in range(plan.clips)
    ]
    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        list(pool.map(_record_one, jobs))
    write_manifest(data, build_manifest(data, load_splits()))
    seconds = time.perf_counter() - start
    frames = len(jobs) * plan.frames
    return {
        "clips": len(jobs),
        "frames": frames,
        "seconds": seconds,
        "frames_per_s": frames / seconds,
    }


# 2. speed --------------------------------------------------------------------------------------


def seed_run(cfg, run: Path) -> None:  # noqa: ANN001
    """Stages 1-3 of ``cfg`` saved untrained, so stage 4's network can be built (speed only)."""
    for name in ("stage1", "stage2", "stage3"):
        net = build_stage_net(cfg.stages[name], cfg.model, run)
        opt = torch.optim.Adam(net.parameters())
        (run / name).mkdir(parents=True, exist_ok=True)
        save_checkpoint(run / name / "best.pt", net, opt, None, 0, None, [], cfg)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _batches(stage: PipelineStage, ctx: Context, workers: int = 2) -> Callable[[], dict]:
    """Finished training batches of ``stage``, cycling its loader."""
    loader = engine.make_loader(
        stage.dataset(stage.train_split, True, 0),
        stage.schedule.batch_size,
        training=True,
        epoch=0,
        ctx=ctx,
        seed=0,
        num_workers=workers,
    )
    it = iter(loader)

    def next_batch() -> dict:
        nonlocal it
        try:
            batch = next(it)
        except StopIteration:
            it = iter(loader)
            batch = next(it)
        return stage.prepare(engine.to_device(batch, ctx), 0)

    return next_batch


def train_speed(cfg, name: str, ctx: Context, plan: Plan, amp: bool) -> dict:  # noqa: ANN001
    """Training step frames/s and peak memory of stage ``name`` (bf16 autocast when ``amp``)."""
    steps = plan.speed_steps
    cfg = cfg.model_copy(update={"amp": amp})
    stage = PipelineStage(cfg, name, validate=False)
    net = engine._build(stage, ctx)
    engine.set_mode(net, stage.schedule, True)
    optimizer = torch.optim.Adam(engine.param_groups(net, stage.schedule, name))
    next_batch = _batches(stage, ctx, plan.workers)
    batches = [next_batch() for _ in range(2)]
    if ctx.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(ctx.device)
    for k in range(2 + steps):
        if k == 2:
            _sync(ctx.device)
            start = time.perf_counter()
        engine.train_step(net, batches[k % 2], optimizer, stage, ctx)
    _sync(ctx.device)
    seconds = time.perf_counter() - start
    frames = steps * batches[0]["rgb"].shape[0] * batches[0]["rgb"].shape[1]
    shape = list(batches[0]["rgb"].shape[:2])
    peak = (
        torch.cuda.max_memory_allocated(ctx.device) / 2**30 if ctx.device.type == "cuda" else None
    )
    del net, optimizer, batches
    gc.collect()
    if ctx.device.type == "cuda":
        torch.cuda.empty_cache()
    return {
        "batch": shape,
        "frames_per_s": frames / seconds,
        "steps_per_s": steps / seconds,
        "peak_memory_gib": peak,
    }


@torch.no_grad()
def stream_speed(cfg, run: Path, ctx: Context, frames: int, batch: int, compiled: bool) -> dict:  # noqa: ANN001
    """Streaming inference frames/s of the full pipeline (stage 4's), ``batch`` streams at once.

    ``compiled``: the backbone (most of the work) through ``torch.compile``; the warm-up's seconds
    (compilation included) are recorded.
    """
    from train.pipeline.nets import SequenceStage

    pipeline = SequenceStage(cfg.model, run).pipeline.to(ctx.device).eval()
    if compiled:
        pipeline.geometry.backbone = torch.compile(pipeline.geometry.backbone)
    height, width = cfg.frame_size()
    step = pipeline.step
    warm = time.perf_counter()
    frame = torch.randn(batch, 3, height, width, device=ctx.device)
    K = torch.eye(3, device=ctx.device).expand(batch, 3, 3).clone()
    K[:, 0, 0], K[:, 1, 1], K[:, 0, 2], K[:, 1, 2] = width / 2, width / 2, width / 2, height / 2
    with engine.autocast(cfg, ctx):
        state = pipeline.init_state(batch, height, width, ctx.device)
        for _ in range(3):  # warm-up (and compilation)
            _, state = step(frame, state, K)
        _sync(ctx.device)
        start = time.perf_counter()
        warm = start - warm
        for _ in range(frames):
            _, state = step(frame, state, K)
        _sync(ctx.device)
    return {"frames_per_s": batch * frames / (time.perf_counter() - start), "warm_up_s": warm}


def speed(data: Path, out: Path, plan: Plan, ctx: Context) -> dict:
    """The paper preset's training and streaming speed."""
    run = out / "speed-run"
    sets = [
        f"data.size=[{plan.size[0]}, {plan.size[1]}]",
        "tensorboard=false",
        'data.augment_on="device"',
    ]
    cfg = resolve_config(plan.speed_preset, {"data": data, "out": run}, None, sets)
    seed_run(cfg, run)
    result: dict = {"preset": plan.speed_preset, "frame_size": list(cfg.frame_size()), "train": {}}
    params = sum(
        p.numel() for p in build_stage_net(cfg.stages["stage4"], cfg.model, run).parameters()
    )
    result["stage4_parameters_m"] = params / 1e6
    for name in ("stage1", "stage4"):
        for precision, amp in (("bf16", True), ("fp32", False)):
            if amp and ctx.device.type != "cuda":
                continue  # autocast is CUDA's only
            result["train"][f"{name}/{precision}"] = train_speed(cfg, name, ctx, plan, amp)
    result["stream"] = {}
    for batch in (1, 8):
        for compiled in (False, True) if plan.compile and batch == 8 else (False,):
            key = f"batch{batch}/{'compiled' if compiled else 'eager'}"
            try:
                result["stream"][key] = stream_speed(
                    cfg, run, ctx, plan.stream_frames, batch, compiled
                )
            except Exception as exc:  # noqa: BLE001 - torch.compile is guarded: eager stands
                result["stream"][key] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
    return result


# 3. loader -------------------------------------------------------------------------------------


def loader_feed(data: Path, out: Path, plan: Plan, ctx: Context, consumption: float | None) -> dict:
    """Frames/s 2 workers deliver with augmentation on the device, finished on the device."""
    sets = [
        "tensorboard=false",
        'data.augment_on="device"',
        f"data.size=[{plan.size[0]}, {plan.size[1]}]",
    ]
    cfg = resolve_config(plan.speed_preset, {"data": data, "out": out / "speed-run"}, None, sets)
    stage = PipelineStage(cfg, "stage1", validate=False)
    next_batch = _batches(stage, ctx)
    next_batch()  # workers started
    _sync(ctx.device)
    frames, start = 0, time.perf_counter()
    while time.perf_counter() - start < plan.feed_seconds:
        batch = next_batch()
        frames += batch["rgb"].shape[0] * batch["rgb"].shape[1]
    _sync(ctx.device)
    fps = frames / (time.perf_counter() - start)
    return {
        "workers": 2,
        "frames_per_s": fps,
        "stage1_consumption_frames_per_s": consumption,
        "keeps_up": None if consumption is None else fps >= consumption,
    }


# 4-6. learning ---------------------------------------------------------------------------------


def learning(data: Path, out: Path, plan: Plan, ctx: Context) -> dict:
    """benchmarks/learning.py's ablation at the plan's preset, with its verdicts."""
    import learning as bench

    sets = [
        f'device="{ctx.device}"',
        "tensorboard=false",
        'data.augment_on="device"',
        f"data.size=[{plan.learn_size[0]}, {plan.learn_size[1]}]",
        *plan.learn_sets,
    ]
    clock = bench.Clock()
    fusion = preset(plan.learn_preset).memory_fusion  # the preset's default
    runs, _ = bench.train_all(data, out, [fusion], sets, clock, preset=plan.learn_preset)
    result = bench.evaluate_all(runs, data, clock, device=str(ctx.device), level=level_of(fusion))
    return {
        "preset": plan.learn_preset,
        "sets": sets,
        "minutes": clock.minutes,
        "headline": bench.headline(result, fusion),
        "verdict": bench.verdicts(result, [fusion]),
    }


def forecast(data: Path, out: Path, plan: Plan, ctx: Context) -> dict:
    """benchmarks/forecast.py's forecasters (mid and long) on the learning run's stages 1-3."""
    import forecast as bench

    from train.forecast.evaluate import evaluate_forecast

    run = out / "run-frame"
    base = [f'device="{ctx.device}"', "tensorboard=false"]
    base += [f"data.size=[{plan.learn_size[0]}, {plan.learn_size[1]}]", *plan.forecast_sets]
    args = SimpleNamespace(steps=plan.forecast_steps, ablations="")
    clock = bench.Clock()
    bench.train_forecasters(
        args, data, run, base, clock, horizons=plan.horizons, preset=plan.learn_preset
    )
    report = evaluate_forecast(run, "test", data, str(ctx.device))
    return {"minutes": clock.minutes, "verdict": bench.verdicts(report), "report": report}


def sim2real(data: Path, out: Path, plan: Plan, ctx: Context) -> dict:
    """benchmarks/sim2real.py's three models and the constant, with its verdicts."""
    import sim2real as bench

    return bench.run_proxy(out / "sim2real", plan.sim2real_steps, plan.clips, str(ctx.device))


# the doc --------------------------------------------------------------------------------------

RUN_COMMAND = """On a machine with network, prepare the wheels a GPU machine without network
may lack (pydantic, hdf5plugin, python-blosc, ... and this package; see
`scripts/gpu_wheels.py --help`):

    python scripts/gpu_wheels.py --python-version 3.12 --out wheels

On the GPU machine (PyTorch, torchvision, h5py, numpy, OpenCV, click and tqdm already there):

    python -m pip install --no-index --no-deps --target /tmp/site wheels/*.whl
    export PYTHONPATH=/tmp/site
    python benchmarks/gpu.py --out /tmp/carla-temporal-gpu

It writes `benchmarks/results/gpu.json` and this page (about 8 minutes; `--budget-min` skips the
parts left after it). `python benchmarks/gpu.py --smoke --out /tmp/gpu-smoke` runs every part in
seconds on the CPU (a test of `make test`)."""


def _fmt(value: object, spec: str = ".1f") -> str:
    return "n/a" if value is None else format(value, spec)


def _speed_lines(speed: dict) -> list[str]:
    lines = [
        f"`{speed['preset']}` preset ({speed['stage4_parameters_m']:.1f} M parameters in stage 4's "
        f"network) at {speed['frame_size'][0]}x{speed['frame_size'][1]}:",
        "",
        "| training step | batch (windows x frames) | frames/s | steps/s | peak memory (GiB) |",
        "|---|---|---|---|---|",
    ]
    for key, r in speed["train"].items():
        lines.append(
            f"| {key} | {r['batch'][0]} x {r['batch'][1]} | {r['frames_per_s']:.1f} | "
            f"{r['steps_per_s']:.2f} | {_fmt(r['peak_memory_gib'])} |"
        )
    lines += ["", "| streaming inference (full pipeline) | frames/s |", "|---|---|"]
    for key, r in speed["stream"].items():
        lines.append(f"| {key} | {_fmt(r.get('frames_per_s'))} {r.get('error', '')} |")
    return lines


def _verdict_lines(title: str, verdict: dict) -> list[str]:
    lines = [f"{title}:", ""]
    for key, value in verdict.items():
        if isinstance(value, dict):
            lines += [
                f"- {key}: "
                + ", ".join(f"{k} **{'yes' if v else 'no'}**" for k, v in value.items())
            ]
        else:
            lines.append(f"- {key}: **{'yes' if value else 'no'}**")
    return [*lines, ""]


def _headline_lines(head: dict) -> list[str]:
    """The learning ablation's table: every variant clean and corrupted."""
    lines = [
        "| model | clean mIoU | corrupted mIoU | under the occluders | flip rate (corr.) "
        "| AbsRel (clean) |",
        "|---|---|---|---|---|---|",
    ]
    for variant, clean in head["clean"].items():
        corrupted = head["corrupted"][variant]
        lines.append(
            f"| {variant} | {_fmt(clean['miou'], '.3f')} | {_fmt(corrupted['miou'], '.3f')} | "
            f"{_fmt(corrupted['occluded_pixel_accuracy'], '.3f')} | "
            f"{_fmt(corrupted['stable_flip_rate'], '.4f')} | {_fmt(clean['abs_rel'], '.3f')} |"
        )
    return [*lines, ""]


def render_doc(payload: dict) -> str:
    """docs/gpu.md from the run's payload: setup, every part's figures and verdicts."""
    setup, parts = payload["setup"], payload["parts"]
    lines = [
        "# Figures on a GPU",
        "",
        "Generated by `benchmarks/gpu.py` from `benchmarks/results/gpu.json`"
        + (" (a **smoke** run: tiny sizes on the CPU, not figures)" if payload["smoke"] else "")
        + ".",
        "",
        f"Device: {setup.get('name')} ({setup['device']}, {_fmt(setup.get('memory_gib'))} GiB), "
        f"driver {setup.get('driver')}, torch {setup['torch']} (CUDA {setup['cuda']}), "
        f"{setup['cpu_cores']} CPU cores, {setup['date']}; {payload['minutes']:.1f} minutes.",
        "",
        "## How to run it",
        "",
        RUN_COMMAND,
        "",
    ]
    for name in PARTS:
        part = parts.get(name)
        if part is None:
            continue
        lines += [f"## {name}", ""]
        if "error" in part or "skipped" in part:
            lines += [f"Not measured: {part.get('error') or part.get('skipped')}", ""]
            continue
        if name == "speed":
            lines += [*_speed_lines(part), ""]
        elif name in ("record", "loader"):
            lines += [
                f"- {k.replace('_', ' ')}: {v:.1f}"
                if isinstance(v, float)
                else f"- {k.replace('_', ' ')}: {v}"
                for k, v in part.items()
            ]
            lines.append("")
        else:
            lines += _verdict_lines("Verdicts (computed from the run's numbers)", part["verdict"])
            if "headline" in part:
                lines += _headline_lines(part["headline"])
            for horizon, res in part.get("report", {}).get("horizons", {}).items():
                rows = ", ".join(f"{k} {r['miou']:.3f}" for k, r in res["rows"].items())
                lines += [f"- {horizon} horizon, mIoU: {rows}", ""]
            if "rows" in part:
                lines += [
                    f"- {k}: " + ", ".join(f"{m} {v:.3f}" for m, v in r.items())
                    for k, r in part["rows"].items()
                ]
                lines.append("")
    return "\n".join(lines) + "\n"


# the run ---------------------------------------------------------------------------------------


def run_parts(args: argparse.Namespace, plan: Plan, ctx: Context) -> dict:
    """Every part in order, timed, within the budget."""
    out, data = args.out, args.out / "data"
    parts: dict[str, dict] = {}
    deadline = time.perf_counter() + 60 * args.budget_min
    calls = {
        "record": lambda: record_data(data, plan),
        "speed": lambda: speed(data, out, plan, ctx),
        "loader": lambda: loader_feed(data, out, plan, ctx, _consumption(parts)),
        "learning": lambda: learning(data, out, plan, ctx),
        "forecast": lambda: forecast(data, out, plan, ctx),
        "sim2real": lambda: sim2real(data, out, plan, ctx),
    }
    for name in args.parts.split(","):
        if time.perf_counter() > deadline:
            parts[name] = {"skipped": f"past the {args.budget_min}-minute budget"}
            continue
        start = time.perf_counter()
        try:
            parts[name] = calls[name]()
        except Exception as exc:
            if args.smoke:
                raise
            parts[name] = {
                "error": f"{type(exc).__name__}: {exc}",
                "trace": traceback.format_exc()[-2000:],
            }
        parts[name]["seconds"] = time.perf_counter() - start
        log.info("%s: %.0f s", name, parts[name]["seconds"])
    return parts


def _consumption(parts: dict) -> float | None:
    train = parts.get("speed", {}).get("train", {})
    best = train.get("stage1/bf16") or train.get("stage1/fp32")
    return best["frames_per_s"] if best else None


def main() -> None:
    """Run the parts; write the JSON and (a full run) the doc."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("/tmp/carla-temporal-gpu"))
    parser.add_argument("--smoke", action="store_true", help="Tiny sizes, one step, CPU.")
    parser.add_argument("--budget-min", type=float, default=8.0, help="Skip parts after this.")
    parser.add_argument("--device", default="auto", help="auto, cuda, cuda:N or cpu.")
    parser.add_argument("--parts", default=",".join(PARTS), help="Comma-separated parts to run.")
    parser.add_argument(
        "--learn-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="Extra train config override of the learning run (e.g. stages.stage1.epochs=20).",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    name = "cpu" if args.smoke else args.device
    device = torch.device(
        "cuda"
        if name == "auto" and torch.cuda.is_available()
        else ("cpu" if name == "auto" else name)
    )
    plan = SMOKE if args.smoke else GPU
    if args.learn_set:
        plan = Plan(**{**plan.__dict__, "learn_sets": (*plan.learn_sets, *args.learn_set)})
    if args.smoke:
        import sim2real as bench

        plan = Plan(**{**plan.__dict__, "towns": bench.write_towns(args.out / "towns", 64, 32)})
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # PyTorch's TF32 defaults stand (setup.tf32)
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    payload = {
        "command": "python benchmarks/gpu.py" + (" --smoke" if args.smoke else ""),
        "smoke": args.smoke,
        "setup": describe_device(device),
        "plan": {k: (str(v) if isinstance(v, Path) else v) for k, v in plan.__dict__.items()},
    }
    payload["parts"] = run_parts(args, plan, Context(device))
    payload["minutes"] = (time.perf_counter() - start) / 60
    payload["setup"]["packages"] = imported_packages()
    (args.out / "gpu.json").write_text(json.dumps(payload, indent=2, default=str))
    doc = render_doc(payload)
    (args.out / "gpu.md").write_text(doc)
    if not args.smoke and device.type == "cuda":
        write_result("gpu", payload)
        DOC.write_text(doc)
    log.info("-> %s", args.out / "gpu.json")


def imported_packages() -> dict[str, str]:
    """Each third-party distribution this run imported, with its version.

    What a GPU machine must have (``scripts/gpu_wheels.py`` carries what it lacks).
    """
    from importlib import metadata

    owners = metadata.packages_distributions()
    modules = set(sys.modules) - set(sys.stdlib_module_names)  # a backport never ran
    names = {dist for module in modules for dist in owners.get(module, ())}
    names.discard("carla-temporal")
    return {name: metadata.version(name) for name in sorted(names)}


if __name__ == "__main__":
    main()
