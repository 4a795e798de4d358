"""``capture``: record, inspect (and later split and verify) datasets of CARLA clips.

Commands stay thin: parse options, build the pydantic config, apply ``--set`` overrides,
call one library function, print the result.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import click

from carla_capture.config import CaptureConfig, VerifyConfig
from carla_capture.importers.cli import import_group
from clipcore.cliopts import config_options, file_and_set_options, nest
from clipcore.clitools import ErrorGroup, TextPathType, version_option
from clipcore.errors import CaptureError
from clipcore.fsutil import atomic_write_text, os_error_message
from clipcore.progress import Progress
from clipcore.settings import apply_overrides, build, deep_merge, read_toml


class _Group(ErrorGroup):
    interrupt_hint = "interrupted: finished clips are kept; run the same command again to resume"


@click.group(cls=_Group)
@version_option()
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def main(verbose: int) -> None:
    """Record and check datasets of synchronized RGB / semantic / depth / pose clips."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


def capture_config(
    config: Path | None, options: dict[str, Any], overrides: tuple[str, ...]
) -> CaptureConfig:
    """File (optional) < command-line options < ``--set`` overrides, merged deeply and validated."""
    data: dict[str, Any] = read_toml(config) if config else {}
    data = deep_merge(data, nest(options))
    data = apply_overrides(CaptureConfig, data, list(overrides))
    return build(CaptureConfig, data, "capture config")


_DIR = {"type": TextPathType(file_okay=False)}
RECORD_FIELDS = (
    "backend",
    "town",
    "towns",
    "clips",
    "frames",
    "frame_stride",
    "fps",
    "seed",
    "task_index",
    "num_tasks",
    "out",
    "clips_per_shard",
    "compression",
    "town_dir",
    "appearance",
    "carla.host",
    "carla.port",
    "carla.tm_port",
    "carla.timeout",
    "carla.vehicles",
    "carla.walkers",
    "carla.sensor_timeout",
    "carla.warmup_ticks",
    "carla.max_restarts",
    "carla.servers",
    "carla.server_cmd",
    "carla.server_gpu",
    "carla.server_wait",
    "carla.map_timeout",
    "carla.stall_timeout",
    "carla.keep_settings",
)


@main.command()
@config_options(CaptureConfig, RECORD_FIELDS, town_dir=_DIR)
@file_and_set_options("CaptureConfig fields", "--set frames=10 or --set carla.respawn_every=3")
def record(config: Path | None, overrides: tuple[str, ...], **options: Any) -> None:
    """Record clips into HDF5 shards under OUT/TOWN/, resuming where a previous run stopped.

    A dataset plan is (towns, --clips per town, --seed, the settings that change the data): the
    same plan gives the same clips whether one process or N tasks record it. Task K of N records
    clips K, K+N, ... of every town; K and N come from --task-index / --num-tasks, or a SLURM job
    array, or a Kubernetes indexed Job (JOB_COMPLETION_INDEX, with --num-tasks). See
    docs/cluster.md.

    \b
    Examples:
      capture record --town Town03 --clips 200                 # CARLA server on 127.0.0.1:2000
      capture record --town Town10HD --clips 50 --host 10.0.0.5 --vehicles 80 --walkers 40
      capture record --town Town03 --clips 400 --servers 127.0.0.1:2000,127.0.0.1:2004
      capture record --backend synthetic --town Town01 --clips 20 --out data/demo
      capture record --backend synthetic --town Town02 --clips 5 --frames 10 --set fps=10
      capture record --backend synthetic --town Town01 --clips 20 --appearance textured \\
        --out data/real
      capture record --backend synthetic --towns Town01,Town02 --clips 12 --seed 7 \\
        --task-index 1 --num-tasks 3 --out data/plan     # task 1 of 3 of one plan

    Running the same command again after a crash or Ctrl-C records only the missing clips.
    """
    from carla_capture.plan import plan_towns, resolve_task
    from carla_capture.record import clips_done
    from carla_capture.record import record_plan as run_record

    cfg = capture_config(config, options, overrides)
    if cfg.carla.servers:
        from carla_capture.servers import record_on_servers

        record_on_servers(cfg)
        return
    task = resolve_task(cfg)
    if cfg.backend == "carla" and cfg.carla.supervise:
        from carla_capture.supervisor import supervised_record as run_record
    towns = plan_towns(cfg)
    of_task = "" if task.count == 1 else f", {task}"
    with Progress(
        len(towns) * len(task.share(cfg.clips)),
        f"recording {','.join(towns)} ({cfg.backend}, seed {cfg.seed}{of_task})",
        unit="clip",
        done=clips_done(cfg, task),
        per_item=cfg.frames,
        rate_unit="frames",
    ) as bar:
        summaries = run_record(cfg, progress=bar.update, task=task)
    for summary in summaries:
        click.echo(_summary_line(summary, cfg.out))


