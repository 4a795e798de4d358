"""Pictures of clips.

Depth colour map, RGB | semantic | depth panels, contact sheets, images and videos (used by
``capture inspect`` and by training's predictions).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from clipcore.errors import CaptureError
from clipcore.geometry import FAR_PLANE_M
from clipcore.records import Clip
from clipcore.tags import colorize


def depth_to_rgb(depth: np.ndarray) -> np.ndarray:
    """Colour-map (..., H, W) metres to (..., H, W, 3) uint8 RGB, log scale (1 m .. far plane)."""
    import cv2

    scaled = np.clip(np.log(np.maximum(depth, 1.0)) / np.log(FAR_PLANE_M), 0.0, 1.0)
    flat = (255 * (1.0 - scaled)).astype(np.uint8).reshape(-1, depth.shape[-1])
    bgr = cv2.applyColorMap(flat, cv2.COLORMAP_MAGMA)
    return bgr[..., ::-1].reshape(*depth.shape, 3)


def frame_panel(
    rgb: np.ndarray, semantic: np.ndarray | None, depth: np.ndarray | None
) -> np.ndarray:
    """One row RGB | semantic (CARLA palette) | depth, as (H, 3W, 3) uint8 RGB.

    A missing modality is drawn grey.
    """
    grey = np.full_like(rgb, 128)
    return np.concatenate(
        [
            rgb,
            grey if semantic is None else colorize(semantic),
            grey if depth is None else depth_to_rgb(depth),
        ],
        axis=1,
    )


def contact_sheet(clip: Clip, rows: int = 4) -> np.ndarray:
    """``rows`` evenly spaced frames of a clip as RGB | semantic | depth: (rows*H, 3W, 3) uint8."""
    picks = np.linspace(0, len(clip) - 1, num=min(rows, len(clip))).round().astype(int)
    return np.concatenate(
        [frame_panel(f.rgb, f.semantic, f.depth) for f in (clip.frames[i] for i in picks)], axis=0
    )


#: File name endings of the pictures :func:`write_image` and :func:`write_video` write.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
VIDEO_SUFFIXES = (".mp4", ".gif")


def check_output(path: Path, option: str, suffixes: tuple[str, ...]) -> None:
    """Refuse, before any work, a picture file ``path`` that cannot be written.

    One with another ending than ``suffixes`` (given as ``option``), or whose folder does not exist.
    """
    path = Path(path)
    if path.suffix.lower() not in suffixes:
        raise CaptureError(f"{option} {path}: use a {' or '.join(suffixes)} file name")
    if not path.parent.is_dir():
        raise CaptureError(
            f"{option} {path}: the folder {path.parent} does not exist; create it or write "
            "elsewhere"
        )


def write_image(path: Path, rgb: np.ndarray) -> None:
    """Write an RGB uint8 image (PNG or JPEG by suffix)."""
    import cv2

    if not cv2.imwrite(str(path), np.ascontiguousarray(rgb[..., ::-1])):
        raise CaptureError(f"could not write {path}: use a .png or .jpg name in a writable folder")


def even_size(frame: np.ndarray) -> np.ndarray:
    """``frame`` padded (edge pixels repeated) to an even height and width, as yuv420p needs."""
    height, width = frame.shape[:2]
    pad = ((0, height % 2), (0, width % 2), (0, 0))
    return np.pad(frame, pad, mode="edge") if height % 2 or width % 2 else frame


class H264Writer:
    """Streams RGB uint8 frames into an H.264 MP4 (libx264, yuv420p) that browsers play.

    Encoded by the ffmpeg that imageio-ffmpeg ships, so no system ffmpeg is needed. Frames of odd
    height or width are padded by one pixel (yuv420p needs even sizes).

    Args:
        path: The ``.mp4`` file to write.
        fps: Frames per second.
    """

    def __init__(self, path: Path, fps: float) -> None:
        self.path, self.fps = Path(path), fps
        self._frames: Any = None
        self.size: tuple[int, int] | None = None

    def write(self, frame: np.ndarray) -> None:
        """Append one (H, W, 3) uint8 RGB frame (every frame the size of the first)."""
        frame = np.ascontiguousarray(even_size(frame), dtype=np.uint8)
        if self._frames is None:
            import imageio_ffmpeg

            self.size = (frame.shape[1], frame.shape[0])
            self._frames = imageio_ffmpeg.write_frames(
                str(self.path),
                self.size,
                fps=self.fps,
                codec="libx264",
                pix_fmt_in="rgb24",
                pix_fmt_out="yuv420p",
                macro_block_size=1,
                quality=None,
                output_params=["-crf", "20", "-movflags", "+faststart"],
            )
            try:
                self._frames.send(None)
            except OSError as exc:
                raise CaptureError(
                    f"could not open {self.path} for writing ({exc}): check the folder exists "
                    "and is writable"
                ) from None
        self._frames.send(frame)

    def close(self) -> None:
        """Finish the file (nothing is written for a writer that got no frame)."""
        if self._frames is not None:
            self._frames.close()
            self._frames = None


def write_video(path: Path, panels: list[np.ndarray], fps: float) -> None:
    """Write RGB uint8 frames as ``.mp4`` (H.264, yuv420p) or ``.gif`` (Pillow).

    At ``fps`` frames per second.
    """
    suffix = Path(path).suffix.lower()
    if suffix == ".gif":
        from PIL import Image

        images = [Image.fromarray(p) for p in panels]
        images[0].save(
            path, save_all=True, append_images=images[1:], duration=int(round(1000 / fps)), loop=0
        )
        return
    if suffix != ".mp4":
        raise CaptureError(f"--video {path}: use a .mp4 or .gif file name")
    writer = H264Writer(path, fps)
    try:
        for panel in panels:
            writer.write(panel)
    finally:
        writer.close()
