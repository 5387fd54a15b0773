"""Property-based tests of the PointCloud2 side and of the serialized DetectedObjects.

- ``pointcloud2_to_xyzit`` on arbitrary messages (fields, datatypes, offsets, steps, sizes, byte order, data):
  either a float32 (N, 5) array, finite, with N <= width * height, time_lag 0, or a MalformedCloudError of a
  known kind. Nothing else escapes. The fast path the node uses (validate + pipeline_points) agrees with it.
- ``boxes_to_detected_objects_cdr`` gives the bytes of the message ``boxes_to_detected_objects`` builds.
"""

from __future__ import annotations

import array

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sensor_msgs.msg import PointCloud2, PointField

from awml_deploy_nodes.conversions import (
    MALFORMED_KINDS,
    MalformedCloudError,
    pipeline_points,
    pointcloud2_to_xyzit,
    validate_pointcloud2,
)

NAMES = ["x", "y", "z", "intensity", "t", "ring", "x"]  # "x" twice: duplicate names get drawn too
MAX_POINTS = 500


_SPECIAL = np.array([0.0, 1.5, -3.0, 1e38, -1e38, 1e-40, np.nan, np.inf, -np.inf, 70.0, -0.0], dtype=np.float64)


@st.composite
def clouds(draw) -> PointCloud2:
    """Arbitrary layouts, or plausible ones (x, y, z floats one after the other) with one thing sometimes off."""
    fields = []
    if draw(st.booleans()):  # plausible
        offset = 0
        for name in ("x", "y", "z"):
            dt = draw(st.sampled_from([PointField.FLOAT32, PointField.FLOAT32, PointField.FLOAT64]))
            fields.append(PointField(name=name, offset=offset, datatype=dt, count=1))
            offset += 4 if dt == PointField.FLOAT32 else 8
        if draw(st.booleans()):
            dt = draw(st.integers(1, 8))
            fields.append(PointField(name="intensity", offset=offset, datatype=dt, count=1))
            offset += {1: 1, 2: 1, 3: 2, 4: 2, 5: 4, 6: 4, 7: 4, 8: 8}[dt]
        point_step = offset + draw(st.sampled_from([0, 0, 0, 4, 3, -1]))
        if draw(st.integers(0, 4)) == 0:  # one field off
            f = draw(st.sampled_from(fields))
            f.offset = draw(st.integers(0, 40))
            f.datatype = draw(st.integers(0, 10))
            f.count = draw(st.integers(0, 3))
    else:  # arbitrary
        for i in range(draw(st.integers(0, 6))):
            fields.append(PointField(name=draw(st.sampled_from(NAMES)) if i >= 3 else ["x", "y", "z"][i],
                                     offset=draw(st.integers(0, 40)), datatype=draw(st.integers(0, 10)),
                                     count=draw(st.integers(0, 3))))
        point_step = draw(st.sampled_from([0, 1, 4, 12, 13, 16, 20, 24, 32, 48]))
    msg = PointCloud2()
    msg.fields = list(draw(st.permutations(fields)))
    msg.height = draw(st.integers(0, 4))
    msg.width = draw(st.integers(0, 60))
    msg.point_step = max(point_step, 0)
    msg.row_step = max(msg.width * msg.point_step + draw(st.sampled_from([0, 0, 0, 4, -4, 7])), 0)
    msg.is_bigendian = draw(st.booleans())
    size = max(msg.row_step * msg.height + draw(st.sampled_from([0, 0, 0, 3, -1, -16])), 0)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if draw(st.booleans()):  # raw bytes
        data = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
    else:  # floats: mostly ordinary, some NaN, Inf, huge, subnormal
        vals = rng.uniform(-80, 80, (size + 7) // 4)
        special = rng.random(len(vals)) < draw(st.sampled_from([0.0, 0.01, 0.3]))
        vals[special] = rng.choice(_SPECIAL, int(special.sum()))
        data = vals.astype(">f4" if msg.is_bigendian else "<f4").tobytes()[:size]
    buf = array.array("B")
    buf.frombytes(data)
    msg.data = buf
    return msg


def _check(msg: PointCloud2) -> None:
    try:
        out, info = pointcloud2_to_xyzit(msg, MAX_POINTS)
    except MalformedCloudError as e:
        assert e.kind in MALFORMED_KINDS
        with pytest.raises(MalformedCloudError) as again:
            validate_pointcloud2(msg, MAX_POINTS)
        assert again.value.kind == e.kind
        return
    n = msg.width * msg.height
    assert out.dtype == np.float32 and out.ndim == 2 and out.shape[1] == 5
    assert 0 <= len(out) <= n <= MAX_POINTS
    assert np.isfinite(out).all()
    assert (out[:, 4] == 0).all()
    assert info.num_points == len(out) and info.num_points + info.non_finite == n
    # The node's path: the same points, or those plus rows with a non-finite x, y, z or intensity that the
    # pipeline drops itself (zero-copy view).
    fast, _ = pipeline_points(validate_pointcloud2(msg, MAX_POINTS))
    keep = np.isfinite(fast[:, :4]).all(axis=1)
    assert np.array_equal(fast[keep][:, :4], out[:, :4])


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(clouds())
def test_any_message_gives_a_valid_array_or_a_known_malformed_kind(msg):
    _check(msg)


def test_fuzzer_reaches_both_outcomes():
    """The strategy is not degenerate: it makes valid clouds and several malformed kinds."""
    from hypothesis import find

    find(clouds(), lambda m: _outcome(m) == "ok" and m.width * m.height > 0, settings=settings(max_examples=5000))
    for kind in ("truncated_data", "missing_field", "duplicate_field", "bad_point_step"):
        find(clouds(), lambda m, k=kind: _outcome(m) == k, settings=settings(max_examples=5000))


def _outcome(msg: PointCloud2) -> str:
    try:
        pointcloud2_to_xyzit(msg, MAX_POINTS)
    except MalformedCloudError as e:
        return e.kind
    return "ok"


# ------------------------------------------------------------------------------ serialized detections
@pytest.mark.parametrize("n", [0, 1, 2, 3, 28, 100])
@pytest.mark.parametrize("frame_id", ["", "l", "lid", "lidar", "lidar_top", "abcdefg"])
@pytest.mark.parametrize("with_velocity", [True, False])
def test_detected_objects_cdr_is_the_message(n, frame_id, with_velocity):
    from builtin_interfaces.msg import Time
    from rclpy.serialization import deserialize_message, serialize_message
    from std_msgs.msg import Header

    from awml_deploy_core.structures import Boxes3D
    from awml_deploy_msgs.msg import DetectedObjects
    from awml_deploy_nodes.conversions import boxes_to_detected_objects
    from awml_deploy_nodes.detections_cdr import boxes_to_detected_objects_cdr

    rng = np.random.default_rng(n)
    boxes = Boxes3D(boxes=rng.uniform(-50, 50, (n, 7)), scores=rng.uniform(0, 1, n).astype(np.float32),
                    labels=rng.integers(-1, 7, n), velocities=rng.uniform(-5, 5, (n, 2)))
    names = ["car", "truck", "bus", "bicycle", "pedestrian"]
    header = Header(frame_id=frame_id, stamp=Time(sec=1_700_000_000 + n, nanosec=123_456_789))
    reference = boxes_to_detected_objects(boxes, names, header, with_velocity)
    data = boxes_to_detected_objects_cdr(boxes, names, header, with_velocity)
    # Fast CDR leaves alignment padding uninitialised, so compare sizes and the decoded message.
    assert len(data) == len(serialize_message(reference))
    assert deserialize_message(data, DetectedObjects) == reference
