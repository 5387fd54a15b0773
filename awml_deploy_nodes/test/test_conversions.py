"""conversions.py: PointCloud2 <-> numpy and Boxes3D <-> detection messages. Plain pytest, no nodes."""

from __future__ import annotations

import array
import math
import sys
import types

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from sensor_msgs.msg import PointCloud2, PointField
from std_msgs.msg import Header

from awml_deploy_core.structures import Boxes3D
from awml_deploy_msgs.msg import DetectedObject, DetectedObjects
from awml_deploy_nodes.conversions import (
    CLASS_TO_AUTOWARE_LABEL,
    MALFORMED_KINDS,
    MalformedCloudError,
    array_to_pointcloud2,
    autoware_labels,
    benchmark,
    boxes_to_detected_objects,
    detected_objects_to_boxes,
    pointcloud2_to_array,
    pointcloud2_to_xyzit,
    to_autoware_detected_objects,
    wrap_angle,
    yaw_from_quaternion,
)

F32, F64, U8, U16, I32 = PointField.FLOAT32, PointField.FLOAT64, PointField.UINT8, PointField.UINT16, PointField.INT32
_NP = {
    PointField.INT8: "i1", U8: "u1", PointField.INT16: "i2", U16: "u2",
    I32: "i4", PointField.UINT32: "u4", F32: "f4", F64: "f8",
}


def raw_cloud(
    fields: list[tuple[str, int, int]],
    values: dict[str, np.ndarray],
    point_step: int,
    height: int = 1,
    row_pad: int = 0,
    big_endian: bool = False,
    fill: int = 0xAB,
) -> PointCloud2:
    """A cloud written byte by byte: fields (name, offset, datatype), values (height * width,) per field.

    Unwritten bytes (padding inside points and at row ends) hold ``fill`` so that reading them shows.
    """
    n = len(next(iter(values.values())))
    width = n // height
    row_step = width * point_step + row_pad
    buf = np.full(row_step * height, fill, dtype=np.uint8)
    order = ">" if big_endian else "<"
    for name, offset, datatype in fields:
        if name not in values:
            continue
        dt = np.dtype(order + _NP[datatype])
        col = np.ndarray(
            (height, width), dt, buffer=buf, offset=offset, strides=(row_step, point_step)
        )
        col[...] = np.asarray(values[name]).reshape(height, width)
    msg = PointCloud2()
    msg.header = Header(frame_id="lidar")
    msg.height, msg.width = height, width
    msg.fields = [PointField(name=n_, offset=o, datatype=d, count=1) for n_, o, d in fields]
    msg.is_bigendian = big_endian
    msg.point_step, msg.row_step = point_step, row_step
    data = array.array("B")
    data.frombytes(buf)
    msg.data = data
    return msg


def random_xyzi(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-80, 80, size=(n, 4)).astype(np.float32)


XYZI = [("x", 0, F32), ("y", 4, F32), ("z", 8, F32), ("intensity", 12, F32)]


def xyzi_values(pts: np.ndarray) -> dict[str, np.ndarray]:
    return {"x": pts[:, 0], "y": pts[:, 1], "z": pts[:, 2], "intensity": pts[:, 3]}


def expected(pts: np.ndarray) -> np.ndarray:
    out = np.zeros((len(pts), 5), np.float32)
    out[:, :4] = pts[:, :4]
    return out


# ---------------------------------------------------------------- point clouds: round trips


def test_round_trip_float32_xyzi():
    pts = random_xyzi(1000)
    msg = array_to_pointcloud2(pts, "lidar", Time(sec=5, nanosec=7))
    assert isinstance(msg.data, array.array)
    assert (msg.height, msg.width, msg.point_step, msg.row_step) == (1, 1000, 16, 16000)
    assert [f.name for f in msg.fields] == ["x", "y", "z", "intensity"]
    assert msg.header.frame_id == "lidar" and msg.header.stamp.sec == 5 and msg.is_dense
    out, info = pointcloud2_to_xyzit(msg)
    assert out.dtype == np.float32 and out.shape == (1000, 5) and out.flags.c_contiguous
    np.testing.assert_array_equal(out, expected(pts))
    assert (info.num_points_in, info.num_points, info.non_finite) == (1000, 1000, 0)
    assert info.intensity_dtype == "float32" and not info.organized


