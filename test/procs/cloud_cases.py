"""Point clouds for the centerpoint_node tests: good synthetic clouds, unusual-but-valid ones and malformed ones.

Imported by the publisher process (publish_clouds.py) and by the tests, which rebuild the very same messages to
compute the offline pipeline's answer. Every builder is deterministic in (case, seed, stamp).

Each case names what the node must do with it (``expect``):
- ``output``: the cloud is valid; the node publishes detections with its stamp. ``diag`` is the /diagnostics
  counter (in the "<node>: input" status) that counts the unusual property, if any.
- ``malformed``: the node drops it; ``diag`` is the ``malformed.<kind>`` counter that must go up.
"""

from __future__ import annotations

import array
from dataclasses import dataclass
from typing import Callable

import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import PointCloud2, PointField

from awml_deploy_core.data.synthetic import generate_frames
from awml_deploy_nodes.conversions import array_to_pointcloud2

F32, U8, I16 = PointField.FLOAT32, PointField.UINT8, PointField.INT16
FRAME_ID = "lidar_top"


def synthetic_points(seed: int) -> np.ndarray:
    """(N, 4) float32 x, y, z, intensity of one synthetic sweep (about 130k points)."""
    return next(iter(generate_frames(seed, 1))).points.astype(np.float32)


def resized(points: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Exactly n points: a random subset, or the cloud repeated with a small jitter (benchmarks)."""
    rng = np.random.default_rng(seed)
    if n <= len(points):
        return points[np.sort(rng.choice(len(points), n, replace=False))]
    extra = points[rng.integers(0, len(points), n - len(points))].copy()
    extra[:, :3] += rng.normal(0.0, 0.05, (len(extra), 3)).astype(np.float32)
    return np.concatenate([points, extra])


def stamp_of(sec: int, nanosec: int = 0) -> Time:
    return Time(sec=int(sec), nanosec=int(nanosec))


def _raw(fields: list[tuple[str, int, int, int]], point_step: int, width: int, data: bytes, height: int = 1,
         row_step: int | None = None, big_endian: bool = False) -> PointCloud2:
    msg = PointCloud2()
    msg.header.frame_id = FRAME_ID
    msg.height, msg.width = height, width
    msg.fields = [PointField(name=n, offset=o, datatype=d, count=c) for n, o, d, c in fields]
    msg.is_bigendian = big_endian
    msg.point_step = point_step
    msg.row_step = width * point_step if row_step is None else row_step
    buf = array.array("B")
    buf.frombytes(data)
    msg.data = buf
    msg.is_dense = False
    return msg


XYZI = [("x", 0, F32, 1), ("y", 4, F32, 1), ("z", 8, F32, 1), ("intensity", 12, F32, 1)]


# ----------------------------------------------------------------------------------------- valid clouds
def plain(points: np.ndarray) -> PointCloud2:
    return array_to_pointcloud2(points, FRAME_ID)


def big_endian(points: np.ndarray) -> PointCloud2:
    """The same points, every field written big-endian (is_bigendian true)."""
    data = np.ascontiguousarray(points, dtype=">f4").tobytes()
    return _raw(XYZI, 16, len(points), data, big_endian=True)


def organized(points: np.ndarray) -> PointCloud2:
    """(H, W) organized cloud (H = 64 rows), the points in row-major order; trailing points left out."""
    h = 64
    w = len(points) // h
    return array_to_pointcloud2(points[: h * w].reshape(h, w, 4), FRAME_ID)


def non_finite(points: np.ndarray) -> PointCloud2:
    """Every 7th point gets a NaN or Inf in x, y, z or intensity."""
    p = points.copy()
    bad = np.arange(0, len(p), 7)
    values = np.array([np.nan, np.inf, -np.inf], np.float32)
    p[bad, np.arange(len(bad)) % 4] = values[np.arange(len(bad)) % 3]
    return array_to_pointcloud2(p, FRAME_ID)


def empty(points: np.ndarray) -> PointCloud2:
    return _raw(XYZI, 16, 0, b"")


# ----------------------------------------------------------------------------------------- malformed clouds
def truncated(points: np.ndarray) -> PointCloud2:
    msg = plain(points)
    msg.data = msg.data[: len(msg.data) // 2]
    return msg


def point_step_zero(points: np.ndarray) -> PointCloud2:
    msg = plain(points)
    msg.point_step = 0
    return msg


def point_step_too_small(points: np.ndarray) -> PointCloud2:
    """point_step 12 while intensity sits at bytes 12..15."""
    data = np.ascontiguousarray(points[:, :3], dtype="<f4").tobytes()
    return _raw(XYZI, 12, len(points), data)


def missing_z(points: np.ndarray) -> PointCloud2:
    data = np.ascontiguousarray(points[:, [0, 1, 3]], dtype="<f4").tobytes()
    return _raw([("x", 0, F32, 1), ("y", 4, F32, 1), ("intensity", 8, F32, 1)], 12, len(points), data)


# Tests that publish too_many_points start the node with max_points=NODE_MAX_POINTS, so the cloud stays small
# (4.8 MB). The former 36 MB cloud above the default 2M was ~550 fragments of the transport's default 65,500 B
# message size, more than the shared-memory port queue's default 512 descriptors; on a loaded CI machine none of
# its three tries reached the node.
NODE_MAX_POINTS = 300_000
TOO_MANY_POINTS = 400_000


def too_many_points(points: np.ndarray) -> PointCloud2:
    """TOO_MANY_POINTS real points (x, y, z; 4.8 MB), above NODE_MAX_POINTS (a plain sweep has ~130k)."""
    n = TOO_MANY_POINTS
    reps = -(-n // len(points))
    xyz = np.tile(points[:, :3], (reps, 1))[:n]
    return _raw(XYZI[:3], 12, n, np.ascontiguousarray(xyz, dtype="<f4").tobytes())


def x_as_int16(points: np.ndarray) -> PointCloud2:
    data = np.ascontiguousarray(points, dtype="<f4").tobytes()
    return _raw([("x", 0, I16, 1), ("y", 4, F32, 1), ("z", 8, F32, 1), ("intensity", 12, F32, 1)], 16,
                len(points), data)


def unknown_datatype(points: np.ndarray) -> PointCloud2:
    data = np.ascontiguousarray(points, dtype="<f4").tobytes()
    return _raw([("x", 0, F32, 1), ("y", 4, F32, 1), ("z", 8, F32, 1), ("intensity", 12, 42, 1)], 16,
                len(points), data)


def duplicate_field(points: np.ndarray) -> PointCloud2:
    data = np.ascontiguousarray(points, dtype="<f4").tobytes()
    return _raw([("x", 0, F32, 1), ("y", 4, F32, 1), ("z", 8, F32, 1), ("x", 12, F32, 1)], 16, len(points), data)


def overlapping_fields(points: np.ndarray) -> PointCloud2:
    data = np.ascontiguousarray(points, dtype="<f4").tobytes()
    return _raw([("x", 0, F32, 1), ("y", 2, F32, 1), ("z", 8, F32, 1), ("intensity", 12, F32, 1)], 16,
                len(points), data)


def bad_row_step(points: np.ndarray) -> PointCloud2:
    msg = plain(points)
    msg.row_step = msg.row_step - 16
    return msg


def intensity_count_2(points: np.ndarray) -> PointCloud2:
    p = np.concatenate([points, points[:, 3:]], axis=1)
    data = np.ascontiguousarray(p, dtype="<f4").tobytes()
    return _raw(XYZI[:3] + [("intensity", 12, F32, 2)], 20, len(points), data)


@dataclass(frozen=True)
class Case:
    build: Callable[[np.ndarray], PointCloud2]
    expect: str  # "output" or "malformed"
    diag: str | None  # the "<node>: input" counter that goes up


CASES: dict[str, Case] = {
    "plain": Case(plain, "output", None),
    "big_endian": Case(big_endian, "output", "accepted.big_endian"),
    "organized": Case(organized, "output", "accepted.organized"),
    "non_finite": Case(non_finite, "output", "accepted.with_non_finite"),
    "empty": Case(empty, "output", "accepted.empty"),
    "truncated": Case(truncated, "malformed", "malformed.truncated_data"),
    "point_step_zero": Case(point_step_zero, "malformed", "malformed.bad_point_step"),
    "point_step_too_small": Case(point_step_too_small, "malformed", "malformed.field_out_of_bounds"),
    "missing_z": Case(missing_z, "malformed", "malformed.missing_field"),
    "too_many_points": Case(too_many_points, "malformed", "malformed.too_many_points"),
    "x_as_int16": Case(x_as_int16, "malformed", "malformed.bad_datatype"),
    "unknown_datatype": Case(unknown_datatype, "malformed", "malformed.unknown_datatype"),
    "duplicate_field": Case(duplicate_field, "malformed", "malformed.duplicate_field"),
    "overlapping_fields": Case(overlapping_fields, "malformed", "malformed.overlapping_fields"),
    "bad_row_step": Case(bad_row_step, "malformed", "malformed.bad_row_step"),
    "intensity_count_2": Case(intensity_count_2, "malformed", "malformed.bad_count"),
}


def build(case: str, seed: int, stamp: tuple[int, int], points: np.ndarray | None = None) -> PointCloud2:
    """The message of `case` from synthetic sweep `seed` (or the given points), with `stamp` (sec, nanosec)."""
    pts = synthetic_points(seed) if points is None else points
    msg = CASES[case].build(pts)
    msg.header.stamp = stamp_of(*stamp)
    msg.header.frame_id = FRAME_ID
    return msg
