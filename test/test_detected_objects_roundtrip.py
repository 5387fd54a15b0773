"""Boxes3D -> awml_deploy_msgs/DetectedObjects -> Boxes3D is exact through both message paths.

Paths: the bag path (``rosbags`` messages from ``rosbag_io.detected_objects_message``, CDR bytes through the
typestore built from our .msg text) and the node path (rclpy classes of ``awml_deploy_msgs`` from
``conversions.boxes_to_detected_objects``, CDR bytes through ``rclpy.serialization``). Both are read back
with the one ``detected_objects_to_boxes``.

"Exact" means: positions, sizes, velocities and scores bit for bit (they are float32 in Boxes3D, float64 or
float32 in the message); labels equal (class names with distinct Autoware labels); a float32 yaw in
(-float32(pi), float32(pi)] bit for bit, the ends included (+pi and +float32(pi) are the same float32);
-pi / -float32(pi) (outside that half-open range) come back as the float32 just below float32(pi), i.e. the
same angle modulo 2 pi within one float32 rounding; any other yaw comes back inside the range, equal to the
input modulo 2 pi within one float32 ulp of pi (checked with an independent float64 reference, math.remainder).
Seeded numpy loop (hypothesis was not installed when this was written): 6 seeds x 500 boxes = 3000 random boxes
per path and yaw range (in range, with the yaw edges; and out of range, yaw in [-25, 25]), with and without velocity.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from awml_deploy_core.data.detected_objects import detected_objects_to_boxes
from awml_deploy_core.data.msg_definitions import DETECTED_OBJECTS
from awml_deploy_core.data.rosbag_io import detected_objects_message, typestore
from awml_deploy_core.structures import Boxes3D

# distinct Autoware labels: 0 (unknown) .. 7
NAMES = ("car", "truck", "bus", "trailer", "motorcycle", "bicycle", "pedestrian", "unknown")
PI32 = np.float32(np.pi)
BELOW_PI32 = np.nextafter(PI32, np.float32(0))
STAMP_NS = 1_700_000_000_123_456_789
SEEDS = range(6)
PER_SEED = 500
ULP_PI32 = float(PI32) - float(BELOW_PI32)


def _float32_anything(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Finite float32 values over many magnitudes and both signs (including subnormal-sized ones and 0)."""
    mag = 10.0 ** rng.uniform(-40, 38, size=shape)
    out = (rng.choice([-1.0, 1.0], size=shape) * mag).astype(np.float32)
    out[rng.random(shape) < 0.02] = 0.0
    return out


def _edge_yaws() -> np.ndarray:
    return np.array([math.pi, PI32, BELOW_PI32, np.nextafter(-PI32, np.float32(0)), 0.0, -0.0, 1e-30, -1e-30,
                     math.pi / 2, -math.pi / 2, np.float32(1e-45)], np.float32)


def _boxes(seed: int, yaw_range: str) -> Boxes3D:
    rng = np.random.default_rng(seed)
    n = PER_SEED
    b = np.empty((n, 7), np.float32)
    b[:, :3] = _float32_anything(rng, (n, 3))
    b[:, 3:6] = np.abs(_float32_anything(rng, (n, 3)))
    if yaw_range == "in":  # uniform float32 in (-float32(pi), float32(pi)]
        yaw = rng.uniform(-math.pi, math.pi, n).astype(np.float32)
        yaw[yaw == -PI32] = PI32
        yaw[: len(_edge_yaws())] = _edge_yaws()
    else:
        yaw = rng.uniform(-25.0, 25.0, n).astype(np.float32)
        yaw[:4] = [-math.pi, -PI32, 3 * math.pi, -7 * math.pi]
    b[:, 6] = yaw
    return Boxes3D(boxes=b, scores=rng.random(n).astype(np.float32), labels=rng.integers(0, len(NAMES), n),
                   velocities=_float32_anything(rng, (n, 2)))


def _bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, np.float32).view(np.uint32)


