"""ROS message <-> numpy conversions: point clouds in, detections out.

Everything here is a plain function on message objects: no node, no executor. It runs on ROS 2 Humble
(Python 3.10, numpy 1.21) and newer, using only message APIs Humble has.

Point clouds (``sensor_msgs/PointCloud2`` -> the CenterPoint input, float32 (N, 5) x, y, z, intensity,
time_lag):

- The layout is validated before any byte is read; a bad message raises :class:`MalformedCloudError`,
  whose ``kind`` is a short, stable key (see :data:`MALFORMED_KINDS`) meant as a diagnostics counter name.
  Checks run in this order and the first failure wins: duplicate_field, unknown_datatype, bad_point_step,
  field_out_of_bounds, overlapping_fields, missing_field, bad_count, bad_datatype, bad_row_step,
  too_many_points, truncated_data. All fields are checked for structure (even those not read); only the
  fields that are read get the count/datatype rules.
- A cloud with zero points (width or height 0) is valid and gives an empty (0, 5) array without looking
  at the fields at all: drivers publish default-constructed clouds when nothing was measured.
- Points whose x, y, z or intensity is NaN/Inf are dropped and counted (``CloudInfo.non_finite``). A cloud
  in which every point is non-finite is NOT an error (an organized cloud that saw only sky is all NaN): it
  gives an empty array, with the count in the info. The pipeline drops non-finite points as well, so
  dropping here changes no detection; it only moves the count to the ROS side.
- Organized clouds (height > 1) are accepted and flattened row-major, honouring ``row_step`` padding at
  the end of each row (the padding bytes are never read).
- Big-endian clouds are accepted: the dtype carries the message's byte order and the single copy into the
  output converts it (no extra cost). Other ROS tools reject them; nothing here needs to.
- ``time_lag`` is 0 for every point: the input is a single sweep. Autoware's CenterPoint fills that column
  from multi-sweep densification (age of the past sweep), not from the per-point time stamp within a
  sweep, so a ``time``/``t``/``time_stamp`` field is deliberately not used for it.
- The node splits the conversion in two: :func:`validate_pointcloud2` (every structural check, O(fields), in
  the subscription callback) and :func:`pipeline_points` (in the worker: a zero-copy (N, 4) float32 view for
  the usual native float32 x, y, z, intensity layouts, else :func:`xyzit_from_valid`'s single copy).
- Intensity is read from any numeric datatype (Autoware's PointXYZIRC uses uint8, most drivers float32)
  and converted to float32 without scaling; an absent intensity field gives 0.

Writing clouds: :func:`array_to_pointcloud2` fills ``msg.data`` with an ``array.array('B')``. Assigning a
numpy array is element-wise (~0.2 s per 200k points); assigning ``bytes`` is just as slow on Humble, whose
generated setter checks every byte in Python unless the value already is an ``array.array``.

Detections: :class:`awml_deploy_core.structures.Boxes3D` <-> ``awml_deploy_msgs/DetectedObjects`` and,
when Autoware's messages are importable, ``autoware_perception_msgs/DetectedObjects``. The field values, the
yaw formula and the label table are the core's (``awml_deploy_core.data.detected_objects``,
``awml_deploy_core.labels``), shared with the bag code; they are re-exported here.
"""

from __future__ import annotations

import array
import functools
import sys
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Sequence

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Quaternion
from sensor_msgs.msg import PointCloud2, PointField
from std_msgs.msg import Header

from awml_deploy_core.data.detected_objects import (
    PI_FLOAT32,
    detected_objects_to_boxes,
    object_fields,
    wrap_angle,
    yaw_from_quaternion,
    yaw_to_quaternion,
)
from awml_deploy_core.labels import CLASS_TO_AUTOWARE_LABEL, autoware_label, autoware_labels, labels_to_autoware
from awml_deploy_core.structures import Boxes3D
from awml_deploy_msgs.msg import DetectedObject, DetectedObjects

