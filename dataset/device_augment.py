"""The training augmentation as batched torch operations on the training device.

With ``data.augment_on = "device"`` a loader worker only decodes a window and draws its
augmentation (:func:`compact_item`): it hands over compact arrays (uint8 RGB, uint8 tags, depth as
the shard stores it: 24-bit codes, or float32 metres from a format-1 shard) with the draw's
parameters, and the engine finishes the batch on the device the model trains on (:func:`finish`):
depth decoding (the float32 product of ``clipcore.schema.decode_depth``), resampling (bilinear
RGB, nearest tags, the depth rule of ``dataset/resample.py``), the flip, the colour jitter, drift,
clutter and noise of :mod:`dataset.augment`, the label map and the normalisation.

The draws are the CPU path's, from the same (seed, epoch, window index) generator, and the noise
is the same slice of the same bank, so a window comes out as :func:`dataset.windows.make_item`
makes it: tags, labels, depth, validity, intrinsics and poses bit for bit; RGB up to float
rounding (OpenCV's bilinear weights are fixed-point, ``torch.nn.functional.grid_sample``'s are
not). No device random generator is used, so a resumed run sees the same batches.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from clipcore.geometry import FAR_PLANE_M
from clipcore.normalize import normalize
from clipcore.schema import DEPTH_SCALE_M
from clipcore.tags import STATIC_TAGS
from dataset import augment as aug
from dataset.resample import MAX_CELL_RATIO, PLANAR_TOL

#: The key that marks a compact (not yet finished) item or batch.
COMPACT = "rgb_u8"
#: What :func:`finish` turns into the CPU path's keys (besides the ``aug_`` parameters).
_COMPACT_KEYS = frozenset(
    (COMPACT, "tags", "depth_bits", "depth_is_code", "semantic_valid", "depth_valid", "label_lut")
)
#: Clutter boxes a draw holds at most (``augment.draw``: 1 to 4).
MAX_CLUTTER = 4
_STATIC = np.zeros(256, bool)
_STATIC[list(STATIC_TAGS)] = True
_BANKS: dict[str, torch.Tensor] = {}


def compact_item(
    raw: dict[str, Any], lut: np.ndarray, draw: aug.Draw | None, size: tuple[int, int] | None
) -> dict[str, Any]:
    """What a worker hands over for one window: decoded arrays, the draw, the exact geometry.

    ``raw`` as ``dataset.windows.make_item`` takes it (modalities completed); ``lut`` the
    label map's (256,) table.
    """
    d = draw or aug.IDENTITY
    t, in_h, in_w = raw["semantic"].shape
    crop, (height, width) = aug.output_crop(d, (in_h, in_w), size)
    K, c2w = aug.camera(d, raw["intrinsics"], raw["cam_to_world"], (in_h, in_w), size)
    has_pose = raw["cam_to_world_valid"]
    n = t * height * width * 3
    start = aug.noise_start(d.noise_seed, n) if draw is not None and d.noise_sigma > 0 else 0
    clutter = np.zeros((MAX_CLUTTER, 5))
    if d.clutter:
        clutter[: len(d.clutter)] = d.clutter
    return {
        COMPACT: torch.as_tensor(raw["rgb"]),
        "tags": torch.as_tensor(raw["semantic"]),
        **_depth_bits(raw["depth"]),
        "semantic_valid": torch.from_numpy(raw["semantic_valid"]),
        "depth_valid": torch.from_numpy(raw["depth_valid"]),
        "label_lut": torch.from_numpy(lut),
        "intrinsics": torch.from_numpy(np.repeat(K[None], t, axis=0)),
        "cam_to_world": torch.from_numpy(c2w),
        "rel_pose": torch.from_numpy(aug.relative_poses(c2w)),
        "valid_pose": torch.from_numpy(has_pose & np.r_[has_pose[:1], has_pose[:-1]]),
        "frames": torch.from_numpy(np.asarray(raw["frames"]).astype(np.int64)),
        "aug_size": torch.tensor([height, width]),
        "aug_crop": torch.tensor(crop or (0.0, 0.0, float(in_w), float(in_h)), dtype=torch.float64),
        "aug_resample": crop is not None,
        "aug_flip": d.flip,
        "aug_photometric": draw is not None,
        "aug_colour": torch.from_numpy(aug.colour_matrix(d)),
        "aug_contrast": d.contrast,
        "aug_drift": torch.from_numpy(np.linspace(d.drift[0], d.drift[1], t, dtype=np.float32)),
        "aug_clutter": torch.from_numpy(clutter),
        "aug_noise_sigma": d.noise_sigma if draw is not None else 0.0,
        "aug_noise_start": -1 if start is None else start,
        "aug_noise_seed": d.noise_seed,
    }


def _depth_bits(depth: np.ndarray | torch.Tensor) -> dict[str, Any]:
    """A window's depth (T, H, W) as 4-byte words: uint32 codes, or float32 metres, and which.

    A tensor (the batch's shared buffer) is viewed, not copied.
    """
    if isinstance(depth, torch.Tensor) and depth.dtype in (torch.uint32, torch.float32):
        return {"depth_bits": depth.view(torch.int32), "depth_is_code": depth.dtype == torch.uint32}
    depth = np.asarray(depth)
    is_code = depth.dtype == np.uint32
    words = depth if is_code else np.asarray(depth, np.float32)
    return {"depth_bits": torch.from_numpy(words.view(np.int32)), "depth_is_code": bool(is_code)}


def _decode_depth(bits: torch.Tensor, is_code: torch.Tensor) -> torch.Tensor:
    """Batched depth words (B, T, H, W) -> float32 metres: per window (B,) codes or metres.

    A code (< 2^24) converts to float32 exactly and one float32 product scales it, as
    ``clipcore.schema.decode_depth`` does, so the metres are the CPU path's bit for bit.
    """
    scale = torch.tensor(DEPTH_SCALE_M, dtype=torch.float32, device=bits.device)
    decoded = bits.to(torch.float32) * scale
    return torch.where(is_code.view(-1, 1, 1, 1), decoded, bits.view(torch.float32))


def is_compact(batch: dict[str, Any]) -> bool:
    """Whether ``batch`` holds compact items that :func:`finish` has still to finish."""
    return COMPACT in batch


def finish(batch: dict[str, Any]) -> dict[str, Any]:
    """A collated batch of :func:`compact_item`'s, on any device, as the CPU path's batch.

    Keys and dtypes of :mod:`dataset.windows`' items, batched (B, T, ...), on the batch's device.
    """
    rgb = batch[COMPACT].permute(0, 1, 4, 2, 3).float().div_(255.0)  # (B, T, 3, H, W)
    tags, depth = batch["tags"], _decode_depth(batch["depth_bits"], batch["depth_is_code"])
    size = tuple(int(v) for v in batch["aug_size"][0])
    resample = batch["aug_resample"]
    if bool(resample.any()):
        rgb, tags, depth = _resample(rgb, tags, depth, batch["aug_crop"], resample, size)
    flip = batch["aug_flip"]
    if bool(flip.any()):
        rgb, tags, depth = (_where(flip, x.flip(-1), x) for x in (rgb, tags, depth))
    photometric = batch["aug_photometric"]
    if bool(photometric.any()):
        rgb = _where(photometric, _photometric(rgb, batch), rgb)
    return {
        **{k: v for k, v in batch.items() if not _compact_key(k)},
        "rgb": normalize(rgb),
        **_targets(tags, depth, batch),
    }


def _compact_key(key: str) -> bool:
    return key in _COMPACT_KEYS or key.startswith("aug_")


def _where(mask: torch.Tensor, yes: torch.Tensor, no: torch.Tensor) -> torch.Tensor:
    """Per window (B,) of a batch: ``yes`` where ``mask``, else ``no``."""
    return torch.where(mask.view(-1, *([1] * (yes.dim() - 1))), yes, no)


def _targets(tags: torch.Tensor, depth: torch.Tensor, batch: dict[str, Any]) -> dict[str, Any]:
    """Labels, static pixels, depth and its validity of the finished tags and depth."""
    index = tags.long()
    labels = batch["label_lut"][0].long()[index]
    labels = torch.where(batch["semantic_valid"][..., None, None], labels, 255)
    depth = depth.unsqueeze(2)
    valid = (depth < FAR_PLANE_M) & (depth > 0) & batch["depth_valid"][..., None, None, None]
    static = torch.from_numpy(_STATIC).to(tags.device)[index]
    return {"labels": labels, "depth": depth, "valid_depth": valid, "static": static}


def _centres(crop: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Source coordinates (B, H') and (B, W') of the output pixel centres, in pixels (float64)."""
    x0, y0, w, h = crop.unbind(-1)
    opts = {"dtype": torch.float64, "device": crop.device}
    ys = y0[:, None] + (torch.arange(size[0], **opts) + 0.5) * h[:, None] / size[0]
    xs = x0[:, None] + (torch.arange(size[1], **opts) + 0.5) * w[:, None] / size[1]
    return ys, xs


def _resample(
    rgb: torch.Tensor,
    tags: torch.Tensor,
    depth: torch.Tensor,
    crop: torch.Tensor,
    resample: torch.Tensor,
    size: tuple[int, int],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The windows marked ``resample`` resampled over their crop to ``size`` (all when resized)."""
    if tuple(tags.shape[-2:]) != size:  # a resize: every window is resampled
        return _bilinear(rgb, crop, size), _nearest(tags, crop, size), _depth(depth, crop, size)
    sel = resample.nonzero().flatten()
    rgb, tags, depth = rgb.clone(), tags.clone(), depth.clone()
    rgb[sel] = _bilinear(rgb[sel], crop[sel], size)
    tags[sel] = _nearest(tags[sel], crop[sel], size)
    depth[sel] = _depth(depth[sel], crop[sel], size)
    return rgb, tags, depth


def _bilinear(rgb: torch.Tensor, crop: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, T, 3, H, W) resampled bilinearly (edges reflected, as OpenCV's BORDER_REFLECT)."""
    b, t, c, height, width = rgb.shape
    ys, xs = _centres(crop, size)
    gy = ((ys - 0.5) * 2 + 1) / height - 1  # pixel index -> grid_sample's [-1, 1]
    gx = ((xs - 0.5) * 2 + 1) / width - 1
    grid = torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), -1).float()
    grid = grid[:, None].expand(b, t, *size, 2).reshape(b * t, *size, 2)
    out = F.grid_sample(
        rgb.reshape(b * t, c, height, width),
        grid,
        mode="bilinear",
        padding_mode="reflection",
        align_corners=False,
    )
    return out.view(b, t, c, *size)


