"""``train``: models, training stages, evaluation and predictions.

Commands stay thin: parse options, build the config, call one library function, print.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import click

from clipcore.cliopts import config_options, file_and_set_options, nest
from clipcore.clitools import ErrorGroup, FiniteFloat, TextPathType
from clipcore.errors import CaptureError
from clipcore.geometry import HFOV_RANGE_DEG
from dataset.labels import available_label_maps
from models.config import PRESETS
from train.config import TrainConfig

_DIR = {"type": TextPathType(file_okay=False)}


def _device(ctx: click.Context, param: click.Parameter, value: str) -> str:
    from train.engine import resolve_device

    return resolve_device(value)


DEVICE = click.option(
    "--device",
    default="auto",
    show_default=True,
    callback=_device,
    help="auto (cuda when a GPU is visible), cpu, cuda or cuda:N.",
)
DOMAIN = click.option(
    "--domain",
    type=click.Choice(["real", "sim"]),
    default="real",
    show_default=True,
    help="sim2real: the encoder the images go through.",
)
#: TrainConfig fields that ``train run`` offers as options (any field: ``--set``).
RUN_FIELDS = (
    "data.root",
    "out",
    "preset",
    "data.label_map",
    "data.size",
    "data.train_split",
    "data.val_split",
    "data.num_workers",
    "seed",
    "device",
    "deterministic",
)


@click.group(cls=ErrorGroup)
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def main(verbose: int) -> None:
    """Train and evaluate the temporal perception models on recorded clips."""
    logging.basicConfig(
        level=logging.WARNING - 10 * min(verbose, 2), format="%(levelname)s %(name)s: %(message)s"
    )


@main.command()
@click.argument(
    "stage",
    type=click.Choice(
        [
            "stage1",
            "stage2",
            "stage3",
            "stage4",
            "all",
            "forecast",
            "sim2real-vae",
            "sim2real-tasks",
        ]
    ),
)
@config_options(
    TrainConfig,
    RUN_FIELDS,
    root={"flag": "--data", "required": True, **_DIR, "help": "Dataset folder with split.json."},
    out={"required": True, **_DIR},
    preset={"type": click.Choice(list(PRESETS))},
    size={"metavar": "H,W"},
    label_map={"type": click.Choice(available_label_maps())},
)
@file_and_set_options(
    "TrainConfig fields ([data], [model], [stages.stage1], ...)",
    "--set stages.stage1.epochs=2 or --set data.augment.flip_p=0",
)
@click.option("--resume", is_flag=True, help="Continue each stage from its last.pt.")
@click.option(
    "--target",
    type=TextPathType(),
    help="sim2real: folder of unlabelled target images (JPG/PNG) or shards.",
)
def run(
    stage: str,
    config: Path | None,
    overrides: tuple[str, ...],
    resume: bool,
    target: Path | None,
    **options: Any,
) -> None:
    """Train STAGE (stage1..stage4, all four in order, forecast after stage1, or the sim2real
    stages) into the run folder. Every option is a TrainConfig field; the resolved config is
    saved as OUT/config.json.

    \b
    Examples:
      train run all --data data/demo --out runs/demo --preset tiny
      train run stage4 --data data --out runs/paper --preset paper --num-workers 4
      train run stage1 --data data --out runs/r1 --set stages.stage1.epochs=5 --resume
      train run stage1 --data data/cs --out runs/cs --preset lowres --label-map cityscapes19
      torchrun --nproc-per-node 4 -m train run stage1 --data data --out runs/ddp --preset paper
      train run forecast --data data/demo --out runs/demo --set 'forecast.horizon="mid"'
      train run sim2real-vae --data data --target photos/ --out runs/s2r    # then:
      train run sim2real-tasks --data data --out runs/s2r
    """
    given = nest(options)
    preset = given.pop("preset", None)
    if stage.startswith("sim2real"):
        from train.sim2real import resolve_config as sim2real_config
        from train.sim2real import train as sim2real_train

        flat = {"data": given["data"]["root"], "out": given["out"], "target": target}
        cfg = sim2real_config(preset or "tiny", flat, config, overrides)
        click.echo(f"checkpoint: {sim2real_train(cfg, stage)}")
        return
    from train.run import resolve_config, train

    cfg = resolve_config(preset, given, config, overrides)
    if stage.startswith("sim2real"):
        from train.sim2real import resolve_config as sim2real_config
        from train.sim2real import train as sim2real_train

    if stage == "forecast":
        from train.forecast import train_forecast

        click.echo(f"best checkpoint: {train_forecast(cfg, resume)}")
        return
    for path in train(cfg, stage, resume):
        click.echo(f"best checkpoint: {path}")


@main.command("eval")
@click.option(
    "--run",
    "run_dir",
    type=TextPathType(file_okay=False),
    required=True,
    help="Run folder of train run all.",
)
@click.option("--split", default="test", show_default=True, help="Manifest split to evaluate on.")
@click.option(
    "--data",
    type=TextPathType(file_okay=False),
    help="Dataset folder [default: the run's].",
)
@DEVICE
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of the Markdown table.")
@click.option(
    "--perturbed", is_flag=True, help="Also evaluate under per-frame noise, flicker and occluders."
)
@click.option(
    "--task",
    type=click.Choice(["pipeline", "forecast", "sim2real"]),
    default="pipeline",
    show_default=True,
    help="forecast: every trained forecaster against its baselines, per horizon; "
    "sim2real: the twin VAE on SPLIT of --data, or on --images with --depth-png.",
)
@DOMAIN
@click.option(
    "--images",
    type=TextPathType(file_okay=False),
    help="sim2real: folder of real images.",
)
@click.option(
    "--depth-png",
    type=TextPathType(file_okay=False),
    help="sim2real: KITTI depth PNGs (16-bit, metres x 256) named like --images.",
)
def evaluate(
    run_dir: Path,
    split: str,
    data: Path | None,
    device: str,
    as_json: bool,
    perturbed: bool,
    task: str,
    domain: str,
    images: Path | None,
    depth_png: Path | None,
) -> None:
    """Compare the frame-by-frame models with the temporal model on SPLIT; writes RUN/eval.json
    and RUN/eval.md.

    \b
    Examples:
      train eval --run runs/demo
      train eval --run runs/demo --perturbed
      train eval --run runs/paper --split val --device cuda
      train eval --run runs/demo --task forecast
      train eval --run runs/s2r --task sim2real --images kitti/img --depth-png kitti/depth
    """
    if task == "sim2real":
        from train.sim2real_eval import evaluate_sim2real_run

        report = evaluate_sim2real_run(run_dir, domain, data, split, images, depth_png)
        click.echo(json.dumps(report, indent=2))
        return
    from train.evaluate import write_report

    if task == "forecast":
        from train.forecast_eval import evaluate_forecast, to_markdown

        report, name = evaluate_forecast(run_dir, split, data, device), "forecast_eval"
    else:
        from dataset.config import Perturbation
        from train.evaluate import evaluate_run, to_markdown

        report = evaluate_run(run_dir, split, data, device, Perturbation() if perturbed else None)
        name = "eval"
    js, md = write_report(report, run_dir, name, to_markdown)
    click.echo(json.dumps(report, indent=2) if as_json else to_markdown(report))
    click.echo(f"-> {js}, {md}", err=True)


@main.command()
@click.argument("path", type=TextPathType(exists=True), required=False)
@click.option(
    "--run",
    "run_dir",
    type=TextPathType(file_okay=False),
    required=True,
    help="Run folder.",
)
@click.option("--clip", "clip_id", help="Clip id [default: the first clip].")
@click.option(
    "--out",
    type=TextPathType(),
    help="Output folder [default: RUN/predictions]; with --video the .mp4 or .gif to write.",
)
@click.option(
    "--video",
    type=TextPathType(),
    help="Predict on this video file (mp4, avi, mkv, webm, gif) instead of a clip.",
)
@click.option(
    "--hfov",
    type=FiniteFloat(*HFOV_RANGE_DEG, min_open=True, max_open=True),
    default=90.0,
    show_default=True,
    help="With --video: the camera's horizontal field of view, degrees (temporal model).",
)
@click.option("--max-frames", type=click.IntRange(min=1), help="With --video: stop after N frames.")
@click.option("--gif", is_flag=True, help="Write a GIF instead of an MP4.")
@DEVICE
@click.option(
    "--task",
    type=click.Choice(["pipeline", "forecast", "sim2real"]),
    default="pipeline",
    show_default=True,
    help="forecast: last input | forecast | zero-motion | ground truth, per target "
    "frame; sim2real: input | translation | reconstruction | depth | segmentation (a PNG).",
)
@DOMAIN
@click.option(
    "--variant",
    help="Forecaster folder for --task forecast, e.g. forecast-mid [default: the first].",
)
def predict(
    path: Path | None,
    run_dir: Path,
    clip_id: str | None,
    out: Path | None,
    video: Path | None,
    hfov: float,
    max_frames: int | None,
    gif: bool,
    device: str,
    task: str,
    variant: str | None,
    domain: str,
) -> None:
    """Video (RGB | predicted segmentation | predicted depth | ground truth) and point clouds of
    one clip; or, with --video, any video file as input | segmentation | depth at the run's frame
    size.

    PATH is a shard or a dataset folder.

    \b
    Examples:
      train predict --run runs/demo data/demo/Town02
      train predict --run runs/demo data/demo --clip Town02-0-000001 --gif
      train predict --run runs/demo data/demo/Town02 --task forecast --variant forecast-mid --gif
      train predict --video drive.mp4 --run runs/lowres --out drive-pred.gif
      train predict --run runs/s2r photos/ --task sim2real
    """
    if video is not None:
        from train.video_predict import predict_video

        if out is None:
            raise CaptureError("--video needs --out FILE.mp4 or FILE.gif")
        report = predict_video(video, run_dir, out, device, hfov, max_frames)
        click.echo(
            f"-> {report.out} ({report.frames} frames, {report.model} model, "
            f"{report.size[0]}x{report.size[1]})"
        )
        return
    if path is None:
        raise CaptureError("pass PATH (a shard or dataset folder) or --video FILE")
    if task == "sim2real":
        from train.sim2real_predict import predict_sim2real

        click.echo(f"-> {predict_sim2real(run_dir, path, out, domain)}")
        return
    if task == "forecast":
        from train.forecast_eval import predict_forecast

        for written in predict_forecast(
            run_dir, path, clip_id, out, ".gif" if gif else ".mp4", device, variant
        ):
            click.echo(f"-> {written}")
        return
    from train.predict import predict_clip

    for written in predict_clip(run_dir, path, clip_id, out, ".gif" if gif else ".mp4", device):
        click.echo(f"-> {written}")


@main.command()
@click.option(
    "--preset",
    type=click.Choice(list(PRESETS)),
    default="paper",
    show_default=True,
    help="Model sizes to describe.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the table as JSON.")
def models(preset: str, as_json: bool) -> None:
    """Print each model's parameter count and FLOPs per frame at the preset's input size.

    \b
    Examples:
      train models --preset paper
      train models --preset tiny --json
    """
    from models.summary import format_rows, summarize

    cfg = PRESETS[preset]
    rows = summarize(cfg, preset)
    if as_json:
        click.echo(
            json.dumps(
                {"preset": preset, "input_size": list(cfg.input_size), "models": rows}, indent=2
            )
        )
    else:
        click.echo(format_rows(preset, cfg, rows))