def test_any_field_order_extra_fields_and_padding():
    pts = random_xyzi(257, seed=1)
    ring = np.arange(257) % 32
    # intensity first, y before x, an extra field, 6 padding bytes inside each 32-byte point.
    fields = [("intensity", 0, F32), ("z", 4, F32), ("ring", 8, U16), ("y", 12, F32), ("x", 20, F32)]
    msg = raw_cloud(fields, {**xyzi_values(pts), "ring": ring}, point_step=32)
    msg.fields = list(reversed(msg.fields))  # the list order must not matter either
    out, _ = pointcloud2_to_xyzit(msg)
    np.testing.assert_array_equal(out, expected(pts))
    view = pointcloud2_to_array(msg)
    assert set(view.dtype.names) == {"x", "y", "z", "intensity"}  # ring not asked for
    assert view.dtype.itemsize == 32
    np.testing.assert_array_equal(view["x"], pts[:, 0])
    with_ring = pointcloud2_to_array(msg, optional=("ring",))
    np.testing.assert_array_equal(with_ring["ring"], ring)


def test_structured_array_round_trip_keeps_layout():
    dt = np.dtype(
        {
            "names": ["y", "x", "z", "t"],
            "formats": ["<f4", "<f4", "<f4", "<f8"],
            "offsets": [0, 4, 8, 16],
            "itemsize": 32,
        }
    )
    a = np.zeros(50, dt)
    a["x"], a["y"], a["z"], a["t"] = np.arange(50), -np.arange(50), 1.5, 0.25
    msg = array_to_pointcloud2(a, "f")
    layout = [(f.name, f.offset, f.datatype) for f in msg.fields]
    assert layout == [("y", 0, F32), ("x", 4, F32), ("z", 8, F32), ("t", 16, F64)]
    assert msg.point_step == 32
    back = pointcloud2_to_array(msg)
    for name in dt.names:
        np.testing.assert_array_equal(back[name], a[name])
    out, info = pointcloud2_to_xyzit(msg)
    assert info.intensity_dtype is None
    np.testing.assert_array_equal(out[:, 3:], 0.0)  # no intensity field -> 0; time_lag always 0


def test_view_is_zero_copy_and_read_only():
    msg = array_to_pointcloud2(random_xyzi(100), "lidar")
    view = pointcloud2_to_array(msg)
    assert np.shares_memory(view, np.frombuffer(msg.data, np.uint8))
    assert not view.flags.writeable


def test_data_as_bytes_is_accepted():
    pts = random_xyzi(10)
    msg = array_to_pointcloud2(pts)
    msg_bytes = types.SimpleNamespace(**{k: getattr(msg, k) for k in msg.get_fields_and_field_types()})
    msg_bytes.data = bytes(msg.data)
    out, _ = pointcloud2_to_xyzit(msg_bytes)
    np.testing.assert_array_equal(out, expected(pts))


@pytest.mark.parametrize("row_pad", [0, 8])
def test_organized_cloud_flattened_row_major(row_pad):
    h, w = 3, 5
    pts = random_xyzi(h * w, seed=2)
    msg = raw_cloud(XYZI, xyzi_values(pts), point_step=16, height=h, row_pad=row_pad)
    assert msg.row_step == w * 16 + row_pad
    out, info = pointcloud2_to_xyzit(msg)
    np.testing.assert_array_equal(out, expected(pts))
    assert info.organized and (info.height, info.width) == (h, w)
    view = pointcloud2_to_array(msg)
    assert view.shape == (h * w,)
    np.testing.assert_array_equal(view["z"], pts[:, 2])


def test_organized_from_array_h_w_k():
    pts = random_xyzi(12, seed=3).reshape(3, 4, 4)
    msg = array_to_pointcloud2(pts, "lidar")
    assert (msg.height, msg.width, msg.row_step) == (3, 4, 64)
    out, _ = pointcloud2_to_xyzit(msg)
    np.testing.assert_array_equal(out, expected(pts.reshape(-1, 4)))


