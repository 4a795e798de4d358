"""What ``ffprobe`` would say of a video, from the ffmpeg that imageio-ffmpeg ships."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path


def video_stream(path: Path) -> str:
    """The ``Video: ...`` line ffmpeg prints for ``path`` (codec, pixel format, size)."""
    import imageio_ffmpeg

    done = subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(path)],
        capture_output=True,
        text=True,
    )
    found = re.search(r"Video: .*", done.stderr)
    assert found, done.stderr
    return found.group(0)


def assert_h264(path: Path) -> None:
    """``path`` is an H.264 video in yuv420p (what browsers play)."""
    stream = video_stream(path)
    assert stream.startswith("Video: h264") and "yuv420p" in stream, stream
