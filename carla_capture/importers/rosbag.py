"""Import camera data recorded as ROS bags (ROS 1 ``.bag``, ROS 2 sqlite3 or MCAP) into shards.

Read with the pure-Python ``rosbags`` library (``pip install carla-temporal[import]``), no ROS
install needed. RGB and segmentation messages are paired by header stamp (nearest within a
tolerance, each message used once); a frame without a partner is dropped and counted. Depth is
attached where a depth message lies within the tolerance. Clips of ``frames`` consecutive pairs
are cut, never across a gap (two pairs further apart than 1.5 median periods); leftovers shorter
than a clip are dropped and counted. Segmentation in the CARLA ROS bridge's colours (the CARLA
palette, :mod:`clipcore.tags`) is turned back into raw tags; ``mono8`` segmentation is read
as raw tags.

Before anything is written, the options are checked
(:class:`~carla_capture.importers.config.RosbagImport`: a known town, never a path; finite
numbers in range; one topic per role), each topic must carry its role's message
type and image encoding (a colour camera given as ``--semantic`` or ``--depth`` is refused), and
a bag that yields no clip is an error saying why (the option to change).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from carla_capture.config import load_town
from carla_capture.importers.config import RosbagImport
from carla_capture.importers.report import ImportReport
from carla_capture.shard_names import open_next_shard
from clipcore.errors import CaptureError
from clipcore.records import Clip, Frame
from clipcore.settings import build
from clipcore.tags import TAGS

log = logging.getLogger(__name__)

#: The report's entries (:class:`~carla_capture.importers.report.ImportReport`).
PAIRS = "rgb/semantic pairs"
SHORT = "pairs in segments shorter than a clip"
NO_DEPTH = "frames without depth"

#: Bytes per pixel and channel order of the supported ``sensor_msgs/Image`` encodings.
ENCODINGS = {
    "rgb8": (3, np.uint8),
    "bgr8": (3, np.uint8),
    "bgra8": (4, np.uint8),
    "rgba8": (4, np.uint8),
    "mono8": (1, np.uint8),
    "32FC1": (1, np.float32),
}


def decode_image(msg: Any) -> np.ndarray:
    """A ``sensor_msgs/Image`` as (H, W, 3) uint8 RGB, (H, W) uint8 or (H, W) float32 (32FC1)."""
    if msg.encoding not in ENCODINGS:
        raise CaptureError(
            f"image encoding {msg.encoding!r} is not supported; use one of {', '.join(ENCODINGS)}"
        )
    channels, dtype = ENCODINGS[msg.encoding]
    itemsize = np.dtype(dtype).itemsize
    data = np.frombuffer(bytes(msg.data), dtype=np.uint8)
    rows = data.reshape(msg.height, msg.step)[:, : msg.width * channels * itemsize]
    order = ">" if msg.is_bigendian else "<"
    image = np.ascontiguousarray(rows).view(np.dtype(dtype).newbyteorder(order))
    image = image.reshape(msg.height, msg.width, channels).astype(dtype)
    if channels == 1:
        return image[..., 0]
    if msg.encoding.startswith("bgr"):
        image = image[..., 2::-1]
    return np.ascontiguousarray(image[..., :3])


def colours_to_tags(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 CARLA-palette colours -> (H, W) uint8 tags; unknown colours are an error."""
    lut = {(r << 16) | (g << 8) | b: tag for tag, _, (r, g, b) in TAGS}
    key = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    values, inverse = np.unique(key, return_inverse=True)
    unknown = [int(v) for v in values if int(v) not in lut]
    if unknown:
        v = unknown[0]
        colour = (v >> 16, (v >> 8) & 255, v & 255)
        raise CaptureError(
            f"segmentation colour {colour} is not in the CARLA palette; pass the "
            "CARLA ROS bridge's semantic camera topic"
        )
    tags = np.array([lut[int(v)] for v in values], dtype=np.uint8)
    return tags[inverse.reshape(key.shape)]


def _stamp_ns(msg: Any) -> int:
    stamp = msg.header.stamp
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


#: The message type each role's topic must carry.
MSGTYPES = {
    "rgb": "sensor_msgs/msg/Image",
    "semantic": "sensor_msgs/msg/Image",
    "depth": "sensor_msgs/msg/Image",
    "camera_info": "sensor_msgs/msg/CameraInfo",
}
#: The image encodings each role accepts.
ROLE_ENCODINGS = {
    "rgb": ("rgb8", "bgr8", "bgra8", "rgba8"),
    "semantic": ("mono8", "rgb8", "bgr8", "bgra8", "rgba8"),
    "depth": ("32FC1",),
}


def _flag(role: str) -> str:
    return "--" + role.replace("_", "-")


