"""Resampling of planar depth (metres) to another size or crop, keeping validity exact.

Depth is resampled per 2x2 cell of source pixels around each output pixel centre:

- inside a face (the cell's inverse depths are coplanar, none of its four pixels lies on
  the far plane, and its largest depth is at most ``MAX_CELL_RATIO`` times its smallest),
  by bilinear interpolation of *inverse* depth, which is exact on a plane;
- everywhere else (depth edges, the sky, cells that touch the sky), by the nearest source
  pixel, so no depth is invented between two surfaces.

The nearest source pixel is always one of the cell's four, so an output pixel is on the far
plane (exactly ``FAR_PLANE_M``, i.e. invalid) if and only if its nearest source pixel is:
validity is the nearest-resampled validity of the raw depth, at any size. The sky never
becomes 999.99994 m.
"""

from __future__ import annotations

import numpy as np

from clipcore.geometry import FAR_PLANE_M

#: Largest depth ratio inside a 2x2 cell that is still interpolated (a larger one is an edge).
MAX_CELL_RATIO = 1.25
#: Relative tolerance of the coplanarity test on inverse depth.
PLANAR_TOL = 1e-5

Crop = tuple[float, float, float, float]


def nearest_index(crop: Crop, size: tuple[int, int], shape: tuple[int, int]) -> np.ndarray:
    """Flat index of the source pixel nearest to each output pixel centre, (H', W').

    ``crop`` = (x0, y0, w, h) in source pixels, ``size`` = (H', W'), ``shape`` = source (H, W);
    pixel centres at ``i + 0.5`` (docs/conventions.md).
    """
    x0, y0, w, h = crop
    rows = np.floor(y0 + (np.arange(size[0]) + 0.5) * h / size[0]).astype(np.int64)
    cols = np.floor(x0 + (np.arange(size[1]) + 0.5) * w / size[1]).astype(np.int64)
    rows, cols = np.clip(rows, 0, shape[0] - 1), np.clip(cols, 0, shape[1] - 1)
    return rows[:, None] * shape[1] + cols[None, :]


def resample_depth(depth: np.ndarray, crop: Crop, size: tuple[int, int]) -> np.ndarray:
    """(T, H, W) planar depth in metres -> (T, H', W') float32 over ``crop`` at ``size``.

    Far-plane pixels stay exactly ``FAR_PLANE_M``; see the module docstring for the rule.
    """
    t, height, width = depth.shape
    if height < 2 or width < 2:
        flat = nearest_index(crop, size, (height, width))
        return depth.reshape(t, -1)[:, flat].astype(np.float32)
    x0, y0, w, h = crop
    x = x0 + (np.arange(size[1]) + 0.5) * w / size[1] - 0.5  # index space: centres at integers
    y = y0 + (np.arange(size[0]) + 0.5) * h / size[0] - 0.5
    i = np.clip(np.floor(x).astype(np.int64), 0, width - 2)
    j = np.clip(np.floor(y).astype(np.int64), 0, height - 2)
    fx = np.clip(x - i, 0, 1)[None, :]
    fy = np.clip(y - j, 0, 1)[:, None]
    d = depth.reshape(t, -1).astype(np.float64)
    cell = j[:, None] * width + i[None, :]
    corners = np.stack([d[:, cell + off] for off in (0, 1, width, width + 1)])  # (4, T, H', W')
    lo, hi = corners.min(0), corners.max(0)
    inv = 1.0 / np.maximum(corners, 1e-6)
    planar = np.abs(inv[0] + inv[3] - inv[1] - inv[2]) <= PLANAR_TOL * inv.max(0)
    smooth_ok = planar & (hi < FAR_PLANE_M) & (hi <= MAX_CELL_RATIO * lo)
    weights = ((1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy)
    smooth = 1.0 / sum(wk * ik for wk, ik in zip(weights, inv, strict=True))
    smooth = np.clip(smooth, lo, hi)
    nearest = d[:, nearest_index(crop, size, (height, width))]
    return np.where(smooth_ok, smooth, nearest).astype(np.float32)


def valid_depth(depth: np.ndarray) -> np.ndarray:
    """Pixels with depth: below the far plane (not sky)."""
    return depth < FAR_PLANE_M