__all__ = [
    "CLASS_TO_AUTOWARE_LABEL",
    "CloudInfo",
    "DEFAULT_MAX_POINTS",
    "INTENSITY_FIELD",
    "MALFORMED_KINDS",
    "MalformedCloudError",
    "ValidCloud",
    "PI_FLOAT32",
    "TIME_FIELD_NAMES",
    "array_to_pointcloud2",
    "autoware_label",
    "autoware_labels",
    "benchmark",
    "boxes_to_detected_objects",
    "detected_objects_to_boxes",
    "pointcloud2_dtype",
    "pointcloud2_to_array",
    "pointcloud2_to_xyzit",
    "pipeline_points",
    "validate_pointcloud2",
    "xyzit_from_valid",
    "to_autoware_detected_objects",
    "wrap_angle",
    "yaw_from_quaternion",
]

# --------------------------------------------------------------------------------------------------
# Point clouds
# --------------------------------------------------------------------------------------------------

DEFAULT_MAX_POINTS = 2_000_000
INTENSITY_FIELD = "intensity"
# Per-point time fields of common drivers (Autoware PointXYZIRCAEDT, Hesai, Velodyne, Ouster, Livox).
TIME_FIELD_NAMES = ("time_stamp", "timestamp", "time", "t", "offset_time")

# PointField datatype code -> numpy type (without byte order); the codes are fixed by sensor_msgs.
_DATATYPES: dict[int, str] = {
    PointField.INT8: "i1",
    PointField.UINT8: "u1",
    PointField.INT16: "i2",
    PointField.UINT16: "u2",
    PointField.INT32: "i4",
    PointField.UINT32: "u4",
    PointField.FLOAT32: "f4",
    PointField.FLOAT64: "f8",
}
_FLOAT_DATATYPES = (PointField.FLOAT32, PointField.FLOAT64)
_XYZ = ("x", "y", "z")

MALFORMED_KINDS = (
    "duplicate_field",  # two fields share a name
    "unknown_datatype",  # datatype code outside sensor_msgs/PointField's 1..8
    "bad_point_step",  # point_step is 0 while the cloud has points
    "field_out_of_bounds",  # a field ends beyond point_step (offset + size * count > point_step)
    "overlapping_fields",  # two fields share bytes
    "missing_field",  # a required field (x, y, z by default) is absent
    "bad_count",  # a field that is read has count != 1
    "bad_datatype",  # x, y or z is not FLOAT32/FLOAT64
    "bad_row_step",  # row_step < width * point_step
    "too_many_points",  # width * height > max_points
    "truncated_data",  # len(data) < row_step * height
)


