"""Static layout of an embedded-simulator town, generated from a town file's ``[layout]``.

Everything is in CARLA's UE world frame (x forward/east, y right/south, z up, metres), so
the synthetic backend shares the CARLA backend's pose conversion. The ground is a label
raster (roads, lane markings, sidewalks, terrain, water) on the plane z = 0; everything
that stands up is a box (buildings, walls, fences, poles, lights, signs, trees, props).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from carla_capture.config import Layout
from carla_capture.weather import seeded_rng
from clipcore.tags import TAG_ID

RASTER_RES_M = 0.25
_MARGIN_M = 60.0

BUILDING_PALETTES = {
    "grey": ((150, 150, 150), (110, 110, 115), (175, 170, 160)),
    "brick": ((150, 80, 60), (170, 110, 80), (130, 70, 55)),
    "sand": ((200, 180, 140), (185, 165, 120), (215, 200, 170)),
    "glass": ((90, 120, 150), (120, 150, 170), (160, 165, 170)),
}


@dataclass(frozen=True)
class Boxes:
    """N oriented boxes.

    Centre (N,3) m, half extents (N,3) m, yaw (N,) rad about +z (UE, positive turns from +x towards
    +y), tag (N,) uint8, colour (N,3) float32 in 0..1.
    """

    centre: np.ndarray
    half: np.ndarray
    yaw: np.ndarray
    tag: np.ndarray
    colour: np.ndarray

    def __len__(self) -> int:
        return len(self.tag)

    @staticmethod
    def concat(parts: list[Boxes]) -> Boxes:
        """All boxes of ``parts`` as one set."""
        return Boxes(
            *(np.concatenate([getattr(p, f) for p in parts]) for f in Boxes.__dataclass_fields__)
        )

    @staticmethod
    def from_rows(rows: list[tuple]) -> Boxes:
        """Build from rows ``(cx, cy, cz, hx, hy, hz, yaw, tag, (r, g, b))``, colour 0..255."""
        if not rows:
            return Boxes(
                np.zeros((0, 3)),
                np.zeros((0, 3)),
                np.zeros(0),
                np.zeros(0, np.uint8),
                np.zeros((0, 3), np.float32),
            )
        arr = np.array([r[:7] for r in rows], dtype=np.float64)
        return Boxes(
            centre=arr[:, 0:3],
            half=arr[:, 3:6],
            yaw=arr[:, 6],
            tag=np.array([r[7] for r in rows], dtype=np.uint8),
            colour=np.array([r[8] for r in rows], dtype=np.float32) / 255.0,
        )


@dataclass(frozen=True)
class Town:
    """A generated town: road grid, ground raster and static boxes (UE world, metres)."""

    name: str
    road_x: np.ndarray  # x of the roads running along y
    road_y: np.ndarray  # y of the roads running along x
    road_width: float
    sidewalk_width: float
    origin: tuple[float, float]  # UE (x, y) of raster cell (0, 0)'s corner
    ground: np.ndarray  # (ny, nx) uint8 tags, row = y, column = x
    boxes: Boxes
    ground_colour: tuple[int, int, int]

    @property
    def lane_offset(self) -> float:
        """Distance from a road's centreline to the centre of its right-hand lane, metres."""
        return self.road_width / 4.0


def _road_positions(rng: np.random.Generator, count: int, size: tuple[float, float]) -> np.ndarray:
    steps = rng.uniform(size[0], size[1], count)
    return np.concatenate([[0.0], np.cumsum(steps)])


def _axis_masks(
    coords: np.ndarray, roads: np.ndarray, road_w: float, side_w: float
) -> tuple[np.ndarray, ...]:
    dist = np.min(np.abs(coords[:, None] - roads[None, :]), axis=1)
    return (
        dist < road_w / 2,
        dist < road_w / 2 + side_w,
        dist < 0.08,
        np.abs(dist - (road_w / 2 - 0.3)) < 0.08,
    )