def read_topics(bag: Path, topics: dict[str, str]) -> dict[str, list[tuple[int, Any]]]:
    """Messages of each ``{role: topic}`` as (header stamp ns, message), sorted by stamp.

    A topic that is missing or of another message type than its role needs is one line.
    """
    try:
        from rosbags.highlevel import AnyReader
        from rosbags.typesys import Stores, get_typestore
    except ImportError as exc:
        raise CaptureError(
            "reading ROS bags needs rosbags: pip install 'carla-temporal[import]'"
        ) from exc
    if not bag.exists():
        raise CaptureError(f"{bag} does not exist; pass a ROS 1 .bag file or a ROS 2 bag folder")
    out: dict[str, list[tuple[int, Any]]] = {role: [] for role in topics}
    try:
        reader_cm = AnyReader([bag], default_typestore=get_typestore(Stores.ROS2_HUMBLE))
        with reader_cm as reader:
            _check_connections(bag, reader.connections, topics)
            by_topic = {topic: role for role, topic in topics.items()}
            wanted = [c for c in reader.connections if c.topic in by_topic]
            for conn, _, raw in reader.messages(connections=wanted):
                msg = reader.deserialize(raw, conn.msgtype)
                out[by_topic[conn.topic]].append((_stamp_ns(msg), msg))
    except CaptureError:
        raise
    except Exception as exc:  # rosbags raises its own error types for unreadable bags
        raise CaptureError(
            f"cannot read {bag} as a ROS bag ({exc}); pass a ROS 1 .bag file "
            "or a ROS 2 bag folder (sqlite3 or mcap)"
        ) from exc
    for items in out.values():
        items.sort(key=lambda item: item[0])
    return out


def _check_connections(bag: Path, connections: list, topics: dict[str, str]) -> None:
    """Every topic is in the bag and carries the message type its role needs."""
    types = {c.topic: c.msgtype for c in connections}
    for role, topic in topics.items():
        if topic not in types:
            raise CaptureError(f"{bag} has no topic {topic!r}; it has: {', '.join(sorted(types))}")
        if types[topic] != MSGTYPES[role]:
            raise CaptureError(
                f"{_flag(role)} {topic} carries {types[topic]}, not {MSGTYPES[role]}; pass a "
                f"{MSGTYPES[role]} topic"
            )


def check_streams(msgs: dict[str, list[tuple[int, Any]]], topics: dict[str, str]) -> None:
    """Each role's topic has messages, in an encoding that role can hold.

    A colour camera given as ``--semantic`` or ``--depth`` is one line, not zero clips; segmentation
    colours are in the CARLA palette.
    """
    for role, topic in topics.items():
        if not msgs[role]:
            raise CaptureError(f"{_flag(role)} {topic} has no messages in the bag")
        if role not in ROLE_ENCODINGS:
            continue
        encoding = msgs[role][0][1].encoding
        if encoding not in ROLE_ENCODINGS[role]:
            raise CaptureError(
                f"{_flag(role)} {topic} has {encoding} images; {role} needs "
                f"{' or '.join(ROLE_ENCODINGS[role])}: pass the {role} camera's topic"
            )
    first = decode_image(msgs["semantic"][0][1])
    if first.ndim == 3:
        colours_to_tags(first)  # not a segmentation camera: one line now, not after decoding all


def match(left: list[int], right: list[int], tolerance_ns: int) -> list[tuple[int, int]]:
    """One-to-one pairs (i, j) of sorted stamps within ``tolerance``, in order.

    Pairs have ``|left[i] - right[j]| <= tolerance``, each ``left`` stamp taking the nearest unused
    ``right`` stamp.
    """
    pairs: list[tuple[int, int]] = []
    j = 0
    for i, stamp in enumerate(left):
        while j < len(right) and right[j] < stamp - tolerance_ns:
            j += 1
        best = None
        for k in (j, j + 1):
            near = k < len(right) and abs(right[k] - stamp) <= tolerance_ns
            if near and (best is None or abs(right[k] - stamp) < abs(right[best] - stamp)):
                best = k
        if best is not None:
            pairs.append((i, best))
            j = best + 1
    return pairs


def segments(stamps: list[int]) -> list[list[int]]:
    """Split indices of sorted ``stamps`` wherever a step exceeds 1.5 median steps."""
    if not stamps:
        return []
    steps = np.diff(stamps)
    if not len(steps):
        return [[0]]
    limit = 1.5 * float(np.median(steps))
    out, current = [], [0]
    for k, step in enumerate(steps, start=1):
        if step > limit:
            out.append(current)
            current = []
        current.append(k)
    out.append(current)
    return out


def _intrinsics(info: Any) -> np.ndarray:
    k = getattr(info, "k", None)
    if k is None:
        k = info.K  # ROS 1
    return np.asarray(k, dtype=np.float64).reshape(3, 3)


def _why_no_clips(report: ImportReport, stamps: list[int], msgs: dict, cfg: RosbagImport) -> str:
    """Why a bag gave no clip, and the option that changes it."""
    if not report.kept[PAIRS]:
        left = np.array([s for s, _ in msgs["rgb"]])
        right = np.array(sorted(s for s, _ in msgs["semantic"]))
        at = np.clip(np.searchsorted(right, left), 1, len(right) - 1) if len(right) > 1 else 0
        gap = np.minimum(np.abs(right[at] - left), np.abs(right[at - 1] - left)).min() / 1e6
        return (
            f"no rgb/semantic pair is within --tolerance-ms {cfg.tolerance_ms:g} (the nearest "
            f"stamps are {gap:.3g} ms apart): pass the topics of one camera rig, or a larger "
            "--tolerance-ms"
        )
    longest = max(len(seg) for seg in segments(stamps))
    return (
        f"the longest run of pairs without a gap holds {longest} frames, fewer than --frames "
        f"{cfg.frames}: pass --frames {longest} or less"
    )


