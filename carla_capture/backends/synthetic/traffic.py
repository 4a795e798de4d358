"""Per-clip motion in the embedded simulator: the ego route, other road users, weather.

All positions are UE world metres, yaw in degrees (positive turns from +x towards +y);
vehicles drive on the right-hand lane of each road, as in CARLA's towns.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from carla_capture.backends.synthetic.town import Boxes, Town
from clipcore.tags import TAG_ID

_DIRS = ((1, 0), (-1, 0), (0, 1), (0, -1))
_TURN_RADIUS_M = 6.0


def _right(d: np.ndarray) -> np.ndarray:
    """The right-hand side of heading ``d`` in the UE world (left-handed, so (-dy, dx))."""
    return np.array([-d[1], d[0]])


@dataclass(frozen=True)
class Route:
    """A dense polyline the ego follows: points (N, 2) and their arc length s (N,) in metres."""

    points: np.ndarray
    s: np.ndarray

    def pose(self, dist: float) -> tuple[float, float, float]:
        """(x, y, yaw_deg) after driving ``dist`` metres along the route."""
        x = float(np.interp(dist, self.s, self.points[:, 0]))
        y = float(np.interp(dist, self.s, self.points[:, 1]))
        i = int(np.clip(np.searchsorted(self.s, dist), 1, len(self.s) - 1))
        d = self.points[i] - self.points[i - 1]
        return x, y, float(np.degrees(np.arctan2(d[1], d[0])))


def _fillet(corner: np.ndarray, d_in: np.ndarray, d_out: np.ndarray, r: float) -> np.ndarray:
    start, centre = corner - r * d_in, corner - r * d_in + r * d_out
    a0 = np.arctan2(*(start - centre)[::-1])
    a1 = np.arctan2(*((corner + r * d_out) - centre)[::-1])
    sweep = (a1 - a0 + np.pi) % (2 * np.pi) - np.pi
    angles = a0 + sweep * np.linspace(0.0, 1.0, 12)
    return centre + r * np.stack([np.cos(angles), np.sin(angles)], axis=1)


def plan_route(town: Town, rng: np.random.Generator, length_m: float) -> Route:
    """A random drive along the right-hand lanes, turning at intersections.

    At least ``length_m`` long.
    """
    nodes = np.array([len(town.road_x), len(town.road_y)])
    node = np.array([rng.integers(nodes[0]), rng.integers(nodes[1])])
    options = [np.array(d) for d in _DIRS if np.all((0 <= node + d) & (node + d < nodes))]
    d = options[rng.integers(len(options))]
    lo = town.lane_offset
    pos = lambda n: np.array([town.road_x[n[0]], town.road_y[n[1]]])  # noqa: E731
    points = [pos(node) + lo * _right(d) + d * (town.road_width / 2 + 1.0)]
    total = 0.0
    while total < length_m + 60.0:
        nxt = node + d
        choices = [
            np.array(e)
            for e in _DIRS
            if tuple(e) != tuple(-d) and np.all((0 <= nxt + e) & (nxt + e < nodes))
        ]
        e = choices[rng.integers(len(choices))]
        total += float(np.linalg.norm(pos(nxt) - pos(node)))
        if tuple(e) == tuple(d):
            points.append(pos(nxt) + lo * _right(d))
        else:
            corner = pos(nxt) + lo * _right(d) + lo * _right(e)
            points.extend(_fillet(corner, d.astype(float), e.astype(float), _TURN_RADIUS_M))
        node, d = nxt, e
    pts = np.asarray(points, dtype=np.float64)
    seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
    keep = np.concatenate([[True], seg > 1e-6])
    pts = pts[keep]
    return Route(
        points=pts,
        s=np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(pts, axis=0), axis=1))]),
    )


# Parts of each actor kind: (forward, right, up) offset of the part centre, half extents, tag,
# colour.
_KINDS: dict[str, tuple[float, list[tuple]]] = {
    "car": (
        1.0,
        [
            ((0, 0, 0.55), (2.25, 0.95, 0.45), "Car", None),
            ((-0.3, 0, 1.25), (1.2, 0.85, 0.3), "Car", None),
        ],
    ),
    "truck": (
        1.0,
        [
            ((2.6, 0, 1.4), (1.0, 1.2, 1.3), "Truck", None),
            ((-1.0, 0, 1.8), (2.6, 1.25, 1.6), "Truck", (200, 200, 200)),
        ],
    ),
    "bus": (1.0, [((0, 0, 1.65), (5.5, 1.3, 1.5), "Bus", None)]),
    "motorcycle": (
        1.0,
        [
            ((0, 0, 0.55), (1.05, 0.35, 0.45), "Motorcycle", None),
            ((-0.2, 0, 1.35), (0.3, 0.3, 0.45), "Rider", (60, 60, 80)),
        ],
    ),
    "bicycle": (
        0.6,
        [
            ((0, 0, 0.5), (0.9, 0.12, 0.45), "Bicycle", None),
            ((-0.1, 0, 1.35), (0.25, 0.25, 0.45), "Rider", (80, 60, 60)),
        ],
    ),
    "pedestrian": (0.15, [((0, 0, 0.85), (0.22, 0.28, 0.85), "Pedestrians", None)]),
}
_VEHICLE_MIX = (
    ("car", 0.72),
    ("truck", 0.08),
    ("bus", 0.05),
    ("motorcycle", 0.07),
    ("bicycle", 0.08),
)


@dataclass(frozen=True)
class Actors:
    """Road users moving along straight roads.

    Per actor (N,) axis (0: along x, 1: along y), cross-coordinate, direction sign, start arc length
    s0 and speed (m/s); per part (P,) the owner index, local offset (P,3), half extents (P,3), tag
    and colour (0..1).
    """

    axis: np.ndarray
    cross: np.ndarray
    sign: np.ndarray
    s0: np.ndarray
    speed: np.ndarray
    span: tuple[float, float, float, float]
    owner: np.ndarray
    offset: np.ndarray
    half: np.ndarray
    tag: np.ndarray
    colour: np.ndarray

    def without(self, drop: np.ndarray) -> Actors:
        """These actors less those whose index is in ``drop``."""
        keep_actor = np.ones(len(self.axis), bool)
        keep_actor[np.asarray(drop, dtype=np.int64)] = False
        keep_part = keep_actor[self.owner]
        renumber = np.cumsum(keep_actor) - 1
        return Actors(
            self.axis[keep_actor],
            self.cross[keep_actor],
            self.sign[keep_actor],
            self.s0[keep_actor],
            self.speed[keep_actor],
            self.span,
            renumber[self.owner[keep_part]],
            self.offset[keep_part],
            self.half[keep_part],
            self.tag[keep_part],
            self.colour[keep_part],
        )

    def boxes_at(self, t: float) -> Boxes:
        """The actors' boxes at simulation time ``t`` seconds."""
        lo = np.where(self.axis == 0, self.span[0], self.span[2])
        hi = np.where(self.axis == 0, self.span[1], self.span[3])
        s = lo + np.mod(self.s0 + self.sign * self.speed * t - lo, hi - lo)
        x = np.where(self.axis == 0, s, self.cross)
        y = np.where(self.axis == 0, self.cross, s)
        yaw = np.where(self.axis == 0, 0.0, np.pi / 2) + np.where(self.sign < 0, np.pi, 0.0)
        o, yw = self.owner, yaw[self.owner]
        fx, fy = np.cos(yw), np.sin(yw)
        cx = x[o] + fx * self.offset[:, 0] - fy * self.offset[:, 1]
        cy = y[o] + fy * self.offset[:, 0] + fx * self.offset[:, 1]
        return Boxes(np.stack([cx, cy, self.offset[:, 2]], 1), self.half, yw, self.tag, self.colour)


