"""tf_static: quaternion/RPY -> matrix against OpenCV's Rodrigues (an independent implementation), chained lookups
(direct, inverse, through a common parent) checked on points, and malformed transforms counted by kind."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from geometry_msgs.msg import TransformStamped

from awml_deploy_nodes.tf_static import (
    MalformedTransformError,
    StaticTransforms,
    extrinsic_from_values,
    quaternion_to_matrix,
    rpy_to_matrix,
)


def rodrigues(axis, angle):
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    r, _ = cv2.Rodrigues(axis * angle)
    return r


def quat(axis, angle):
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    s = math.sin(angle / 2)
    return (*(axis * s), math.cos(angle / 2))


@pytest.mark.parametrize("axis,angle", [((0, 0, 1), math.pi / 2), ((1, 0, 0), 0.3), ((1, 2, -3), 2.5),
                                        ((0.2, -1, 0.4), -1.1), ((1, 1, 1), 0.0)])
def test_quaternion_matches_rodrigues(axis, angle):
    np.testing.assert_allclose(quaternion_to_matrix(*quat(axis, angle)), rodrigues(axis, angle), atol=1e-12)


def test_rpy_is_fixed_axis_xyz():
    roll, pitch, yaw = 0.1, -0.4, 2.0
    ref = rodrigues((0, 0, 1), yaw) @ rodrigues((0, 1, 0), pitch) @ rodrigues((1, 0, 0), roll)
    np.testing.assert_allclose(rpy_to_matrix(roll, pitch, yaw), ref, atol=1e-12)
    # A 90 degree yaw takes +x to +y.
    np.testing.assert_allclose(rpy_to_matrix(0, 0, math.pi / 2) @ [1, 0, 0], [0, 1, 0], atol=1e-12)


def test_extrinsic_from_values_three_forms_agree():
    t = extrinsic_from_values([1, 2, 3, 0.1, -0.4, 2.0])
    q = extrinsic_from_values([1, 2, 3, *quat((0, 0, 1), 2.0)])
    np.testing.assert_allclose(extrinsic_from_values(t.reshape(-1).tolist()), t)
    np.testing.assert_allclose(q[:3, :3], rodrigues((0, 0, 1), 2.0), atol=1e-12)
    np.testing.assert_allclose(q[:3, 3], [1, 2, 3])
    for bad in ([1, 2, 3], [0] * 16, [1, 2, 3, 0, 0, 0, 2], [float("nan")] * 6):
        with pytest.raises(ValueError):
            extrinsic_from_values(bad)


def ts(parent, child, xyz, q):
    m = TransformStamped()
    m.header.frame_id, m.child_frame_id = parent, child
    m.transform.translation.x, m.transform.translation.y, m.transform.translation.z = map(float, xyz)
    (m.transform.rotation.x, m.transform.rotation.y, m.transform.rotation.z,
     m.transform.rotation.w) = map(float, q)
    return m


def test_lookup_direct_inverse_and_through_a_common_parent():
    tree = StaticTransforms()
    # base_link -> lidar: lidar 1.8 m up, yawed 90 degrees; base_link -> camera: 1.5 m forward, 1.2 m up, optical
    # axes (z forward = base x, x right = base -y, y down = base -z).
    cam_r = np.array([[0, 0, 1], [-1, 0, 0], [0, -1, 0]], float)  # columns: camera axes in base_link
    cam_rvec, _ = cv2.Rodrigues(cam_r)
    angle = float(np.linalg.norm(cam_rvec))
    errors = tree.add_message([ts("base_link", "lidar", (0, 0, 1.8), quat((0, 0, 1), math.pi / 2)),
                               ts("/base_link", "camera", (1.5, 0, 1.2), quat(cam_rvec.ravel(), angle))])
    assert errors == [] and len(tree) == 2
    # A point 10 m ahead of the car, on the lidar's height: in lidar coordinates (yawed 90 deg) it is at -y.
    p_lidar = np.array([0.0, -10.0, 0.0, 1.0])
    p_base = tree.lookup("base_link", "lidar") @ p_lidar  # direct
    np.testing.assert_allclose(p_base, [10, 0, 1.8, 1], atol=1e-12)
    np.testing.assert_allclose(tree.lookup("lidar", "base_link") @ p_base, p_lidar, atol=1e-12)  # inverse
    p_cam = tree.lookup("camera", "lidar") @ p_lidar  # through base_link
    # In the camera: 8.5 m ahead (z), 0.6 m above the camera, i.e. y = -0.6 (y points down).
    np.testing.assert_allclose(p_cam, [0, -0.6, 8.5, 1], atol=1e-12)
    np.testing.assert_allclose(tree.lookup("lidar", "camera") @ p_cam, p_lidar, atol=1e-12)
    assert tree.lookup("camera", "radar") is None
    np.testing.assert_allclose(tree.lookup("camera", "camera"), np.eye(4))


def test_a_chain_of_three_and_replacement():
    tree = StaticTransforms()
    tree.add_message({"transforms": [
        {"header": {"frame_id": "base_link"}, "child_frame_id": "kit",
         "transform": {"translation": {"x": 1, "y": 0, "z": 0}, "rotation": {"x": 0, "y": 0, "z": 0, "w": 1}}},
        {"header": {"frame_id": "kit"}, "child_frame_id": "lidar",
         "transform": {"translation": {"x": 0, "y": 2, "z": 0}, "rotation": {"x": 0, "y": 0, "z": 0, "w": 1}}},
    ]})
    tree.add_message(ts("base_link", "camera", (0, 0, 3), (0, 0, 0, 1)))
    np.testing.assert_allclose(tree.lookup("camera", "lidar")[:3, 3], [1, 2, -3])
    tree.add_message(ts("base_link", "camera", (0, 0, 5), (0, 0, 0, 1)))  # a newer one of the same child wins
    np.testing.assert_allclose(tree.lookup("camera", "lidar")[:3, 3], [1, 2, -5])


@pytest.mark.parametrize("msg,kind", [
    (ts("", "lidar", (0, 0, 0), (0, 0, 0, 1)), "missing_frame"),
    (ts("lidar", "lidar", (0, 0, 0), (0, 0, 0, 1)), "self_parent"),
    (ts("a", "b", (float("nan"), 0, 0), (0, 0, 0, 1)), "non_finite"),
    (ts("a", "b", (0, 0, 0), (0, 0, 0, 0)), "bad_quaternion"),
    (ts("a", "b", (0, 0, 0), (0, 0, 0, 2)), "bad_quaternion"),
])
def test_malformed_transforms_are_reported_by_kind(msg, kind):
    tree = StaticTransforms()
    [err] = tree.add_message([msg, ts("x", "y", (0, 0, 0), (0, 0, 0, 1))])
    assert isinstance(err, MalformedTransformError) and err.kind == kind
    assert len(tree) == 1  # the good one is kept
