"""``train live``.

Drive a simulator, run the streaming temporal model on every frame as it arrives, and show it on a
Rerun dashboard (see :mod:`clipcore.dashboard`).

The simulator runs in a thread a frame or two ahead (:class:`~carla_temporal.feed.FrameFeed`), so
rendering the next frame overlaps the model's work on this one. The simulator's camera renders
at the model's input size (H x W) with the town file's field of view and mount. Frames come
from the backend registry in clips of ``clip_frames`` (the CARLA
backend re-spawns and warms up between clips; the embedded simulator starts a new route); the
model's state starts afresh with every clip, so the estimated trajectory is drawn from each
clip's first camera. Each frame goes through the model's ``step`` API at constant cost.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from carla_capture.backends import get_backend
from carla_capture.config import CaptureConfig, TownConfig
from carla_temporal.feed import FrameFeed
from clipcore.dashboard import Dashboard, Sink, open_stream, require_rerun
from clipcore.geometry import intrinsics, invert_pose
from clipcore.normalize import to_uint8
from clipcore.records import Frame
from dataset.labels import LabelMap, load_label_map
from dataset.windows import make_item
from models.pipeline import PipelineState, TemporalPipeline

log = logging.getLogger(__name__)


@dataclass
class LiveStats:
    """What a live run did.

    Frames and clips, wall and CPU seconds (all threads of the process); wall seconds the simulator
    thread spent rendering, the loop spent waiting for a frame (the part of simulating that did not
    overlap the model), in the model, and logging.
    """

    frames: int = 0
    clips: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    simulate_s: float = 0.0
    wait_s: float = 0.0
    model_s: float = 0.0
    log_s: float = 0.0
    correct_pixels: int = 0
    labelled_pixels: int = 0

    @property
    def fps(self) -> float:
        """Frames per wall-clock second of the whole loop."""
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        """The figures, with per-frame milliseconds and the pixel accuracy of the predictions."""
        per = 1000.0 / max(self.frames, 1)
        acc = self.correct_pixels / self.labelled_pixels if self.labelled_pixels else None
        return {
            **asdict(self),
            "fps": self.fps,
            "cpu_ms_per_frame": self.cpu_seconds * per,
            "simulate_ms_per_frame": self.simulate_s * per,
            "wait_ms_per_frame": self.wait_s * per,
            "model_ms_per_frame": self.model_s * per,
            "log_ms_per_frame": self.log_s * per,
            "pixel_accuracy": acc,
        }


def live_town(capture: CaptureConfig, size: tuple[int, int]) -> TownConfig:
    """The capture's town file with its camera rendering ``size`` (H, W) pixels."""
    town = capture.town_config()
    camera = town.camera.model_copy(update={"height": int(size[0]), "width": int(size[1])})
    return town.model_copy(update={"camera": camera})


class LiveLoop:
    """The per-frame work: model, accuracy, dashboard."""

    def __init__(
        self,
        model: TemporalPipeline,
        label_map: LabelMap,
        K: np.ndarray,
        size: tuple[int, int],
        dashboard: Dashboard | None = None,
        device: str = "cpu",
    ) -> None:
        self.model, self.label_map, self.K, self.size = model, label_map, K, size
        self.dashboard, self.device = dashboard, device
        self.stats = LiveStats()
        self.state: PipelineState | None = None
        self.first_pose: np.ndarray | None = None
        self.last_pose: np.ndarray | None = None
        self.starts: deque[float] = deque(maxlen=10)

    def start_clip(self, index: int, town: str) -> None:
        """A new clip: fresh model state, trajectories from its first camera."""
        self.state, self.first_pose, self.last_pose = None, None, None
        self.stats.clips += 1
        if self.dashboard is not None:
            self.dashboard.new_clip(
                self.stats.frames, f"clip {index} of {town} from frame {self.stats.frames}"
            )

    def _inputs(self, frame: Frame) -> dict[str, torch.Tensor]:
        raw: dict[str, Any] = {
            "rgb": np.array(frame.rgb[None]),
            "intrinsics": self.K,
            "frames": np.array([frame.frame]),
        }
        for name in ("semantic", "depth", "cam_to_world"):
            if getattr(frame, name) is not None:
                raw[name] = np.array(getattr(frame, name)[None])  # writable: torch shares it
        item = make_item(raw, self.label_map, None, self.size)
        rel = np.eye(4)
        if frame.cam_to_world is not None and self.last_pose is not None:
            rel = invert_pose(self.last_pose) @ frame.cam_to_world
        item["rel_pose"] = torch.from_numpy(rel)[None]
        return item

    @torch.no_grad()
    def __call__(self, frame: Frame) -> None:
        """Run the model on one frame; add it to the statistics and the dashboard."""
        start = time.perf_counter()
        item = self._inputs(frame)
        rgb = item["rgb"].to(self.device)
        if self.state is None:
            self.state = self.model.init_state(1, *rgb.shape[-2:], self.device)
        out, self.state = self.model.step(
            rgb,
            self.state,
            item["intrinsics"].float().to(self.device),
            item["depth"].to(self.device),
            item["rel_pose"].float().to(self.device),
        )
        pred = out["seg_logits"][0].argmax(0).cpu().numpy().astype(np.uint8)
        depth = out["depth"][0, 0].float().cpu().numpy()
        estimated = (
            out["cam_to_world"][0].double().cpu().numpy() if "cam_to_world" in out else np.eye(4)
        )
        modelled = time.perf_counter()
        self.stats.model_s += modelled - start
        labels = item["labels"][0].numpy()
        known = labels != self.label_map.ignore_index
        correct = int((pred[known] == labels[known]).sum())
        self.stats.correct_pixels += correct
        self.stats.labelled_pixels += int(known.sum())
        if frame.cam_to_world is not None:
            if self.first_pose is None:
                self.first_pose = frame.cam_to_world
            self.last_pose = frame.cam_to_world
        self.starts.append(start)
        if self.dashboard is not None:
            self._log(
                frame,
                item,
                labels,
                pred,
                depth,
                estimated,
                correct / max(int(known.sum()), 1),
                modelled - start,
            )
        self.stats.frames += 1
        self.stats.log_s += time.perf_counter() - modelled

    def _log(
        self,
        frame: Frame,
        item: dict,
        labels: np.ndarray,
        pred: np.ndarray,
        depth: np.ndarray,
        estimated: np.ndarray,
        accuracy: float,
        model_s: float,
    ) -> None:
        board, index = self.dashboard, self.stats.frames
        true_depth = item["depth"][0, 0].numpy() if frame.depth is not None else None
        board.frame(
            index,
            to_uint8(item["rgb"][0]),
            labels if frame.semantic is not None else None,
            true_depth,
            pred,
            depth,
        )
        true = (
            None
            if frame.cam_to_world is None
            else invert_pose(self.first_pose) @ frame.cam_to_world
        )
        board.pose(true, estimated)
        span = self.starts[-1] - self.starts[0]
        fps = (len(self.starts) - 1) / span if span > 0 else 0.0
        board.scalars(
            fps=fps,
            model_ms=1000 * model_s,
            **({"pixel_accuracy": accuracy} if frame.semantic is not None else {}),
        )


