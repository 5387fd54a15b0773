"""Lidar/camera triples for calibration_status_node tests: built the same way by the publisher process and by the
test (the offline reference), from (seed, stamp) alone."""

from __future__ import annotations

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import TransformStamped
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Header

from awml_deploy_nodes.conversions import array_to_pointcloud2
from awml_deploy_nodes.image_conversions import bgr_to_image_msg

H, W = 64, 96  # the test model's example_size
LIDAR_FRAME, CAMERA_FRAME, BASE = "lidar_top", "camera0_optical", "base_link"
K = np.array([[48.0, 0.0, 47.5], [0.0, 48.0, 31.5], [0.0, 0.0, 1.0]])
IMAGE_OFFSET_NS = 3_000_000  # image and camera info stamped 3 ms after the cloud (approximate pairing)
# base_link -> lidar: 1.8 m up, no rotation; base_link -> camera: 1.5 m forward, 1.2 m up, optical axes
# (z = base x, x = base -y, y = base -z): a rotation of 120 degrees about (1, -1, 1) / sqrt(3).
LIDAR_TF = ((0.0, 0.0, 1.8), (0.0, 0.0, 0.0, 1.0))
CAMERA_TF = ((1.5, 0.0, 1.2), (-0.5, 0.5, -0.5, 0.5))


def stamp(ns: int) -> Time:
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def arrays(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(image HxWx3 uint8, points Nx4 float32 in the lidar frame, mostly ahead of the car)."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    n = 1500
    pts = np.stack([rng.uniform(3, 40, n), rng.uniform(-10, 10, n), rng.uniform(-1.5, 1.0, n),
                    rng.uniform(0, 255, n)], 1).astype(np.float32)
    return image, pts


def triple(seed: int, cloud_ns: int) -> tuple[PointCloud2, Image, CameraInfo]:
    image, pts = arrays(seed)
    cloud = array_to_pointcloud2(pts, LIDAR_FRAME, stamp(cloud_ns))
    img = bgr_to_image_msg(image, Header(stamp=stamp(cloud_ns + IMAGE_OFFSET_NS), frame_id=CAMERA_FRAME))
    return cloud, img, camera_info(cloud_ns + IMAGE_OFFSET_NS)


def camera_info(ns: int, k: np.ndarray = K) -> CameraInfo:
    info = CameraInfo()
    info.header = Header(stamp=stamp(ns), frame_id=CAMERA_FRAME)
    info.width, info.height = W, H
    info.distortion_model = "plumb_bob"
    info.d = [0.0] * 5
    info.k = [float(v) for v in np.asarray(k).reshape(-1)]
    info.p = [float(k[0, 0]), 0.0, float(k[0, 2]), 0.0, 0.0, float(k[1, 1]), float(k[1, 2]), 0.0, 0.0, 0.0, 1.0, 0.0]
    return info


def transforms() -> list[TransformStamped]:
    out = []
    for child, (xyz, q) in ((LIDAR_FRAME, LIDAR_TF), (CAMERA_FRAME, CAMERA_TF)):
        m = TransformStamped()
        m.header.frame_id, m.child_frame_id = BASE, child
        m.transform.translation.x, m.transform.translation.y, m.transform.translation.z = xyz
        (m.transform.rotation.x, m.transform.rotation.y, m.transform.rotation.z,
         m.transform.rotation.w) = q
        out.append(m)
    return out


def t_cam_lidar() -> np.ndarray:
    """What the node must look up from transforms() (the same code path: tf_static.StaticTransforms)."""
    from awml_deploy_nodes.tf_static import StaticTransforms

    tree = StaticTransforms()
    tree.add_message(transforms())
    return tree.lookup(CAMERA_FRAME, LIDAR_FRAME)