def test_float64_xyz_accepted():
    pts = np.random.default_rng(4).uniform(-50, 50, size=(40, 4))
    fields = [("x", 0, F64), ("y", 8, F64), ("z", 16, F64), ("intensity", 24, F32)]
    msg = raw_cloud(fields, xyzi_values(pts), point_step=28)
    out, _ = pointcloud2_to_xyzit(msg)
    np.testing.assert_array_equal(out, expected(pts.astype(np.float32)))
    assert pointcloud2_to_array(msg).dtype["x"] == np.float64  # the view keeps the message's type


def test_uint8_intensity_autoware_xyzirc():
    pts = random_xyzi(64, seed=5)
    pts[:, 3] = np.arange(64) * 4  # 0..252
    fields = [
        ("x", 0, F32), ("y", 4, F32), ("z", 8, F32),
        ("intensity", 12, U8), ("return_type", 13, U8), ("channel", 14, U16),
    ]
    msg = raw_cloud(fields, {**xyzi_values(pts), "return_type": np.ones(64), "channel": np.arange(64)}, point_step=16)
    out, info = pointcloud2_to_xyzit(msg)
    np.testing.assert_array_equal(out, expected(pts))  # raw 0..255 values, no scaling
    assert info.intensity_dtype == "uint8"


def test_big_endian_cloud_is_byte_swapped():
    pts = random_xyzi(30, seed=6)
    msg = raw_cloud(XYZI, xyzi_values(pts), point_step=16, big_endian=True)
    out, info = pointcloud2_to_xyzit(msg)
    np.testing.assert_array_equal(out, expected(pts))
    assert info.byte_swapped == (sys.byteorder == "little")


# ---------------------------------------------------------------- point clouds: NaN, empty


def test_non_finite_points_dropped_and_counted():
    pts = random_xyzi(100, seed=7)
    pts[3, 0] = np.nan
    pts[10, 2] = np.inf
    pts[20, 1] = -np.inf
    pts[30, 3] = np.nan  # intensity
    pts[40, :3] = 3e38  # finite, though x + y + z overflows float32
    out, info = pointcloud2_to_xyzit(array_to_pointcloud2(pts))
    keep = np.ones(100, bool)
    keep[[3, 10, 20, 30]] = False
    np.testing.assert_array_equal(out, expected(pts[keep]))
    assert (info.num_points_in, info.num_points, info.non_finite) == (100, 96, 4)


def test_all_non_finite_gives_empty_not_error():
    pts = np.full((3, 4, 4), np.nan, np.float32)  # organized cloud that saw only sky
    msg = array_to_pointcloud2(pts)
    assert not msg.is_dense
    out, info = pointcloud2_to_xyzit(msg)
    assert out.shape == (0, 5) and out.dtype == np.float32
    assert (info.num_points_in, info.num_points, info.non_finite) == (12, 0, 12) and info.empty


@pytest.mark.parametrize("make", [PointCloud2, lambda: array_to_pointcloud2(np.zeros((0, 4), np.float32))])
def test_zero_points_is_valid(make):
    msg = make()
    out, info = pointcloud2_to_xyzit(msg)
    assert out.shape == (0, 5) and out.dtype == np.float32
    assert info.empty and info.num_points_in == 0
    assert len(pointcloud2_to_array(msg)) == 0


# ---------------------------------------------------------------- point clouds: malformed


def _good(n: int = 8) -> PointCloud2:
    return raw_cloud(XYZI, xyzi_values(random_xyzi(n)), point_step=16)


def _with_fields(*fields: tuple[str, int, int, int], point_step: int = 16) -> PointCloud2:
    msg = _good()
    msg.fields = [PointField(name=n, offset=o, datatype=d, count=c) for n, o, d, c in fields]
    msg.point_step = point_step
    return msg


def _set(msg: PointCloud2, **kw) -> PointCloud2:
    for k, v in kw.items():
        setattr(msg, k, v)
    return msg