class MalformedCloudError(ValueError):
    """A PointCloud2 whose layout can't be trusted. ``kind`` is one of :data:`MALFORMED_KINDS`."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"malformed PointCloud2 ({kind}): {message}")
        self.kind = kind
        self.message = message

    def __reduce__(self) -> tuple[Any, ...]:  # picklable with both arguments
        return (type(self), (self.kind, self.message))


@dataclass
class CloudInfo:
    """What a conversion saw; meant for diagnostics and InferenceStats."""

    num_points_in: int = 0  # width * height of the message
    num_points: int = 0  # rows of the returned array
    non_finite: int = 0  # points dropped because x, y, z or intensity was NaN/Inf
    height: int = 0
    width: int = 0
    intensity_dtype: str | None = None  # numpy name of the intensity field read ("uint8", ...); None if absent
    byte_swapped: bool = False  # the message's byte order differed from this machine's
    trailing_bytes: int = 0  # bytes in data beyond row_step * height (ignored)

    @property
    def empty(self) -> bool:
        return self.num_points == 0

    @property
    def organized(self) -> bool:
        return self.height > 1

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _byte_order(is_bigendian: bool) -> str:
    return ">" if is_bigendian else "<"


@dataclass
class _Field:
    """A PointField's four values as Python ints and str (a message's may be numpy scalars)."""

    name: str
    offset: int
    datatype: int
    count: int


def _check_fields(fields: Sequence[_Field], step: int) -> dict[str, Any]:
    """Structure of every field: unique names, known types, inside point_step, no shared bytes."""
    by_name: dict[str, Any] = {}
    for f in fields:
        if f.name in by_name:
            raise MalformedCloudError("duplicate_field", f"field {f.name!r} appears more than once")
        if f.datatype not in _DATATYPES:
            raise MalformedCloudError(
                "unknown_datatype",
                f"field {f.name!r} has datatype code {f.datatype}; sensor_msgs/PointField defines 1..8",
            )
        by_name[f.name] = f
    if step == 0:
        raise MalformedCloudError("bad_point_step", "point_step is 0 in a cloud that has points")
    spans = []
    for f in fields:
        size = np.dtype(_DATATYPES[f.datatype]).itemsize * int(f.count)
        end = int(f.offset) + size
        if size and end > step:
            raise MalformedCloudError(
                "field_out_of_bounds",
                f"field {f.name!r} (offset {f.offset}, {f.count} x {size // max(int(f.count), 1)} B) ends at byte "
                f"{end}, beyond point_step {step}",
            )
        if size:
            spans.append((int(f.offset), end, f.name))
    spans.sort()
    for (_, end_a, name_a), (start_b, _, name_b) in zip(spans, spans[1:]):
        if start_b < end_a:
            raise MalformedCloudError("overlapping_fields", f"fields {name_a!r} and {name_b!r} share bytes")
    return by_name


@functools.lru_cache(maxsize=64)
def _layout_dtype(fields: tuple[tuple[Any, Any, Any, Any], ...], step: int, big_endian: bool,
                  require: tuple[str, ...], optional: tuple[str, ...]) -> np.dtype:
    """The checked layout's dtype of the fields read (the checks up to bad_datatype, in their order); made once
    per layout (fields as (name, offset, datatype, count)): building it took most of the ~30 us a check cost per
    cloud."""
    typed = [_Field(str(n), int(o), int(d), int(c)) for n, o, d, c in fields]
    chosen = _select_fields(_check_fields(typed, step), require, optional)
    return pointcloud2_dtype(chosen, step, big_endian)


def _select_fields(by_name: dict[str, Any], require: Iterable[str], optional: Iterable[str]) -> list[Any]:
    missing = [name for name in require if name not in by_name]
    if missing:
        raise MalformedCloudError(
            "missing_field", f"required field(s) {missing} absent; the cloud has {sorted(by_name)}"
        )
    chosen: list[Any] = []
    for name in list(dict.fromkeys([*require, *optional])):
        f = by_name.get(name)
        if f is None:
            continue
        if int(f.count) != 1:
            raise MalformedCloudError("bad_count", f"field {name!r} has count {f.count}; it must be 1")
        if name in _XYZ and f.datatype not in _FLOAT_DATATYPES:
            raise MalformedCloudError(
                "bad_datatype",
                f"field {name!r} has datatype {np.dtype(_DATATYPES[f.datatype]).name}; "
                "x, y, z must be FLOAT32 or FLOAT64",
            )
        chosen.append(f)
    return chosen


def _check_extent(msg: PointCloud2, max_points: int) -> int:
    width, height, step = int(msg.width), int(msg.height), int(msg.point_step)
    if int(msg.row_step) < width * step:
        raise MalformedCloudError(
            "bad_row_step", f"row_step {msg.row_step} < width {width} x point_step {step} = {width * step}"
        )
    n = width * height
    if n > max_points:
        raise MalformedCloudError("too_many_points", f"{n} points ({width}x{height}) exceed max_points {max_points}")
    need = int(msg.row_step) * height
    if len(msg.data) < need:
        raise MalformedCloudError(
            "truncated_data", f"data holds {len(msg.data)} B; row_step {msg.row_step} x height {height} needs {need} B"
        )
    return n


def pointcloud2_dtype(fields: Sequence[Any], point_step: int, is_bigendian: bool = False) -> np.dtype:
    """Structured dtype of ``fields`` (PointField-like: name, offset, datatype, count), itemsize ``point_step``.

    No validation: :func:`pointcloud2_to_array` validates first. Fields of count > 1 become sub-arrays.
    """
    order = _byte_order(is_bigendian)
    names, formats, offsets = [], [], []
    for f in fields:
        base = np.dtype(order + _DATATYPES[f.datatype])
        if int(f.count) == 0:
            continue
        names.append(f.name)
        formats.append(base if int(f.count) == 1 else np.dtype((base, (int(f.count),))))
        offsets.append(int(f.offset))
    return np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": int(point_step)})


def _buffer(data: Any) -> Any:
    # rclpy gives array.array('B'); bytes/bytearray/memoryview/ndarray (rosbags, tests) also expose a buffer.
    if isinstance(data, (list, tuple)):
        return np.asarray(data, dtype=np.uint8)
    return data


def _view(msg: PointCloud2, dtype: np.dtype) -> np.ndarray:
    """Zero-copy, read-only (height, width) view of the points (row padding skipped via strides)."""
    height, width = int(msg.height), int(msg.width)
    view = np.ndarray(
        shape=(height, width),
        dtype=dtype,
        buffer=_buffer(msg.data),
        offset=0,
        strides=(int(msg.row_step), int(msg.point_step)),
    )
    view.flags.writeable = False  # a view into the message: never let a caller edit it by accident
    return view


def _validated_view(
    msg: PointCloud2, require: Sequence[str], optional: Sequence[str], max_points: int
) -> tuple[np.ndarray | None, CloudInfo]:
    info = CloudInfo(height=int(msg.height), width=int(msg.width))
    info.num_points_in = info.height * info.width
    info.byte_swapped = bool(msg.is_bigendian) != (sys.byteorder == "big")
    if info.num_points_in == 0:
        return None, info
    fields = tuple([(f.name, f.offset, f.datatype, f.count) for f in msg.fields])
    dtype = _layout_dtype(fields, int(msg.point_step), bool(msg.is_bigendian), tuple(require), tuple(optional))
    _check_extent(msg, max_points)
    info.trailing_bytes = len(msg.data) - int(msg.row_step) * info.height
    return _view(msg, dtype), info


def pointcloud2_to_array(
    msg: PointCloud2,
    require: Sequence[str] = _XYZ,
    optional: Sequence[str] = (INTENSITY_FIELD, *TIME_FIELD_NAMES),
    max_points: int = DEFAULT_MAX_POINTS,
) -> np.ndarray:
    """Validated structured view of the cloud: the ``require`` fields plus those of ``optional`` present.

    Returns a 1-D array of ``width * height`` points in row-major order, with the message's own byte order
    and types (x, y, z may be float64). It is a zero-copy, read-only view of ``msg.data`` unless an organized
    cloud pads its rows (row_step > width * point_step), in which case the rows are packed in one copy.
    Fields not asked for, their order, and padding inside a point are ignored.
    Raises :class:`MalformedCloudError`.
    """
    view, _ = _validated_view(msg, require, optional, max_points)
    if view is None:
        return np.zeros(0, dtype=pointcloud2_dtype([], 0))
    if view.shape[0] == 1 or view.strides[0] == view.shape[1] * view.strides[1]:
        flat = np.frombuffer(_buffer(msg.data), dtype=view.dtype, count=view.size)
        flat.flags.writeable = False
        return flat
    return view.reshape(-1)  # padded rows: one copy


def _finite_rows(out: np.ndarray) -> tuple[np.ndarray, int]:
    """Drop rows with a NaN/Inf in x, y, z or intensity; returns (rows kept, number dropped)."""
    # One sum per row is ~10x cheaper than isfinite(...).all(axis=1); rows whose sum is not finite are
    # then tested exactly (a finite overflow of the sum, |values| ~ 1e38, must not drop a point).
    with np.errstate(over="ignore", invalid="ignore"):
        s = out[:, 0] + out[:, 1]
        s += out[:, 2]
        s += out[:, 3]
    suspect = np.flatnonzero(~np.isfinite(s))
    if suspect.size == 0:
        return out, 0
    sub = out[suspect]
    finite = np.isfinite(sub[:, 0]) & np.isfinite(sub[:, 1]) & np.isfinite(sub[:, 2]) & np.isfinite(sub[:, 3])
    bad = suspect[~finite]
    if bad.size == 0:
        return out, 0
    keep = np.ones(len(out), dtype=bool)
    keep[bad] = False
    # Boolean-indexing whole rows as one opaque 20-byte item is ~5x faster than out[keep] on (N, 5).
    rows = out.view(np.dtype((np.void, out.strides[0]))).reshape(-1)[keep]
    return rows.view(np.float32).reshape(-1, out.shape[1]), int(bad.size)


@dataclass
class ValidCloud:
    """A cloud that passed :func:`validate_pointcloud2`: its zero-copy (height, width) view and what was seen.

    ``view`` is None for a cloud of zero points. Holding it keeps the message's buffer alive.
    """

    view: np.ndarray | None
    info: CloudInfo
    data: Any = None  # the message's buffer (msg.data)


def validate_pointcloud2(msg: PointCloud2, max_points: int = DEFAULT_MAX_POINTS) -> ValidCloud:
    """Every structural check of :func:`pointcloud2_to_xyzit`, without reading a point: O(number of fields).

    Cheap enough for a subscription callback (tens of microseconds), so that only an acceptable cloud is queued.
    Raises :class:`MalformedCloudError`.
    """
    view, info = _validated_view(msg, _XYZ, (INTENSITY_FIELD,), max_points)
    return ValidCloud(view, info, _buffer(msg.data))


def xyzit_from_valid(cloud: ValidCloud) -> tuple[np.ndarray, CloudInfo]:
    """float32 (N, 5) [x, y, z, intensity, time_lag] of a validated cloud: one copy, non-finite rows dropped."""
    view, info = cloud.view, cloud.info
    if view is None:
        return np.zeros((0, 5), np.float32), info
    h, w = view.shape
    out = np.empty((h * w, 5), dtype=np.float32)
    grid = out.reshape(h, w, 5)  # a view of out: writes land in place, padded rows included
    # float64 values beyond float32's range become +-inf here and are dropped below as non-finite.
    with np.errstate(over="ignore", invalid="ignore"):
        for col, name in enumerate(_XYZ):
            grid[:, :, col] = view[name]
        if INTENSITY_FIELD in view.dtype.names:
            grid[:, :, 3] = view[INTENSITY_FIELD]
            info.intensity_dtype = view.dtype[INTENSITY_FIELD].name
        else:
            out[:, 3] = 0.0
    out[:, 4] = 0.0
    out, info.non_finite = _finite_rows(out)
    info.num_points = len(out)
    return out, info


def _float32_xyzi_view(view: np.ndarray, data: Any) -> np.ndarray | None:
    """(N, 4) float32 x, y, z, intensity as a zero-copy view of the message, when the layout allows it."""
    names = view.dtype.names
    if INTENSITY_FIELD not in names or view.shape[0] != 1 and view.strides[0] != view.shape[1] * view.strides[1]:
        return None  # no intensity, or padded rows
    native = np.dtype(np.float32)
    fields = [view.dtype.fields[n] for n in (*_XYZ, INTENSITY_FIELD)]
    start = fields[0][1]
    step = view.strides[1]
    if start % 4 or step % 4 or any(f[0] != native or f[1] != start + 4 * i for i, f in enumerate(fields)):
        return None
    # On the message's own buffer (writable for rclpy's array.array): torch takes it without a warning.
    return np.ndarray((view.size, 4), np.float32, data, start, (step, 4))


def pipeline_points(cloud: ValidCloud) -> tuple[np.ndarray, CloudInfo]:
    """The cheapest array the CenterPoint pipeline accepts for a validated cloud, and its CloudInfo.

    Common layouts (native float32 x, y, z, intensity one after the other, rows not padded: the usual
    PointXYZI and Autoware's PointXYZIRCAEDT-like float layouts) give a zero-copy (N, 4) float32 view of the
    message in O(1), no point read (the pipeline adds time_lag 0 in the single copy it makes anyway). Points with
    a non-finite x, y, z or intensity stay in it: the pipeline drops them itself and counts them
    (``VoxelStats.nan_dropped``). Everything else goes through :func:`xyzit_from_valid` (one copy, (N, 5),
    non-finite rows dropped). The detections are the same either way.
    """
    view, info = cloud.view, cloud.info
    if view is None:
        return np.zeros((0, 5), np.float32), info
    fast = _float32_xyzi_view(view, cloud.data)
    if fast is None:
        return xyzit_from_valid(cloud)
    info.intensity_dtype = "float32"
    info.num_points = len(fast)
    return fast, info


def pointcloud2_to_xyzit(
    msg: PointCloud2, max_points: int = DEFAULT_MAX_POINTS
) -> tuple[np.ndarray, CloudInfo]:
    """The CenterPoint pipeline input: float32 (N, 5) [x, y, z, intensity, time_lag] and a :class:`CloudInfo`.

    Validates first (raises :class:`MalformedCloudError`), then copies once from the zero-copy view into
    the output; points with a non-finite x, y, z or intensity are dropped (a second copy, only when there
    are some). intensity is 0 when the cloud has no ``intensity`` field; time_lag is always 0 (single
    sweep, see the module docstring).
    """
    return xyzit_from_valid(validate_pointcloud2(msg, max_points))


_NUMPY_TO_DATATYPE = {np.dtype(v).str[1:]: k for k, v in _DATATYPES.items()}


def _point_field(name: str, offset: int, dt: np.dtype) -> PointField:
    count = 1
    if dt.subdtype is not None:
        dt, shape = dt.subdtype
        count = int(np.prod(shape))
    code = _NUMPY_TO_DATATYPE.get(dt.str[1:])
    if code is None:
        raise ValueError(f"field {name!r}: numpy type {dt} has no sensor_msgs/PointField datatype")
    return PointField(name=name, offset=int(offset), datatype=code, count=count)


def _little_endian(dt: np.dtype) -> np.dtype:
    if dt.names is None:
        return dt.newbyteorder("<") if dt.byteorder not in ("|",) else dt
    return np.dtype(
        {
            "names": list(dt.names),
            "formats": [_little_endian(dt.fields[n][0]) for n in dt.names],
            "offsets": [dt.fields[n][1] for n in dt.names],
            "itemsize": dt.itemsize,
        }
    )


def _as_stamp(stamp: Any) -> Time:
    if stamp is None:
        return Time()
    if isinstance(stamp, Time):
        return stamp
    if hasattr(stamp, "to_msg"):  # rclpy.time.Time
        return stamp.to_msg()
    ns = int(round(float(stamp) * 1e9))  # seconds
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def array_to_pointcloud2(
    points: np.ndarray,
    frame_id: str = "",
    stamp: Any = None,
    fields: Sequence[str] = ("x", "y", "z", INTENSITY_FIELD),
    is_dense: bool | None = None,
) -> PointCloud2:
    """Build a PointCloud2 (little-endian, no row padding) from numpy, in a few ms for 200k points.

    ``points``: a numeric (N, k) or organized (H, W, k) array, written as FLOAT32 fields named ``fields``
    (k names, offsets 4 * i); or a structured (N,) / (H, W) array, whose names, offsets, types and
    itemsize are kept. ``stamp``: builtin_interfaces/Time, rclpy Time, seconds, or None (zero).
    ``is_dense``: default computed (True when x, y, z are all finite).
    """
    points = np.asarray(points)
    if points.dtype.names is not None:
        if points.ndim not in (1, 2):
            raise ValueError(f"structured points must be (N,) or (H, W), got shape {points.shape}")
        arr = np.ascontiguousarray(points, dtype=_little_endian(points.dtype))
        pfields = [_point_field(n, arr.dtype.fields[n][1], arr.dtype.fields[n][0]) for n in arr.dtype.names]
        xyz = [arr[n] for n in _XYZ if n in arr.dtype.names and arr.dtype[n].kind == "f"]
    else:
        if points.ndim not in (2, 3) or points.shape[-1] != len(fields):
            raise ValueError(
                f"points must be (N, k) or (H, W, k) with k = len(fields) = {len(fields)} ({list(fields)}), "
                f"got shape {points.shape}"
            )
        arr = np.ascontiguousarray(points, dtype="<f4")
        pfields = [PointField(name=n, offset=4 * i, datatype=PointField.FLOAT32, count=1) for i, n in enumerate(fields)]
        xyz = [arr[..., i] for i, n in enumerate(fields) if n in _XYZ]
    if len({f.name for f in pfields}) != len(pfields):
        raise ValueError(f"duplicate field names in {[f.name for f in pfields]}")
    structured = points.dtype.names is not None
    organized = arr.ndim == (2 if structured else 3)
    height, width = arr.shape[:2] if organized else (1, arr.shape[0])
    step = arr.dtype.itemsize if structured else 4 * arr.shape[-1]
    if is_dense is None:
        is_dense = all(bool(np.isfinite(c).all()) for c in xyz)
    data = array.array("B")
    data.frombytes(arr.reshape(-1).view(np.uint8))  # one copy; no Python loop, no setter check
    msg = PointCloud2()
    msg.header = Header(frame_id=frame_id, stamp=_as_stamp(stamp))
    msg.height, msg.width = int(height), int(width)
    msg.fields = pfields
    msg.is_bigendian = False
    msg.point_step = int(step)
    msg.row_step = int(step) * int(width)
    msg.data = data
    msg.is_dense = bool(is_dense)
    return msg


# --------------------------------------------------------------------------------------------------
# Detections
# --------------------------------------------------------------------------------------------------

_CAR_LIKE = (1, 2, 3, 4)  # CAR, TRUCK, BUS, TRAILER: Autoware sets orientation SIGN_UNKNOWN for these


def boxes_to_detected_objects(
    boxes: Boxes3D, class_names: Sequence[str], header: Header, with_velocity: bool
) -> DetectedObjects:
    """Boxes3D -> awml_deploy_msgs/DetectedObjects (same order; labels outside class_names -> UNKNOWN).

    The field values (yaw quaternion, labels, velocity) come from the core's :func:`object_fields`, the one
    conversion the bag code uses too; :func:`detected_objects_to_boxes` is its inverse. Velocity stays 0 and
    has_velocity false when ``with_velocity`` is false.
    """
    has_vel = bool(with_velocity)
    objects = []
    for label, score, x, y, z, length, width, height, qz, qw, vx, vy in object_fields(boxes, class_names, has_vel):
        o = DetectedObject()
        o.label = label
        o.score = score
        p = o.pose.position
        p.x, p.y, p.z = x, y, z
        q = o.pose.orientation
        q.z, q.w = qz, qw
        d = o.dimensions
        d.x, d.y, d.z = length, width, height
        if has_vel:
            v = o.velocity
            v.x, v.y = vx, vy
            o.has_velocity = True
        objects.append(o)
    msg = DetectedObjects()
    msg.header = header
    msg.objects = objects
    return msg


def to_autoware_detected_objects(
    boxes: Boxes3D, class_names: Sequence[str], header: Header, with_velocity: bool = False
) -> Any:
    """Boxes3D -> autoware_perception_msgs/DetectedObjects, following Autoware's lidar_centerpoint node.

    Conventions (autoware_lidar_centerpoint ``lib/ros_utils.cpp``, ``box3DToDetectedObject``):
    existence_probability = score; one ObjectClassification with probability 1.0 (labels outside
    class_names -> UNKNOWN); orientation_availability = SIGN_UNKNOWN for CAR/TRUCK/BUS/TRAILER, else left
    UNAVAILABLE; shape BOUNDING_BOX with dimensions (length, width, height); position = box centre; no
    covariance. Autoware turns its network's mmdet3d-v0.x yaw into ROS yaw (-yaw - pi/2); Boxes3D yaw is
    already ROS yaw (CCW about +z from +x), so it is used as is. Twist (with_velocity, Autoware's
    has_twist) is in the object's frame, as in current Autoware: linear.x = cos(yaw) vx + sin(yaw) vy,
    linear.y = -sin(yaw) vx + cos(yaw) vy, angular.z = 0.

    Needs ``autoware_perception_msgs`` (an Autoware workspace; not on PyPI): raises ImportError otherwise.
    """
    try:
        from autoware_perception_msgs.msg import DetectedObject as AwObject
        from autoware_perception_msgs.msg import DetectedObjectKinematics as AwKinematics
        from autoware_perception_msgs.msg import DetectedObjects as AwObjects
        from autoware_perception_msgs.msg import ObjectClassification as AwClassification
        from autoware_perception_msgs.msg import Shape as AwShape
    except ImportError as exc:
        raise ImportError(
            "to_autoware_detected_objects needs the ROS 2 package autoware_perception_msgs, which is not "
            "importable here (it ships with Autoware, not on PyPI). Source an Autoware workspace that builds "
            "it, or publish awml_deploy_msgs/DetectedObjects instead (boxes_to_detected_objects)."
        ) from exc
    n = len(boxes)
    b = boxes.boxes.astype(np.float64)
    yaw = b[:, 6]
    c, s = np.cos(yaw), np.sin(yaw)
    vel = boxes.velocities.astype(np.float64)
    cols = np.empty((n, 12), dtype=np.float64)
    cols[:, :6] = b[:, :6]
    cols[:, 6], cols[:, 7] = yaw_to_quaternion(yaw)
    cols[:, 8] = c * vel[:, 0] + s * vel[:, 1]
    cols[:, 9] = -s * vel[:, 0] + c * vel[:, 1]
    labels = labels_to_autoware(boxes.labels, class_names).tolist()
    scores = boxes.scores.astype(np.float64).tolist()
    objects = []
    for (x, y, z, length, width, height, qz, qw, tx, ty, _, _), label, score in zip(cols.tolist(), labels, scores):
        o = AwObject()
        o.existence_probability = score
        o.classification = [AwClassification(label=label, probability=1.0)]
        k = o.kinematics
        if label in _CAR_LIKE:
            k.orientation_availability = AwKinematics.SIGN_UNKNOWN
        pose = k.pose_with_covariance.pose
        pose.position.x, pose.position.y, pose.position.z = x, y, z
        pose.orientation = Quaternion(x=0.0, y=0.0, z=qz, w=qw)
        if with_velocity:
            tw = k.twist_with_covariance.twist
            tw.linear.x, tw.linear.y = tx, ty
            k.has_twist = True
        o.shape.type = AwShape.BOUNDING_BOX
        o.shape.dimensions.x, o.shape.dimensions.y, o.shape.dimensions.z = length, width, height
        objects.append(o)
    out = AwObjects()
    out.header = header
    out.objects = objects
    return out


# --------------------------------------------------------------------------------------------------
# Benchmark
# --------------------------------------------------------------------------------------------------


def benchmark(sizes: Sequence[int] = (100_000, 200_000), repeats: int = 20, seed: int = 0) -> dict[str, float]:
    """Median milliseconds of the conversions on synthetic clouds; keys like ``to_xyzit_xyzirc_200000``.

    Layouts: ``xyzi`` (4 x float32, 16 B) and ``xyzirc`` (Autoware PointXYZIRC: float32 x, y, z, uint8
    intensity, uint8 return_type, uint16 channel, 16 B). Also ``boxes_to_msg_100`` / ``msg_to_boxes_100``.
    """
    from awml_deploy_core.bench import median_ms  # the one timing helper (imports torch: only here)

    rng = np.random.default_rng(seed)
    result: dict[str, float] = {}
    xyzirc = np.dtype(
        {
            "names": ["x", "y", "z", "intensity", "return_type", "channel"],
            "formats": ["<f4", "<f4", "<f4", "u1", "u1", "<u2"],
            "offsets": [0, 4, 8, 12, 13, 14],
            "itemsize": 16,
        }
    )
    for n in sizes:
        xyzi = rng.uniform(-50, 50, size=(n, 4)).astype(np.float32)
        structured = np.zeros(n, dtype=xyzirc)
        for i, name in enumerate(_XYZ):
            structured[name] = xyzi[:, i]
        structured["intensity"] = rng.integers(0, 256, n)
        result[f"from_array_xyzi_{n}"] = median_ms(lambda: array_to_pointcloud2(xyzi, "lidar"), repeats)
        clouds = {"xyzi": array_to_pointcloud2(xyzi, "lidar"), "xyzirc": array_to_pointcloud2(structured, "lidar")}
        for layout, msg in clouds.items():
            result[f"to_array_{layout}_{n}"] = median_ms(lambda: pointcloud2_to_array(msg), repeats)
            result[f"to_xyzit_{layout}_{n}"] = median_ms(lambda: pointcloud2_to_xyzit(msg), repeats)
    m = 100
    boxes = Boxes3D(
        boxes=rng.uniform(-3, 3, size=(m, 7)),
        scores=rng.uniform(0, 1, m),
        labels=rng.integers(0, 5, m),
        velocities=rng.uniform(-1, 1, size=(m, 2)),
    )
    names = ["car", "truck", "bus", "bicycle", "pedestrian"]
    header = Header(frame_id="lidar")
    det = boxes_to_detected_objects(boxes, names, header, True)
    result[f"boxes_to_msg_{m}"] = median_ms(lambda: boxes_to_detected_objects(boxes, names, header, True), repeats)
    result[f"msg_to_boxes_{m}"] = median_ms(lambda: detected_objects_to_boxes(det, names), repeats)
    return result


if __name__ == "__main__":  # python -m awml_deploy_nodes.conversions
    for key, ms in benchmark().items():
        print(f"{key:32s} {ms:8.3f} ms")
