"""Videos are H.264 in yuv420p (they play in a browser), whatever the frame size."""

from __future__ import annotations

import numpy as np
import pytest

from clipcore.pictures import write_video
from tests.videos import assert_h264, video_stream


@pytest.mark.parametrize("size", [(48, 96), (47, 95)])
def test_mp4_is_h264_yuv420p_at_even_size(tmp_path, size):
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (*size, 3), dtype=np.uint8) for _ in range(5)]
    out = tmp_path / "clip.mp4"
    write_video(out, frames, 10.0)
    assert_h264(out)
    height, width = (s + s % 2 for s in size)
    assert f"{width}x{height}" in video_stream(out)


def test_gif_is_a_gif(tmp_path):
    from PIL import Image

    frames = [np.full((8, 10, 3), i * 40, dtype=np.uint8) for i in range(4)]
    out = tmp_path / "clip.gif"
    write_video(out, frames, 10.0)
    with Image.open(out) as gif:
        assert gif.format == "GIF" and gif.n_frames == 4
