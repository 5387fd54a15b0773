"""Bags without ROS: message definitions, PointCloud2 <-> numpy, DetectedObjects <-> Boxes3D, synthetic drives."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from awml_deploy_core import labels
from awml_deploy_core.data import msg_definitions as md
from awml_deploy_core.data.info_dataset import InfoDataset
from awml_deploy_core.data.rosbag_io import (
    DEFAULT_GT_TOPIC, DEFAULT_LIDAR_TOPIC, POINTCLOUD2, BagReader, BagWriter, cloud_fields, cloud_message,
    cloud_to_points, detected_objects_message, detected_objects_to_boxes, read_clouds, read_detected_objects,
    typestore, write_synthetic_bag)
from awml_deploy_core.errors import ConfigError, DatasetError
from awml_deploy_core.evaluate import scored_gt
from awml_deploy_core.structures import Boxes3D

ROOT = Path(__file__).resolve().parents[2]
MSG_DIR = ROOT / "awml_deploy_msgs" / "msg"
CLASSES = ("car", "truck", "bus", "bicycle", "pedestrian")


# --------------------------------------------------------------------------------------------- definitions
def test_msg_definitions_equal_msg_files():
    files = sorted(MSG_DIR.glob("*.msg"))
    assert files, f"no .msg files in {MSG_DIR}"
    assert sorted(md.MSG_DEFINITIONS) == sorted(f"awml_deploy_msgs/msg/{f.stem}" for f in files), \
        "msg_definitions.MSG_DEFINITIONS must hold every awml_deploy_msgs/msg/*.msg file"
    for f in files:
        assert md.MSG_DEFINITIONS[f"awml_deploy_msgs/msg/{f.stem}"] == f.read_text(), \
            f"{f.name} changed: paste it into awml_deploy_core/data/msg_definitions.py"


def test_autoware_labels_from_msg_constants():
    assert labels.AUTOWARE_LABELS == {"unknown": 0, "car": 1, "truck": 2, "bus": 3, "trailer": 4, "motorcycle": 5,
                                      "bicycle": 6, "pedestrian": 7}
    assert labels.autoware_label("Pedestrian") == 7 and labels.autoware_label("motorbike") == 5
    assert labels.autoware_label("barrier") == 0


def test_type_hash_equals_rosidl():
    """The RIHS01 hash rosbags computes from our text equals the one rosidl generated (bags play in ROS 2)."""
    share = ROOT / "install" / "awml_deploy_msgs" / "share" / "awml_deploy_msgs" / "msg"
    if not share.is_dir():
        pytest.skip("awml_deploy_msgs is not built (colcon build)")
    for name in ("DetectedObject", "DetectedObjects", "InferenceStats"):
        desc = json.loads((share / f"{name}.json").read_text())
        expected = next(h["hash_string"] for h in desc["type_hashes"] if h["type_name"].endswith(f"/{name}"))
        assert typestore().hash_rihs01(f"awml_deploy_msgs/msg/{name}") == expected


# --------------------------------------------------------------------------------------------- clouds
def _roundtrip(msg, msgtype):
    store = typestore()
    return store.deserialize_cdr(store.serialize_cdr(msg, msgtype), msgtype)


def test_cloud_roundtrip_layout_and_values():
    rng = np.random.default_rng(0)
    n = 1000
    pts = rng.normal(size=(n, 4)).astype(np.float32)
    ring = rng.integers(0, 128, n).astype(np.uint16)
    t = rng.random(n).astype(np.float32)
    msg = _roundtrip(cloud_message(pts, 1_700_000_000_123_456_789, ring, t), POINTCLOUD2)
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (1_700_000_000, 123_456_789)
    assert msg.point_step == 24 and msg.row_step == 24 * n and not msg.is_bigendian and msg.height == 1
    assert [(f.name, f.offset, f.datatype) for f in msg.fields] == [
        ("x", 0, 7), ("y", 4, 7), ("z", 8, 7), ("intensity", 12, 7), ("ring", 16, 4), ("time", 20, 7)]
    view = cloud_fields(msg)
    assert np.array_equal(view["ring"], ring) and np.array_equal(view["time"], t)
    out = cloud_to_points(msg)
    assert out.dtype == np.float32 and out.shape == (n, 5)
    assert np.array_equal(out[:, :4], pts) and not out[:, 4].any()  # time_lag 0: one sweep


def test_cloud_reader_other_layouts():
    """Big-endian, float64 x/y/z, uint8 intensity, organized with row padding: read without per-point Python."""
    store = typestore()
    T = store.types
    width, height, step, pad = 3, 2, 32, 8
    dt = np.dtype({"names": ["x", "y", "z", "intensity"], "formats": [">f8", ">f8", ">f8", "u1"],
                   "offsets": [0, 8, 16, 24], "itemsize": step})
    arr = np.zeros((height, width), dt)
    arr["x"] = np.arange(6).reshape(2, 3)
    arr["y"], arr["z"], arr["intensity"] = 1.5, -2.0, 200
    rows = b"".join(arr[r].tobytes() + b"\xff" * pad for r in range(height))
    fields = [T["sensor_msgs/msg/PointField"](name=n, offset=o, datatype=d, count=1)
              for n, o, d in (("x", 0, 8), ("y", 8, 8), ("z", 16, 8), ("intensity", 24, 2))]
    msg = T[POINTCLOUD2](header=T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=1, nanosec=2),
                                                         frame_id="lidar"),
                         height=height, width=width, fields=fields, is_bigendian=True, point_step=step,
                         row_step=width * step + pad, data=np.frombuffer(rows, np.uint8), is_dense=True)
    out = cloud_to_points(_roundtrip(msg, POINTCLOUD2))
    assert np.array_equal(out[:, 0], np.arange(6, dtype=np.float32))
    assert (out[:, 1] == 1.5).all() and (out[:, 2] == -2.0).all() and (out[:, 3] == 200).all()
    msg.data = msg.data[:-40]
    with pytest.raises(ValueError, match="less than"):
        cloud_to_points(msg)
    msg.fields = fields[1:]
    msg.data = np.frombuffer(rows, np.uint8)
    with pytest.raises(ValueError, match="no field 'x'"):
        cloud_to_points(msg)


def test_cloud_decode_is_fast():
    """Decoding a 135k-point cloud from CDR bytes costs well under the pipeline's time (no per-point work)."""
    n = 135_000
    pts = np.random.default_rng(1).normal(size=(n, 4)).astype(np.float32)
    raw = bytes(typestore().serialize_cdr(cloud_message(pts, 0), POINTCLOUD2))
    t = time.perf_counter()
    for _ in range(10):
        out = cloud_to_points(typestore().deserialize_cdr(raw, POINTCLOUD2))
    per = (time.perf_counter() - t) / 10
    assert np.array_equal(out[:, :4], pts)
    assert per < 0.02, f"decoding took {per * 1e3:.1f} ms per cloud"


