"""A small exact renderer for the embedded simulator: z-buffered planar faces in numpy.

Every surface is planar (the ground, box faces), and for a plane the inverse planar depth
``1/z`` is an affine function of the pixel coordinates. So each face is drawn by testing
its edge functions at pixel centres ``(i + 0.5, j + 0.5)`` and comparing one affine
inverse-depth plane against the buffer: depth is exact to float precision, and tags and
poses are exact by construction, which the reprojection tests rely on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from carla_capture.backends.synthetic.town import RASTER_RES_M, Boxes, Town
from carla_capture.config import Weather
from clipcore.geometry import FAR_PLANE_M
from clipcore.tags import TAG_ID

NEAR_PLANE_M = 0.05
_SKY, _GROUND = -2, -1
# Corner k of a box has signs (bit0, bit1, bit2) on (x, y, z); faces list corners in order.
_SIGNS = np.array([[(k >> a) & 1 for a in range(3)] for k in range(8)], dtype=np.float64) * 2 - 1
_FACES = np.array(
    [[0, 2, 6, 4], [1, 3, 7, 5], [0, 1, 5, 4], [2, 3, 7, 6], [0, 1, 3, 2], [4, 5, 7, 6]]
)
_FACE_AXIS = np.array([0, 0, 1, 1, 2, 2])
_FACE_SIGN = np.array([-1.0, 1.0, -1.0, 1.0, -1.0, 1.0])
_GROUND_RGB = {
    TAG_ID["Roads"]: (75, 75, 80),
    TAG_ID["Sidewalks"]: (160, 150, 145),
    TAG_ID["RoadLines"]: (225, 225, 215),
    TAG_ID["Water"]: (50, 80, 110),
    TAG_ID["Ground"]: (110, 90, 70),
}


@dataclass(frozen=True)
class _Geometry:
    """Boxes in the right-handed world: corners (N,8,3), outward face normals (N,6,3)."""

    corners: np.ndarray
    normals: np.ndarray
    half: np.ndarray
    centre: np.ndarray
    tag: np.ndarray
    colour: np.ndarray


def _to_rh(boxes: Boxes) -> _Geometry:
    """UE boxes -> right-handed world (y negated, yaw negated)."""
    centre = boxes.centre * np.array([1.0, -1.0, 1.0])
    yaw = -boxes.yaw
    c, s = np.cos(yaw), np.sin(yaw)
    zero, one = np.zeros_like(c), np.ones_like(c)
    rot = np.stack(
        [np.stack([c, -s, zero], -1), np.stack([s, c, zero], -1), np.stack([zero, zero, one], -1)],
        -2,
    )
    corners = centre[:, None, :] + np.einsum(
        "nij,nkj->nki", rot, _SIGNS[None, :, :] * boxes.half[:, None, :]
    )
    axes = np.swapaxes(rot, 1, 2)  # rows: the box's local x, y, z axes in world coordinates
    normals = axes[:, _FACE_AXIS, :] * _FACE_SIGN[None, :, None]
    return _Geometry(corners, normals, boxes.half, centre, boxes.tag, boxes.colour)


def _clip_near(poly: np.ndarray) -> np.ndarray:
    """Sutherland-Hodgman clip of a (k,3) camera-space polygon to z >= NEAR_PLANE_M."""
    out = []
    for a, b in zip(poly, np.roll(poly, -1, axis=0), strict=True):
        ina, inb = a[2] >= NEAR_PLANE_M, b[2] >= NEAR_PLANE_M
        if ina:
            out.append(a)
        if ina != inb:
            out.append(a + (b - a) * (NEAR_PLANE_M - a[2]) / (b[2] - a[2]))
    return np.array(out)


@dataclass(frozen=True)
class Look:
    """Lighting derived from a weather preset: sun direction (RH world), colours, fog."""

    sun: np.ndarray
    light: float
    ambient: float
    sky_top: np.ndarray
    sky_horizon: np.ndarray
    fog_per_m: float
    wet: float

    @staticmethod
    def from_weather(w: Weather) -> Look:
        """Map CARLA-style weather values to the renderer's lighting."""
        alt, az = np.radians(w.sun_altitude_angle), np.radians(w.sun_azimuth_angle)
        sun = np.array([np.cos(alt) * np.cos(az), -np.cos(alt) * np.sin(az), np.sin(alt)])
        day = float(np.clip(np.sin(alt) * 2.0 + 0.3, 0.15, 1.0))
        cloud = w.cloudiness / 100.0
        warm = float(np.clip(1.0 - np.sin(max(alt, 0.0)) * 3.0, 0.0, 1.0))
        top = np.array([0.25, 0.45, 0.85]) * (1 - cloud) + np.array([0.6, 0.62, 0.65]) * cloud
        horizon = np.array([0.75, 0.82, 0.92]) * (1 - warm) + np.array([0.95, 0.6, 0.35]) * warm
        fog = 0.0015 + (w.fog_density / 100.0) * 0.04 + (w.precipitation / 100.0) * 0.004
        return Look(
            sun=sun,
            light=day * (1 - 0.6 * cloud),
            ambient=0.25 + 0.35 * cloud,
            sky_top=top * day,
            sky_horizon=horizon * day,
            fog_per_m=fog,
            wet=w.wetness / 100.0,
        )