def spawn_actors(
    town: Town,
    rng: np.random.Generator,
    vehicles: int,
    walkers: int,
    ego: tuple[float, float, float],
    ego_speed: float,
) -> Actors:
    """Place ``vehicles`` on right-hand lanes and ``walkers`` on sidewalks, with random speeds.

    Half of them go on the ego's road (``ego`` = x, y, yaw in degrees) within about 100 m,
    so they are in view; those in the ego's lane start 30 m ahead or more and are at least
    as fast as ``ego_speed``, so the ego never drives into them.
    """
    kinds = [k for k, _ in _VEHICLE_MIX]
    probs = np.array([p for _, p in _VEHICLE_MIX])
    picks = list(rng.choice(kinds, size=vehicles, p=probs / probs.sum())) + ["pedestrian"] * walkers
    span = (town.road_x[0] - 40, town.road_x[-1] + 40, town.road_y[0] - 40, town.road_y[-1] + 40)
    cols: dict[str, list] = {k: [] for k in ("axis", "cross", "sign", "s0", "speed")}
    parts: dict[str, list] = {k: [] for k in ("owner", "offset", "half", "tag", "colour")}
    start = np.array(ego[:2])
    ahead = np.array([np.cos(np.radians(ego[2])), np.sin(np.radians(ego[2]))])
    ego_axis = 0 if abs(ahead[0]) >= abs(ahead[1]) else 1
    ego_sign = float(np.sign(ahead[ego_axis]))
    for i, kind in enumerate(picks):
        near_ego = rng.random() < 0.5
        axis, sign = (
            (ego_axis if near_ego else int(rng.integers(2))),
            float(rng.choice([-1.0, 1.0])),
        )
        roads = town.road_y if axis == 0 else town.road_x
        road = (
            roads[np.argmin(np.abs(roads - start[1 - axis]))]
            if near_ego
            else roads[rng.integers(len(roads))]
        )
        heading = np.array([sign, 0.0]) if axis == 0 else np.array([0.0, sign])
        right = _right(heading)[1 - axis]
        walker = kind == "pedestrian"
        lateral = (town.road_width / 2 + town.sidewalk_width * 0.3) if walker else town.lane_offset
        cols["axis"].append(axis)
        cols["cross"].append(road + right * lateral)
        cols["sign"].append(sign)
        speed = rng.uniform(0.9, 1.6) if walker else rng.uniform(4.0, 11.0) * _KINDS[kind][0]
        if not near_ego:
            s0 = rng.uniform(span[2 * axis], span[2 * axis + 1])
        elif walker or sign != ego_sign:
            s0 = start[axis] + ego_sign * rng.uniform(-60.0, 100.0)
        else:  # same lane as the ego: ahead of it, and not slower
            s0, speed = (
                start[axis] + ego_sign * rng.uniform(30.0, 100.0),
                ego_speed * rng.uniform(1.0, 1.2),
            )
        cols["s0"].append(s0)
        cols["speed"].append(speed)
        body = tuple(int(c) for c in rng.integers(20, 235, 3))
        for offset, half, tag, colour in _KINDS[kind][1]:
            parts["owner"].append(i)
            parts["offset"].append(offset)
            parts["half"].append(half)
            parts["tag"].append(TAG_ID[tag])
            parts["colour"].append(colour or body)
    return Actors(
        axis=np.array(cols["axis"], dtype=np.int64),
        cross=np.array(cols["cross"], dtype=np.float64),
        sign=np.array(cols["sign"]),
        s0=np.array(cols["s0"]),
        speed=np.array(cols["speed"]),
        span=span,
        owner=np.array(parts["owner"], dtype=np.int64),
        offset=np.array(parts["offset"], dtype=np.float64).reshape(-1, 3),
        half=np.array(parts["half"], dtype=np.float64).reshape(-1, 3),
        tag=np.array(parts["tag"], dtype=np.uint8),
        colour=np.array(parts["colour"], dtype=np.float32).reshape(-1, 3) / 255.0,
    )