def import_rosbag(bag: Path, **options: Any) -> ImportReport:
    """Import ``bag`` into one new shard ``<out>/<town>/<town>-NNNNN.h5``; return what was kept.

    ``options`` are the fields of :class:`~carla_capture.importers.config.RosbagImport` (``out``,
    ``town``, ``rgb``, ``semantic``, optional ``depth``, ``camera_info``, ``frames``,
    ``tolerance_ms``, ``town_dir``), checked before the bag is read; the town must have a town
    file. A bag that yields no clip is an error saying why; nothing is written then.
    """
    cfg = build(RosbagImport, options, "capture import rosbag", options=True)
    load_town(cfg.town, cfg.town_dir)  # known, or in --town-dir
    topics = {
        role: getattr(cfg, role)
        for role in ("rgb", "semantic", "depth", "camera_info")
        if getattr(cfg, role)
    }
    msgs = read_topics(Path(bag), topics)
    check_streams(msgs, topics)
    tol = int(round(cfg.tolerance_ms * 1e6))
    pairs = match([s for s, _ in msgs["rgb"]], [s for s, _ in msgs["semantic"]], tol)
    report = ImportReport()
    report.keep(PAIRS, len(pairs))
    report.drop("rgb messages without a partner", len(msgs["rgb"]) - len(pairs))
    report.drop("semantic messages without a partner", len(msgs["semantic"]) - len(pairs))
    report.drop(SHORT, 0)
    if cfg.depth:
        report.keep(NO_DEPTH, 0)
    depth_of: dict[int, int] = {}
    if cfg.depth:
        paired_stamps = [msgs["rgb"][i][0] for i, _ in pairs]
        depth_of = dict(match(paired_stamps, [s for s, _ in msgs["depth"]], tol))
    stamps = [msgs["rgb"][i][0] for i, _ in pairs]
    clips = _cut_clips(msgs, pairs, depth_of, stamps, cfg, report)
    report.clips, report.frames = len(clips), sum(len(clip) for clip in clips)
    if not clips:
        raise CaptureError(
            f"no clip imported from {bag}: {_why_no_clips(report, stamps, msgs, cfg)}"
        )
    intrinsics = _intrinsics(msgs["camera_info"][0][1]) if msgs.get("camera_info") else None
    period = float(np.median(np.diff(stamps))) / 1e9 if len(stamps) > 1 else 0.05
    report.shards.append(_write(bag, cfg, clips, intrinsics, period))
    log.info("%s", report.summary())
    return report


def _cut_clips(
    msgs: dict,
    pairs: list[tuple[int, int]],
    depth_of: dict[int, int],
    stamps: list[int],
    cfg: RosbagImport,
    report: ImportReport,
) -> list[tuple[Frame, ...]]:
    """Clips of ``cfg.frames`` consecutive pairs, never across a gap; leftovers are counted."""
    clips: list[tuple[Frame, ...]] = []
    for segment in segments(stamps):
        usable = len(segment) - len(segment) % cfg.frames
        report.drop(SHORT, len(segment) - usable)
        for start in range(0, usable, cfg.frames):
            built = []
            for p in segment[start : start + cfg.frames]:
                i, j = pairs[p]
                sem = decode_image(msgs["semantic"][j][1])
                tags = sem if sem.ndim == 2 else colours_to_tags(sem)
                d = decode_image(msgs["depth"][depth_of[p]][1]) if p in depth_of else None
                if cfg.depth and d is None:
                    report.keep(NO_DEPTH)
                built.append(
                    Frame(
                        rgb=decode_image(msgs["rgb"][i][1]),
                        semantic=tags,
                        depth=d,
                        cam_to_world=None,
                        carla_transform=None,
                        frame=i,
                        timestamp=stamps[p] / 1e9,
                    )
                )
            clips.append(tuple(built))
    return clips


def _write(
    bag: Path,
    cfg: RosbagImport,
    clips: list[tuple[Frame, ...]],
    intrinsics: np.ndarray | None,
    period: float,
) -> Path:
    """One new shard of ``cfg.town`` under ``cfg.out`` holding ``clips``; returns its path."""
    town_dir = Path(cfg.out) / cfg.town
    town_dir.mkdir(parents=True, exist_ok=True)
    with open_next_shard(town_dir, cfg.town) as writer:
        path = writer.path
        for k, built in enumerate(clips):  # the shard's name keeps clip ids unique
            writer.add(
                Clip(
                    clip_id=f"{path.stem}-bag-{k:04d}",
                    town=cfg.town,
                    backend="rosbag",
                    seed=0,
                    fps=1.0 / period,
                    frame_stride=1,
                    intrinsics=intrinsics,
                    weather={},
                    camera={},
                    frames=built,
                    attrs={"source": str(bag)},
                )
            )
    return path