class Renderer:
    """Renders RGB, semantic tags and planar depth of a :class:`Town` from a camera pose."""

    def __init__(self, town: Town, K: np.ndarray, width: int, height: int) -> None:
        self.town, self.K, self.width, self.height = town, K, width, height
        self._static = _to_rh(town.boxes)
        u = np.arange(width) + 0.5
        v = np.arange(height) + 0.5
        self._ray_x = (u - K[0, 2]) / K[0, 0]
        self._ray_y = (v - K[1, 2]) / K[1, 1]
        self._noise = np.random.default_rng(7).integers(-12, 13, size=(256, 256)).astype(np.int16)
        lut = np.zeros((256, 3), np.float32)
        lut[TAG_ID["Terrain"]] = town.ground_colour
        for tag, rgb in _GROUND_RGB.items():
            lut[tag] = rgb
        self._ground_lut = lut / 255.0

    def render(
        self, cam_to_world: np.ndarray, dynamic: Boxes, look: Look
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Draw one frame: rgb (H,W,3) uint8, tags (H,W) uint8, depth (H,W) float32 metres."""
        rot, centre = cam_to_world[:3, :3], cam_to_world[:3, 3]
        inv, ids = self._ground(rot, centre)
        faces: list[tuple[int, np.ndarray]] = []
        for geo in (self._static, _to_rh(dynamic)):
            self._draw_boxes(geo, rot, centre, inv, ids, faces)
        depth = (1.0 / inv).astype(np.float32)
        tags = np.full(ids.shape, TAG_ID["Sky"], np.uint8)
        rgb = np.zeros(ids.shape + (3,), np.float32)
        world = self._world_points(rot, centre, depth)
        self._shade_ground(ids == _GROUND, world, tags, rgb, look)
        self._shade_faces(ids, faces, world, tags, rgb, look)
        self._shade_sky(ids == _SKY, rot, rgb, look)
        fog = np.exp(-look.fog_per_m * depth)[..., None]
        rgb = rgb * fog + (look.sky_horizon * 0.9).astype(np.float32) * (1.0 - fog)
        return np.clip(rgb * 255.0, 0, 255).astype(np.uint8), tags, depth

    def _ground(self, rot: np.ndarray, centre: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # world ray z-component is affine in the camera ray; ground z = 0 gives 1/depth = -w_z / C_z
        wz = rot[2, 0] * self._ray_x[None, :] + rot[2, 1] * self._ray_y[:, None] + rot[2, 2]
        inv = -wz / centre[2]
        hit = inv > 1.0 / FAR_PLANE_M
        ids = np.where(hit, _GROUND, _SKY).astype(np.int32)
        return np.where(hit, inv, 1.0 / FAR_PLANE_M), ids

    def _draw_boxes(
        self,
        geo: _Geometry,
        rot: np.ndarray,
        centre: np.ndarray,
        inv: np.ndarray,
        ids: np.ndarray,
        faces: list[tuple[int, np.ndarray]],
    ) -> None:
        if len(geo.tag) == 0:
            return
        K = self.K
        cam = (geo.corners - centre) @ rot  # (N, 8, 3) camera coordinates
        z = cam[..., 2]
        front = np.all(z > NEAR_PLANE_M, axis=1)
        zs = np.where(z > NEAR_PLANE_M, z, 1.0)
        u = K[0, 0] * cam[..., 0] / zs + K[0, 2]
        v = K[1, 1] * cam[..., 1] / zs + K[1, 2]
        # back-face culling: the camera must be on the outer side of the face's plane
        rel = centre[None, None, :] - geo.centre[:, None, :]
        dist = np.einsum("nfk,nfk->nf", geo.normals, np.broadcast_to(rel, geo.normals.shape))
        facing = dist > geo.half[:, _FACE_AXIS] + 1e-9
        # faces of boxes fully in front: keep those whose bounding box holds a pixel centre
        fu, fv = u[:, _FACES], v[:, _FACES]  # (N, 6, 4)
        i0 = np.maximum(np.ceil(fu.min(-1) - 0.5), 0)
        i1 = np.minimum(np.floor(fu.max(-1) - 0.5), self.width - 1)
        j0 = np.maximum(np.ceil(fv.min(-1) - 0.5), 0)
        j1 = np.minimum(np.floor(fv.max(-1) - 0.5), self.height - 1)
        visible = facing & np.where(
            front[:, None], (i0 <= i1) & (j0 <= j1), np.any(z > NEAR_PLANE_M, 1)[:, None]
        )
        nearest = np.max(1.0 / zs, axis=1)  # inverse depth of each box's nearest corner
        order = np.argsort(-nearest)  # near to far, so occluders are drawn first
        for n in order[np.any(visible[order], axis=1)]:
            for f in np.nonzero(visible[n])[0]:
                if front[n]:
                    box = (int(i0[n, f]), int(i1[n, f]), int(j0[n, f]), int(j1[n, f]))
                    if nearest[n] <= inv[box[2] : box[3] + 1, box[0] : box[1] + 1].min():
                        continue  # hidden behind what is already drawn
                    pu, pv, poly = fu[n, f], fv[n, f], cam[n, _FACES[f]]
                else:
                    poly = _clip_near(cam[n, _FACES[f]])
                    if len(poly) < 3:
                        continue
                    pu = K[0, 0] * poly[:, 0] / poly[:, 2] + K[0, 2]
                    pv = K[1, 1] * poly[:, 1] / poly[:, 2] + K[1, 2]
                    box = None
                if self._fill(pu, pv, poly[0], geo.normals[n, f] @ rot, box, inv, ids, len(faces)):
                    faces.append((int(geo.tag[n]), self._face_colour(geo, n, f)))

    def _fill(
        self,
        pu: np.ndarray,
        pv: np.ndarray,
        vertex: np.ndarray,
        normal: np.ndarray,
        box: tuple[int, int, int, int] | None,
        inv: np.ndarray,
        ids: np.ndarray,
        face_id: int,
    ) -> bool:
        """Z-test one convex polygon into the buffers; True if any pixel won.

        The polygon has pixel coords ``pu``, ``pv``; a camera-space ``vertex`` on its plane with
        camera-space ``normal``.
        """
        K = self.K
        if box is None:
            box = (
                max(0, int(np.ceil(pu.min() - 0.5))),
                min(self.width - 1, int(np.floor(pu.max() - 0.5))),
                max(0, int(np.ceil(pv.min() - 0.5))),
                min(self.height - 1, int(np.floor(pv.max() - 0.5))),
            )
        i0, i1, j0, j1 = box
        offset = float(normal @ vertex)
        if i0 > i1 or j0 > j1 or abs(offset) < 1e-9:
            return False
        us, vs = np.arange(i0, i1 + 1) + 0.5, np.arange(j0, j1 + 1) + 0.5
        nu, nv = np.append(pu[1:], pu[0]), np.append(pv[1:], pv[0])
        sign = 1.0 if float(np.sum(pu * nv - nu * pv)) > 0 else -1.0
        inside = np.ones((len(vs), len(us)), dtype=bool)
        for au, av, bu, bv in zip(pu.tolist(), pv.tolist(), nu.tolist(), nv.tolist(), strict=True):
            inside &= (sign * (bu - au) * (vs - av))[:, None] >= (sign * (bv - av) * (us - au))[
                None, :
            ]
        # inverse planar depth of the face's plane n.X = offset along the ray (x_n, y_n, 1)
        a, b = normal[0] / (K[0, 0] * offset), normal[1] / (K[1, 1] * offset)
        c = (normal[2] - normal[0] * K[0, 2] / K[0, 0] - normal[1] * K[1, 2] / K[1, 1]) / offset
        plane = (b * vs)[:, None] + (a * us + c)[None, :]
        sub_inv, sub_ids = inv[j0 : j1 + 1, i0 : i1 + 1], ids[j0 : j1 + 1, i0 : i1 + 1]
        win = inside & (plane > sub_inv)
        if not win.any():
            return False
        sub_inv[win] = plane[win]
        sub_ids[win] = face_id
        return True

    @staticmethod
    def _face_colour(geo: _Geometry, n: int, f: int) -> np.ndarray:
        return geo.colour[n] * (1.0 - 0.08 * (f % 2)) if f < 4 else geo.colour[n] * 1.05

    def _world_points(self, rot: np.ndarray, centre: np.ndarray, depth: np.ndarray) -> np.ndarray:
        rx, ry = self._ray_x[None, :] * depth, self._ray_y[:, None] * depth
        return np.stack(
            [rot[i, 0] * rx + rot[i, 1] * ry + rot[i, 2] * depth + centre[i] for i in range(3)], -1
        )

    def _shade_ground(
        self, mask: np.ndarray, world: np.ndarray, tags: np.ndarray, rgb: np.ndarray, look: Look
    ) -> None:
        town = self.town
        pts = world[mask]
        ix = np.floor((pts[:, 0] - town.origin[0]) / RASTER_RES_M).astype(np.int64)
        iy = np.floor((-pts[:, 1] - town.origin[1]) / RASTER_RES_M).astype(np.int64)
        ny, nx = town.ground.shape
        inside = (ix >= 0) & (ix < nx) & (iy >= 0) & (iy < ny)
        tag = np.full(len(pts), TAG_ID["Terrain"], np.uint8)
        tag[inside] = town.ground[iy[inside], ix[inside]]
        tags[mask] = tag
        texture = 1.0 + self._noise[iy & 255, ix & 255] / 100.0
        wet = np.where(tag == TAG_ID["Roads"], 1.0 - 0.35 * look.wet, 1.0)
        shade = look.ambient + look.light * max(look.sun[2], 0.0)
        rgb[mask] = self._ground_lut[tag] * (texture * wet * shade)[:, None]

    def _shade_faces(
        self,
        ids: np.ndarray,
        faces: list,
        world: np.ndarray,
        tags: np.ndarray,
        rgb: np.ndarray,
        look: Look,
    ) -> None:
        if not faces:
            return
        mask = ids >= 0
        fid = ids[mask]
        face_tag = np.array([t for t, _ in faces], np.uint8)
        colour = np.array([c for _, c in faces], np.float32)
        tags[mask] = face_tag[fid]
        pts = world[mask]
        building = face_tag[fid] == TAG_ID["Buildings"]
        windows = (
            building
            & (np.mod(pts[:, 2], 3.2) > 1.0)
            & (np.mod(pts[:, 2], 3.2) < 2.4)
            & (np.mod(pts[:, 0] + pts[:, 1], 2.8) > 1.0)
        )
        light = look.ambient + look.light * (
            0.55 + 0.45 * np.clip(look.sun[0] * 0.5 + look.sun[2], 0, 1)
        )
        rgb[mask] = colour[fid] * np.where(windows, 0.45, 1.0)[:, None] * light

    def _shade_sky(self, mask: np.ndarray, rot: np.ndarray, rgb: np.ndarray, look: Look) -> None:
        rays = np.stack(np.broadcast_arrays(self._ray_x[None, :], self._ray_y[:, None], 1.0), -1)[
            mask
        ]
        world = rays @ rot.T
        world /= np.linalg.norm(world, axis=1, keepdims=True)
        up = np.clip(world[:, 2], 0.0, 1.0)[:, None] ** 0.5
        glow = np.clip(world @ look.sun, 0.0, 1.0)[:, None] ** 32 * 0.6
        rgb[mask] = look.sky_horizon * (1 - up) + look.sky_top * up + glow