def _ground_raster(
    layout: Layout, road_x: np.ndarray, road_y: np.ndarray, rng: np.random.Generator
) -> tuple:
    x0, y0 = road_x[0] - _MARGIN_M, road_y[0] - _MARGIN_M
    xs = np.arange(x0, road_x[-1] + _MARGIN_M, RASTER_RES_M) + RASTER_RES_M / 2
    ys = np.arange(y0, road_y[-1] + _MARGIN_M, RASTER_RES_M) + RASTER_RES_M / 2
    rw, sw = layout.road_width, layout.sidewalk_width
    road_cx, side_cx, centre_cx, edge_cx = _axis_masks(xs, road_x, rw, sw)
    road_ry, side_ry, centre_ry, edge_ry = _axis_masks(ys, road_y, rw, sw)
    ground = np.full((len(ys), len(xs)), TAG_ID["Terrain"], dtype=np.uint8)
    sidewalk = side_cx[None, :] | side_ry[:, None]
    road = road_cx[None, :] | road_ry[:, None]
    ground[sidewalk] = TAG_ID["Sidewalks"]
    ground[road] = TAG_ID["Roads"]
    dash_y = (np.mod(ys, 6.0) < 3.0) & ~side_ry
    dash_x = (np.mod(xs, 6.0) < 3.0) & ~side_cx
    lines = (centre_cx[None, :] & dash_y[:, None]) | (centre_ry[:, None] & dash_x[None, :])
    lines |= (edge_cx[None, :] & ~side_ry[:, None]) | (edge_ry[:, None] & ~side_cx[None, :])
    ground[lines] = TAG_ID["RoadLines"]
    if layout.water:
        bx, by = rng.integers(0, len(road_x) - 1), rng.integers(0, len(road_y) - 1)
        cx, cy = (road_x[bx] + road_x[bx + 1]) / 2, (road_y[by] + road_y[by + 1]) / 2
        r = 0.3 * min(road_x[bx + 1] - road_x[bx], road_y[by + 1] - road_y[by])
        pond = (xs[None, :] - cx) ** 2 + (ys[:, None] - cy) ** 2 < r * r
        ground[pond] = TAG_ID["Water"]
        dirt = (xs[None, :] - cx) ** 2 + (ys[:, None] - cy) ** 2 < (r + 2.0) ** 2
        ground[dirt & ~pond] = TAG_ID["Ground"]
    return (float(x0), float(y0)), ground


def _jitter(
    rng: np.random.Generator, rgb: tuple[int, int, int], amount: float = 18.0
) -> tuple[int, ...]:
    return tuple(int(np.clip(c + rng.normal(0, amount), 0, 255)) for c in rgb)


def _lot_boxes(
    layout: Layout, x0: float, x1: float, y0: float, y1: float, rng: np.random.Generator
) -> list[tuple]:
    """Buildings, or trees inside a fence or wall, on one lot of a block."""
    rows: list[tuple] = []
    cx, cy, hx, hy = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
    if rng.random() < layout.building_density:
        h = rng.uniform(*layout.building_height)
        sx, sy = hx * rng.uniform(0.75, 0.95), hy * rng.uniform(0.75, 0.95)
        colour = _jitter(rng, BUILDING_PALETTES[layout.building_palette][rng.integers(3)])
        rows.append((cx, cy, h / 2, sx, sy, h / 2, 0.0, TAG_ID["Buildings"], colour))
        return rows
    if rng.random() < 0.3:
        rows.append(
            (
                cx,
                cy,
                0.6,
                hx * 0.3,
                hy * 0.2,
                0.6,
                0.0,
                TAG_ID["Static"],
                _jitter(rng, (110, 100, 90)),
            )
        )
    tag, height, thick = (
        (TAG_ID["Walls"], 2.5, 0.25) if layout.walls else (TAG_ID["Fences"], 1.4, 0.06)
    )
    colour = (150, 140, 130) if layout.walls else (120, 100, 80)
    for dx, dy, lx, ly in (
        (0, -hy, hx, thick),
        (0, hy, hx, thick),
        (-hx, 0, thick, hy),
        (hx, 0, thick, hy),
    ):
        rows.append((cx + dx, cy + dy, height / 2, lx, ly, height / 2, 0.0, tag, colour))
    for _ in range(rng.poisson(layout.vegetation_density * hx * hy / 40.0)):
        tx, ty = cx + rng.uniform(-0.8, 0.8) * hx, cy + rng.uniform(-0.8, 0.8) * hy
        rows.extend(_tree(tx, ty, rng))
    return rows


def _tree(x: float, y: float, rng: np.random.Generator) -> list[tuple]:
    h, r = rng.uniform(4.0, 9.0), rng.uniform(1.2, 2.8)
    green = _jitter(rng, (70, 110, 40), 15)
    veg = TAG_ID["Vegetation"]
    return [
        (x, y, h * 0.3, 0.18, 0.18, h * 0.3, 0.0, veg, (90, 70, 50)),
        (x, y, h * 0.6 + r * 0.5, r, r, r * 0.9, rng.uniform(0, np.pi / 2), veg, green),
        (x, y, h * 0.6 + r * 1.5, r * 0.6, r * 0.6, r * 0.5, rng.uniform(0, np.pi / 2), veg, green),
    ]