def run_live(
    model: TemporalPipeline,
    label_map: LabelMap,
    capture: CaptureConfig,
    size: tuple[int, int],
    frames: int,
    dashboard: Dashboard | None = None,
    device: str = "cpu",
) -> LiveStats:
    """Drive ``capture.backend`` for ``frames`` frames and run ``model`` on each.

    In ``capture.town``, in clips of ``capture.frames``, the model in eval mode at ``size`` (H, W).
    """
    town = live_town(capture, size)
    K = intrinsics(town.camera.width, town.camera.height, town.camera.hfov)
    loop = LiveLoop(model.eval().to(device), label_map, K, size, dashboard, device)
    backend = get_backend(capture.backend)(capture, town)  # builds the town: not timed
    with backend:
        feed = FrameFeed(backend, capture.carla.max_restarts)
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            waited = time.perf_counter()
            for kind, value in feed:
                if kind == "clip":
                    loop.start_clip(value, town.name)
                    continue
                loop.stats.wait_s += time.perf_counter() - waited
                loop(value)
                if loop.stats.frames >= frames:
                    break
                waited = time.perf_counter()
        finally:
            feed.close()
    loop.stats.simulate_s = feed.simulate_s
    loop.stats.seconds = time.perf_counter() - wall
    loop.stats.cpu_seconds = time.process_time() - cpu
    return loop.stats


def live(
    run_dir: Path, capture: CaptureConfig, frames: int, sink: Sink | None, device: str = "cpu"
) -> LiveStats:
    """``train live``.

    The run's temporal model (stage 4) on ``frames`` live frames, logged to ``sink`` (None: no
    dashboard, for measuring the loop alone). On the CPU, torch gets every core but one, which the
    simulator thread uses.
    """
    from train.pipeline.trained import load_run, temporal_model

    if sink is not None:
        require_rerun()  # fail before loading anything
    cfg = load_run(run_dir)
    label_map = load_label_map(cfg.data.label_map)
    model = temporal_model(cfg, run_dir)
    dashboard = None
    if sink is not None:
        settings = {
            "run": str(run_dir),
            "frames": frames,
            "size": list(cfg.frame_size()),
            "capture": json.loads(capture.model_dump_json()),
            "model": json.loads(cfg.model.model_dump_json()),
        }
        stream = open_stream("carla-temporal live", sink, predicted=True)
        dashboard = Dashboard(
            stream, label_map.class_names, label_map.palette, json.dumps(settings, indent=2)
        )
    threads = torch.get_num_threads()
    if device == "cpu":
        torch.set_num_threads(max(1, (os.cpu_count() or 2) - 1))
    try:
        stats = run_live(model, label_map, capture, cfg.frame_size(), frames, dashboard, device)
    finally:
        torch.set_num_threads(threads)
        if dashboard is not None:
            dashboard.close()
    log.info("live: %s", stats.as_dict())
    return stats
