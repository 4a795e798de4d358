"""ROS bag import: bags written with rosbags from embedded-simulator frames import exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from clipcore.records import Frame
from clipcore.shards import ShardReader
from clipcore.tags import colorize

rosbags = pytest.importorskip("rosbags")
from rosbags.typesys import Stores, get_typestore  # noqa: E402

RGB, SEM, DEPTH, INFO = (
    "/carla/hero/rgb_front/image",
    "/carla/hero/semantic_front/image",
    "/carla/hero/depth_front/image",
    "/carla/hero/rgb_front/camera_info",
)
K = np.array([[50.0, 0, 48], [0, 50.0, 24], [0, 0, 1]])


@pytest.fixture(scope="module")
def sim_frames(tiny_dataset: Path) -> list[Frame]:
    """18 embedded-simulator frames (3 clips of 6) from the shared tiny dataset."""
    frames: list[Frame] = []
    for shard in sorted((tiny_dataset / "Town01").glob("*.h5")):
        with ShardReader(shard) as reader:
            for cid in reader.clip_ids():
                frames.extend(reader.read_clip(cid).frames)
    return frames[:18]


def _image(ts, ros1: bool, stamp_ns: int, array: np.ndarray, encoding: str):  # noqa: ANN001, ANN202
    Image, Header, Time = (
        ts.types[n]
        for n in ("sensor_msgs/msg/Image", "std_msgs/msg/Header", "builtin_interfaces/msg/Time")
    )
    time = Time(sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9)
    header = (
        Header(seq=0, stamp=time, frame_id="cam") if ros1 else Header(stamp=time, frame_id="cam")
    )
    data = np.ascontiguousarray(array).view(np.uint8).reshape(-1)
    height, width = array.shape[:2]
    return Image(
        header=header,
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=0,
        step=data.size // height,
        data=data,
    )


def _camera_info(ts, ros1: bool):  # noqa: ANN001, ANN202
    Info, Header, Time, Roi = (
        ts.types[n]
        for n in (
            "sensor_msgs/msg/CameraInfo",
            "std_msgs/msg/Header",
            "builtin_interfaces/msg/Time",
            "sensor_msgs/msg/RegionOfInterest",
        )
    )
    time = Time(sec=0, nanosec=0)
    header = (
        Header(seq=0, stamp=time, frame_id="cam") if ros1 else Header(stamp=time, frame_id="cam")
    )
    roi = Roi(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
    mats = {
        "D": np.zeros(5),
        "K": K.reshape(-1),
        "R": np.eye(3).reshape(-1),
        "P": np.hstack([K, np.zeros((3, 1))]).reshape(-1),
    }
    if not ros1:
        mats = {k.lower(): v for k, v in mats.items()}
    return Info(
        header=header,
        height=48,
        width=96,
        distortion_model="plumb_bob",
        **mats,
        binning_x=0,
        binning_y=0,
        roi=roi,
    )


def write_bag(
    path: Path,
    storage: str,
    frames: list[Frame],
    drop_semantic: set[int] = frozenset(),
    rgb_encoding: str = "rgb8",
) -> Path:
    """Write ``frames`` at 20 fps as a ROS bag: ``storage`` is ros1, sqlite3 or mcap."""
    ros1 = storage == "ros1"
    ts = get_typestore(Stores.ROS1_NOETIC if ros1 else Stores.ROS2_HUMBLE)
    serialize = ts.serialize_ros1 if ros1 else ts.serialize_cdr
    if ros1:
        from rosbags.rosbag1 import Writer

        writer = Writer(path)
    else:
        from rosbags.rosbag2 import StoragePlugin, Writer

        plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        writer = Writer(path, version=8, storage_plugin=plugin)
    image, info = "sensor_msgs/msg/Image", "sensor_msgs/msg/CameraInfo"
    with writer:
        conns = {
            t: writer.add_connection(t, m, typestore=ts)
            for t, m in ((RGB, image), (SEM, image), (DEPTH, image), (INFO, info))
        }
        writer.write(conns[INFO], 1, serialize(_camera_info(ts, ros1), info))
        for k, frame in enumerate(frames):
            stamp = 10**9 + k * 50_000_000
            jitter = 2_000_000 * (k % 2)  # semantic stamped 2 ms later on odd frames
            rgb = frame.rgb[..., ::-1] if rgb_encoding == "bgr8" else frame.rgb
            writer.write(
                conns[RGB], stamp, serialize(_image(ts, ros1, stamp, rgb, rgb_encoding), image)
            )
            if k not in drop_semantic:
                msg = _image(ts, ros1, stamp + jitter, colorize(frame.semantic), "rgb8")
                writer.write(conns[SEM], stamp + jitter, serialize(msg, image))
            depth = _image(ts, ros1, stamp, frame.depth, "32FC1")
            writer.write(conns[DEPTH], stamp, serialize(depth, image))
    return path


def _imported(out: Path, town: str) -> list:  # noqa: ANN401
    arrays = []
    for shard in sorted((out / town).glob("*.h5")):
        with ShardReader(shard) as reader:
            arrays.extend(reader.read_arrays(cid) for cid in reader.clip_ids())
    return arrays


@pytest.mark.parametrize("storage", ["sqlite3", "mcap", "ros1"])
def test_import_is_exact_in_every_storage_format(
    tmp_path: Path, sim_frames: list[Frame], storage: str, cli
) -> None:  # noqa: ANN001
    bag = write_bag(
        tmp_path / ("run.bag" if storage == "ros1" else "run"),
        storage,
        sim_frames[:12],
        rgb_encoding="bgr8" if storage == "mcap" else "rgb8",
    )
    result = cli.capture(
        "import",
        "rosbag",
        str(bag),
        "--out",
        str(tmp_path / "out"),
        "--town",
        "Town01",
        "--rgb",
        RGB,
        "--semantic",
        SEM,
        "--depth",
        DEPTH,
        "--camera-info",
        INFO,
        "--frames",
        "6",
    )
    assert result.exit_code == 0, result.output
    assert "2 clips from 12" in result.output
    clips = _imported(tmp_path / "out", "Town01")
    assert len(clips) == 2
    got = {name: np.concatenate([c[name] for c in clips]) for name in ("rgb", "semantic", "depth")}
    np.testing.assert_array_equal(got["rgb"], np.stack([f.rgb for f in sim_frames[:12]]))
    np.testing.assert_array_equal(got["semantic"], np.stack([f.semantic for f in sim_frames[:12]]))
    np.testing.assert_allclose(
        got["depth"], np.stack([f.depth for f in sim_frames[:12]]), rtol=1e-3
    )  # float32 in the bag; the shard's depth code rounds
    np.testing.assert_allclose(clips[0]["intrinsics"], K)
    assert "cam_to_world" not in clips[0]
    assert clips[0]["attrs"]["fps"] == pytest.approx(20.0)


def test_dropped_segmentation_is_counted_and_never_mismatched(
    tmp_path: Path,
    cli,  # noqa: ANN001
    sim_frames: list[Frame],
) -> None:
    drop = {4, 13}  # 2 of 18 (11 %): cuts the run into 0-3, 5-12, 14-17
    bag = write_bag(tmp_path / "run", "sqlite3", sim_frames, drop_semantic=drop)
    result = cli.capture(
        "import",
        "rosbag",
        str(bag),
        "--out",
        str(tmp_path / "out"),
        "--town",
        "Town03",
        "--rgb",
        RGB,
        "--semantic",
        SEM,
        "--frames",
        "3",
    )
    assert result.exit_code == 0, result.output
    assert "dropped 2 rgb and 0 semantic" in result.output
    assert "4 clips from 16 rgb/semantic pairs" in result.output  # 4 + 8 + 4 pairs -> 1 + 2 + 1
    assert "4 pairs in segments shorter than a clip" in result.output
    clips = _imported(tmp_path / "out", "Town03")
    for clip in clips:
        assert "depth" not in clip
        for frame_no, rgb, sem in zip(clip["frame"], clip["rgb"], clip["semantic"], strict=True):
            assert int(frame_no) not in drop
            source = sim_frames[int(frame_no)]
            np.testing.assert_array_equal(rgb, source.rgb)
            np.testing.assert_array_equal(sem, source.semantic)


def test_unknown_topic_is_one_line_error(tmp_path: Path, sim_frames: list[Frame], cli) -> None:  # noqa: ANN001
    bag = write_bag(tmp_path / "run", "mcap", sim_frames[:2])
    result = cli.capture(
        "import",
        "rosbag",
        str(bag),
        "--out",
        str(tmp_path / "out"),
        "--town",
        "Town01",
        "--rgb",
        "/nope",
        "--semantic",
        SEM,
    )
    cli.error(result, "has no topic '/nope'")
