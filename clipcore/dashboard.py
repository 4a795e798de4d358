"""Rerun dashboards: live inference (``train live``), recorded clips (``capture inspect --rerun``).

Both log the same entity tree, on one ``frame`` timeline (a running frame count):

===============================  ==================  =========================================
entity                           archetype           content
===============================  ==================  =========================================
``camera``                       AnnotationContext   class names and colours (static)
``camera/rgb``                   Image               (H, W, 3) uint8 RGB
``camera/semantic/truth``        SegmentationImage   (H, W) class ids (raw CARLA tags: inspect)
``camera/semantic/predicted``    SegmentationImage   (H, W) predicted class ids (live only)
``camera/depth/truth``           DepthImage          (H, W) float32 metres (meter = 1)
``camera/depth/predicted``       DepthImage          (H, W) float32 metres (live only)
``world/trajectory/true``        LineStrips3D        camera positions of the clip so far, metres
``world/trajectory/estimated``   LineStrips3D        accumulated predicted poses (live only)
``metrics/<name>``               Scalars             fps, milliseconds per stage, pixel accuracy
``clip``                         TextLog             a line when a new clip starts
``config``                       TextDocument        the resolved configuration (static, JSON)
===============================  ==================  =========================================

Trajectories are drawn in the coordinates of the clip's first camera (OpenCV axes: x right,
y down, z forward) for live runs, and in world coordinates when inspecting recorded clips.

The Rerun SDK is an optional extra: ``pip install "carla-temporal[live]"``.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

from clipcore.errors import CaptureError

log = logging.getLogger(__name__)

INSTALL_HINT = 'pip install "carla-temporal[live]" (the rerun-sdk package)'
TIMELINE = "frame"


def require_rerun() -> Any:
    """The ``rerun`` module, or a one-line error naming the extra to install."""
    try:
        import rerun
    except ImportError:
        raise CaptureError(f"the Rerun SDK is not installed: {INSTALL_HINT}") from None
    return rerun


#: Where ``--serve`` puts the live data unless told otherwise: this machine only.
LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class Sink:
    """Where a dashboard goes.

    ``spawn`` a native viewer, ``serve`` the web viewer on ``web_port`` with the data on
    ``grpc_port`` of address ``bind``, or ``save`` to the .rrd file ``path``.

    Served data (the live camera images) listens on ``bind`` only, the loopback address unless
    another is given (an explicit choice to expose it to the network, without authentication).
    Rerun's web viewer server cannot be bound to one address: it listens on every interface, but
    serves only the viewer's own files; the browser fetches the data from ``bind``.
    """

    mode: str = "spawn"
    path: Path | None = None
    web_port: int = 9090
    grpc_port: int = 9876
    bind: str = LOOPBACK

    def __post_init__(self) -> None:
        if self.mode not in ("spawn", "serve", "save"):
            raise CaptureError(
                f"unknown dashboard sink {self.mode!r}; use --spawn, --serve or --save FILE.rrd"
            )
        if self.mode == "save" and (self.path is None or Path(self.path).suffix != ".rrd"):
            raise CaptureError(f"--save {self.path}: name a file ending in .rrd")
        try:
            ipaddress.ip_address(self.bind)
        except ValueError:
            raise CaptureError(
                f"--bind {self.bind}: not an IP address; use {LOOPBACK} (this machine only) or "
                "the address of an interface (0.0.0.0: every interface)"
            ) from None

    @property
    def exposed(self) -> bool:
        """True when served data is reachable from other machines."""
        return not ipaddress.ip_address(self.bind).is_loopback

    def serving_note(self, uri: str | None = None) -> str:
        """Where a served dashboard listens, truthfully, and the address to open."""
        uri = uri or f"rerun+http://{self.bind}:{self.grpc_port}/proxy"
        url = f"http://localhost:{self.web_port}/?url={quote(uri, safe=':/')}"
        data = (
            f"live camera data on {self.bind}:{self.grpc_port}, reachable from the network "
            "WITHOUT authentication"
            if self.exposed
            else f"live camera data on {self.bind}:{self.grpc_port} (this machine only)"
        )
        return (
            f"{data}; the web viewer's own files on port {self.web_port} of every interface "
            f"(Rerun cannot bind it to one address); open {url}"
        )


def blueprint(predicted: bool) -> Any:
    """The dashboard layout: camera images in a grid, the trajectories in 3D, metrics over time."""
    import rerun.blueprint as rrb

    images = [
        rrb.Spatial2DView(origin="camera/rgb", name="RGB"),
        rrb.Spatial2DView(origin="camera/semantic/truth", name="ground truth"),
    ]
    if predicted:  # rows: RGB | truth | prediction, then depth: truth | prediction
        images.append(rrb.Spatial2DView(origin="camera/semantic/predicted", name="prediction"))
        images.append(rrb.Spatial2DView(origin="camera/depth/truth", name="true depth"))
        images.append(rrb.Spatial2DView(origin="camera/depth/predicted", name="predicted depth"))
    else:
        images.append(rrb.Spatial2DView(origin="camera/depth/truth", name="depth"))
    lower = [rrb.Spatial3DView(origin="world", name="trajectory (green true, red estimated)")]
    if predicted:
        lower += [
            rrb.TimeSeriesView(origin=f"metrics/{name}", name=title)
            for name, title in (
                ("fps", "frames/s"),
                ("model_ms", "model ms per frame"),
                ("pixel_accuracy", "pixel accuracy"),
            )
        ]
    return rrb.Blueprint(
        rrb.Vertical(rrb.Grid(*images, grid_columns=3), rrb.Horizontal(*lower), row_shares=[2, 1]),
        collapse_panels=True,
    )


def open_stream(app_id: str, sink: Sink, predicted: bool) -> Any:
    """A Rerun recording stream connected to ``sink``, with the dashboard layout."""
    rr = require_rerun()
    stream = rr.RecordingStream(app_id)
    layout = blueprint(predicted)
    if sink.mode == "save":
        Path(sink.path).parent.mkdir(parents=True, exist_ok=True)
        stream.save(sink.path, default_blueprint=layout)
    elif sink.mode == "serve":
        server = rr.GrpcServerSink(bind_ip=sink.bind, port=sink.grpc_port)
        stream.set_sinks(server, default_blueprint=layout)
        rr.serve_web_viewer(web_port=sink.web_port, open_browser=False, connect_to=server.uri)
        log.warning("%s", sink.serving_note(server.uri))
    else:
        stream.spawn(default_blueprint=layout)
    return stream


class Dashboard:
    """Logs frames, trajectories and metrics to a Rerun stream (see the module docstring)."""

    def __init__(
        self,
        stream: Any,
        class_names: tuple[str, ...],
        palette: np.ndarray,
        config_json: str | None = None,
    ) -> None:
        self.rr, self.stream = require_rerun(), stream
        rr = self.rr
        classes = [
            (i, name, tuple(int(c) for c in palette[i])) for i, name in enumerate(class_names)
        ]
        stream.log("camera", rr.AnnotationContext(classes), static=True)
        stream.log("world", rr.ViewCoordinates.RDF, static=True)
        if config_json is not None:
            stream.log("config", rr.TextDocument(config_json), static=True)
        self.true_path: list[np.ndarray] = []
        self.estimated_path: list[np.ndarray] = []

    def new_clip(self, index: int, text: str) -> None:
        """Start a new clip at frame ``index``: the trajectories restart."""
        self.true_path, self.estimated_path = [], []
        self.stream.set_time(TIMELINE, sequence=index)
        self.stream.log("clip", self.rr.TextLog(text))

    def frame(
        self,
        index: int,
        rgb: np.ndarray,
        labels: np.ndarray | None,
        depth: np.ndarray | None,
        pred_labels: np.ndarray | None = None,
        pred_depth: np.ndarray | None = None,
    ) -> None:
        """Images of frame ``index``.

        RGB (H, W, 3) uint8, class ids (H, W), depth (H, W) metres; a missing modality is left out.
        """
        rr, stream = self.rr, self.stream
        stream.set_time(TIMELINE, sequence=index)
        stream.log("camera/rgb", rr.Image(rgb))
        for name, value in (("truth", labels), ("predicted", pred_labels)):
            if value is not None:
                stream.log(
                    f"camera/semantic/{name}", rr.SegmentationImage(np.asarray(value, np.uint8))
                )
        for name, value in (("truth", depth), ("predicted", pred_depth)):
            if value is not None:
                stream.log(
                    f"camera/depth/{name}", rr.DepthImage(np.asarray(value, np.float32), meter=1.0)
                )

    def pose(
        self, true_cam_to_world: np.ndarray | None, estimated_cam_to_world: np.ndarray | None = None
    ) -> None:
        """Extend the trajectories by the camera centres of (4, 4) poses (at the current frame)."""
        rr = self.rr
        for name, pose, path, colour in (
            ("true", true_cam_to_world, self.true_path, (40, 200, 40)),
            ("estimated", estimated_cam_to_world, self.estimated_path, (230, 60, 60)),
        ):
            if pose is None:
                continue
            path.append(np.asarray(pose, np.float64)[:3, 3].astype(np.float32))
            if len(path) > 1:
                self.stream.log(
                    f"world/trajectory/{name}",
                    rr.LineStrips3D([np.stack(path)], colors=[colour], radii=[0.05]),
                )

    def scalars(self, **values: float) -> None:
        """Time series under ``metrics/<name>`` at the current frame."""
        for name, value in values.items():
            self.stream.log(f"metrics/{name}", self.rr.Scalars(float(value)))

    def close(self) -> None:
        """Flush everything logged (the .rrd file is complete after this)."""
        self.stream.flush()
        self.stream.disconnect()


def read_rrd(path: Path) -> dict[str, dict[str, Any]]:
    """What an .rrd holds, per entity path.

    ``frames`` (sorted ``frame`` timeline values), ``components`` (names), ``shapes`` ((H, W) of
    each image), ``static``; read back through ``rerun.chunk.RrdReader``. Images can be decoded with
    :func:`rrd_images`.
    """
    from rerun.chunk import RrdReader

    path = Path(path)
    if not path.is_file():
        raise CaptureError(f"{path} does not exist; write one with --save {path.name}")
    out: dict[str, dict[str, Any]] = {}
    for chunk in RrdReader(path).stream():
        batch = chunk.to_record_batch()
        entry = out.setdefault(
            chunk.entity_path,
            {"frames": [], "components": set(), "shapes": [], "static": chunk.is_static},
        )
        entry["components"].update(n for n in batch.schema.names if ":" in n)
        if TIMELINE in batch.schema.names:
            entry["frames"] += batch.column(TIMELINE).to_pylist()
        formats = [n for n in batch.schema.names if n.endswith(":format")]
        if formats:
            entry["shapes"] += [
                (f[0]["height"], f[0]["width"]) for f in batch.column(formats[0]).to_pylist()
            ]
    for entry in out.values():
        order = np.argsort(entry["frames"], kind="stable") if entry["frames"] else []
        entry["frames"] = [entry["frames"][i] for i in order]
        if len(entry["shapes"]) == len(order):
            entry["shapes"] = [entry["shapes"][i] for i in order]
    return out


def rrd_values(path: Path, entity: str, component: str) -> dict[int, Any]:
    """The values of ``component`` logged at ``entity``, by ``frame``, as Python lists.

    E.g. ``LineStrips3D:strips`` at ``/world/trajectory/true``.
    """
    from rerun.chunk import RrdReader

    values: dict[int, Any] = {}
    for chunk in RrdReader(path).stream():
        batch = chunk.to_record_batch()
        if chunk.entity_path == entity and component in batch.schema.names:
            frames = (
                batch.column(TIMELINE).to_pylist() if TIMELINE in batch.schema.names else [None]
            )
            values.update(zip(frames, batch.column(component).to_pylist(), strict=False))
    return values


def rrd_images(path: Path, entity: str) -> dict[int, np.ndarray]:
    """The images logged at ``entity``, by ``frame``, as arrays of the logged dtype.

    Decoded to (H, W) or (H, W, C), e.g. at ``/camera/semantic/truth``.
    """
    dtypes = {6: np.uint8, 7: np.uint16, 34: np.float32, 35: np.float64}
    kind = {"rgb": "Image", "semantic": "SegmentationImage", "depth": "DepthImage"}[
        entity.split("/")[2]
    ]
    formats = rrd_values(path, entity, f"{kind}:format")
    images: dict[int, np.ndarray] = {}
    for frame, buf in rrd_values(path, entity, f"{kind}:buffer").items():
        fmt = formats[frame][0]
        flat = np.frombuffer(bytes(buf[0]), dtype=dtypes[fmt["channel_datatype"]])
        image = flat.reshape(fmt["height"], fmt["width"], -1)
        images[frame] = image[..., 0] if image.shape[-1] == 1 else image
    return images


def log_clips(path: Path, sink: Sink, clip_id: str | None = None) -> tuple[int, int]:
    """``capture inspect --rerun``.

    Every clip of a shard or dataset folder (or only ``clip_id``) on the dashboard, one after
    another on the ``frame`` timeline, read through the one :class:`~clipcore.shards.ShardReader`;
    semantic images are raw CARLA tags, trajectories in world coordinates. Returns (clips, frames)
    logged.
    """
    from clipcore.folder import find_shards
    from clipcore.shards import ShardReader
    from clipcore.tags import NUM_TAGS, TAG_NAMES, palette

    require_rerun()
    todo = []
    for shard in find_shards(path):
        with ShardReader(shard) as reader:
            todo += [(shard, cid) for cid in reader.clip_ids() if clip_id in (None, cid)]
    if not todo:
        raise CaptureError(
            f"clip {clip_id!r} is not in {path}; list clips with: capture inspect {path} --json"
        )
    board = Dashboard(
        open_stream("carla-temporal inspect", sink, predicted=False),
        TAG_NAMES,
        palette()[:NUM_TAGS],
    )
    frames = 0
    try:
        for shard, cid in todo:
            with ShardReader(shard) as reader:
                clip = reader.read_clip(cid)
            board.new_clip(frames, f"{cid} ({clip.town}, {len(clip)} frames, {shard.name})")
            for frame in clip.frames:
                board.frame(frames, frame.rgb, frame.semantic, frame.depth)
                board.pose(frame.cam_to_world)
                frames += 1
    finally:
        board.close()
    return len(todo), frames
