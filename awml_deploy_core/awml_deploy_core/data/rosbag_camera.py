"""Camera messages in rosbag2 without ROS: images, CameraInfo and 2D ground truth, through the pure-Python ``rosbags``.

Topics of camera ``<name>`` (``camera0``, ``camera1``, ... in a generated drive):

========================================  ======================================  ======================================
topic                                     type                                    content
========================================  ======================================  ======================================
``/sensing/camera/<name>/image_raw``      sensor_msgs/Image                       ``bgr8``, ``step = 3 * width``
``/sensing/camera/<name>/camera_info``    sensor_msgs/CameraInfo                  K, P = [K | 0], R = I, ``plumb_bob``
                                                                                  with D = 5 zeros (no distortion)
``/awml/ground_truth/camera/<name>/       awml_deploy_msgs/Detections2D           the 2D ground truth (see below)
objects``
========================================  ======================================  ======================================

Every message of one instant carries the stamp of the lidar frame of that instant and the camera's optical frame
(``<name>/camera_optical_link``: x right, y down, z forward).

Ground truth encoding (``Detections2D`` has no ignore flag): ``label`` is the index of the class in the T4 2D class
list (:data:`awml_deploy_core.labels.T4_2D_CLASSES`, the YOLOX model's order), ``score`` says what the box is:
:data:`GT_SCORE` (1.0) an object to detect, :data:`GT_IGNORE_SCORE` (0.0) an ignore region (heavily occluded or
tiny: a detection on it is neither a true nor a false positive). The bag's sidecar
``awml_info/camera_infos.json`` holds the same boxes with ``ignore_flag`` (plus truncation, occlusion, depth and
calibration), so either source gives the same ground truth.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .rosbag_io import BagReader, _header, read_decoded, stamp_to_ns, typestore

IMAGE = "sensor_msgs/msg/Image"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
DETECTIONS2D = "awml_deploy_msgs/msg/Detections2D"
GT_SCORE = 1.0
GT_IGNORE_SCORE = 0.0
CAMERA_INFO_FILE = "camera_infos.json"  # in the bag's awml_info/ folder
_CHANNELS = {"bgr8": 3, "rgb8": 3, "mono8": 1}


def camera_name(index: int) -> str:
    return f"camera{int(index)}"


def image_topic(name: str) -> str:
    return f"/sensing/camera/{name}/image_raw"


def camera_info_topic(name: str) -> str:
    return f"/sensing/camera/{name}/camera_info"


def gt2d_topic(name: str) -> str:
    return f"/awml/ground_truth/camera/{name}/objects"


def optical_frame(name: str) -> str:
    return f"{name}/camera_optical_link"


def camera_of_image_topic(topic: str) -> str | None:
    """``/sensing/camera/<name>/image_raw`` -> ``<name>``; None for another layout."""
    parts = topic.strip("/").split("/")
    if len(parts) == 4 and parts[:2] == ["sensing", "camera"] and parts[3] == "image_raw":
        return parts[2]
    return None


# --------------------------------------------------------------------------------------------- messages
def image_message(image: np.ndarray, stamp_ns: int, frame_id: str) -> Any:
    """(H, W, 3) uint8 BGR -> a ``rosbags`` sensor_msgs/Image, ``bgr8``, rows packed."""
    img = np.ascontiguousarray(image, np.uint8)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"image_message: expected (H, W, 3) BGR, got shape {img.shape}")
    h, w = img.shape[:2]
    return typestore().types[IMAGE](header=_header(stamp_ns, frame_id), height=h, width=w, encoding="bgr8",
                                    is_bigendian=0, step=3 * w, data=img.reshape(-1))


def image_to_bgr(msg: Any) -> np.ndarray:
    """sensor_msgs/Image (``bgr8``, ``rgb8`` or ``mono8``; any ``step`` >= the packed row) -> (H, W, 3) uint8 BGR.

    ``bgr8`` with packed rows is a view of the message's bytes (no copy). ValueError on a layout that can't be
    trusted (unknown encoding, step too small, data shorter than step x height)."""
    enc = str(msg.encoding).lower()
    ch = _CHANNELS.get(enc)
    if ch is None:
        raise ValueError(f"encoding {msg.encoding!r} not supported (bgr8, rgb8, mono8)")
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h <= 0 or w <= 0:
        raise ValueError(f"empty image ({w}x{h})")
    if step < w * ch:
        raise ValueError(f"step {step} < width {w} x {ch} channels")
    data = msg.data
    buf = data if isinstance(data, np.ndarray) else np.frombuffer(memoryview(data), np.uint8)
    if len(buf) < step * h:
        raise ValueError(f"data holds {len(buf)} bytes, less than step {step} x height {h}")
    rows = np.asarray(buf[: step * h], np.uint8).reshape(h, step)[:, : w * ch]
    img = rows.reshape(h, w, ch)
    if enc == "rgb8":
        return np.ascontiguousarray(img[:, :, ::-1])
    if enc == "mono8":
        return np.repeat(img, 3, axis=2)
    return img if step == w * ch else np.ascontiguousarray(img)


def camera_info_message(K: np.ndarray, width: int, height: int, stamp_ns: int, frame_id: str) -> Any:
    """sensor_msgs/CameraInfo of an undistorted pinhole camera: K, R = I, P = [K | 0], plumb_bob, D = 5 zeros."""
    K = np.asarray(K, np.float64).reshape(3, 3)
    P = np.zeros((3, 4))
    P[:, :3] = K
    t = typestore().types
    return t[CAMERA_INFO](header=_header(stamp_ns, frame_id), height=int(height), width=int(width),
                          distortion_model="plumb_bob", d=np.zeros(5), k=K.ravel().copy(), r=np.eye(3).ravel(),
                          p=P.ravel(), binning_x=0, binning_y=0,
                          roi=t["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0,
                                                                   do_rectify=False))


def detections2d_message(boxes: np.ndarray, labels: np.ndarray, scores: np.ndarray, stamp_ns: int,
                         frame_id: str) -> Any:
    """Boxes [K, 4] xyxy pixels, labels [K], scores [K] -> a ``rosbags`` awml_deploy_msgs/Detections2D."""
    t = typestore().types
    Det = t["awml_deploy_msgs/msg/Detection2D"]
    dets = [Det(label=int(lab), score=float(s), x_min=float(b[0]), y_min=float(b[1]), x_max=float(b[2]),
                y_max=float(b[3]))
            for b, lab, s in zip(np.asarray(boxes, np.float32).reshape(-1, 4), labels, scores)]
    return t[DETECTIONS2D](header=_header(stamp_ns, frame_id), detections=dets)


@dataclass
class Boxes2D:
    """What a Detections2D message holds: boxes [K, 4] float32 xyxy, labels [K] int64, scores [K] float32."""

    boxes: np.ndarray
    labels: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)


def detections2d_to_arrays(msg: Any) -> Boxes2D:
    """A Detections2D (``rosbags`` or rclpy message) -> arrays, in message order, float32 as sent."""
    d = msg.detections
    return Boxes2D(np.array([[x.x_min, x.y_min, x.x_max, x.y_max] for x in d], np.float32).reshape(-1, 4),
                   np.array([x.label for x in d], np.int64), np.array([x.score for x in d], np.float32))


# --------------------------------------------------------------------------------------------- reading
def read_images(reader: BagReader, topic: str) -> Any:
    """(header stamp ns, log time ns, (H, W, 3) uint8 BGR, writable: a copy where decoding gave a view of the
    bag's bytes) for every image on ``topic``."""
    for stamp_ns, log_ns, img in read_decoded(reader, topic, (IMAGE,), "camera", "image", image_to_bgr):
        yield stamp_ns, log_ns, img if img.flags.writeable else img.copy()


def read_detections2d(reader: BagReader, topic: str, role: str = "ground-truth") -> list[tuple[int, Boxes2D]]:
    """(header stamp ns, arrays) for every Detections2D message on ``topic``."""
    msgtype = reader.require(topic, (DETECTIONS2D,), role)
    return [(stamp_to_ns(m.header.stamp), detections2d_to_arrays(m))
            for m in (reader.deserialize(raw, msgtype, topic, i) for i, (_, raw) in enumerate(reader.messages(topic)))]


def labels_to_model(labels: np.ndarray, source_names: Sequence[str], class_names: Sequence[str]) -> np.ndarray:
    """Class indices in ``source_names`` -> indices in ``class_names`` by name; -1 where the model lacks the class."""
    lut = np.array([list(class_names).index(n) if n in class_names else -1 for n in source_names], np.int64)
    labels = np.asarray(labels, np.int64)
    ok = (labels >= 0) & (labels < len(lut))
    out = np.full(len(labels), -1, np.int64)
    out[ok] = lut[labels[ok]]
    return out


__all__ = ["Boxes2D", "CAMERA_INFO", "CAMERA_INFO_FILE", "DETECTIONS2D", "GT_IGNORE_SCORE", "GT_SCORE", "IMAGE",
           "camera_info_message", "camera_info_topic", "camera_name", "camera_of_image_topic", "detections2d_message",
           "detections2d_to_arrays", "gt2d_topic", "image_message", "image_to_bgr", "image_topic", "labels_to_model",
           "optical_frame", "read_detections2d", "read_images"]
