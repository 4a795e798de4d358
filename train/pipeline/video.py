"""``train predict pipeline --video``: any video file -> side-by-side input | segmentation | depth.

Frames are read one at a time with OpenCV's FFmpeg reader (mp4, avi, mkv, webm, gif, ...),
resized to the run's frame size (``TrainConfig.frame_size()``, aspect not kept) and streamed
through the model: the temporal pipeline (``init_state`` / ``step``) when the run has a stage-4
checkpoint, else stage 1's segmentation with stage 2's depth when it exists (the depth panel is
grey without one). The temporal model's geometry-aligned memory needs the camera's intrinsics,
taken as a pinhole of horizontal field of view ``hfov_deg`` at the frame size. MP4 output is
written frame by frame; a GIF is assembled at the end (frames held in memory). The output file
appears only when complete and is never overwritten.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from clipcore.errors import CaptureError
from clipcore.geometry import intrinsics
from clipcore.normalize import normalize
from clipcore.pictures import H264Writer, depth_to_rgb
from dataset.labels import load_label_map
from models.depth import build_depth
from models.segmentation import build_segmentation
from train.pipeline.config import TrainConfig
from train.pipeline.trained import component, load_run, temporal_model

log = logging.getLogger(__name__)

SUFFIXES = (".mp4", ".gif")


@dataclass
class VideoReport:
    """What one ``predict_video`` call did."""

    out: Path
    frames: int
    model: str  # "temporal" or "frame"
    size: tuple[int, int]


def read_frames(path: Path) -> tuple[Iterator[np.ndarray], float, int]:
    """(frames as (H, W, 3) uint8 RGB, frames per second, frame count or 0 when unknown)."""
    if not Path(path).is_file():
        raise CaptureError(f"{path} is not a file; pass a video file (mp4, avi, mkv, webm, gif)")
    cap = cv2.VideoCapture(str(path))
    ok, first = cap.read() if cap.isOpened() else (False, None)
    if not ok:
        cap.release()
        raise CaptureError(
            f"cannot read {path} as a video; pass a video file FFmpeg reads "
            "(mp4, avi, mkv, webm, gif)"
        )
    fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
    count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)

    def frames() -> Iterator[np.ndarray]:
        frame = first
        try:
            while frame is not None:
                yield np.ascontiguousarray(frame[..., ::-1])
                ok, frame = cap.read()
                frame = frame if ok else None
        finally:
            cap.release()

    return frames(), (fps if 0 < fps < 1000 else 20.0), max(count, 0)


class _Sink:
    """Writes RGB frames to ``.mp4`` (streamed) or ``.gif`` (at close).

    Through a partial file that is renamed to ``path`` when complete.
    """

    def __init__(self, path: Path, fps: float) -> None:
        self.path, self.fps = Path(path), fps
        self.partial = self.path.with_name(f".{self.path.stem}.partial{self.path.suffix}")
        self.gif: list[np.ndarray] | None = [] if self.path.suffix == ".gif" else None
        self.writer = H264Writer(self.partial, fps) if self.gif is None else None

    def write(self, frame: np.ndarray) -> None:
        if self.gif is not None:
            self.gif.append(frame)
            return
        self.writer.write(frame)

    def close(self) -> None:
        if self.gif is not None:
            from PIL import Image

            images = [Image.fromarray(f) for f in self.gif]
            try:
                images[0].save(
                    self.partial,
                    format="GIF",
                    save_all=True,
                    append_images=images[1:],
                    duration=round(1000 / self.fps),
                    loop=0,
                )
            except OSError as exc:
                raise CaptureError(
                    f"cannot write {self.partial} ({exc.strerror or exc}): check "
                    "that the folder is writable and has space"
                ) from None
        elif self.writer is not None:
            self.writer.close()
        os.replace(self.partial, self.path)

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.partial.unlink(missing_ok=True)


class _FrameModel(torch.nn.Module):
    """Stage 1 (and stage 2 when trained) frame by frame."""

    def __init__(self, cfg: TrainConfig, run_dir: Path) -> None:
        super().__init__()
        self.segmentation = build_segmentation(cfg.model)
        self.segmentation.load_state_dict(component(run_dir, "stage1", "segmentation"))
        self.depth = None
        if (Path(run_dir) / "stage2" / "best.pt").exists():
            self.depth = build_depth(cfg.model)
            self.depth.load_state_dict(component(run_dir, "stage2", "depth"))
        self.eval()

    def step(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        depth = self.depth(x)["depth"] if self.depth is not None else None
        return self.segmentation(x)["seg_logits"], depth


def _model(cfg: TrainConfig, run_dir: Path, device: str):
    """The temporal pipeline where stage 4 is trained, else stages 1 and 2.

    Stage 4 only when it needs no ground truth; stages 1 and 2 run frame by frame.
    """
    temporal = (Path(run_dir) / "stage4" / "best.pt").exists()
    if temporal and cfg.model.memory_alignment == "ground_truth":
        log.warning(
            "stage 4 of %s aligns its memory with ground truth, which a video lacks; "
            "using stages 1 and 2 frame by frame",
            run_dir,
        )
        temporal = False
    model = temporal_model(cfg, run_dir) if temporal else _FrameModel(cfg, run_dir)
    return model.to(device), "temporal" if temporal else "frame"


@torch.no_grad()
def predict_video(
    video: Path,
    run_dir: Path,
    out: Path,
    device: str = "cpu",
    hfov_deg: float = 90.0,
    max_frames: int | None = None,
    progress: bool = True,
) -> VideoReport:
    """Write ``out`` (.mp4 or .gif).

    Per frame of ``video``, input | segmentation | depth at the run's frame size.
    """
    out = Path(out)
    if out.suffix.lower() not in SUFFIXES:
        raise CaptureError(f"--out {out}: use a .mp4 or .gif file name")
    if out.exists():
        raise CaptureError(f"{out} exists; pass another --out or delete it")
    if not out.parent.is_dir():
        raise CaptureError(f"{out.parent} is not a folder; create it or pass another --out")
    cfg = load_run(run_dir)
    label_map = load_label_map(cfg.data.label_map)
    height, width = cfg.frame_size()
    frames, fps, count = read_frames(video)
    model, kind = _model(cfg, run_dir, device)
    K = torch.as_tensor(intrinsics(width, height, hfov_deg), dtype=torch.float32)[None].to(device)
    state = model.init_state(1, height, width, device) if kind == "temporal" else None
    sink = _Sink(out, fps)
    total = min(count, max_frames) if count and max_frames else (count or max_frames)
    done = 0
    try:
        for rgb in tqdm(
            frames,
            total=total or None,
            unit="frame",
            disable=not progress,
            desc=f"predict {Path(video).name}",
        ):
            if max_frames is not None and done >= max_frames:
                break
            small = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)
            x = normalize(torch.from_numpy(small).permute(2, 0, 1).float().div(255))[None]
            if kind == "temporal":
                outputs, state = model.step(x.to(device), state, K)
                logits, depth = outputs["seg_logits"], outputs["depth"]
            else:
                logits, depth = model.step(x.to(device))
            labels = logits[0].argmax(0).cpu().numpy()
            depth_rgb = (
                depth_to_rgb(depth[0, 0].float().cpu().numpy())
                if depth is not None
                else np.full_like(small, 128)
            )
            sink.write(np.concatenate([small, label_map.colorize(labels), depth_rgb], 1))
            done += 1
        sink.close()
    except BaseException:
        sink.abort()
        raise
    log.info("wrote %s: %d frames, %s model, %dx%d", out, done, kind, height, width)
    return VideoReport(out, done, kind, (height, width))