# --------------------------------------------------------------------------------------------- detections
def _boxes() -> Boxes3D:
    return Boxes3D(boxes=np.array([[1, 2, 0.5, 4.5, 1.9, 1.6, 0.3], [-10, 5, 0.9, 0.7, 0.6, 1.7, -2.5],
                                   [30, -3, 1.2, 10, 2.5, 3.2, 3.1]], np.float32),
                   scores=np.array([0.9, 0.45, 0.7], np.float32), labels=np.array([0, 4, 1]),
                   velocities=np.array([[1, 0], [0, -1.5], [3, 3]], np.float32))


def _to_dict(obj):
    if hasattr(obj, "__dataclass_fields__"):
        return {k: _to_dict(getattr(obj, k)) for k in obj.__dataclass_fields__
                if not k.isupper() and k != "__msgtype__"}
    if isinstance(obj, list):
        return [_to_dict(v) for v in obj]
    return obj


def test_detected_objects_roundtrip_message_and_dict():
    b = _boxes()
    msg = _roundtrip(detected_objects_message(b, CLASSES, 5_000_000_001), md.DETECTED_OBJECTS)
    assert [o.label for o in msg.objects] == [1, 7, 2]
    assert msg.objects[0].dimensions.x == pytest.approx(4.5) and msg.objects[0].has_velocity
    for back in (detected_objects_to_boxes(msg, CLASSES), detected_objects_to_boxes(_to_dict(msg), CLASSES)):
        assert np.array_equal(back.labels, b.labels) and np.array_equal(back.scores, b.scores)
        np.testing.assert_allclose(back.boxes, b.boxes, atol=1e-6)
        np.testing.assert_allclose(back.velocities, b.velocities, atol=1e-6)
    # labels go back by name; a label the model's classes don't have is dropped
    back = detected_objects_to_boxes(msg, ("pedestrian", "car"))
    assert back.labels.tolist() == [1, 0] and len(back) == 2
    nov = _roundtrip(detected_objects_message(b, CLASSES, 0, with_velocity=False), md.DETECTED_OBJECTS)
    assert not detected_objects_to_boxes(nov, CLASSES).velocities.any()
    assert len(detected_objects_to_boxes(_roundtrip(detected_objects_message(Boxes3D(), CLASSES, 0),
                                                    md.DETECTED_OBJECTS), CLASSES)) == 0


