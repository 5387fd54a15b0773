"""A serialized ``sensor_msgs/PointCloud2`` (what a raw subscription hands over) read without deserializing it.

Why: rclpy's deserialization of a 200k-point cloud (3.2 MB) into a Python message takes about 1 ms of the node's
executor thread (the bytes are copied into the C message, then again into an ``array.array``). A raw subscription
gets the CDR bytes; this module reads the few header fields in Python and leaves ``data`` as a zero-copy
memoryview of them. The result has the attributes :func:`conversions.validate_pointcloud2` and the node read
(``header.stamp.sec``, ``fields[i].name``, ``data``, ...), so the same validation runs on it.

CDR as ROS 2 writes it: a 4-byte encapsulation header (byte 1: 1 = little endian, 0 = big endian), then the fields
in order, each primitive aligned to its size counted from the end of the encapsulation header; a string is a
uint32 length (its NUL included) and the bytes; a sequence a uint32 count and the elements. A stream that ends
before its fields do is a ``MalformedCloudError`` of kind ``truncated_data`` (a publisher's serializer never
writes one; a damaged bag or a hand-made stream can).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from .conversions import MalformedCloudError


@dataclass
class Stamp:
    sec: int = 0
    nanosec: int = 0


@dataclass
class Header:
    stamp: Stamp = field(default_factory=Stamp)
    frame_id: str = ""


@dataclass
class Field:
    name: str
    offset: int
    datatype: int
    count: int


@dataclass
class SerializedCloud:
    """The PointCloud2 fields of a serialized cloud; ``data`` is a memoryview of the serialized bytes."""

    header: Header
    height: int
    width: int
    fields: list[Field]
    is_bigendian: bool
    point_step: int
    row_step: int
    data: memoryview
    is_dense: bool


class _Reader:
    def __init__(self, buf: bytes, little: bool) -> None:
        self.buf = buf
        self.pos = 4  # after the encapsulation header; alignment counts from here
        self.order = "<" if little else ">"

    def _take(self, size: int) -> int:
        self.pos += -(self.pos - 4) % size
        start = self.pos
        self.pos += size
        if self.pos > len(self.buf):
            raise MalformedCloudError("truncated_data", f"the serialized PointCloud2 ends at byte {len(self.buf)}, "
                                                        f"inside a field that needs bytes up to {self.pos}")
        return start

    def u32(self) -> int:
        return struct.unpack_from(self.order + "I", self.buf, self._take(4))[0]

    def i32(self) -> int:
        return struct.unpack_from(self.order + "i", self.buf, self._take(4))[0]

    def u8(self) -> int:
        return self.buf[self._take(1)]

    def octets(self, n: int) -> int:
        """Start of n raw bytes (no alignment)."""
        start = self.pos
        self.pos += n
        if self.pos > len(self.buf):
            raise MalformedCloudError("truncated_data", f"the serialized PointCloud2 holds {len(self.buf)} B; a "
                                                        f"sequence of {n} B starting at {start} does not fit")
        return start

    def string(self) -> str:
        n = self.u32()
        start = self.octets(n)
        return bytes(self.buf[start:start + max(n - 1, 0)]).decode("utf-8", errors="replace")


def pointcloud2_from_cdr(buf: bytes) -> SerializedCloud:
    """The PointCloud2 in ``buf`` (a raw subscription's bytes), its points not copied."""
    if len(buf) < 4:
        raise MalformedCloudError("truncated_data", f"a serialized PointCloud2 of {len(buf)} B has no CDR header")
    r = _Reader(buf, little=buf[1] == 1)
    header = Header(Stamp(r.i32(), r.u32()), r.string())
    height, width = r.u32(), r.u32()
    fields = [Field(r.string(), r.u32(), r.u8(), r.u32()) for _ in range(r.u32())]
    is_bigendian = bool(r.u8())
    point_step, row_step = r.u32(), r.u32()
    n = r.u32()
    start = r.octets(n)
    data = memoryview(buf)[start:start + n]
    is_dense = bool(r.u8())
    return SerializedCloud(header, height, width, fields, is_bigendian, point_step, row_step, data, is_dense)
