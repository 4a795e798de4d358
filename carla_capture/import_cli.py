"""``capture import``: bring data recorded elsewhere into the project's shards."""

from __future__ import annotations

from pathlib import Path

import click


@click.group("import")
def import_group() -> None:
    """Import data recorded elsewhere (ROS bags, Cityscapes) into shards."""


@import_group.command("rosbag")
@click.argument("bag", type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Dataset folder.")
@click.option("--town", required=True, help="Town folder to write, e.g. Town01 (picks the split).")
@click.option("--rgb", required=True, help="sensor_msgs/Image topic of the colour camera.")
@click.option(
    "--semantic",
    required=True,
    help="sensor_msgs/Image topic of the segmentation "
    "camera (CARLA palette colours or mono8 tags).",
)
@click.option("--depth", help="sensor_msgs/Image 32FC1 depth topic in metres (optional).")
@click.option("--camera-info", help="sensor_msgs/CameraInfo topic for the intrinsics (optional).")
@click.option("--frames", default=20, show_default=True, help="Frames per clip.")
@click.option(
    "--tolerance-ms",
    default=10.0,
    show_default=True,
    help="Largest header-stamp difference of a matched rgb/semantic pair.",
)
def rosbag(
    bag: Path,
    out: Path,
    town: str,
    rgb: str,
    semantic: str,
    depth: str | None,
    camera_info: str | None,
    frames: int,
    tolerance_ms: float,
) -> None:
    """Import a ROS 1 .bag or ROS 2 bag folder (sqlite3 or mcap) into a new shard of TOWN.

    \b
    Example (a CARLA ROS bridge recording):
      capture import rosbag runs/drive1 --out data --town Town03 \\
        --rgb /carla/hero/rgb_front/image \\
        --semantic /carla/hero/semantic_segmentation_front/image \\
        --depth /carla/hero/depth_front/image --camera-info /carla/hero/rgb_front/camera_info
    """
    from carla_capture.rosbag_import import import_rosbag

    report = import_rosbag(
        bag,
        out,
        town,
        rgb,
        semantic,
        depth=depth,
        camera_info=camera_info,
        frames=frames,
        tolerance_ms=tolerance_ms,
    )
    click.echo(report.summary())
    for path in report.shards:
        click.echo(f"wrote {path}")


@import_group.command("cityscapes")
@click.argument("root", type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Dataset folder.")
@click.option(
    "--frames",
    default=30,
    show_default=True,
    help="Frames per clip cut from leftImg8bit_sequence (a snippet has 30).",
)
@click.option(
    "--size",
    type=(int, int),
    metavar="H W",
    help="Resize images (area) and labels (nearest) to H x W [default: as recorded].",
)
@click.option(
    "--no-sequence",
    is_flag=True,
    help="Leave out leftImg8bit_sequence: annotated frames only, as one-frame clips "
    "(all that stage 1 learns from).",
)
def cityscapes(
    root: Path, out: Path, frames: int, size: tuple[int, int] | None, no_sequence: bool
) -> None:
    """Import a Cityscapes folder (leftImg8bit[_sequence]/, gtFine/, camera/) into one town per
    city, labels as CARLA tags that the cityscapes19 label map turns into the 19 official classes.

    \b
    Example:
      capture import cityscapes ~/cityscapes --out data/cs --size 128 256
      capture split data/cs --splits data/cs/cityscapes_splits.toml
      train run stage1 --data data/cs --out runs/cs --preset lowres --label-map cityscapes19
    """
    from carla_capture.cityscapes_import import SPLITS_FILE, import_cityscapes

    report = import_cityscapes(root, out, frames=frames, size=size, sequence=not no_sequence)
    click.echo(report.summary())
    for path in report.shards:
        click.echo(f"wrote {path}")
    if report.cities:
        click.echo(f"next: capture split {out} --splits {out / SPLITS_FILE}")
