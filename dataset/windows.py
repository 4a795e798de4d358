"""``ClipWindows``: a PyTorch Dataset of fixed-length windows over a split of the manifest.

Item (a dict; W = window length, H x W the image size):

==================  ==============  =========  ==============================================
key                 shape           dtype      meaning
==================  ==============  =========  ==============================================
``rgb``             (W, 3, H, W)    float32    RGB normalised with ImageNet mean / std
``labels``          (W, H, W)       int64      classes of the label map, 255 = ignore
``depth``           (W, 1, H, W)    float32    planar depth, metres (0 where the clip has none)
``valid_depth``     (W, 1, H, W)    bool       depth below the 1000 m far plane (not sky)
``intrinsics``      (W, 3, 3)       float64    pinhole matrix after augmentation (NaN if none)
``cam_to_world``    (W, 4, 4)       float64    OpenCV camera -> right-handed world
``rel_pose``        (W, 4, 4)       float64    motion t-1 -> t in frame t-1's camera; identity at 0
``valid_pose``      (W,)            bool       frames t and t-1 have poses (t = 0: if t has one)
``static``          (W, H, W)       bool       pixels of classes that never move (raw CARLA tags)
``frames``          (W,)            int64      simulator frame numbers
``index``           ()              int        the window's index in the dataset (its seed)
``clip_id``, ``town``  str
==================  ==============  =========  ==============================================

A modality a clip lacks (imported data) reads as "no label" (255), invalid depth or invalid pose.
Shards are read through the one :class:`~clipcore.shards.ShardReader`, which checks each
clip's structure when first opened and every window's content (NaN / inf, depth range, rigid
poses, frame order): bad data raises an error naming the shard, clip and frame instead of
reaching training. Files are opened lazily in each process (worker) that reads, so the dataset
works with ``num_workers > 0`` under fork, spawn and forkserver and with ``DistributedSampler``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from clipcore.errors import ConfigError
from clipcore.geometry import FAR_PLANE_M
from clipcore.manifest import load_manifest
from clipcore.normalize import normalize
from clipcore.schema import IMAGES
from clipcore.shards import ShardReader
from clipcore.tags import STATIC_TAGS
from dataset import augment as aug
from dataset.augment import relative_poses
from dataset.config import AugmentConfig, DataConfig
from dataset.device_augment import compact_item
from dataset.handover import ALIGN, SharedRing, buffer_view
from dataset.labels import LabelMap, load_label_map

#: What a window needs from a shard (not carla_transform).
_READ = ("rgb", "semantic", "depth", "cam_to_world")
_STATIC = np.zeros(256, bool)
_STATIC[list(STATIC_TAGS)] = True


def make_item(
    raw: dict[str, np.ndarray],
    label_map: LabelMap,
    draw: aug.Draw | None = None,
    size: tuple[int, int] | None = None,
) -> dict[str, torch.Tensor]:
    """Tensors of one window from raw arrays, augmented by ``draw`` and resized to ``size``.

    Raw arrays: ``rgb`` (T,H,W,3) uint8, ``semantic``, ``depth``, ``cam_to_world``, ``intrinsics``,
    ``frames``, optional ``<name>_valid`` (T,) masks.
    """
    raw = complete_modalities(raw)
    rgb = raw["rgb"].astype(np.float32) / 255.0
    tags, depth, K, c2w = raw["semantic"], raw["depth"], raw["intrinsics"], raw["cam_to_world"]
    rgb, tags, depth, K, c2w = aug.geometric(draw or aug.IDENTITY, rgb, tags, depth, K, c2w, size)
    if draw is not None and draw is not aug.IDENTITY:
        rgb = aug.photometric(rgb, draw)
    window = len(tags)
    depth_t = torch.from_numpy(np.ascontiguousarray(depth, dtype=np.float32)).unsqueeze(1)
    labels = label_map(tags).astype(np.int64)
    labels[~raw["semantic_valid"]] = 255
    has_pose = raw["cam_to_world_valid"]
    valid_depth = (
        (depth_t < FAR_PLANE_M)
        & (depth_t > 0)
        & torch.from_numpy(raw["depth_valid"])[:, None, None, None]
    )
    return {
        "rgb": normalize(torch.from_numpy(np.ascontiguousarray(rgb)).permute(0, 3, 1, 2)),
        "labels": torch.from_numpy(labels),
        "depth": depth_t,
        "valid_depth": valid_depth,
        "static": torch.from_numpy(_STATIC[tags]),
        "intrinsics": torch.from_numpy(np.repeat(K[None], window, axis=0)),
        "cam_to_world": torch.from_numpy(np.ascontiguousarray(c2w)),
        "rel_pose": torch.from_numpy(relative_poses(c2w)),
        "valid_pose": torch.from_numpy(has_pose & np.r_[has_pose[:1], has_pose[:-1]]),
        "frames": torch.from_numpy(np.asarray(raw["frames"]).astype(np.int64)),
    }


def complete_modalities(raw: dict[str, Any]) -> dict[str, Any]:
    """``raw`` with every modality present.

    A missing one as zeros (identity poses, NaN intrinsics) with an all-False ``<name>_valid`` mask;
    invalid frames' poses set to identity.
    """
    out = dict(raw)
    t, height, width = raw["rgb"].shape[:3]
    fills = {  # made only for a missing modality
        "semantic": lambda: np.zeros((t, height, width), np.uint8),
        "depth": lambda: np.zeros((t, height, width), np.float32),
        "cam_to_world": lambda: np.repeat(np.eye(4)[None], t, axis=0),
    }
    for name, fill in fills.items():
        if name not in out:
            out[name], out[f"{name}_valid"] = fill(), np.zeros(t, bool)
        out.setdefault(f"{name}_valid", np.ones(t, bool))
    if not out["cam_to_world_valid"].all():
        out["cam_to_world"] = np.where(
            out["cam_to_world_valid"][:, None, None], out["cam_to_world"], np.eye(4)
        )
    if out.get("intrinsics") is None:
        out["intrinsics"] = np.full((3, 3), np.nan)
    return out


def _torch_dtype(dtype: np.dtype) -> torch.dtype:
    """The torch dtype of a NumPy dtype."""
    return torch.from_numpy(np.empty(0, dtype)).dtype


class ClipWindows(Dataset):
    """Windows of ``window`` frames from each clip of ``split`` in ``data_dir``'s split manifest."""

    def __init__(
        self,
        data_dir: str | Path,
        split: str,
        window: int,
        label_map: str = "carla22",
        augment: AugmentConfig | None = None,
        stride: int = 1,
        sampling: str = "all",
        seed: int = 0,
        size: tuple[int, int] | None = None,
        augment_on: str = "loader",
    ) -> None:
        if augment_on not in ("loader", "device"):
            raise ConfigError(f"augment_on must be 'loader' or 'device', got {augment_on!r}")
        self.data_dir = Path(data_dir)
        self.augment_on = augment_on
        manifest = load_manifest(self.data_dir)
        if split not in manifest["splits"]:
            raise ConfigError(
                f"split {split!r} is not in {self.data_dir}/split.json; it has "
                f"{', '.join(manifest['splits'])}"
            )
        self.label_map = load_label_map(label_map)
        self.augment = augment
        self.window, self.stride, self.sampling, self.seed, self.epoch = (
            window,
            stride,
            sampling,
            seed,
            0,
        )
        self.size = tuple(size) if size else None
        self.clips = [
            (shard["path"], clip["id"], shard["town"], clip["frames"])
            for shard in manifest["splits"][split]["shards"]
            for clip in shard["clips"]
        ]
        short = [cid for _, cid, _, n in self.clips if n < window]
        if short:
            raise ConfigError(
                f"clips {short[:3]} have fewer than window={window} frames; use a smaller window"
            )
        if sampling == "all":
            self.index = [
                (c, s)
                for c, (_, _, _, n) in enumerate(self.clips)
                for s in range(0, n - window + 1, stride)
            ]
        else:
            self.index = [(c, -1) for c in range(len(self.clips))]
        self._readers: dict[str, ShardReader] = {}
        self._pid = os.getpid()
        self._share_slots: int | None = None
        self._ring: SharedRing | None = None

    @classmethod
    def from_config(
        cls,
        cfg: DataConfig,
        split: str,
        window: int,
        *,
        training: bool = False,
        stride: int | None = None,
        sampling: str = "all",
        seed: int = 0,
        size: tuple[int, int] | None = None,
    ) -> ClipWindows:
        """``split``'s windows as ``cfg`` reads them.

        Its dataset folder and label map, frames at ``size`` (default ``cfg.size``), augmented with
        ``cfg.augment`` only when ``training``; ``stride`` defaults to the window (windows do not
        overlap). Training windows are augmented where ``cfg.augment_on`` says: with ``"device"``
        an item is compact (:mod:`dataset.device_augment`) and the engine finishes the batch.
        """
        return cls(
            cfg.root,
            split,
            window,
            cfg.label_map,
            cfg.augment if training else None,
            stride or window,
            sampling,
            seed,
            size or cfg.size,
            cfg.augment_on if training else "loader",
        )

    def __len__(self) -> int:
        return len(self.index)

    def set_epoch(self, epoch: int) -> None:
        """Re-draw random windows and augmentations for ``epoch``.

        Call it before creating the loader's iterator.
        """
        self.epoch = epoch

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_readers"] = {}  # HDF5 handles never cross process boundaries
        state["_ring"] = None  # nor a worker's buffers
        return state

    def share_batches(self, slots: int) -> None:
        """Read each batch's images straight into a ring of ``slots`` shared buffers.

        In loader workers, with ``augment_on="device"``: :class:`~dataset.handover.SharedBatches`
        (with as many slots) then hands the images over without copying them. Only where its
        reuse rule holds: each batch is copied (pinned) as it arrives, as on CUDA.
        """
        self._share_slots, self._ring = slots, None

    def _reader(self, rel: str) -> ShardReader:
        if os.getpid() != self._pid:  # forked worker: do not share the parent's handles
            self._readers, self._pid = {}, os.getpid()
        if rel not in self._readers:
            self._readers[rel] = ShardReader(self.data_dir / rel)
        return self._readers[rel]

    def _read(
        self, rel: str, clip_id: str, start: int, into: dict[str, torch.Tensor] | None = None
    ) -> dict[str, Any]:
        """Frames ``start:start + window`` of a clip; images read into ``into``'s tensors."""
        codes = self.augment_on == "device"  # the device decodes depth (device_augment.finish)
        out = {name: t.numpy() for name, t in (into or {}).items()}
        raw = self._reader(rel).read_arrays(
            clip_id, start, start + self.window, only=_READ, depth_codes=codes, out=out
        )
        raw.update(into or {})  # the same memory, as the shared buffer's own tensors
        raw["frames"] = raw.pop("frame")
        return raw

    def _batch_buffers(self, indices: list[int]) -> list[dict[str, torch.Tensor]] | None:
        """Per window of a batch, its images' places in the next shared buffer of the ring.

        Each image modality is one block of the batch's windows in turn, so a collated leaf is
        a view of the buffer. None unless sharing here (:meth:`share_batches`) and every window
        stores RGB, tags and depth of one size.
        """
        if self._share_slots is None or self.augment_on != "device" or get_worker_info() is None:
            return None
        layouts = [
            self._reader(rel).frame_layout(clip_id)
            for rel, clip_id, _, _ in (self.clips[self.index[i][0]] for i in indices)
        ]
        if set(layouts[0]) != set(IMAGES) or any(lay != layouts[0] for lay in layouts):
            return None
        if self._ring is None:
            self._ring = SharedRing(self._share_slots)
        blocks, total = {}, 0
        for name, (shape, dtype) in layouts[0].items():
            window_bytes = self.window * math.prod(shape) * dtype.itemsize
            blocks[name] = (total, window_bytes, _torch_dtype(dtype), (self.window, *shape))
            total += -(-len(indices) * window_bytes // ALIGN) * ALIGN
        _, buffer = self._ring.next(total)
        return [
            {
                name: buffer_view(buffer, offset + k * size, dtype, shape)
                for name, (offset, size, dtype, shape) in blocks.items()
            }
            for k in range(len(indices))
        ]

    def __getitems__(self, indices: list[int]) -> list[dict[str, Any]]:
        """A batch's items (PyTorch's loaders fetch a batch this way)."""
        into = self._batch_buffers(indices) or [None] * len(indices)
        return [self._item(i, buffers) for i, buffers in zip(indices, into, strict=True)]

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self._item(i)

    def _item(self, i: int, into: dict[str, torch.Tensor] | None = None) -> dict[str, Any]:
        """Window ``i``, its images read into ``into`` if given."""
        clip, start = self.index[i]
        rel, clip_id, town, n = self.clips[clip]
        rng = np.random.default_rng([self.seed, self.epoch, i])
        if start < 0:
            start = int(rng.integers(0, n - self.window + 1))
        raw = self._read(rel, clip_id, start, into)
        draw = None
        if self.augment is not None:
            height, width = raw["semantic"].shape[1:]
            draw = aug.draw(self.augment, rng, height, width)
        if self.augment_on == "device":
            item = compact_item(complete_modalities(raw), self.label_map.lut, draw, self.size)
        else:
            item = make_item(raw, self.label_map, draw, self.size)
        return {**item, "index": i, "clip_id": clip_id, "town": town}
