"""A synthetic drive for the calibration-status classifier as a rosbag2: lidar, camera Image and CameraInfo at
10 Hz, with a segment driven by a camera that is NOT where the nominal extrinsic says; labels in a sidecar file.

What is physically right: the classifier (and the node) is always given the *nominal* extrinsic, the one the
vehicle was calibrated with. In the miscalibrated segment [a, b) the camera has physically moved: its *true*
extrinsic is the nominal one perturbed by a known rotation and translation
(:func:`~awml_deploy_core.data.calibration_pairs.perturb_extrinsic`), and the images of those frames are
rendered from that true pose, while the lidar (the reference) is unchanged. Projecting the lidar with the nominal
extrinsic then misses the image exactly by that perturbation. Each frame's label follows from the error between
nominal and true extrinsic with the model config's thresholds (``label_of``: miscalibrated above either threshold,
calibrated below half of both, ambiguous between).

Sidecar ``<bag>/calibration_labels.json``: topics, frames, ``K``, the nominal extrinsic (row-major 4x4, lidar ->
camera optical), the segment and its perturbation, and per frame: index, header stamp (the cloud's, the image's and
the camera info's are equal: one instant), rotation/translation error, label.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..bundle import atomic_write_json
from ..errors import ConfigError, DatasetError
from .rosbag_io import (
    DEFAULT_LIDAR_TOPIC,
    POINTCLOUD2,
    SYNTHETIC_RECORD_DELAY_NS,
    SYNTHETIC_START_S,
    STORAGES,
    BagReader,
    BagWriter,
    _header,
    cloud_message,
    cloud_to_points,
    seconds_to_ns,
    stamp_to_ns,
    typestore,
)

IMAGE = "sensor_msgs/msg/Image"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
DEFAULT_IMAGE_TOPIC = "/sensing/camera/camera0/image_rect_color"
DEFAULT_CAMERA_INFO_TOPIC = "/sensing/camera/camera0/camera_info"
LIDAR_FRAME = "lidar_top"
CAMERA_FRAME = "camera0/camera_optical_link"
LABELS_FILE = "calibration_labels.json"
LABELS_VERSION = "awml_deploy-calibration-drive-1"


@dataclass
class CalibrationDrive:
    path: Path
    labels_path: Path
    frames: int
    storage: str
    topics: dict[str, str]
    miscalibrated_frames: tuple[int, int]


def image_message(image_bgr: np.ndarray, stamp_ns: int, frame_id: str) -> Any:
    h, w = image_bgr.shape[:2]
    return typestore().types[IMAGE](header=_header(stamp_ns, frame_id), height=h, width=w, encoding="bgr8",
                                    is_bigendian=0, step=3 * w,
                                    data=np.frombuffer(np.ascontiguousarray(image_bgr).tobytes(), np.uint8))


def camera_info_message(K: np.ndarray, width: int, height: int, stamp_ns: int, frame_id: str) -> Any:
    t = typestore().types
    K = np.asarray(K, np.float64)
    P = np.zeros((3, 4))
    P[:, :3] = K
    return t[CAMERA_INFO](
        header=_header(stamp_ns, frame_id), height=height, width=width, distortion_model="plumb_bob",
        d=np.zeros(5), k=K.reshape(-1), r=np.eye(3).reshape(-1), p=P.reshape(-1), binning_x=0, binning_y=0,
        roi=t["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))


def write_calibration_drive(out: str | Path, seconds: float, seed: int, miscalibrated: tuple[int, int],
                            rotation_deg: float = 3.0, translation_m: float = 0.1, storage: str = "mcap",
                            lidar_topic: str = DEFAULT_LIDAR_TOPIC, image_topic: str = DEFAULT_IMAGE_TOPIC,
                            camera_info_topic: str = DEFAULT_CAMERA_INFO_TOPIC, progress: bool = True,
                            miscalibration: Any = None) -> CalibrationDrive:
    """Frames ``[a, b)`` of ``miscalibrated`` are seen by a camera whose true extrinsic is the nominal one off by
    ``rotation_deg`` / ``translation_m`` (axes from ``seed``); every other frame by the nominal camera. Written
    into a temporary folder and renamed into place."""
    from ..config import MiscalibrationConfig
    from .calibration_pairs import extrinsic_error, label_of, perturb_extrinsic
    from .camera import CameraSpec, render_frame
    from .lidar import LidarSpec
    from .synthetic import build_layout, generate_sequence

    out = Path(out)
    if out.exists():
        raise ConfigError(f"{out} exists already; remove it or choose another output path")
    if not seconds > 0:
        raise ConfigError(f"--seconds must be > 0, got {seconds}")
    if storage not in STORAGES:
        raise ConfigError(f"storage {storage!r} not supported; choose one of {', '.join(STORAGES)}")
    lidar = LidarSpec()
    num_frames = max(1, int(round(seconds / lidar.sweep_period)))
    a, b = (int(v) for v in miscalibrated)
    if not 0 <= a <= b <= num_frames:
        raise ConfigError(f"--miscalibrated-frames {a}:{b} must lie within the drive's 0..{num_frames} frames")
    if rotation_deg < 0 or translation_m < 0:
        raise ConfigError(f"miscalibration {rotation_deg} deg, {translation_m} m: must be >= 0")
    thresholds = miscalibration or MiscalibrationConfig()
    nominal = CameraSpec()
    T_nom = nominal.T_cam_lidar
    T_bad = perturb_extrinsic(T_nom, rotation_deg, translation_m, seed)
    moved = CameraSpec(extrinsic=tuple(float(v) for v in T_bad.ravel()))
    rot_err, trans_err = extrinsic_error(T_nom, T_bad)
    bad_label = label_of(rot_err, trans_err, thresholds)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    bag_dir = tmp / out.name
    topics = {"lidar": lidar_topic, "image": image_topic, "camera_info": camera_info_topic}
    frames: list[dict[str, Any]] = []
    layout = build_layout(seed, num_frames, lidar)
    it: Iterator[Any] = generate_sequence(seed, num_frames, lidar, start_time=SYNTHETIC_START_S)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, total=num_frames, desc=f"make-bag {out.name}", unit="frame")
    try:
        with BagWriter(bag_dir, storage) as bag:
            bag.add_topic(lidar_topic, POINTCLOUD2)
            bag.add_topic(image_topic, IMAGE)
            bag.add_topic(camera_info_topic, CAMERA_INFO)
            for k, frame in enumerate(it):
                stamp = seconds_to_ns(frame.timestamp)
                bad = a <= k < b
                cam = render_frame(layout, k, moved if bad else nominal, frame.timestamp)
                log_ns = stamp + SYNTHETIC_RECORD_DELAY_NS
                bag.write(lidar_topic, log_ns, cloud_message(frame.points, stamp, frame.ring, frame.time, LIDAR_FRAME))
                bag.write(image_topic, log_ns, image_message(cam.image, stamp, CAMERA_FRAME))
                bag.write(camera_info_topic, log_ns, camera_info_message(nominal.K, nominal.width, nominal.height,
                                                                         stamp, CAMERA_FRAME))
                frames.append({"index": k, "stamp_ns": stamp, "rotation_deg": rot_err if bad else 0.0,
                               "translation_m": trans_err if bad else 0.0,
                               "label": bad_label if bad else "calibrated"})
        atomic_write_json(bag_dir / LABELS_FILE, {
            "version": LABELS_VERSION, "seed": seed, "topics": topics, "frames_count": len(frames),
            "lidar_frame": LIDAR_FRAME, "camera_frame": CAMERA_FRAME, "K": nominal.K.tolist(),
            "image_size": [nominal.height, nominal.width],
            "nominal_extrinsic": [float(v) for v in T_nom.ravel()],
            "miscalibrated_frames": [a, b], "perturbation": {"rotation_deg": rotation_deg,
                                                             "translation_m": translation_m,
                                                             "true_extrinsic": [float(v) for v in T_bad.ravel()]},
            "thresholds": {"rotation_deg": thresholds.rotation_threshold_deg,
                           "translation_m": thresholds.translation_threshold_m},
            "frames": frames})
        os.replace(bag_dir, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return CalibrationDrive(out, out / LABELS_FILE, len(frames), storage, topics, (a, b))


def read_labels(bag: str | Path) -> dict[str, Any]:
    path = Path(bag) / LABELS_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise DatasetError(f"bag {bag}: no {LABELS_FILE}; write the drive with `awml-deploy make-bag --calibration-drive`") from None
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    if data.get("version") != LABELS_VERSION:
        raise DatasetError(f"{path}: version {data.get('version')!r}, expected {LABELS_VERSION!r}")
    return data


@dataclass
class DrivePair:
    stamp_ns: int
    image: np.ndarray  # (H, W, 3) uint8 BGR
    points: np.ndarray  # (N, 5) float32, as the node builds them
    K: np.ndarray


def read_drive_pairs(bag: str | Path, labels: dict[str, Any] | None = None) -> Iterator[DrivePair]:
    """The drive's (cloud, image, camera info) of equal stamps, in stamp order, decoded as the node decodes them."""
    labels = labels or read_labels(bag)
    topics = labels["topics"]
    with BagReader(bag) as reader:
        clouds: dict[int, np.ndarray] = {}
        images: dict[int, np.ndarray] = {}
        infos: dict[int, np.ndarray] = {}
        msgtype = reader.require(topics["lidar"], (POINTCLOUD2,), "lidar")
        for i, (_, raw) in enumerate(reader.messages(topics["lidar"])):
            msg = reader.deserialize(raw, msgtype, topics["lidar"], i)
            clouds[stamp_to_ns(msg.header.stamp)] = cloud_to_points(msg)
        msgtype = reader.require(topics["image"], (IMAGE,), "image")
        for i, (_, raw) in enumerate(reader.messages(topics["image"])):
            msg = reader.deserialize(raw, msgtype, topics["image"], i)
            if msg.encoding != "bgr8" or msg.step != 3 * msg.width:
                raise DatasetError(f"bag {bag}: image {i} is {msg.encoding} (step {msg.step}); expected packed bgr8")
            images[stamp_to_ns(msg.header.stamp)] = np.asarray(msg.data, np.uint8).reshape(msg.height, msg.width, 3)
        msgtype = reader.require(topics["camera_info"], (CAMERA_INFO,), "camera info")
        for i, (_, raw) in enumerate(reader.messages(topics["camera_info"])):
            msg = reader.deserialize(raw, msgtype, topics["camera_info"], i)
            infos[stamp_to_ns(msg.header.stamp)] = np.asarray(msg.k, np.float64).reshape(3, 3)
    for stamp in sorted(set(clouds) & set(images) & set(infos)):
        yield DrivePair(stamp, images[stamp], clouds[stamp], infos[stamp])
