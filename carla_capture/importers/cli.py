"""``capture import rosbag`` and ``capture import cityscapes``.

Options from each importer's config, one way of printing the
:class:`~carla_capture.importers.report.ImportReport`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from carla_capture.importers.config import CityscapesImport, RosbagImport
from carla_capture.importers.report import ImportReport
from clipcore.cliopts import config_options
from clipcore.clitools import TextPathType

_REQUIRED = {"required": True}


def _show(report: ImportReport) -> None:
    """Warnings on stderr, then the summary, the shards written and the next steps."""
    for line in report.warnings:
        click.echo(f"warning: {line}", err=True)
    for line in report.lines():
        click.echo(line)


@click.group("import")
def import_group() -> None:
    """Import data recorded elsewhere (ROS bags, Cityscapes) into shards."""


@import_group.command("rosbag")
@click.argument("bag", type=TextPathType())
@config_options(
    RosbagImport,
    (
        "out",
        "town",
        "town_dir",
        "rgb",
        "semantic",
        "depth",
        "camera_info",
        "frames",
        "tolerance_ms",
    ),
    out=_REQUIRED,
    town=_REQUIRED,
    rgb=_REQUIRED,
    semantic=_REQUIRED,
    town_dir={"type": TextPathType(file_okay=False)},
)
def rosbag(bag: Path, **options: Any) -> None:
    """Import a ROS 1 .bag or ROS 2 bag folder (sqlite3 or mcap) into a new shard of TOWN.

    \b
    Example (a CARLA ROS bridge recording):
      capture import rosbag runs/drive1 --out data --town Town03 \\
        --rgb /carla/hero/rgb_front/image \\
        --semantic /carla/hero/semantic_segmentation_front/image \\
        --depth /carla/hero/depth_front/image --camera-info /carla/hero/rgb_front/camera_info
    """
    from carla_capture.importers.rosbag import import_rosbag

    _show(import_rosbag(bag, **{k: v for k, v in options.items() if v is not None}))


@import_group.command("cityscapes")
@click.argument("root", type=TextPathType())
@config_options(
    CityscapesImport,
    ("out", "frames", "size"),
    out=_REQUIRED,
    size={"metavar": "H,W"},
)
@click.option(
    "--no-sequence",
    is_flag=True,
    help="Leave out leftImg8bit_sequence: annotated frames only, as one-frame clips "
    "(all that stage 1 learns from).",
)
def cityscapes(root: Path, no_sequence: bool, **options: Any) -> None:
    """Import a Cityscapes folder into one town per city.

    Reads leftImg8bit[_sequence]/, gtFine/ and camera/; labels become CARLA tags that the
    cityscapes19 label map turns into the 19 official classes.

    \b
    Example:
      capture import cityscapes ~/cityscapes --out data/cs --size 128,256
      capture split data/cs --splits data/cs/cityscapes_splits.toml
      train run pipeline --stage stage1 --data data/cs --out runs/cs --preset lowres \\
        --label-map cityscapes19
    """
    from carla_capture.importers.cityscapes import import_cityscapes

    given = {k: v for k, v in options.items() if v is not None}
    _show(import_cityscapes(root, sequence=not no_sequence, **given))