def _truncated() -> PointCloud2:
    msg = _good()
    msg.data = msg.data[:-1]
    return msg


MALFORMED = {
    "duplicate_field": lambda: _with_fields(("x", 0, F32, 1), ("y", 4, F32, 1), ("z", 8, F32, 1), ("x", 12, F32, 1)),
    "unknown_datatype": lambda: _with_fields(("x", 0, F32, 1), ("y", 4, F32, 1), ("z", 8, F32, 1), ("extra", 12, 9, 1)),
    "bad_point_step": lambda: _set(_good(), point_step=0),
    "field_out_of_bounds": lambda: _set(_good(), point_step=12, row_step=96),
    "overlapping_fields": lambda: _with_fields(
        ("x", 0, F32, 1), ("y", 4, F32, 1), ("z", 8, F32, 1), ("intensity", 10, F32, 1)
    ),
    "missing_field": lambda: _with_fields(("x", 0, F32, 1), ("y", 4, F32, 1), ("intensity", 12, F32, 1)),
    "bad_count": lambda: _with_fields(("x", 0, F32, 2), ("y", 8, F32, 1), ("z", 12, F32, 1)),
    "bad_datatype": lambda: _with_fields(("x", 0, I32, 1), ("y", 4, F32, 1), ("z", 8, F32, 1)),
    "bad_row_step": lambda: _set(_good(), row_step=127),
    "too_many_points": lambda: _good(11),
    "truncated_data": _truncated,
}


def test_every_malformed_kind_is_tested():
    assert set(MALFORMED) == set(MALFORMED_KINDS)


@pytest.mark.parametrize("kind", sorted(MALFORMED))
@pytest.mark.parametrize("convert", ["xyzit", "array"])
def test_malformed_raises_with_kind(kind, convert):
    msg = MALFORMED[kind]()
    fn = pointcloud2_to_xyzit if convert == "xyzit" else pointcloud2_to_array
    with pytest.raises(MalformedCloudError) as err:
        fn(msg, max_points=10)
    assert err.value.kind == kind
    assert isinstance(err.value, ValueError) and kind in str(err.value)


def test_uint16_y_is_bad_datatype_but_uint16_extra_field_is_fine():
    with pytest.raises(MalformedCloudError, match="bad_datatype"):
        pointcloud2_to_xyzit(_with_fields(("x", 0, F32, 1), ("y", 4, U16, 1), ("z", 8, F32, 1)))
    msg = _with_fields(("x", 0, F32, 1), ("y", 4, F32, 1), ("z", 8, F32, 1), ("ring", 12, U16, 1))
    out, _ = pointcloud2_to_xyzit(msg)
    assert out.shape == (8, 5)


def test_max_points_default_and_override():
    msg = _good(11)
    assert len(pointcloud2_to_xyzit(msg)[0]) == 11  # default 2_000_000
    with pytest.raises(MalformedCloudError, match="too_many_points"):
        pointcloud2_to_xyzit(msg, max_points=10)


def test_trailing_bytes_ignored_and_reported():
    msg = _good()
    msg.data.extend(b"\0" * 5)
    out, info = pointcloud2_to_xyzit(msg)
    assert out.shape == (8, 5) and info.trailing_bytes == 5


def test_array_to_pointcloud2_rejects_bad_shapes():
    with pytest.raises(ValueError, match="len\\(fields\\)"):
        array_to_pointcloud2(np.zeros((5, 3), np.float32))
    with pytest.raises(ValueError):
        array_to_pointcloud2(np.zeros(5, np.float32), fields=("x",))


# ---------------------------------------------------------------- detections

NAMES = ["car", "truck", "bus", "bicycle", "pedestrian"]


def random_boxes(n: int, seed: int = 0, num_classes: int = 5) -> Boxes3D:
    rng = np.random.default_rng(seed)
    boxes = rng.uniform(-60, 60, size=(n, 7)).astype(np.float32)
    boxes[:, 3:6] = rng.uniform(0.3, 12, size=(n, 3))
    boxes[:, 6] = rng.uniform(-3.14, 3.14, n)  # inside (-pi, pi): exact round trip
    return Boxes3D(
        boxes=boxes,
        scores=rng.uniform(0, 1, n).astype(np.float32),
        labels=rng.integers(0, num_classes, n),
        velocities=rng.uniform(-20, 20, size=(n, 2)).astype(np.float32),
    )


