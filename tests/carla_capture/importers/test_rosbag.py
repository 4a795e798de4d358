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
    semantic_late_ns: int = 0,
) -> Path:
    """Write ``frames`` at 20 fps as a ROS bag: ``storage`` is ros1, sqlite3 or mcap; semantic
    messages are stamped ``semantic_late_ns`` (plus 2 ms on odd frames) after their rgb."""
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
            jitter = 2_000_000 * (k % 2) + semantic_late_ns
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
    assert "2 clips, 12 frames imported; 12 rgb/semantic pairs" in result.output
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
    assert "4 clips, 12 frames imported; 16 rgb/semantic pairs" in result.output  # 4+8+4 -> 1+2+1
    assert "dropped 2 rgb messages without a partner, 0 semantic" in result.output
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


def _files(folder: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def imported(tmp_path_factory, sim_frames: list[Frame]) -> tuple[Path, Path]:
    """A 12-frame mcap bag and a dataset folder that already holds its import (6-frame clips)."""
    root = tmp_path_factory.mktemp("bags")
    bag = write_bag(root / "run", "mcap", sim_frames[:12])
    from carla_capture.importers.rosbag import import_rosbag

    import_rosbag(bag, out=root / "out", town="Town01", rgb=RGB, semantic=SEM, frames=6)
    return bag, root / "out"


#: bad options -> words of the one-line error (RGB, SEM, DEPTH, INFO are this module's topics)
BAD_ROSBAG = {
    "town_a_path": (["--town", "../escaped"], "is a path, not a town name"),
    "town_unknown": (["--town", "Nowhere"], "unknown town 'Nowhere'"),
    "tolerance_nan": (["--tolerance-ms", "nan"], "'--tolerance-ms': 'nan' is not a finite"),
    "tolerance_negative": (["--tolerance-ms", "-1"], "not in the range 0<=x<=1000"),
    "tolerance_huge": (["--tolerance-ms", "1e9"], "not in the range 0<=x<=1000"),
    "frames_zero": (["--frames", "0"], "'--frames': 0 is not in the range 1<=x<=100000"),
    "frames_beyond_the_bag": (["--frames", "500"], "holds 12 frames, fewer than --frames 500"),
    "rgb_as_semantic": (["--semantic", RGB], "--rgb and --semantic both name"),
    "rgb_as_depth": (["--depth", RGB], "--rgb and --depth both name"),
    "depth_as_semantic": (["--semantic", DEPTH], "has 32FC1 images; semantic needs mono8 or"),
    "camera_info_as_rgb": (["--rgb", INFO], "carries sensor_msgs/msg/CameraInfo, not"),
    "image_as_camera_info": (["--camera-info", DEPTH], "carries sensor_msgs/msg/Image, not"),
    "colour_camera_as_semantic": (["--rgb", SEM, "--semantic", RGB], "not in the CARLA palette"),
    "out_not_utf8": (["--out", "o\udcff\udcfe"], "o\\xff\\xfe is not UTF-8 text"),
}


@pytest.mark.parametrize("name", sorted(BAD_ROSBAG))
def test_bad_rosbag_input_is_one_line_and_writes_nothing(imported, cli, name, monkeypatch):
    bag, out = imported
    monkeypatch.chdir(out.parent)
    before = _files(out.parent)
    extra, words = BAD_ROSBAG[name]
    args = {"--out": str(out), "--town": "Town01", "--rgb": RGB, "--semantic": SEM}
    for flag, value in zip(extra[::2], extra[1::2], strict=True):
        args[flag] = value
    result = cli.capture("import", "rosbag", bag, *(a for kv in args.items() for a in kv))
    cli.error(result, words)
    assert _files(out.parent) == before  # nothing written, nothing lost (the earlier import)


def test_no_pair_within_the_tolerance_says_so(tmp_path, sim_frames, cli):
    bag = write_bag(tmp_path / "run", "sqlite3", sim_frames[:6], semantic_late_ns=3_000_000)
    args = ["--out", tmp_path / "out", "--town", "Town01", "--rgb", RGB, "--semantic", SEM]
    result = cli.capture("import", "rosbag", bag, *args, "--frames", "6", "--tolerance-ms", "1")
    cli.error(result, "no clip imported", "within --tolerance-ms 1", "3 ms apart", "larger")
    assert not (tmp_path / "out").exists()


def test_a_town_of_town_dir_is_known(tmp_path, sim_frames, tiny_towns, cli):
    towns = tmp_path / "towns"
    towns.mkdir()
    text = (tiny_towns / "Town01.toml").read_text().replace('name = "Town01"', 'name = "Lab"')
    (towns / "Lab.toml").write_text(text)
    bag = write_bag(tmp_path / "run", "mcap", sim_frames[:6])
    args = ["--out", tmp_path / "out", "--town", "Lab", "--rgb", RGB, "--semantic", SEM]
    cli.error(cli.capture("import", "rosbag", bag, *args, "--frames", "6"), "unknown town 'Lab'")
    result = cli.capture("import", "rosbag", bag, *args, "--frames", "6", "--town-dir", towns)
    assert result.exit_code == 0, result.output
    assert len(_imported(tmp_path / "out", "Lab")) == 1
