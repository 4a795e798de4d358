"""Camera geometry: the one place where the project's conventions are implemented.

Conventions (written out with derivations in ``docs/conventions.md``):

- **Pixels.** ``(u, v)`` = (column, row) in pixels; the pixel in column ``i``, row ``j``
  covers ``[i, i+1) x [j, j+1)`` and its centre is ``(i + 0.5, j + 0.5)``.
- **Intrinsics.** ``fx = fy = W / (2 tan(hfov / 2))``, ``cx = W / 2``, ``cy = H / 2``
  (CARLA's symmetric frustum: the optical axis passes through the image centre).
- **Camera axes.** OpenCV: x right, y down, z forward, metres.
- **Depth.** Planar z-depth in metres (distance along the optical axis), far plane 1000 m.
- **World.** Right-handed, z up: CARLA's left-handed UE world with its y axis negated.
- **CARLA transforms.** ``(x, y, z, pitch, yaw, roll)``: metres in the UE world, degrees.
"""

from __future__ import annotations

import numpy as np

FAR_PLANE_M = 1000.0
#: Horizontal fields of view a camera may have, degrees, both ends excluded.
HFOV_RANGE_DEG = (5.0, 170.0)

#: Columns are the OpenCV camera axes expressed in UE camera axes (x fwd, y right, z up):
#: x_cv (right) = +y_ue, y_cv (down) = -z_ue, z_cv (forward) = +x_ue.
CV_TO_UE = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
#: UE (left-handed) world -> right-handed world: negate y.
UE_TO_RH = np.diag([1.0, -1.0, 1.0])


def intrinsics(width: int, height: int, hfov_deg: float) -> np.ndarray:
    """(3, 3) float64 pinhole matrix of a CARLA camera of ``width`` x ``height`` pixels."""
    f = width / (2.0 * np.tan(np.radians(hfov_deg) / 2.0))
    return np.array([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]])


def ue_rotation(pitch_deg: float, yaw_deg: float, roll_deg: float) -> np.ndarray:
    """(3, 3) rotation taking UE local axes (x fwd, y right, z up) to the UE world.

    The same matrix as ``carla.Transform.get_matrix()``: positive yaw turns right
    (towards +y), positive pitch raises the nose (towards +z).
    """
    p, y, r = np.radians([pitch_deg, yaw_deg, roll_deg])
    cp, sp, cy, sy, cr, sr = np.cos(p), np.sin(p), np.cos(y), np.sin(y), np.cos(r), np.sin(r)
    return np.array(
        [
            [cp * cy, cy * sp * sr - sy * cr, -cy * sp * cr - sy * sr],
            [sy * cp, sy * sp * sr + cy * cr, -sy * sp * cr + cy * sr],
            [sp, -cp * sr, cp * cr],
        ]
    )


def carla_to_cam_to_world(transform: np.ndarray) -> np.ndarray:
    """(4, 4) camera-to-world of a CARLA sensor transform ``(x, y, z, pitch, yaw, roll)``.

    Maps OpenCV camera coordinates into the right-handed world (UE world, y negated).
    """
    x, y, z, pitch, yaw, roll = (float(v) for v in transform)
    pose = np.eye(4)
    pose[:3, :3] = UE_TO_RH @ ue_rotation(pitch, yaw, roll) @ CV_TO_UE
    pose[:3, 3] = UE_TO_RH @ np.array([x, y, z])
    return pose


def invert_pose(pose: np.ndarray) -> np.ndarray:
    """Inverse of a (..., 4, 4) rigid transform, without a general matrix inverse."""
    rot = np.swapaxes(pose[..., :3, :3], -1, -2)
    out = np.zeros_like(pose)
    out[..., :3, :3] = rot
    out[..., :3, 3] = -(rot @ pose[..., :3, 3:4])[..., 0]
    out[..., 3, 3] = 1.0
    return out


def pixel_grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(H, W) float64 arrays ``u``, ``v`` of pixel-centre coordinates (half-integers)."""
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    return u + 0.5, v + 0.5


def backproject(depth: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Lift a (H, W) planar depth map (metres) to (H, W, 3) points in camera coordinates."""
    u, v = pixel_grid(*depth.shape)
    x = (u - K[0, 2]) / K[0, 0] * depth
    y = (v - K[1, 2]) / K[1, 1] * depth
    return np.stack([x, y, depth.astype(np.float64)], axis=-1)


def transform_points(pose: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a (4, 4) rigid transform to (..., 3) points."""
    return points @ pose[:3, :3].T + pose[:3, 3]


def project(points_cam: np.ndarray, K: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Project (..., 3) camera points; returns continuous ``u``, ``v`` and planar depth ``z``."""
    z = points_cam[..., 2]
    safe = np.where(z > 1e-9, z, np.nan)
    u = K[0, 0] * points_cam[..., 0] / safe + K[0, 2]
    v = K[1, 1] * points_cam[..., 1] / safe + K[1, 2]
    return u, v, z


def reproject(
    depth: np.ndarray, K: np.ndarray, cam_to_world_src: np.ndarray, cam_to_world_dst: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where each pixel of a source frame lands in a destination frame.

    Returns the destination's continuous pixel coordinates ``u``, ``v`` (pixel-centre
    convention above) and the point's planar depth ``z`` in the destination camera.
    """
    src_to_dst = invert_pose(cam_to_world_dst) @ cam_to_world_src
    return project(transform_points(src_to_dst, backproject(depth, K)), K)
