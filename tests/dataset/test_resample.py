"""Depth resampling: the sky is never valid at any size, no depth between two surfaces, planes
exact."""

from __future__ import annotations

import numpy as np
import pytest

from carla_capture.backends.synthetic import SyntheticBackend
from carla_capture.config import CaptureConfig, load_town
from clipcore.geometry import FAR_PLANE_M
from dataset.labels import load_label_map
from dataset.resample import nearest_index, resample_depth, valid_depth
from dataset.windows import make_item


def _full(shape: tuple[int, int]) -> tuple[float, float, float, float]:
    return (0.0, 0.0, float(shape[1]), float(shape[0]))


@pytest.mark.parametrize("size", [(24, 48), (37, 61), (64, 128), (100, 200), (128, 256)])
def test_sky_never_valid_and_validity_is_nearest(small_towns, size):
    cfg = CaptureConfig(backend="synthetic", town="Town03", frames=2, town_dir=small_towns)
    clip = SyntheticBackend(cfg, load_town("Town03", small_towns)).record_clip(0)
    depth = clip.stack("depth")
    assert (depth >= FAR_PLANE_M).any(), "the scene must show sky"
    out = resample_depth(depth, _full(depth.shape[1:]), size)
    nearest = depth.reshape(len(depth), -1)[
        :, nearest_index(_full(depth.shape[1:]), size, depth.shape[1:])
    ]
    np.testing.assert_array_equal(valid_depth(out), valid_depth(nearest))
    assert np.all(out[~valid_depth(nearest)] == FAR_PLANE_M)
    # the window item at that size: no pixel labelled sky has valid depth
    raw = {
        "rgb": clip.stack("rgb"),
        "semantic": clip.stack("semantic"),
        "depth": depth,
        "cam_to_world": clip.stack("cam_to_world"),
        "intrinsics": clip.intrinsics,
        "frames": clip.stack("frame"),
    }
    item = make_item(raw, load_label_map("carla22"), None, size)
    sky = item["labels"] == load_label_map("carla22").class_names.index("Sky")
    assert sky.any() and not item["valid_depth"][:, 0][sky].any()


def test_row_aligned_edge_takes_one_side():
    # two fronto-parallel surfaces meeting on a row boundary: inverse depth is "coplanar" in a
    # 2x2 cell across the edge, but the result must be one surface's depth, never in between
    depth = np.full((1, 8, 8), 10.0)
    depth[:, 4:] = 40.0
    out = resample_depth(depth, _full((8, 8)), (5, 5))
    assert set(np.unique(out).tolist()) <= {10.0, 40.0}
    sky = depth.copy()
    sky[:, 4:] = FAR_PLANE_M
    out = resample_depth(sky, _full((8, 8)), (5, 5))
    assert set(np.unique(out).tolist()) <= {10.0, FAR_PLANE_M}


def test_tilted_plane_is_interpolated_exactly():
    # a ground plane seen from a camera: inverse depth is affine in pixel coordinates
    h, w = 16, 32
    v, u = np.mgrid[0:h, 0:w] + 0.5
    inv = 0.02 + 0.004 * v + 0.0005 * u
    out = resample_depth((1.0 / inv)[None], _full((h, w)), (11, 23))
    vv, uu = np.mgrid[0:11, 0:23] + 0.5
    expected = 1.0 / (0.02 + 0.004 * vv * h / 11 + 0.0005 * uu * w / 23)
    inside = (slice(1, -1), slice(1, -1))  # away from the clamped border
    np.testing.assert_allclose(out[0][inside], expected[inside], rtol=1e-5)