def _check(back: Boxes3D, sent: Boxes3D, with_velocity: bool, yaw_range: str) -> None:
    assert len(back) == len(sent)
    assert back.boxes.dtype == np.float32 and back.labels.dtype == np.int64
    np.testing.assert_array_equal(_bits(back.boxes[:, :6]), _bits(sent.boxes[:, :6]))
    np.testing.assert_array_equal(_bits(back.scores), _bits(sent.scores))
    np.testing.assert_array_equal(back.labels, sent.labels)
    want_vel = sent.velocities if with_velocity else np.zeros_like(sent.velocities)
    np.testing.assert_array_equal(_bits(back.velocities), _bits(want_vel))
    yaw_in, yaw_out = sent.boxes[:, 6], back.boxes[:, 6]
    assert np.all((yaw_out > -PI32) & (yaw_out <= PI32))
    if yaw_range == "in":
        np.testing.assert_array_equal(_bits(yaw_out), _bits(yaw_in))  # bit for bit, -0.0 included
    else:
        for a, b in zip(yaw_in.tolist(), yaw_out.tolist()):  # same angle modulo 2 pi, float64 reference
            assert abs(math.remainder(b - a, 2 * math.pi)) <= ULP_PI32, (a, b)
        assert yaw_out[0] == BELOW_PI32 and yaw_out[1] == BELOW_PI32  # -pi, -float32(pi)


CASES = [(seed, r, v) for seed in SEEDS for r in ("in", "out") for v in (True, False)]


def test_edge_yaws_are_what_the_doc_says():
    assert np.float32(math.pi) == PI32 and float(PI32) > math.pi and -float(PI32) < -math.pi


@pytest.mark.parametrize("seed,yaw_range,with_velocity", CASES)
def test_bag_path_round_trip_exact(seed: int, yaw_range: str, with_velocity: bool):
    sent = _boxes(seed, yaw_range)
    store = typestore()
    raw = store.serialize_cdr(detected_objects_message(sent, NAMES, STAMP_NS, "lidar", with_velocity),
                              DETECTED_OBJECTS)
    msg = store.deserialize_cdr(raw, DETECTED_OBJECTS)
    assert msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec == STAMP_NS
    _check(detected_objects_to_boxes(msg, NAMES), sent, with_velocity, yaw_range)


@pytest.mark.parametrize("seed,yaw_range,with_velocity", CASES)
def test_node_path_round_trip_exact(seed: int, yaw_range: str, with_velocity: bool):
    serialization = pytest.importorskip("rclpy.serialization")
    msgs = pytest.importorskip("awml_deploy_msgs.msg")
    from builtin_interfaces.msg import Time
    from std_msgs.msg import Header

    from awml_deploy_nodes.conversions import boxes_to_detected_objects
    from awml_deploy_nodes.conversions import detected_objects_to_boxes as node_to_boxes

    assert node_to_boxes is detected_objects_to_boxes  # one implementation
    sent = _boxes(seed, yaw_range)
    header = Header(frame_id="lidar", stamp=Time(sec=STAMP_NS // 1_000_000_000, nanosec=STAMP_NS % 1_000_000_000))
    raw = serialization.serialize_message(boxes_to_detected_objects(sent, NAMES, header, with_velocity))
    msg = serialization.deserialize_message(raw, msgs.DetectedObjects)
    _check(detected_objects_to_boxes(msg, NAMES), sent, with_velocity, yaw_range)
    # The two writers share one formula: the node's message, read as a rosbags message, equals the bag's field
    # for field (the bytes differ only in CDR padding, which rclpy does not zero).
    store = typestore()
    bag_msg = detected_objects_message(sent, NAMES, STAMP_NS, "lidar", with_velocity)
    assert store.deserialize_cdr(bytes(raw), DETECTED_OBJECTS) == \
        store.deserialize_cdr(store.serialize_cdr(bag_msg, DETECTED_OBJECTS), DETECTED_OBJECTS)
