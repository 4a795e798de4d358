"""KITTI depth PNGs (16-bit, metres x 256) and their pairing with images."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from clipcore.errors import ConfigError
from dataset.kitti_depth import KittiDepthPairs, read_depth_png


def _kitti(folder, names=("0000000001", "0000000002")):
    """Images 40x100 and depth PNGs 20x50 (metres x 256, 0 = none); one image has no depth."""
    rng = np.random.default_rng(0)
    (folder / "images").mkdir(parents=True)
    (folder / "depth").mkdir()
    metres = {}
    for name in (*names, "0000000099"):
        cv2.imwrite(
            str(folder / "images" / f"{name}.png"), rng.integers(0, 255, (40, 100, 3), np.uint8)
        )
    for name in names:
        depth = rng.uniform(1, 100, (20, 50)).astype(np.float32)
        depth[:5] = 0
        cv2.imwrite(str(folder / "depth" / f"{name}.png"), np.round(depth * 256).astype(np.uint16))
        metres[name] = depth
    return folder / "images", folder / "depth", metres


def test_depth_png_reads_metres_and_pairs_by_name(tmp_path):
    images, depth, metres = _kitti(tmp_path)
    back = read_depth_png(depth / "0000000001.png")
    np.testing.assert_allclose(back, metres["0000000001"], atol=1 / 512)
    pairs = KittiDepthPairs(images, depth, (32, 64))
    assert len(pairs) == 2  # the image without a depth PNG is left out
    item = pairs[0]
    assert item["rgb"].shape == (3, 32, 64) and item["depth"].shape == (1, 20, 50)
    assert not item["valid"][0, :5].any() and item["valid"][0, 5:].all()


def test_an_8_bit_png_is_refused_with_the_fix(tmp_path):
    path = tmp_path / "d.png"
    cv2.imwrite(str(path), np.zeros((4, 4), np.uint8))
    with pytest.raises(ConfigError, match="16-bit single-channel KITTI depth PNG"):
        read_depth_png(path)
    with pytest.raises(ConfigError, match="same name"):
        KittiDepthPairs(tmp_path, tmp_path / "nothing", (32, 64))