def _summary_line(summary: Any, out: Path) -> str:
    """One line of what ``capture record`` did in one town."""
    rate = summary.frames_recorded / summary.seconds if summary.seconds > 0 else 0.0
    share = "" if summary.task.count == 1 else f" of {summary.task}'s share"
    elsewhere = (
        f", {summary.elsewhere} being recorded by other writers" if summary.elsewhere else ""
    )
    return (
        f"{summary.town}: {summary.existing + summary.recorded}/{summary.requested} clips{share} "
        f"({summary.recorded} recorded now, {summary.existing} already there{elsewhere}), "
        f"{len(summary.shards_written)} shard(s) written, {rate:.1f} frames/s -> "
        f"{out / summary.town}"
    )


@main.command()
@click.argument("path", type=TextPathType())
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option(
    "--sheet",
    type=TextPathType(dir_okay=False),
    help="Write a contact sheet PNG of one clip.",
)
@click.option("--clip", "clip_id", help="Clip id for --sheet [default: the first clip].")
@click.option(
    "--rows",
    type=click.IntRange(1, 20),
    default=4,
    show_default=True,
    help="Frames in the contact sheet.",
)
@click.option(
    "--video",
    type=TextPathType(dir_okay=False),
    help="Write RGB | semantic | depth of one clip as .mp4 or .gif.",
)
@click.option("--rerun", is_flag=True, help="Browse the clips (or --clip) in the Rerun viewer.")
@click.option(
    "--save",
    type=TextPathType(dir_okay=False),
    help="Write the clips (or --clip) as a Rerun dashboard FILE.rrd.",
)
def inspect(
    path: Path,
    as_json: bool,
    sheet: Path | None,
    clip_id: str | None,
    rows: int,
    video: Path | None,
    rerun: bool,
    save: Path | None,
) -> None:
    """Summarise a shard or a dataset folder: towns, clips, frames, size, codec, classes.

    \b
    Examples:
      capture inspect data/demo
      capture inspect data/demo/Town01/Town01-s0-00001.h5 --json
      capture inspect data/demo --sheet clip.png --clip Town01-0-000003
      capture inspect data/demo --video clip.mp4 --clip Town02-0-000000
      capture inspect data/demo/Town02 --rerun        # needs: pip install "carla-temporal[live]"
      capture inspect data/demo --save clips.rrd --clip Town02-0-000000
    """
    from carla_capture import inspect as insp
    from clipcore.errors import ConfigError

    if rerun and save:
        raise ConfigError("choose one of --rerun (open the viewer) and --save FILE.rrd")
    insp.check_options(path, clip_id, sheet, video, save)  # before printing anything
    info = insp.summarize(path)
    click.echo(json.dumps(info, indent=2) if as_json else insp.format_summary(info))
    for kind, out in (("contact sheet", sheet), ("video", video)):
        if out is not None:
            cid = insp.write_picture(path, clip_id, out, kind == "video", rows)
            click.echo(f"{kind} of {cid} -> {out}", err=as_json)
    if rerun or save:
        from clipcore.dashboard import Sink, log_clips

        clips, frames = log_clips(path, Sink("save", save) if save else Sink("spawn"), clip_id)
        click.echo(f"{clips} clip(s), {frames} frames -> {save or 'the Rerun viewer'}", err=as_json)


