"""The ``train`` command.

Every command of :mod:`train.cli` plus ``train live``, which drives a capture backend and so lives
here, above both the capture and the training packages.
"""

from __future__ import annotations

from typing import Any

import click

from carla_temporal.config import LIVE_CAPTURE, LiveConfig
from clipcore.cliopts import config_options, nest
from clipcore.clitools import ErrorGroup, TextPathType
from clipcore.settings import build, deep_merge
from train.cli import main as training

#: The fields of ``train live``'s config offered as options: the run, the simulator (a capture
#: config: what applies to driving one), the dashboard.
LIVE_FIELDS = (
    "run",
    "capture.backend",
    "capture.town",
    "capture.town_dir",
    "capture.clips",
    "capture.frames",
    "capture.frame_stride",
    "capture.fps",
    "capture.seed",
    "capture.appearance",
    "capture.carla.host",
    "capture.carla.port",
    "capture.carla.tm_port",
    "capture.carla.timeout",
    "capture.carla.vehicles",
    "capture.carla.walkers",
    "max_frames",
    "spawn",
    "serve",
    "bind",
    "save",
    "web_port",
    "device",
)
_DIR = {"type": TextPathType(file_okay=False)}


def live_config(options: dict[str, Any]) -> LiveConfig:
    """``train live``'s config from its options (capture fields over :data:`LIVE_CAPTURE`)."""
    data = deep_merge({"capture": LIVE_CAPTURE}, nest(options))
    return build(LiveConfig, data, "train live options", options=True)


@click.command()
@config_options(
    LiveConfig,
    LIVE_FIELDS,
    run=_DIR,
    town_dir=_DIR,
    save={"type": TextPathType(dir_okay=False)},
    clips={"help": "Clips to drive (each restarts the model's memory and the trajectories)."},
)
def live(**options: Any) -> None:
    """Drive a simulator and show the temporal model's predictions in a Rerun dashboard.

    Each frame: RGB, ground-truth and predicted segmentation, true and predicted depth, the
    estimated against the true camera trajectory, and fps. The simulator options are fields of the
    capture config (capture record's, with these defaults). Needs the Rerun SDK: pip install
    "carla-temporal[live]".

    \b
    Examples:
      train live --run runs/demo                                   # opens the Rerun viewer
      train live --run runs/demo --town Town10HD --clips 4 --frames 100 --save live.rrd
      train live --run runs/paper --backend carla --town Town03 --serve --device cuda
      train live --run runs/demo --serve --bind 0.0.0.0   # other machines may watch (no auth)
      rerun live.rrd                                               # replay a saved dashboard
    """
    from carla_temporal.live import live as run_live
    from train.context import resolve_device

    cfg = live_config(options)
    sink = cfg.sink()
    stats = run_live(cfg.run, cfg.capture, cfg.frames(), sink, resolve_device(cfg.device))
    stats = stats.as_dict()
    accuracy = "n/a" if stats["pixel_accuracy"] is None else f"{stats['pixel_accuracy']:.1%}"
    click.echo(
        f"{stats['frames']} frames in {stats['clips']} clip(s): {stats['fps']:.1f} frames/s,"
        f" {stats['cpu_ms_per_frame']:.0f} ms CPU per frame, pixel accuracy {accuracy}"
    )
    if cfg.save:
        click.echo(f"-> {cfg.save} (view with: rerun {cfg.save})")
    if cfg.serve:
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
