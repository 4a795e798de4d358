"""``ClipWindows``: a PyTorch Dataset of fixed-length windows over a split of the manifest.

Item (a dict; W = window length, H x W the image size):

==================  ==============  =========  ==============================================
key                 shape           dtype      meaning
==================  ==============  =========  ==============================================
``rgb``             (W, 3, H, W)    float32    RGB normalised with ImageNet mean / std
``labels``          (W, H, W)       int64      classes of the label map, 255 = ignore
``depth``           (W, 1, H, W)    float32    planar depth, metres
``valid_depth``     (W, 1, H, W)    bool       depth below the 1000 m far plane (not sky)
``intrinsics``      (W, 3, 3)       float64    pinhole matrix after augmentation
``cam_to_world``    (W, 4, 4)       float64    OpenCV camera -> right-handed world
``rel_pose``        (W, 4, 4)       float64    motion t-1 -> t in frame t-1's camera; identity at 0
``static``          (W, H, W)       bool       pixels of classes that never move (raw CARLA tags)
``frames``          (W,)            int64      simulator frame numbers
``clip_id``, ``town``  str
==================  ==============  =========  ==============================================

HDF5 files are opened lazily in each process (worker) that reads, so the dataset works
with ``num_workers > 0`` under fork, spawn and forkserver and with ``DistributedSampler``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import h5py
import hdf5plugin  # noqa: F401 - registers the Blosc filter for reading
import numpy as np
import torch
from torch.utils.data import Dataset

from carla_capture.errors import CaptureError, ConfigError
from carla_capture.geometry import FAR_PLANE_M, invert_pose
from carla_capture.split import load_manifest
from carla_capture.tags import STATIC_TAGS
from dataset import augment as aug
from dataset.config import AUGMENT_PRESETS, AugmentConfig, DatasetConfig
from dataset.labels import LabelMap, load_label_map
from models.common import normalize

_STATIC = np.zeros(256, bool)
_STATIC[list(STATIC_TAGS)] = True


def relative_poses(cam_to_world: np.ndarray) -> np.ndarray:
    """(T, 4, 4) camera-to-world -> (T, 4, 4) motion from t-1 to t in t-1's camera (identity at 0)."""
    rel = np.repeat(np.eye(4)[None], len(cam_to_world), axis=0)
    rel[1:] = invert_pose(cam_to_world[:-1]) @ cam_to_world[1:]
    return rel


def make_item(raw: dict[str, np.ndarray], label_map: LabelMap, draw: aug.Draw | None = None,
              size: tuple[int, int] | None = None) -> dict[str, torch.Tensor]:
    """Tensors of one window from raw arrays (``rgb`` (T,H,W,3) uint8, ``semantic``, ``depth``,
    ``cam_to_world``, ``intrinsics``, ``frames``), augmented by ``draw`` and resized to ``size``."""
    rgb = raw["rgb"].astype(np.float32) / 255.0
    tags, depth, K, c2w = raw["semantic"], raw["depth"], raw["intrinsics"], raw["cam_to_world"]
    rgb, tags, depth, K, c2w = aug.geometric(draw or aug.IDENTITY, rgb, tags, depth, K, c2w, size)
    if draw is not None and draw is not aug.IDENTITY:
        rgb = aug.photometric(rgb, draw)
    window = len(tags)
    depth_t = torch.from_numpy(np.ascontiguousarray(depth, dtype=np.float32)).unsqueeze(1)
    return {
        "rgb": normalize(torch.from_numpy(np.ascontiguousarray(rgb)).permute(0, 3, 1, 2)),
        "labels": torch.from_numpy(label_map(tags).astype(np.int64)),
        "depth": depth_t,
        "valid_depth": depth_t < FAR_PLANE_M,
        "static": torch.from_numpy(_STATIC[tags]),
        "intrinsics": torch.from_numpy(np.repeat(K[None], window, axis=0)),
        "cam_to_world": torch.from_numpy(np.ascontiguousarray(c2w)),
        "rel_pose": torch.from_numpy(relative_poses(c2w)),
        "frames": torch.from_numpy(np.asarray(raw["frames"]).astype(np.int64)),
    }


