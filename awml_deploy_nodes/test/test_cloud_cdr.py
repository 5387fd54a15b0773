"""cloud_cdr reads a serialized PointCloud2 as rclpy (little endian) and rosbags (either byte order) write it."""

from __future__ import annotations

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from rclpy.serialization import serialize_message
from sensor_msgs.msg import PointCloud2, PointField
from std_msgs.msg import Header
from test_conversions import F32, F64, U8, U16, raw_cloud, random_xyzi, xyzi_values

from awml_deploy_nodes.cloud_cdr import header_stamp, pointcloud2_from_cdr
from awml_deploy_nodes.conversions import MalformedCloudError, pipeline_points, validate_pointcloud2


def _messages() -> list[PointCloud2]:
    xyzi = [("x", 0, F32), ("y", 4, F32), ("z", 8, F32), ("intensity", 12, F32)]
    out = [
        raw_cloud(xyzi, xyzi_values(random_xyzi(50)), 16),
        raw_cloud(xyzi, xyzi_values(random_xyzi(12)), 16, height=3, row_pad=5),  # organized, padded rows
        raw_cloud([("intensity", 0, U8), ("x", 4, F64), ("y", 12, F64), ("z", 20, F64), ("ring", 28, U16)],
                  {**xyzi_values(random_xyzi(7)), "ring": np.arange(7)}, 31),  # odd step, float64
        raw_cloud(xyzi, xyzi_values(random_xyzi(9)), 16, big_endian=True),
        PointCloud2(),  # default-constructed: no fields, no points
    ]
    out[0].header = Header(stamp=Time(sec=1_700_000_123, nanosec=987_654_321), frame_id="lidar_top")
    out[1].header.frame_id = "velodyne_\u00e9t\u00e9"  # non-ASCII UTF-8
    out[2].header.frame_id = ""
    out[2].fields[1].count = 1
    out[2].fields.append(PointField(name="spare", offset=30, datatype=PointField.INT8, count=0))
    out[3].is_dense = True
    return out


def _same(got, msg: PointCloud2) -> None:
    assert (got.header.stamp.sec, got.header.stamp.nanosec) == (msg.header.stamp.sec, msg.header.stamp.nanosec)
    assert got.header.frame_id == msg.header.frame_id
    assert (got.height, got.width, got.is_bigendian, got.point_step, got.row_step, got.is_dense) == (
        msg.height, msg.width, msg.is_bigendian, msg.point_step, msg.row_step, msg.is_dense)
    assert [(f.name, f.offset, f.datatype, f.count) for f in got.fields] == [
        (f.name, f.offset, f.datatype, f.count) for f in msg.fields]
    assert bytes(got.data) == bytes(msg.data)


@pytest.mark.parametrize("i", range(5))
def test_fields_equal_the_deserialized_message(i):
    msg = _messages()[i]
    _same(pointcloud2_from_cdr(serialize_message(msg)), msg)


@pytest.mark.parametrize("little_endian", [True, False])
def test_either_byte_order_of_the_stream(little_endian):
    """rosbags writes big-endian CDR too (a bag recorded on such a machine)."""
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_HUMBLE)
    msg = _messages()[1]
    for m in (msg, _messages()[2]):
        Stamp, Hdr = store.types["builtin_interfaces/msg/Time"], store.types["std_msgs/msg/Header"]
        PF, PC2 = store.types["sensor_msgs/msg/PointField"], store.types["sensor_msgs/msg/PointCloud2"]
        theirs = PC2(header=Hdr(stamp=Stamp(sec=m.header.stamp.sec, nanosec=m.header.stamp.nanosec),
                                frame_id=m.header.frame_id),
                     height=m.height, width=m.width,
                     fields=[PF(name=f.name, offset=f.offset, datatype=f.datatype, count=f.count) for f in m.fields],
                     is_bigendian=m.is_bigendian, point_step=m.point_step, row_step=m.row_step,
                     data=np.frombuffer(bytes(m.data), np.uint8), is_dense=m.is_dense)
        cdr = bytes(store.serialize_cdr(theirs, "sensor_msgs/msg/PointCloud2", little_endian=little_endian))
        _same(pointcloud2_from_cdr(cdr), m)
        assert header_stamp(cdr) == (m.header.stamp.sec, m.header.stamp.nanosec)


def test_points_are_a_view_of_the_received_bytes_and_convert_as_the_message():
    msg = _messages()[0]
    cdr = serialize_message(msg)
    cloud = pointcloud2_from_cdr(cdr)
    got, info = pipeline_points(validate_pointcloud2(cloud))
    want, want_info = pipeline_points(validate_pointcloud2(msg))
    np.testing.assert_array_equal(got, want)
    assert info == want_info
    assert np.shares_memory(got, np.frombuffer(cdr, np.uint8))  # zero-copy


def test_every_truncation_is_a_malformed_cloud():
    cdr = serialize_message(_messages()[2])
    cuts = sorted({*range(0, 120), *range(len(cdr) - 40, len(cdr))})
    for cut in cuts:
        with pytest.raises(MalformedCloudError) as e:
            pointcloud2_from_cdr(cdr[:cut])
        assert e.value.kind == "truncated_data", cut