def test_boxes_round_trip_exact():
    boxes = random_boxes(100)
    header = Header(frame_id="base_link", stamp=Time(sec=3, nanosec=4))
    msg = boxes_to_detected_objects(boxes, NAMES, header, with_velocity=True)
    assert isinstance(msg, DetectedObjects) and len(msg.objects) == 100
    assert msg.header.frame_id == "base_link" and msg.header.stamp.nanosec == 4
    o, b = msg.objects[0], boxes.boxes[0]
    assert (o.pose.orientation.x, o.pose.orientation.y) == (0.0, 0.0)
    assert o.pose.orientation.z == pytest.approx(math.sin(b[6] / 2))
    assert o.pose.orientation.w == pytest.approx(math.cos(b[6] / 2))
    assert (o.dimensions.x, o.dimensions.y, o.dimensions.z) == tuple(float(v) for v in b[3:6])
    assert o.has_velocity and o.velocity.z == 0.0
    back = detected_objects_to_boxes(msg, NAMES)
    np.testing.assert_array_equal(back.boxes, boxes.boxes)
    np.testing.assert_array_equal(back.scores, boxes.scores)
    np.testing.assert_array_equal(back.labels, boxes.labels)
    np.testing.assert_array_equal(back.velocities, boxes.velocities)
    assert back.boxes.dtype == np.float32 and back.labels.dtype == np.int64


def test_without_velocity():
    boxes = random_boxes(5)
    msg = boxes_to_detected_objects(boxes, NAMES, Header(), with_velocity=False)
    assert not any(o.has_velocity for o in msg.objects)
    assert all(o.velocity.x == 0.0 and o.velocity.y == 0.0 for o in msg.objects)
    np.testing.assert_array_equal(detected_objects_to_boxes(msg, NAMES).velocities, 0.0)


def test_empty_boxes():
    msg = boxes_to_detected_objects(Boxes3D(), NAMES, Header(), True)
    assert msg.objects == []
    back = detected_objects_to_boxes(msg, NAMES)
    assert len(back) == 0 and back.boxes.shape == (0, 7)


def test_yaw_wrap():
    np.testing.assert_allclose(
        wrap_angle([0.0, math.pi, -math.pi, 3 * math.pi, -1.5 * math.pi, 2 * math.pi, 7.0]),
        [0.0, math.pi, math.pi, math.pi, 0.5 * math.pi, 0.0, 7.0 - 2 * math.pi],
        atol=1e-12,
    )
    # q and -q are the same rotation: same yaw.
    y = 2.5
    assert yaw_from_quaternion(math.sin(y / 2), math.cos(y / 2)) == pytest.approx(y)
    assert yaw_from_quaternion(-math.sin(y / 2), -math.cos(y / 2)) == pytest.approx(y)
    # Yaws outside (-pi, pi] come back wrapped; float32(pi) (1.7e-7 above pi) is the float32 "pi" and stays.
    pi32 = np.float32(np.pi)
    yaws = np.array([1.5 * math.pi, -1.5 * math.pi, 4.0, -4.0, pi32, -pi32, 10 * math.pi], np.float32)
    boxes = Boxes3D(boxes=np.c_[np.zeros((7, 3)), np.ones((7, 3)), yaws], labels=np.zeros(7, int))
    back = detected_objects_to_boxes(boxes_to_detected_objects(boxes, NAMES, Header(), False), NAMES)
    np.testing.assert_allclose(
        back.boxes[:, 6],
        [-0.5 * math.pi, 0.5 * math.pi, 4.0 - 2 * math.pi, 2 * math.pi - 4.0, math.pi, math.pi, 0.0],
        atol=2e-6,
    )
    assert back.boxes[4, 6] == pi32
    assert back.boxes[5, 6] == np.float32(2 * math.pi - float(pi32))  # -float32(pi) is out of range: wrapped
    # Every float32 yaw of (-float32(pi), float32(pi)] comes back bit-exact, the ends included.
    edge = np.array(
        [pi32, np.nextafter(-pi32, np.float32(0)), np.float32(math.pi / 2), np.float32(0.0), np.float32(-1e-30)]
    )
    yaws = np.concatenate([edge, np.random.default_rng(1).uniform(-math.pi, math.pi, 2000).astype(np.float32)])
    boxes = Boxes3D(boxes=np.c_[np.zeros((len(yaws), 6)), yaws], labels=np.zeros(len(yaws), int))
    back = detected_objects_to_boxes(boxes_to_detected_objects(boxes, NAMES, Header(), False), NAMES)
    np.testing.assert_array_equal(back.boxes[:, 6], yaws)