class ClipWindows(Dataset):
    """Windows of ``window`` frames from each clip of ``split`` in ``data_dir``'s split manifest."""

    def __init__(self, data_dir: str | Path, split: str = "train", window: int = 6, label_map: str = "carla22",
                 augment: AugmentConfig | str | None = None, stride: int = 1, sampling: str = "all", seed: int = 0,
                 size: tuple[int, int] | None = None) -> None:
        self.data_dir = Path(data_dir)
        manifest = load_manifest(self.data_dir)
        if split not in manifest["splits"]:
            raise ConfigError(f"split {split!r} is not in {self.data_dir}/split.json; it has {', '.join(manifest['splits'])}")
        self.label_map = load_label_map(label_map)
        self.augment = AUGMENT_PRESETS[augment] if isinstance(augment, str) else augment
        self.window, self.stride, self.sampling, self.seed, self.epoch = window, stride, sampling, seed, 0
        self.size = tuple(size) if size else None
        self.clips = [(shard["path"], clip["id"], shard["town"], clip["frames"])
                      for shard in manifest["splits"][split]["shards"] for clip in shard["clips"]]
        short = [cid for _, cid, _, n in self.clips if n < window]
        if short:
            raise ConfigError(f"clips {short[:3]} have fewer than window={window} frames; use a smaller window")
        if sampling == "all":
            self.index = [(c, s) for c, (_, _, _, n) in enumerate(self.clips) for s in range(0, n - window + 1, stride)]
        else:
            self.index = [(c, -1) for c in range(len(self.clips))]
        self._files: dict[str, h5py.File] = {}
        self._pid = os.getpid()

    @classmethod
    def from_config(cls, cfg: DatasetConfig) -> "ClipWindows":
        """Build from a :class:`DatasetConfig`."""
        return cls(cfg.data_dir, cfg.split, cfg.window, cfg.label_map, cfg.augment, cfg.stride, cfg.sampling, cfg.seed, cfg.size)

    def __len__(self) -> int:
        return len(self.index)

    def set_epoch(self, epoch: int) -> None:
        """Re-draw random windows and augmentations for ``epoch`` (call before creating the loader's iterator)."""
        self.epoch = epoch

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_files"] = {}  # h5py handles never cross process boundaries
        return state

    def _file(self, rel: str) -> h5py.File:
        if os.getpid() != self._pid:  # forked worker: do not share the parent's handles
            self._files, self._pid = {}, os.getpid()
        if rel not in self._files:
            self._files[rel] = h5py.File(self.data_dir / rel, "r")
        return self._files[rel]

    def _read(self, rel: str, clip_id: str, start: int) -> dict[str, np.ndarray]:
        stop = start + self.window
        try:
            group = self._file(rel)["clips"][clip_id]
            return {
                "rgb": group["rgb"][start:stop], "semantic": group["semantic"][start:stop],
                "depth": group["depth"][start:stop], "cam_to_world": group["cam_to_world"][start:stop],
                "frames": group["frame"][start:stop], "intrinsics": group["intrinsics"][()],
            }
        except (OSError, KeyError, ValueError) as exc:
            raise CaptureError(f"cannot read clip {clip_id} from shard {self.data_dir / rel} ({exc}); "
                               "run capture verify on the dataset, re-record or quarantine the shard") from None

    def __getitem__(self, i: int) -> dict[str, Any]:
        clip, start = self.index[i]
        rel, clip_id, town, n = self.clips[clip]
        rng = np.random.default_rng([self.seed, self.epoch, i])
        if start < 0:
            start = int(rng.integers(0, n - self.window + 1))
        raw = self._read(rel, clip_id, start)
        draw = None
        if self.augment is not None:
            height, width = raw["semantic"].shape[1:]
            draw = aug.draw(self.augment, rng, height, width)
        return {**make_item(raw, self.label_map, draw, self.size), "clip_id": clip_id, "town": town}