def _street_boxes(
    layout: Layout, road_x: np.ndarray, road_y: np.ndarray, rng: np.random.Generator
) -> list[tuple]:
    """Street lights, traffic lights, signs, trees and props along every road side."""
    rows: list[tuple] = []
    edge = layout.road_width / 2 + layout.sidewalk_width * 0.6
    grey = (120, 120, 125)
    pole, light, sign = TAG_ID["Poles"], TAG_ID["TrafficLight"], TAG_ID["TrafficSigns"]
    for along, across, axis in ((road_y, road_x, 0), (road_x, road_y, 1)):
        for c in across:
            for side in (-1.0, 1.0):
                for s in np.arange(
                    along[0] + rng.uniform(0, layout.pole_spacing), along[-1], layout.pole_spacing
                ):
                    if (
                        np.min(np.abs(along - s))
                        < layout.road_width / 2 + layout.sidewalk_width + 1.0
                    ):
                        continue
                    p = (c + side * edge, s) if axis == 0 else (s, c + side * edge)
                    rows.append((p[0], p[1], 3.5, 0.12, 0.12, 3.5, 0.0, pole, grey))
                    q = rng.random()
                    if q < 0.35:
                        t = (p[0] + side * 1.5, s) if axis == 0 else (s, p[1] + side * 1.5)
                        rows.extend(_tree(t[0], t[1], rng))
                    elif q < 0.45:
                        t = (p[0], s + 2.0) if axis == 0 else (s + 2.0, p[1])
                        rows.append((t[0], t[1], 1.2, 0.05, 0.05, 1.2, 0.0, pole, grey))
                        rows.append(
                            (
                                t[0],
                                t[1],
                                2.6,
                                0.05 if axis == 1 else 0.4,
                                0.4 if axis == 1 else 0.05,
                                0.35,
                                0.0,
                                sign,
                                (200, 200, 60),
                            )
                        )
                    elif q < 0.55:
                        t = (p[0], s - 3.0) if axis == 0 else (s - 3.0, p[1])
                        tag, col = (
                            (TAG_ID["Static"], (110, 80, 60))
                            if rng.random() < 0.5
                            else (TAG_ID["Dynamic"], (60, 90, 60))
                        )
                        rows.append((t[0], t[1], 0.5, 0.35, 0.35, 0.5, 0.0, tag, col))
    corner = layout.road_width / 2 + layout.sidewalk_width * 0.5
    for x in road_x:
        for y in road_y:
            for sx, sy in ((1, 1), (-1, -1)):
                px, py = x + sx * corner, y + sy * corner
                rows.append((px, py, 2.0, 0.1, 0.1, 2.0, 0.0, pole, grey))
                rows.append((px, py, 4.4, 0.25, 0.25, 0.5, 0.0, light, (40, 40, 40)))
    return rows


def _guard_rails(road_x: np.ndarray, road_y: np.ndarray, layout: Layout) -> list[tuple]:
    off = layout.road_width / 2 + layout.sidewalk_width + 1.0
    rows: list[tuple] = []
    for x in (road_x[0] - off, road_x[-1] + off):
        rows.append(
            (
                x,
                (road_y[0] + road_y[-1]) / 2,
                0.4,
                0.1,
                (road_y[-1] - road_y[0]) / 2 + off,
                0.4,
                0.0,
                TAG_ID["GuardRail"],
                (170, 170, 175),
            )
        )
    for y in (road_y[0] - off, road_y[-1] + off):
        rows.append(
            (
                (road_x[0] + road_x[-1]) / 2,
                y,
                0.4,
                (road_x[-1] - road_x[0]) / 2 + off,
                0.1,
                0.4,
                0.0,
                TAG_ID["GuardRail"],
                (170, 170, 175),
            )
        )
    return rows


def _block_boxes(
    layout: Layout, road_x: np.ndarray, road_y: np.ndarray, rng: np.random.Generator
) -> list[tuple]:
    rows: list[tuple] = []
    inset = layout.road_width / 2 + layout.sidewalk_width + 0.5
    for i in range(len(road_x) - 1):
        for j in range(len(road_y) - 1):
            x0, x1 = road_x[i] + inset, road_x[i + 1] - inset
            y0, y1 = road_y[j] + inset, road_y[j + 1] - inset
            nx, ny = max(1, round((x1 - x0) / 25.0)), max(1, round((y1 - y0) / 25.0))
            xe, ye = np.linspace(x0, x1, nx + 1), np.linspace(y0, y1, ny + 1)
            for a in range(nx):
                for b in range(ny):
                    rows.extend(_lot_boxes(layout, xe[a], xe[a + 1], ye[b], ye[b + 1], rng))
    return rows


@lru_cache(maxsize=4)
def _build_town_cached(name: str, layout_json: str) -> Town:
    layout = Layout.model_validate_json(layout_json)
    rng = seeded_rng(name, layout.seed)
    road_x = _road_positions(rng, layout.blocks[0], layout.block_size)
    road_y = _road_positions(rng, layout.blocks[1], layout.block_size)
    origin, ground = _ground_raster(layout, road_x, road_y, rng)
    rows = _block_boxes(layout, road_x, road_y, rng) + _street_boxes(layout, road_x, road_y, rng)
    if layout.guard_rails:
        rows += _guard_rails(road_x, road_y, layout)
    return Town(
        name=name,
        road_x=road_x,
        road_y=road_y,
        road_width=layout.road_width,
        sidewalk_width=layout.sidewalk_width,
        origin=origin,
        ground=ground,
        boxes=Boxes.from_rows(rows),
        ground_colour=layout.ground_colour,
    )


def build_town(name: str, layout: Layout) -> Town:
    """Generate (or fetch from a small cache) the static town for ``layout``; deterministic."""
    return _build_town_cached(name, layout.model_dump_json())