@main.command()
@click.argument("data_dir", type=TextPathType(file_okay=False))
@click.option(
    "--splits",
    "splits_file",
    type=TextPathType(dir_okay=False),
    help="Splits file [default: town_configs/splits.toml].",
)
def split(data_dir: Path, splits_file: Path | None) -> None:
    """Write DATA_DIR/split.json: the shards and clips of each split, with checksums.

    Towns map to splits through the splits file; a town or clip id in two splits is refused.
    Safe to re-run: it changes nothing when the data did not change.

    \b
    Examples:
      capture split data/demo
      capture split data/demo --splits my-splits.toml
    """
    from carla_capture.split import split_dataset, split_table
    from clipcore.manifest import MANIFEST_NAME, empty_splits

    manifest, changed = split_dataset(data_dir, splits_file)
    click.echo(split_table(manifest))
    towns = manifest["splits_config"]["splits"]
    for name in empty_splits(manifest):
        which = ", ".join(towns.get(name, ())) or "any town"
        click.echo(
            f"warning: split {name!r} has no clips (no shards of {which}); record its towns "
            "before training or evaluating on it",
            err=True,
        )
    click.echo(f"{'wrote' if changed else 'unchanged:'} {data_dir / MANIFEST_NAME}")


@main.command()
@click.argument("data_dir", type=TextPathType(file_okay=False))
@click.option(
    "--report",
    type=TextPathType(dir_okay=False),
    help="JSON report path [default: DATA_DIR/verify-report.json].",
)
@click.option(
    "--quarantine",
    "do_quarantine",
    is_flag=True,
    help="Move shards with failing clips into DATA_DIR/quarantine/.",
)
@file_and_set_options("VerifyConfig thresholds", "--set min_depth_agree=0.8")
def verify(
    data_dir: Path,
    report: Path | None,
    do_quarantine: bool,
    config: Path | None,
    overrides: tuple[str, ...],
) -> None:
    """Check every clip.

    Frame timing, RGB, depth range, sky at the far plane, tags, poses and geometric consistency
    between frames. Exits 1 when any clip fails.

    \b
    Examples:
      capture verify data/demo
      capture verify data/demo --quarantine
      capture verify data/demo --set min_depth_agree=0.8 --report /tmp/report.json
    """
    from carla_capture import verify as vf
    from clipcore.folder import find_shards

    data = apply_overrides(VerifyConfig, read_toml(config) if config else {}, list(overrides))
    cfg = build(VerifyConfig, data, "verify config")
    shards = find_shards(data_dir)
    with Progress(len(shards), f"verifying {data_dir}", unit="shard") as bar:
        reports = vf.verify_dataset(data_dir, cfg, progress=bar.update, shards=shards)
    click.echo(vf.report_table(reports))  # the results first: writing may fail (read-only data)
    moved = vf.quarantine(data_dir, reports) if do_quarantine else []
    for rel in moved:
        click.echo(f"quarantined {rel}")
    report = report or data_dir / "verify-report.json"
    text = json.dumps(vf.report_json(data_dir, reports, cfg, moved), indent=2) + "\n"
    try:
        atomic_write_text(report, text)
    except OSError as exc:
        raise CaptureError(
            f"results above; the report was not written ({os_error_message(exc, report)}): pass "
            "--report FILE in a writable folder"
        ) from None
    click.echo(f"report -> {report}")
    if any(not r.passed for r in reports):
        sys.exit(1)


@main.command()
@config_options(
    CaptureConfig,
    (
        "carla.host",
        "carla.port",
        "carla.tm_port",
        "town",
        "town_dir",
        "carla.timeout",
        "carla.map_timeout",
        "carla.stall_timeout",
    ),
    town_dir=_DIR,
)
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON (for bug reports).")
def doctor(as_json: bool, **options: Any) -> None:
    """Check a CARLA server before recording.

    Versions, maps, map load time, synchronous tick rate, Traffic Manager, latency per camera, one
    short clip with the reprojection checks. Prints a table with the fix of every failure; exits 1
    when a check fails. Leaves the server asynchronous. The checks run in a child process that is
    stopped when no tick comes for --stall-timeout s.

    \b
    Examples:
      capture doctor
      capture doctor --host 10.0.0.5 --port 2000 --town Town10HD
      capture doctor --json > doctor.json
    """
    from carla_capture import doctor as dr

    cfg = capture_config(None, {**options, "backend": "carla", "frames": 5, "out": Path(".")}, ())
    checks = dr.run_doctor(cfg)
    click.echo(json.dumps(dr.as_json(checks), indent=2) if as_json else dr.format_table(checks))
    if not all(c.passed for c in checks):
        sys.exit(1)


main.add_command(import_group)
