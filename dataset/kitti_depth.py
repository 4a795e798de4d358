"""KITTI-style depth ground truth: 16-bit PNGs holding metres x 256 (0 = no measurement).

``KittiDepthPairs`` pairs a folder of RGB images with a folder of such PNGs by file stem
(``0000000005.png`` with ``0000000005.png`` or ``.jpg``), for evaluating on real data the way the
sim2real paper does. Item: ``rgb`` (3, H, W) float32 in [0, 1] at the model's size, ``depth``
(1, H0, W0) float32 metres at the ground truth's own size, ``valid`` (1, H0, W0) bool.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from clipcore.errors import ConfigError
from dataset.target_images import IMAGE_SUFFIXES, _resize

KITTI_DEPTH_SCALE = 256.0


def read_depth_png(path: Path) -> np.ndarray:
    """(H, W) float32 metres from a KITTI depth PNG (uint16 / 256); 0 where there is no depth."""
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise ConfigError(
            f"{path} is not a readable PNG; pass KITTI depth PNGs (16-bit, metres x 256)"
        )
    if raw.dtype != np.uint16 or raw.ndim != 2:
        raise ConfigError(
            f"{path} is {raw.dtype} with {raw.shape[2] if raw.ndim == 3 else 1} channel(s), not a "
            "16-bit single-channel KITTI depth PNG (metres x 256); convert it or pass the right "
            "folder"
        )
    return raw.astype(np.float32) / KITTI_DEPTH_SCALE


class KittiDepthPairs(Dataset):
    """Images of ``images_dir`` with the depth PNG of the same stem in ``depth_dir``."""

    def __init__(
        self, images_dir: str | Path, depth_dir: str | Path, size: tuple[int, int]
    ) -> None:
        self.size = tuple(size)
        images = {
            p.stem: p
            for p in sorted(Path(images_dir).rglob("*"))
            if p.suffix.lower() in IMAGE_SUFFIXES
        }
        depths = {p.stem: p for p in sorted(Path(depth_dir).rglob("*.png"))}
        self.pairs = [(images[s], depths[s]) for s in sorted(images.keys() & depths.keys())]
        if not self.pairs:
            raise ConfigError(
                f"no image in {images_dir} has a depth PNG of the same name in {depth_dir}; "
                "pass matching folders (e.g. image_02/data and proj_depth/groundtruth/image_02)"
            )

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        image, depth_png = self.pairs[i]
        bgr = cv2.imread(str(image), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ConfigError(f"{image} is not a readable image; delete or convert it")
        depth = torch.from_numpy(read_depth_png(depth_png))[None]
        return {
            "rgb": _resize(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), self.size),
            "depth": depth,
            "valid": depth > 0,
        }