def test_label_mapping():
    assert CLASS_TO_AUTOWARE_LABEL == {
        "car": 1, "truck": 2, "bus": 3, "trailer": 4, "motorcycle": 5, "bicycle": 6, "pedestrian": 7
    }
    names = ["CAR", "truck", "motorbike", "traffic_cone", "Pedestrian", "trailer", "bus", "bicycle"]
    np.testing.assert_array_equal(autoware_labels(names), [1, 2, 5, 0, 7, 4, 3, 6])
    assert DetectedObject.CAR == 1 and DetectedObject.PEDESTRIAN == 7
    boxes = Boxes3D(boxes=np.zeros((4, 7)), labels=[0, 3, 4, 99])  # 99: outside class_names -> UNKNOWN
    msg = boxes_to_detected_objects(boxes, names, Header(), False)
    assert [o.label for o in msg.objects] == [1, 0, 7, 0]
    back = detected_objects_to_boxes(msg, names)  # UNKNOWN maps back to traffic_cone, the class that gives 0
    np.testing.assert_array_equal(back.labels, [0, 3, 4, 3])


def test_unmapped_labels_dropped_or_kept():
    msg = boxes_to_detected_objects(Boxes3D(boxes=np.zeros((3, 7)), labels=[0, 1, 4]), NAMES, Header(), False)
    msg.objects[1].label = DetectedObject.TRAILER  # no class of NAMES is a trailer
    msg.objects[2].label = DetectedObject.UNKNOWN
    assert detected_objects_to_boxes(msg, NAMES).labels.tolist() == [0]
    assert detected_objects_to_boxes(msg, NAMES, unmapped_label=-1).labels.tolist() == [0, -1, -1]


# ---------------------------------------------------------------- Autoware output


def _autoware_importable() -> bool:
    try:
        import autoware_perception_msgs.msg  # noqa: F401
    except ImportError:
        return False
    return True


def _check_autoware_output(out, boxes: Boxes3D, names) -> None:
    assert len(out.objects) == len(boxes)
    for o, b, v, lab, s in zip(out.objects, boxes.boxes, boxes.velocities, boxes.labels, boxes.scores):
        assert o.existence_probability == pytest.approx(float(s))
        assert len(o.classification) == 1 and o.classification[0].probability == 1.0
        label = [1, 2, 3, 6, 7][lab]
        assert o.classification[0].label == label
        assert o.kinematics.orientation_availability == (1 if label in (1, 2, 3, 4) else 0)
        pose = o.kinematics.pose_with_covariance.pose
        assert (pose.position.x, pose.position.y, pose.position.z) == pytest.approx(tuple(b[:3].astype(float)))
        assert yaw_from_quaternion(pose.orientation.z, pose.orientation.w) == pytest.approx(float(b[6]), abs=1e-6)
        assert o.shape.type == 0  # BOUNDING_BOX
        dims = o.shape.dimensions
        assert (dims.x, dims.y, dims.z) == pytest.approx(tuple(b[3:6].astype(float)))
        assert o.kinematics.has_twist
        tw = o.kinematics.twist_with_covariance.twist
        c, s_ = math.cos(b[6]), math.sin(b[6])
        # object frame: rotating back by yaw gives the lidar-frame velocity
        in_lidar = (c * tw.linear.x - s_ * tw.linear.y, s_ * tw.linear.x + c * tw.linear.y)
        assert in_lidar == pytest.approx(tuple(v.astype(float)), abs=1e-4)
        assert tw.angular.z == 0.0