def test_rclpy_reads_our_bytes():
    """Bytes written here deserialize with rclpy into the generated awml_deploy_msgs class (when available)."""
    try:
        from rclpy.serialization import deserialize_message
        from awml_deploy_msgs.msg import DetectedObjects
    except ImportError:
        pytest.skip("rclpy / awml_deploy_msgs not importable here")
    raw = bytes(typestore().serialize_cdr(detected_objects_message(_boxes(), CLASSES, 7), md.DETECTED_OBJECTS))
    msg = deserialize_message(raw, DetectedObjects)
    assert [o.label for o in msg.objects] == [1, 7, 2] and msg.header.stamp.nanosec == 7


# --------------------------------------------------------------------------------------------- bags
@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_synthetic_bag(tmp_path, storage):
    bag = write_synthetic_bag(tmp_path / "drive", 0.5, seed=3, storage=storage, progress=False)
    assert bag.frames == 5 and bag.path.is_dir() and (bag.path / "metadata.yaml").exists()
    assert not [p for p in tmp_path.iterdir() if p.name != "drive"], "temporary folder left behind"
    ds = InfoDataset(bag.info_path, class_names=CLASSES)
    with BagReader(bag.path) as r:
        assert r.topics[DEFAULT_LIDAR_TOPIC].msgtype == POINTCLOUD2 and r.topics[DEFAULT_LIDAR_TOPIC].count == 5
        assert r.topics[DEFAULT_GT_TOPIC].msgtype == md.DETECTED_OBJECTS
        clouds = list(read_clouds(r, DEFAULT_LIDAR_TOPIC))
        gts = read_detected_objects(r, DEFAULT_GT_TOPIC, CLASSES)
    stamps = [c[0] for c in clouds]
    assert stamps == [1_700_000_000_000_000_000 + i * 100_000_000 for i in range(5)]
    assert [c[1] - c[0] for c in clouds] == [40_000_000] * 5  # recorded 40 ms after the stamp
    assert [g[0] for g in gts] == stamps
    for (stamp, _, points), (_, gt), i in zip(clouds, gts, range(5)):
        sample = ds[i]
        assert np.array_equal(points, sample.points)  # the same input as the info dataset, bit for bit
        ref = scored_gt(sample)
        assert np.array_equal(gt.labels, ref.labels)
        np.testing.assert_allclose(gt.boxes, ref.boxes, atol=1e-5)
    with pytest.raises(ConfigError, match="exists already"):
        write_synthetic_bag(bag.path, 0.5, seed=3, progress=False)


def test_reader_errors_name_bag_and_topic(tmp_path):
    bag = write_synthetic_bag(tmp_path / "b", 0.2, seed=1, progress=False)
    with BagReader(bag.path) as r:
        with pytest.raises(DatasetError, match=r"no lidar topic '/nope'.*topics in the bag: /awml/ground_truth/"):
            r.require("/nope", (POINTCLOUD2,), "lidar")
        with pytest.raises(DatasetError, match="carries awml_deploy_msgs/msg/DetectedObjects, expected sensor_msgs"):
            list(read_clouds(r, DEFAULT_GT_TOPIC))
    # a recorder that died before writing metadata.yaml: the storage file is read directly
    (bag.path / "metadata.yaml").unlink()
    with BagReader(bag.path) as r:
        assert len(list(read_clouds(r, DEFAULT_LIDAR_TOPIC))) == 2
    mcap = next(bag.path.glob("*.mcap"))
    mcap.write_bytes(mcap.read_bytes()[: mcap.stat().st_size // 2])
    with pytest.raises(DatasetError) as info:
        BagReader(bag.path)
    assert str(bag.path) in str(info.value) and "truncated" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(DatasetError, match="not found"):
        BagReader(tmp_path / "missing")


def test_writer_rejects_unknown_storage(tmp_path):
    with pytest.raises(ConfigError, match="storage 'rosbag1'"):
        BagWriter(tmp_path / "x", "rosbag1")
