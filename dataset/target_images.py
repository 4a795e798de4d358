"""``TargetImages``: unlabelled images of the target domain for sim2real training.

The target is either a folder of JPG / PNG images of any size (searched recursively, each
resized to the model's input) or a folder of shards, of which only the RGB frames are read
(through :class:`~clipcore.shards.ShardReader`; labels, depth and poses are never used).
Item: ``{"rgb": (3, H, W) float32 in [0, 1]}``.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from clipcore.errors import ConfigError
from clipcore.shards import ShardReader

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def _resize(rgb: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """(H0, W0, 3) uint8 -> (3, H, W) float32 in [0, 1] (area interpolation when shrinking)."""
    h, w = size
    if rgb.shape[:2] != (h, w):
        shrink = rgb.shape[0] > h or rgb.shape[1] > w
        rgb = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return torch.from_numpy(np.ascontiguousarray(rgb, dtype=np.float32) / 255.0).permute(2, 0, 1)


class TargetImages(Dataset):
    """Unlabelled target-domain images from ``folder`` (images, or shards used without labels)."""

    def __init__(self, folder: str | Path, size: tuple[int, int]) -> None:
        self.folder, self.size = Path(folder), tuple(size)
        if not self.folder.is_dir():
            raise ConfigError(
                f"target folder {self.folder} does not exist; pass a folder of JPG/PNG images "
                "or of shards with --target"
            )
        files = sorted(p for p in self.folder.rglob("*") if p.is_file())
        self.images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
        self.frames: list[tuple[Path, str, int]] = []
        if not self.images:
            for shard in (p for p in files if p.suffix == ".h5" and not p.name.startswith(".")):
                with ShardReader(shard) as reader:
                    self.frames += [
                        (shard, cid, k)
                        for cid in reader.clip_ids()
                        for k in range(reader.num_frames(cid))
                    ]
        if not self.images and not self.frames:
            raise ConfigError(
                f"{self.folder} holds no JPG/PNG images and no shards; pass a folder of "
                "target-domain images (any size) or of recorded shards"
            )
        self._readers: dict[Path, ShardReader] = {}
        self._pid = os.getpid()

    def __len__(self) -> int:
        return len(self.images) or len(self.frames)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_readers"] = {}
        return state

    def _reader(self, path: Path) -> ShardReader:
        if os.getpid() != self._pid:
            self._readers, self._pid = {}, os.getpid()
        if path not in self._readers:
            self._readers[path] = ShardReader(path)
        return self._readers[path]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if self.images:
            path = self.images[i]
            bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if bgr is None:
                raise ConfigError(f"{path} is not a readable image; delete or convert it")
            return {"rgb": _resize(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), self.size)}
        shard, cid, k = self.frames[i]
        raw = self._reader(shard).read_arrays(cid, k, k + 1, only=("rgb",))
        return {"rgb": _resize(raw["rgb"][0], self.size)}
