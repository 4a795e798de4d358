"""Pose and camera conventions, against hand-worked cases and the real CARLA client."""

import numpy as np
import pytest

from clipcore.geometry import (
    backproject,
    carla_to_cam_to_world,
    intrinsics,
    invert_pose,
    project,
    transform_points,
    ue_rotation,
)


def test_intrinsics_follow_carla():
    K = intrinsics(512, 256, 90.0)
    assert K[0, 0] == pytest.approx(256.0) and K[1, 1] == pytest.approx(256.0)
    assert (K[0, 2], K[1, 2]) == (256.0, 128.0)


def test_identity_pose_axes():
    pose = carla_to_cam_to_world(np.zeros(6))
    # OpenCV forward (z) -> UE +x; right (x) -> UE +y -> right-handed -y; down (y) -> -z
    np.testing.assert_allclose(pose[:3, :3] @ [0, 0, 1], [1, 0, 0], atol=1e-12)
    np.testing.assert_allclose(pose[:3, :3] @ [1, 0, 0], [0, -1, 0], atol=1e-12)
    np.testing.assert_allclose(pose[:3, :3] @ [0, 1, 0], [0, 0, -1], atol=1e-12)
    assert np.linalg.det(pose[:3, :3]) == pytest.approx(1.0)


def test_yawed_90_pitched_down_translated():
    # yaw +90 turns right in UE: forward becomes UE +y, i.e. right-handed -y
    yawed = carla_to_cam_to_world(np.array([0, 0, 0, 0.0, 90.0, 0]))
    np.testing.assert_allclose(yawed[:3, :3] @ [0, 0, 1], [0, -1, 0], atol=1e-12)
    # pitch -30 looks down: forward = (cos 30, 0, -sin 30)
    down = carla_to_cam_to_world(np.array([0, 0, 0, -30.0, 0, 0]))
    np.testing.assert_allclose(down[:3, :3] @ [0, 0, 1], [np.cos(np.pi / 6), 0, -0.5], atol=1e-12)
    # translation: UE (10, 5, 2) is right-handed (10, -5, 2)
    moved = carla_to_cam_to_world(np.array([10.0, 5.0, 2.0, 0, 0, 0]))
    np.testing.assert_allclose(moved[:3, 3], [10, -5, 2])


def test_pixel_to_world_on_a_hand_worked_point():
    # camera at UE (0, 0, 2) looking along +x; the principal point at depth 10 is UE (10, 0, 2)
    K = intrinsics(100, 50, 90.0)
    pose = carla_to_cam_to_world(np.array([0, 0, 2.0, 0, 0, 0]))
    depth = np.full((50, 100), 10.0)
    points = transform_points(pose, backproject(depth, K))
    # the four centre pixels straddle the optical axis: their mean is on it
    centre = points[24:26, 49:51].reshape(-1, 3).mean(0)
    np.testing.assert_allclose(centre, [10, 0, 2], atol=1e-9)
    # the right half of the image is to the camera's right: UE +y, right-handed -y
    assert points[25, 99, 1] < 0


@pytest.mark.parametrize(
    "rot", [(0, 0, 0), (-12.0, 37.0, 3.0), (25.0, -150.0, -8.0), (-89.0, 200.0, 45.0)]
)
def test_rotation_matches_carla_get_matrix(rot):
    carla = pytest.importorskip("carla")
    t = carla.Transform(
        carla.Location(x=1.0, y=-2.0, z=3.0), carla.Rotation(pitch=rot[0], yaw=rot[1], roll=rot[2])
    )
    expected = np.array(t.get_matrix())
    np.testing.assert_allclose(ue_rotation(*rot), expected[:3, :3], atol=1e-6)


def test_invert_and_project_round_trip():
    pose = carla_to_cam_to_world(np.array([3.0, -4.0, 1.5, -7.0, 123.0, 2.0]))
    np.testing.assert_allclose(invert_pose(pose) @ pose, np.eye(4), atol=1e-12)
    K = intrinsics(64, 32, 70.0)
    depth = np.random.default_rng(0).uniform(1, 100, (32, 64))
    u, v, z = project(backproject(depth, K), K)
    grid_v, grid_u = np.mgrid[0:32, 0:64] + 0.5
    np.testing.assert_allclose(u, grid_u, atol=1e-9)
    np.testing.assert_allclose(v, grid_v, atol=1e-9)
    np.testing.assert_allclose(z, depth)