def clear_path(
    actors: Actors,
    ego: list[tuple[float, float, float]],
    times: list[float],
    ahead_m: float = 15.0,
    behind_m: float = 4.0,
    half_width_m: float = 2.5,
) -> Actors:
    """Drop every actor that comes into the ego's corridor at any of ``times`` (seconds).

    The corridor of the ego at ``ego`` (x, y, yaw in degrees) then: ``behind_m`` behind to
    ``ahead_m`` ahead, and within ``half_width_m`` (plus the actor's own half width) of its centre
    line. Actors spawned away from the ego can meet it after a turn, or wrap around the town's edge
    into its lane; this keeps the ego from driving into or through them (a truck filling the view).
    """
    hit = set()
    for (x, y, yaw), t in zip(ego, times, strict=True):
        boxes = actors.boxes_at(t)
        fwd = np.array([np.cos(np.radians(yaw)), np.sin(np.radians(yaw))])
        rel = boxes.centre[:, :2] - [x, y]
        along, across = rel @ fwd, rel @ _right(fwd)
        reach = np.max(boxes.half[:, :2], axis=1)
        near = (
            (along > -behind_m - reach)
            & (along < ahead_m + reach)
            & (np.abs(across) < half_width_m + reach)
        )
        hit.update(actors.owner[near].tolist())
    return actors.without(np.array(sorted(hit), dtype=np.int64)) if hit else actors