def _nearest_flat(
    crop: torch.Tensor, size: tuple[int, int], shape: tuple[int, ...]
) -> torch.Tensor:
    """Flat source index (B, H' * W') of each output pixel (``resample.nearest_index``)."""
    ys, xs = _centres(crop, size)
    rows = ys.floor().long().clamp(0, shape[0] - 1)
    cols = xs.floor().long().clamp(0, shape[1] - 1)
    return (rows[:, :, None] * shape[1] + cols[:, None, :]).flatten(1)


def _gather(images: torch.Tensor, flat: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, T, H, W) at the flat indices (B, N) -> (B, T, H', W')."""
    b, t = images.shape[:2]
    out = images.reshape(b, t, -1).gather(2, flat[:, None].expand(b, t, -1))
    return out.view(b, t, *size)


def _nearest(tags: torch.Tensor, crop: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, T, H, W) resampled by the nearest pixel centre."""
    return _gather(tags, _nearest_flat(crop, size, tags.shape[-2:]), size)


def _depth(depth: torch.Tensor, crop: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, T, H, W) metres resampled by ``dataset.resample.resample_depth``'s rule, in float64."""
    height, width = depth.shape[-2:]
    ys, xs = _centres(crop, size)
    x, y = xs - 0.5, ys - 0.5
    i = x.floor().long().clamp(0, width - 2)
    j = y.floor().long().clamp(0, height - 2)
    fx = (x - i).clamp(0, 1)[:, None, None, :]
    fy = (y - j).clamp(0, 1)[:, None, :, None]
    d = depth.double()
    cell = (j[:, :, None] * width + i[:, None, :]).flatten(1)
    corners = torch.stack([_gather(d, cell + off, size) for off in (0, 1, width, width + 1)])
    lo, hi = corners.min(0).values, corners.max(0).values
    inv = 1.0 / corners.clamp_min(1e-6)
    planar = (inv[0] + inv[3] - inv[1] - inv[2]).abs() <= PLANAR_TOL * inv.max(0).values
    smooth_ok = planar & (hi < FAR_PLANE_M) & (hi <= MAX_CELL_RATIO * lo)
    weights = ((1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy)
    smooth = 1.0 / sum(wk * ik for wk, ik in zip(weights, inv, strict=True))
    smooth = torch.minimum(torch.maximum(smooth, lo), hi)
    nearest = _gather(d, _nearest_flat(crop, size, (height, width)), size)
    return torch.where(smooth_ok, smooth, nearest).float()


def _photometric(rgb: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
    """:func:`dataset.augment.photometric` of every window (B, T, 3, H, W) in [0, 1]."""
    frame = torch.einsum("bck,btkhw->btchw", batch["aug_colour"].float(), rgb)
    mean = frame.mean(dim=(2, 3, 4), dtype=torch.float64)
    contrast = batch["aug_contrast"].double()[:, None]
    gamma = (1 - contrast) * mean + batch["aug_drift"].double()
    out = frame * contrast.float()[..., None, None, None] + gamma.float()[..., None, None, None]
    out = _clutter(out, batch["aug_clutter"])
    sigma = batch["aug_noise_sigma"].float()
    if bool((sigma > 0).any()):
        out = out + sigma[:, None, None, None, None] * _noise(out.shape, batch)
    return out.clamp(0, 1)


def _clutter(frames: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Flat grey boxes (B, N, 5: x, y, w, h, grey) painted into every frame, in order."""
    ys = torch.arange(frames.shape[-2], device=frames.device)
    xs = torch.arange(frames.shape[-1], device=frames.device)
    for n in range(boxes.shape[1]):
        x, y, w, h, grey = (boxes[:, n, k, None, None] for k in range(5))
        inside = (ys[:, None] >= y) & (ys[:, None] < y + h) & (xs >= x) & (xs < x + w)
        frames = torch.where(inside[:, None, None], grey.float()[:, None, None], frames)
    return frames


def _noise(shape: torch.Size, batch: dict[str, Any]) -> torch.Tensor:
    """Each window's :func:`dataset.augment.gaussian_noise`, laid out (B, T, 3, H, W)."""
    b, t, c, height, width = shape
    n = t * height * width * c
    device = batch[COMPACT].device
    bank = noise_bank(device)
    parts = []
    for start, seed in zip(
        batch["aug_noise_start"].tolist(), batch["aug_noise_seed"].tolist(), strict=True
    ):
        if start >= 0:
            parts.append(bank[start : start + n])
        else:  # larger than the bank: drawn directly, as the CPU path does
            parts.append(
                torch.from_numpy(aug.gaussian_noise(seed, (n // c, c))).to(device).flatten()
            )
    return torch.stack(parts).view(b, t, height, width, c).permute(0, 1, 4, 2, 3)


def noise_bank(device: torch.device) -> torch.Tensor:
    """:func:`dataset.augment.noise_bank` on ``device`` (copied once per device)."""
    key = str(device)
    if key not in _BANKS:
        _BANKS[key] = torch.from_numpy(aug.noise_bank().copy()).to(device)
    return _BANKS[key]
