"""The ``train`` command: every command of :mod:`train.cli` plus ``train live``, which drives a
capture backend and so lives here, above both the capture and the training packages.
"""

from __future__ import annotations

from pathlib import Path

import click

from clipcore.clitools import ErrorGroup, TextPathType
from clipcore.dashboard import LOOPBACK
from train.cli import DEVICE
from train.cli import main as training


@click.command()
@click.option(
    "--run",
    "run_dir",
    type=TextPathType(file_okay=False),
    required=True,
    help="Run folder trained through stage 4.",
)
@click.option(
    "--backend",
    type=click.Choice(["synthetic", "carla"]),
    default="synthetic",
    show_default=True,
    help="Simulator to drive.",
)
@click.option(
    "--town",
    default="Town02",
    show_default=True,
    help="Town to drive in (a file in town_configs/).",
)
@click.option(
    "--frames",
    type=click.IntRange(1),
    default=200,
    show_default=True,
    help="Frames to run, then stop.",
)
@click.option(
    "--clip-frames",
    type=click.IntRange(1),
    default=100,
    show_default=True,
    help="Frames per clip; the model's memory and the trajectories restart each clip.",
)
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="Seed of the simulated traffic and weather.",
)
@click.option(
    "--town-dir",
    type=TextPathType(file_okay=False),
    help="Folder of town files to use instead of the packaged ones.",
)
@click.option("--host", help="CARLA server host [default: 127.0.0.1].")
@click.option("--port", type=int, help="CARLA RPC port [default: 2000].")
@click.option("--spawn", is_flag=True, help="Open the Rerun viewer (the default).")
@click.option(
    "--serve",
    is_flag=True,
    help="Serve the Rerun web viewer and keep serving; the live data listens on --bind only.",
)
@click.option(
    "--bind",
    default=LOOPBACK,
    show_default=True,
    help="Address the served live data listens on: 127.0.0.1 is this machine only; another "
    "(0.0.0.0: every interface) exposes the live camera images to the network, without "
    "authentication.",
)
@click.option(
    "--save",
    type=TextPathType(dir_okay=False),
    help="Write the dashboard to FILE.rrd.",
)
@click.option(
    "--web-port",
    type=click.IntRange(1, 65535),
    default=9090,
    show_default=True,
    help="Port of the web viewer (--serve).",
)
@DEVICE
def live(
    run_dir: Path,
    backend: str,
    town: str,
    frames: int,
    clip_frames: int,
    seed: int,
    town_dir: Path | None,
    host: str | None,
    port: int | None,
    spawn: bool,
    serve: bool,
    save: Path | None,
    web_port: int,
    bind: str,
    device: str,
) -> None:
    """Drive a simulator and show the temporal model's predictions on each frame in a Rerun
    dashboard: RGB, ground-truth and predicted segmentation, true and predicted depth, the
    estimated against the true camera trajectory, and fps.
    Needs the Rerun SDK: pip install "carla-temporal[live]".

    \b
    Examples:
      train live --run runs/demo                                   # opens the Rerun viewer
      train live --run runs/demo --town Town10HD --frames 400 --save live.rrd
      train live --run runs/paper --backend carla --town Town03 --serve --device cuda
      train live --run runs/demo --serve --bind 0.0.0.0   # other machines may watch (no auth)
      rerun live.rrd                                               # replay a saved dashboard
    """
    from carla_temporal.live import capture_config
    from carla_temporal.live import live as run_live
    from clipcore.dashboard import Sink
    from clipcore.errors import ConfigError

    if spawn + serve + (save is not None) > 1:
        raise ConfigError("choose one of --spawn, --serve and --save FILE.rrd")
    if bind != LOOPBACK and not serve:
        raise ConfigError(f"--bind {bind} is where --serve listens: pass --serve too")
    sink = (
        Sink("save", save)
        if save
        else Sink("serve", web_port=web_port, bind=bind)
        if serve
        else Sink("spawn")
    )
    options = {
        "backend": backend,
        "town": town,
        "frames": clip_frames,
        "seed": seed,
        "town_dir": town_dir,
        "carla__host": host,
        "carla__port": port,
    }
    capture = capture_config(options)
    stats = run_live(run_dir, capture, frames, sink, device).as_dict()
    accuracy = "n/a" if stats["pixel_accuracy"] is None else f"{stats['pixel_accuracy']:.1%}"
    click.echo(
        f"{stats['frames']} frames in {stats['clips']} clip(s): {stats['fps']:.1f} frames/s,"
        f" {stats['cpu_ms_per_frame']:.0f} ms CPU per frame, pixel accuracy {accuracy}"
    )
    if save:
        click.echo(f"-> {save} (view with: rerun {save})")
    if serve:
        import time

        click.echo(f"serving: {sink.serving_note()}; Ctrl-C to stop", err=True)
        while True:
            time.sleep(3600)


#: ``train``: the training commands (``train run``, ``eval``, ``predict``, ...) and ``live``.
main = ErrorGroup(
    name="train",
    commands={**training.commands, "live": live},
    params=training.params,
    callback=training.callback,
    help="Train and evaluate the temporal perception models on recorded clips, and drive a "
    "simulator with a trained model (train live).",
)