@pytest.mark.skipif(
    not _autoware_importable(), reason="autoware_perception_msgs is not installed (Autoware-only, not on PyPI)"
)
def test_to_autoware_detected_objects_real_messages():
    boxes = random_boxes(20)
    out = to_autoware_detected_objects(boxes, NAMES, Header(frame_id="base_link"), with_velocity=True)
    assert type(out).__module__.startswith("autoware_perception_msgs")
    assert out.header.frame_id == "base_link"
    _check_autoware_output(out, boxes, NAMES)


@pytest.mark.skipif(
    _autoware_importable(), reason="autoware_perception_msgs is installed: the error path can't be reached"
)
def test_to_autoware_without_package_raises_clear_import_error():
    with pytest.raises(ImportError, match="autoware_perception_msgs"):
        to_autoware_detected_objects(random_boxes(2), NAMES, Header())


def test_to_autoware_logic_with_stand_in_messages(monkeypatch):
    """Stand-in classes with the fields of autoware_msgs' .msg files: checks the mapping logic anywhere."""
    from geometry_msgs.msg import Pose, Twist, Vector3

    def msg_class(name, consts=None, **defaults):
        def init(self):
            for k, factory in defaults.items():
                setattr(self, k, factory())

        def init_kw(self, **kw):
            init(self)
            for k, v in kw.items():
                assert k in defaults, k
                setattr(self, k, v)

        return type(name, (), {"__init__": init_kw, **(consts or {})})

    PoseWithCov = msg_class("PoseWithCovariance", pose=Pose, covariance=lambda: [0.0] * 36)
    TwistWithCov = msg_class("TwistWithCovariance", twist=Twist, covariance=lambda: [0.0] * 36)
    mod = types.ModuleType("autoware_perception_msgs.msg")
    mod.ObjectClassification = msg_class("ObjectClassification", {"UNKNOWN": 0, "CAR": 1}, label=int, probability=float)
    mod.DetectedObjectKinematics = msg_class(
        "DetectedObjectKinematics", {"UNAVAILABLE": 0, "SIGN_UNKNOWN": 1, "AVAILABLE": 2},
        pose_with_covariance=PoseWithCov, has_position_covariance=bool, orientation_availability=int,
        twist_with_covariance=TwistWithCov, has_twist=bool, has_twist_covariance=bool,
    )
    mod.Shape = msg_class(
        "Shape", {"BOUNDING_BOX": 0, "CYLINDER": 1, "POLYGON": 2}, type=int, footprint=list, dimensions=Vector3
    )
    mod.DetectedObject = msg_class(
        "DetectedObject", existence_probability=float, classification=list,
        kinematics=mod.DetectedObjectKinematics, shape=mod.Shape,
    )
    mod.DetectedObjects = msg_class("DetectedObjects", header=Header, objects=list)
    pkg = types.ModuleType("autoware_perception_msgs")
    pkg.msg = mod
    monkeypatch.setitem(sys.modules, "autoware_perception_msgs", pkg)
    monkeypatch.setitem(sys.modules, "autoware_perception_msgs.msg", mod)
    boxes = random_boxes(30, seed=9)
    out = to_autoware_detected_objects(boxes, NAMES, Header(frame_id="base_link"), with_velocity=True)
    assert out.header.frame_id == "base_link"
    _check_autoware_output(out, boxes, NAMES)
    no_twist = to_autoware_detected_objects(boxes, NAMES, Header(), with_velocity=False)
    assert not any(o.kinematics.has_twist for o in no_twist.objects)


# ---------------------------------------------------------------- timing (printed, not asserted)


def test_print_conversion_timings():
    timings = benchmark(sizes=(100_000, 200_000), repeats=20)
    print()
    for key, ms in timings.items():
        print(f"conversion median of 20: {key:28s} {ms:7.3f} ms")
    assert all(v >= 0 for v in timings.values())
