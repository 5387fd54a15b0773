"""rosbag2 read/write without ROS: point clouds and detections as numpy, through the pure-Python ``rosbags``.

Storage: mcap (the default) and sqlite3, rosbag2 metadata version 8 (the oldest ``rosbags`` writes). The
standard message types come from ``rosbags``' Humble typestore; ours (``awml_deploy_msgs``) are registered
from the ``.msg`` text in :mod:`.msg_definitions`, so nothing here needs the msgs package or a ROS install.

Point clouds written here (``sensor_msgs/msg/PointCloud2``, little-endian, dense, height 1):

=========  ======  =======
field      offset  type
=========  ======  =======
x, y, z    0/4/8   float32
intensity  12      float32
ring       16      uint16  (2 bytes padding follow)
time       20      float32 (seconds after header.stamp at which the point was measured)
=========  ======  =======

``point_step`` 24. Reading accepts any layout with float x, y, z (and any numeric intensity), big- or
little-endian, organized or not; the bytes are viewed with a structured dtype (no per-point Python).
The pipeline input is ``(N, 5)`` x, y, z, intensity, time_lag with time_lag 0 (a single sweep), exactly as
the ROS node builds it (``awml_deploy_nodes.conversions``): the per-point ``time`` field is not a time lag.

Every failure is a :class:`~awml_deploy_core.errors.DatasetError` whose one-line message names the bag,
and the topic when one is involved.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, DatasetError
from ..structures import Boxes3D
from .detected_objects import detected_objects_to_boxes, object_fields
from .msg_definitions import DETECTED_OBJECTS, MSG_DEFINITIONS

log = logging.getLogger(__name__)

POINTCLOUD2 = "sensor_msgs/msg/PointCloud2"
DEFAULT_LIDAR_TOPIC = "/sensing/lidar/concatenated/pointcloud"
DEFAULT_GT_TOPIC = "/awml/ground_truth/objects"
DEFAULT_FRAME_ID = "base_link"
STORAGES = ("mcap", "sqlite3")
BAG_VERSION = 8
INFO_DIR = "awml_info"  # make-bag writes the AWML info dataset into <bag>/awml_info/infos.pkl
# A realistic epoch for synthetic drives: 2023-11-14 22:13:20 UTC.
SYNTHETIC_START_S = 1_700_000_000.0
# Recorded (log) time = header stamp + this, like a cloud that took 40 ms to be concatenated and recorded.
SYNTHETIC_RECORD_DELAY_NS = 40_000_000

# PointField datatype codes (fixed by sensor_msgs/PointField) -> numpy type without byte order.
_DATATYPES = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 8: "f8"}
_FLOAT32, _UINT16 = 7, 4
# Our layout: (name, offset, datatype).
CLOUD_FIELDS = (("x", 0, _FLOAT32), ("y", 4, _FLOAT32), ("z", 8, _FLOAT32), ("intensity", 12, _FLOAT32),
                ("ring", 16, _UINT16), ("time", 20, _FLOAT32))
CLOUD_POINT_STEP = 24
CLOUD_DTYPE = np.dtype({"names": [f[0] for f in CLOUD_FIELDS],
                        "formats": ["<" + _DATATYPES[f[2]] for f in CLOUD_FIELDS],
                        "offsets": [f[1] for f in CLOUD_FIELDS], "itemsize": CLOUD_POINT_STEP})


# --------------------------------------------------------------------------------------------- types
@lru_cache(maxsize=1)
def typestore() -> Any:
    """The ``rosbags`` typestore: ROS 2 Humble's standard types plus ``awml_deploy_msgs`` (from the .msg text)."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.ROS2_HUMBLE)
    types: dict[str, Any] = {}
    for name, text in MSG_DEFINITIONS.items():
        types.update(get_types_from_msg(text, name))
    store.register(types)
    return store


def stamp_to_ns(stamp: Any) -> int:
    """``builtin_interfaces/Time`` (object or dict) -> integer nanoseconds."""
    sec, nsec = (stamp["sec"], stamp["nanosec"]) if isinstance(stamp, Mapping) else (stamp.sec, stamp.nanosec)
    return int(sec) * 1_000_000_000 + int(nsec)


def seconds_to_ns(t: float) -> int:
    """Float seconds (as info files store them) -> ns, rounded to the microsecond (float64 carries no more at
    epoch times)."""
    return int(round(float(t) * 1e6)) * 1000


def _header(stamp_ns: int, frame_id: str) -> Any:
    t = typestore().types
    return t["std_msgs/msg/Header"](
        stamp=t["builtin_interfaces/msg/Time"](sec=int(stamp_ns // 1_000_000_000),
                                               nanosec=int(stamp_ns % 1_000_000_000)),
        frame_id=frame_id)


# --------------------------------------------------------------------------------------------- clouds
def cloud_message(points: np.ndarray, stamp_ns: int, ring: np.ndarray | None = None, time: np.ndarray | None = None,
                  frame_id: str = DEFAULT_FRAME_ID) -> Any:
    """(N, >=4) x, y, z, intensity (+ ring, time) -> a ``rosbags`` PointCloud2 in the layout of the module doc."""
    points = np.asarray(points)
    n = len(points)
    arr = np.zeros(n, CLOUD_DTYPE)
    for i, name in enumerate(("x", "y", "z", "intensity")):
        arr[name] = points[:, i]
    if ring is not None:
        arr["ring"] = ring
    if time is not None:
        arr["time"] = time
    t = typestore().types
    fields = [t["sensor_msgs/msg/PointField"](name=name, offset=off, datatype=dt, count=1)
              for name, off, dt in CLOUD_FIELDS]
    return t[POINTCLOUD2](header=_header(stamp_ns, frame_id), height=1, width=n, fields=fields, is_bigendian=False,
                          point_step=CLOUD_POINT_STEP, row_step=CLOUD_POINT_STEP * n,
                          data=np.frombuffer(arr.tobytes(), np.uint8), is_dense=True)


def cloud_fields(msg: Any) -> np.ndarray:
    """A structured view (no copy for dense clouds) of a PointCloud2's points, one field per PointField.

    Raises ValueError on a layout that can't be trusted (fields past point_step, data shorter than the
    header says)."""
    width, height, step = int(msg.width), int(msg.height), int(msg.point_step)
    n = width * height
    order = ">" if msg.is_bigendian else "<"
    names, formats, offsets = [], [], []
    for f in msg.fields:
        code = _DATATYPES.get(int(f.datatype))
        if code is None:
            raise ValueError(f"field {f.name!r} has unknown datatype {f.datatype}")
        count = max(int(f.count), 1)
        if int(f.offset) + np.dtype(code).itemsize * count > step:
            raise ValueError(f"field {f.name!r} ends past point_step {step}")
        if f.name in names:
            raise ValueError(f"field {f.name!r} appears twice")
        names.append(f.name)
        formats.append((order + code, (count,)) if count > 1 else order + code)
        offsets.append(int(f.offset))
    dtype = np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": max(step, 1)})
    data = msg.data
    buf = data if isinstance(data, np.ndarray) else np.frombuffer(memoryview(data), np.uint8)
    if n == 0:
        return np.zeros(0, dtype)
    row_step = int(msg.row_step)
    if row_step < width * step or len(buf) < row_step * (height - 1) + width * step:
        raise ValueError(f"data holds {len(buf)} bytes, less than {height} rows x row_step {row_step} "
                         f"(width {width} x point_step {step})")
    if row_step == width * step:
        return np.frombuffer(buf, dtype, count=n)
    rows = [np.frombuffer(buf[r * row_step: r * row_step + width * step], dtype, count=width) for r in range(height)]
    return np.concatenate(rows)


def cloud_to_points(msg: Any) -> np.ndarray:
    """PointCloud2 -> the pipeline input, (N, 5) float32 x, y, z, intensity, time_lag (0: a single sweep).

    Intensity of any numeric type is converted without scaling; a cloud without intensity gets 0.
    """
    view = cloud_fields(msg)
    names = view.dtype.names or ()
    missing = [c for c in ("x", "y", "z") if c not in names]
    if missing:
        raise ValueError(f"cloud has no field {missing[0]!r} (fields: {list(names)})")
    out = np.zeros((len(view), 5), np.float32)
    for i, name in enumerate(("x", "y", "z", "intensity")):
        if name in names:
            out[:, i] = view[name]
    return out


# --------------------------------------------------------------------------------------------- detections
def detected_objects_message(boxes: Boxes3D, class_names: Sequence[str], stamp_ns: int,
                             frame_id: str = DEFAULT_FRAME_ID, with_velocity: bool = True) -> Any:
    """Boxes3D -> a ``rosbags`` awml_deploy_msgs/DetectedObjects (the node's conventions: :mod:`.detected_objects`)."""
    t = typestore().types
    Obj, Pose, Point, Quat, Vec = (t["awml_deploy_msgs/msg/DetectedObject"], t["geometry_msgs/msg/Pose"],
                                   t["geometry_msgs/msg/Point"], t["geometry_msgs/msg/Quaternion"],
                                   t["geometry_msgs/msg/Vector3"])
    objects = [Obj(label=label, score=score,
                   pose=Pose(position=Point(x=x, y=y, z=z), orientation=Quat(x=0.0, y=0.0, z=qz, w=qw)),
                   dimensions=Vec(x=length, y=width, z=height), velocity=Vec(x=vx, y=vy, z=0.0),
                   has_velocity=bool(with_velocity))
               for label, score, x, y, z, length, width, height, qz, qw, vx, vy
               in object_fields(boxes, class_names, with_velocity)]
    return t[DETECTED_OBJECTS](header=_header(stamp_ns, frame_id), objects=objects)


# --------------------------------------------------------------------------------------------- reading
@dataclass(frozen=True)
class TopicSummary:
    msgtype: str | None
    count: int


_REPAIR_HINT = ("an interrupted recording can often be repaired: `mcap recover IN.mcap -o OUT.mcap` for mcap, "
                "`sqlite3 IN.db3 .recover | sqlite3 OUT.db3` for sqlite3")


def _reason(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) < 200 else text[:197] + "..."


class BagReader:
    """One rosbag2 (a folder with metadata.yaml, or a single .mcap / .db3 file), opened for reading.

    A folder without metadata.yaml (a recorder that crashed before writing it) is opened through its only
    storage file. Use as a context manager.
    """

    def __init__(self, path: str | Path) -> None:
        from rosbags.rosbag2 import Reader

        self.path = Path(path)
        if not self.path.exists():
            raise DatasetError(f"bag {self.path}: not found")
        target = self.path
        if self.path.is_dir() and not (self.path / "metadata.yaml").exists():
            files = sorted([*self.path.glob("*.mcap"), *self.path.glob("*.db3")])
            if len(files) != 1:
                raise DatasetError(f"bag {self.path}: no metadata.yaml and {len(files)} storage files (.mcap/.db3) "
                                   "in the folder; is this a rosbag2 folder?")
            log.warning("bag %s has no metadata.yaml (recording interrupted?); reading %s directly", self.path,
                        files[0].name)
            target = files[0]
        try:
            self._reader = Reader(target)
            self._reader.open()
        except Exception as e:  # rosbags ReaderError, sqlite/apsw errors, OSError, bad YAML ...
            raise DatasetError(f"bag {self.path}: cannot open ({_reason(e)}); the bag is truncated or corrupt "
                               f"({_REPAIR_HINT}) or not a rosbag2") from None
        self.topics: dict[str, TopicSummary] = {
            name: TopicSummary(info.msgtype, int(info.msgcount)) for name, info in self._reader.topics.items()}

    # --------------------------------------------------------------------------- topics
    def describe_topics(self) -> str:
        if not self.topics:
            return "the bag has no topics"
        return "topics in the bag: " + ", ".join(f"{t} ({s.msgtype}, {s.count} msgs)"
                                                 for t, s in sorted(self.topics.items()))

    def require(self, topic: str, msgtypes: Sequence[str], role: str) -> str:
        """The topic's message type, after checking that it exists and has one of ``msgtypes``."""
        info = self.topics.get(topic)
        if info is None:
            raise DatasetError(f"bag {self.path}: no {role} topic {topic!r}; {self.describe_topics()}")
        if info.msgtype not in msgtypes:
            raise DatasetError(f"bag {self.path}: {role} topic {topic!r} carries {info.msgtype}, expected "
                               f"{' or '.join(msgtypes)}")
        if info.count == 0:
            raise DatasetError(f"bag {self.path}: {role} topic {topic!r} has no messages")
        return info.msgtype  # type: ignore[return-value]

    # --------------------------------------------------------------------------- messages
    def messages(self, topic: str) -> Iterator[tuple[int, Any]]:
        """(log time ns, raw CDR bytes) of one topic in recording order; a read fault is a DatasetError naming
        the bag, the topic and how many messages came before it."""
        conns = [c for c in self._reader.connections if c.topic == topic]
        n = 0
        it = self._reader.messages(connections=conns)
        while True:
            try:
                _, log_ns, raw = next(it)
            except StopIteration:
                return
            except Exception as e:
                raise DatasetError(f"bag {self.path}: reading topic {topic!r} failed after {n} messages "
                                   f"({_reason(e)}); the bag is truncated or corrupt ({_REPAIR_HINT})") from None
            n += 1
            yield int(log_ns), raw

    def deserialize(self, raw: Any, msgtype: str, topic: str, index: int) -> Any:
        try:
            return typestore().deserialize_cdr(raw, msgtype)
        except Exception as e:
            raise DatasetError(f"bag {self.path}: message {index} on topic {topic!r} is not a valid {msgtype} "
                               f"({_reason(e)})") from None

    def close(self) -> None:
        if getattr(self, "_reader", None) is not None and self._reader.is_open:
            self._reader.close()

    def __enter__(self) -> "BagReader":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def read_decoded(reader: BagReader, topic: str, msgtypes: tuple[str, ...], role: str, what: str,
                 decode: Callable[[Any], Any]) -> Iterator[tuple[int, int, Any]]:
    """(header stamp ns, log time ns, ``decode(msg)``) for every message on ``topic``; a message ``decode`` refuses
    (ValueError) is one DatasetError naming the bag, the ``what`` and its index."""
    msgtype = reader.require(topic, msgtypes, role)
    for i, (log_ns, raw) in enumerate(reader.messages(topic)):
        msg = reader.deserialize(raw, msgtype, topic, i)
        try:
            value = decode(msg)
        except ValueError as e:
            raise DatasetError(f"bag {reader.path}: {what} {i} on topic {topic!r} is malformed ({e})") from None
        yield stamp_to_ns(msg.header.stamp), log_ns, value


def read_clouds(reader: BagReader, topic: str) -> Iterator[tuple[int, int, np.ndarray]]:
    """(header stamp ns, log time ns, (N, 5) points) for every cloud on ``topic``."""
    return read_decoded(reader, topic, (POINTCLOUD2,), "lidar", "cloud", cloud_to_points)


def read_detected_objects(reader: BagReader, topic: str, class_names: Sequence[str]) -> list[tuple[int, Boxes3D]]:
    """(header stamp ns, Boxes3D) for every DetectedObjects message on ``topic``."""
    msgtype = reader.require(topic, (DETECTED_OBJECTS,), "ground-truth")
    out = []
    for i, (_, raw) in enumerate(reader.messages(topic)):
        msg = reader.deserialize(raw, msgtype, topic, i)
        out.append((stamp_to_ns(msg.header.stamp), detected_objects_to_boxes(msg, class_names)))
    return out


# --------------------------------------------------------------------------------------------- writing
class BagWriter:
    """A new rosbag2 folder; messages are ``rosbags`` message objects, serialized here. Context manager."""

    def __init__(self, path: str | Path, storage: str = "mcap", version: int = BAG_VERSION) -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer

        if storage not in STORAGES:
            raise ConfigError(f"storage {storage!r} not supported; choose one of {', '.join(STORAGES)}")
        self.path = Path(path)
        plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        self._writer = Writer(self.path, version=version, storage_plugin=plugin)
        self._conns: dict[str, tuple[Any, str]] = {}

    def __enter__(self) -> "BagWriter":
        self._writer.open()
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        self._writer.close()

    def add_topic(self, topic: str, msgtype: str) -> None:
        self._conns[topic] = (self._writer.add_connection(topic, msgtype, typestore=typestore()), msgtype)

    def write(self, topic: str, log_time_ns: int, msg: Any) -> None:
        conn, msgtype = self._conns[topic]
        self._writer.write(conn, int(log_time_ns), typestore().serialize_cdr(msg, msgtype))

    def write_raw(self, topic: str, log_time_ns: int, data: bytes) -> None:
        """Already serialized bytes (e.g. copied from another bag)."""
        self._writer.write(self._conns[topic][0], int(log_time_ns), data)


@dataclass
class SyntheticBag:
    path: Path
    info_path: Path
    frames: int
    storage: str
    lidar_topic: str
    gt_topic: str
    start_ns: int
    end_ns: int
    cameras: tuple[str, ...] = ()  # camera names (topics: data/rosbag_camera.py)
    camera_info_path: Path | None = None  # <bag>/awml_info/camera_infos.json when cameras were written


def write_synthetic_bag(out: str | Path, seconds: float, seed: int, storage: str = "mcap",
                        lidar_topic: str = DEFAULT_LIDAR_TOPIC, gt_topic: str = DEFAULT_GT_TOPIC,
                        progress: bool = True, frame_id: str = DEFAULT_FRAME_ID, cameras: int = 0,
                        miscalibrated_frames: tuple[int, int] | None = None,
                        miscalibration: tuple[float, float] = (3.0, 0.1),
                        thresholds: Any = None) -> SyntheticBag:
    """A synthetic drive (:func:`~awml_deploy_core.data.synthetic.generate_sequence`) as a real rosbag2.

    Clouds at 10 Hz on ``lidar_topic`` (header.stamp = frame timestamp, from ``SYNTHETIC_START_S``), ground
    truth as awml_deploy_msgs/DetectedObjects on ``gt_topic`` (same stamps; only the boxes with at least one
    lidar point, i.e. what evaluation scores), and the same frames as an AWML info dataset in
    ``<out>/awml_info/infos.pkl`` (all boxes, with ``num_lidar_pts``). Written into a temporary folder next
    to ``out`` and renamed into place, so ``out`` appears complete or not at all.

    ``cameras`` > 0 adds that many synthetic cameras (``camera0`` looks ahead, camera i at azimuth 360 i / N):
    per frame an image, a CameraInfo and the 2D ground truth of each, stamped with the cloud's stamp, plus the
    sidecar ``<out>/awml_info/camera_infos.json`` (:mod:`.rosbag_camera`). 0 (the default) writes no camera.

    ``miscalibrated_frames`` ``(a, b)`` makes it a calibration-status drive: in frames ``[a, b)`` camera0 has
    physically moved by ``miscalibration`` (rotation degrees, translation metres; axes from ``seed``), so its image
    (and its 2D ground truth) is the moved camera's view, while CameraInfo and the sidecar's ``lidar2cam`` stay the
    nominal calibration the vehicle believes. The sidecar labels every camera image (``calibration``: errors of
    the true pose against the nominal one and the label under ``thresholds``, MiscalibrationConfig's defaults).
    """
    from .info_dataset import write_info_dataset
    from .synthetic import generate_sequence

    out = Path(out)
    if out.exists():
        raise ConfigError(f"{out} exists already; remove it or choose another output path")
    if not seconds > 0:
        raise ConfigError(f"--seconds must be > 0, got {seconds}")
    if storage not in STORAGES:
        raise ConfigError(f"storage {storage!r} not supported; choose one of {', '.join(STORAGES)}")
    from .lidar import LidarSpec

    if cameras < 0:
        raise ConfigError(f"--cameras must be >= 0, got {cameras}")
    period = LidarSpec().sweep_period
    num_frames = max(1, int(round(seconds / period)))
    if miscalibrated_frames is not None:
        a, b = (int(v) for v in miscalibrated_frames)
        if cameras < 1:
            raise ConfigError("--miscalibrated-frames needs a camera (--cameras 1 or more): camera0 is the one moved")
        if not 0 <= a <= b <= num_frames:
            raise ConfigError(f"--miscalibrated-frames {a}:{b} must lie within the drive's 0..{num_frames} frames")
        if min(miscalibration) < 0:
            raise ConfigError(f"--miscalibration {miscalibration[0]},{miscalibration[1]}: must be >= 0")
        miscalibrated_frames = (a, b)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    bag_dir = tmp / out.name  # rosbags names the storage file after the folder (<out>/<out>.mcap)
    stamps: list[int] = []
    rig = (_CameraRig(seed, num_frames, cameras, miscalibrated_frames, miscalibration, thresholds)
           if cameras else None)

    def frames_written() -> Iterator[Any]:
        it = generate_sequence(seed, num_frames, start_time=SYNTHETIC_START_S)
        if progress:
            from tqdm import tqdm

            it = tqdm(it, total=num_frames, desc=f"make-bag {out.name}", unit="frame")
        with BagWriter(bag_dir, storage) as bag:
            bag.add_topic(lidar_topic, POINTCLOUD2)
            bag.add_topic(gt_topic, DETECTED_OBJECTS)
            if rig is not None:
                rig.add_topics(bag)
            for frame in it:
                stamp = seconds_to_ns(frame.timestamp)
                stamps.append(stamp)
                bag.write(lidar_topic, stamp + SYNTHETIC_RECORD_DELAY_NS,
                          cloud_message(frame.points, stamp, frame.ring, frame.time, frame_id))
                scored = frame.gt.select(frame.num_lidar_points > 0)
                bag.write(gt_topic, stamp + SYNTHETIC_RECORD_DELAY_NS,
                          detected_objects_message(scored, frame.class_names, stamp, frame_id))
                if rig is not None:
                    rig.write_frame(bag, stamp, SYNTHETIC_RECORD_DELAY_NS)
                yield frame

    try:
        info = write_info_dataset(frames_written(), bag_dir / INFO_DIR, total=num_frames)
        if rig is not None:
            rig.write_sidecar(bag_dir / INFO_DIR)
        os.replace(bag_dir, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return SyntheticBag(out, out / INFO_DIR / info.name, len(stamps), storage, lidar_topic, gt_topic,
                        stamps[0], stamps[-1], rig.names if rig is not None else (),
                        out / INFO_DIR / rig.SIDECAR if rig is not None else None)


class _CameraRig:
    """The cameras of a generated drive: they render the drive's scene frame by frame (same layout, same
    timestamps as the lidar) and write image, CameraInfo and 2D ground truth; the sidecar is the same data."""

    SIDECAR = "camera_infos.json"

    def __init__(self, seed: int, num_frames: int, count: int, miscalibrated: tuple[int, int] | None = None,
                 miscalibration: tuple[float, float] = (3.0, 0.1), thresholds: Any = None) -> None:
        from ..config import MiscalibrationConfig
        from .calibration_pairs import extrinsic_error, label_of, perturb_extrinsic
        from .camera import CameraSpec
        from .rosbag_camera import CAMERA_INFO_FILE, camera_name
        from .synthetic import build_layout

        assert CAMERA_INFO_FILE == self.SIDECAR
        self.names = tuple(camera_name(i) for i in range(count))
        self.specs = [CameraSpec() if i == 0 else CameraSpec.forward(yaw_deg=360.0 * i / count) for i in range(count)]
        self.layout = build_layout(seed, num_frames)  # the scene generate_camera_sequence renders
        self.k = 0
        self.entries: list[dict[str, Any]] = []
        self.miscalibrated = miscalibrated
        self.thresholds = thresholds or MiscalibrationConfig()
        self.calibration: dict[str, Any] | None = None
        self.moved = None
        if miscalibrated is not None:
            nominal = self.specs[0].T_cam_lidar
            true = perturb_extrinsic(nominal, float(miscalibration[0]), float(miscalibration[1]), seed)
            self.moved = CameraSpec(extrinsic=tuple(float(v) for v in true.ravel()))
            rot, trans = extrinsic_error(nominal, true)
            self.calibration = {"camera": self.names[0], "frames": list(miscalibrated),
                                "rotation_deg": float(miscalibration[0]), "translation_m": float(miscalibration[1]),
                                "true_lidar2cam": true.tolist(), "rotation_error_deg": float(rot),
                                "translation_error_m": float(trans), "label": label_of(rot, trans, self.thresholds),
                                "thresholds": {"rotation_deg": self.thresholds.rotation_threshold_deg,
                                               "translation_m": self.thresholds.translation_threshold_m}}

    def _moved_now(self, index: int) -> bool:
        return index == 0 and self.miscalibrated is not None and self.miscalibrated[0] <= self.k < self.miscalibrated[1]

    def add_topics(self, bag: "BagWriter") -> None:
        from .rosbag_camera import CAMERA_INFO, DETECTIONS2D, IMAGE, camera_info_topic, gt2d_topic, image_topic

        for n in self.names:
            bag.add_topic(image_topic(n), IMAGE)
            bag.add_topic(camera_info_topic(n), CAMERA_INFO)
            bag.add_topic(gt2d_topic(n), DETECTIONS2D)

    def write_frame(self, bag: "BagWriter", stamp: int, delay_ns: int) -> None:
        from .rosbag_camera import (GT_IGNORE_SCORE, GT_SCORE, camera_info_message, camera_info_topic,
                                    detections2d_message, gt2d_topic, image_message, image_topic, optical_frame)

        from .camera import render_frame

        entry: dict[str, Any] = {"timestamp_ns": stamp, "images": {}, "cam_instances": {}}
        t = SYNTHETIC_START_S + self.k * self.layout.lidar.sweep_period
        for i, (name, spec) in enumerate(zip(self.names, self.specs)):
            moved = self._moved_now(i)
            cf = render_frame(self.layout, self.k, self.moved if moved else spec, t)
            if seconds_to_ns(cf.timestamp) != stamp:  # one renderer clock: a mismatch is a bug, not data
                raise DatasetError(f"camera {name}: frame {cf.frame_index} stamped {seconds_to_ns(cf.timestamp)} "
                                   f"ns, the lidar frame {stamp} ns")
            frame = optical_frame(name)
            bag.write(image_topic(name), stamp + delay_ns, image_message(cf.image, stamp, frame))
            bag.write(camera_info_topic(name), stamp + delay_ns,
                      camera_info_message(spec.K, spec.width, spec.height, stamp, frame))
            scores = np.where(cf.ignore, GT_IGNORE_SCORE, GT_SCORE)
            bag.write(gt2d_topic(name), stamp + delay_ns,
                      detections2d_message(cf.boxes, cf.labels, scores, stamp, frame))
            entry["images"][name] = {"topic": image_topic(name), "frame_id": frame, "height": spec.height,
                                     "width": spec.width, "cam2img": spec.K.tolist(),
                                     "lidar2cam": spec.T_cam_lidar.tolist(), "calibration": self._label(moved)}
            entry["cam_instances"][name] = [
                {"bbox": [float(v) for v in o.box], "bbox_label": int(o.label), "ignore_flag": bool(o.ignore),
                 "truncation": float(o.truncation), "occlusion": float(o.occlusion), "depth": float(o.depth),
                 "instance_token": f"{o.instance_id:016x}", "instance_index": int(o.index)} for o in cf.objects]
        self.entries.append(entry)
        self.k += 1

    def _label(self, moved: bool) -> dict[str, Any]:
        """Where the camera truly was against the nominal ``lidar2cam``, and the label that follows."""
        if not moved:
            return {"rotation_error_deg": 0.0, "translation_error_m": 0.0, "label": "calibrated"}
        c = self.calibration
        assert c is not None
        return {"rotation_error_deg": c["rotation_error_deg"], "translation_error_m": c["translation_error_m"],
                "label": c["label"]}

    def write_sidecar(self, folder: Path) -> Path:
        from ..bundle import atomic_write_json
        from ..labels import T4_2D_CLASSES
        from .rosbag_camera import GT_IGNORE_SCORE, GT_SCORE

        folder.mkdir(parents=True, exist_ok=True)
        return atomic_write_json(folder / self.SIDECAR, {
            "metainfo": {"classes_2d": list(T4_2D_CLASSES), "cameras": list(self.names),
                         "miscalibration": self.calibration,
                         "gt_topic_encoding": {"label": "index into classes_2d", "score": {
                             "object": GT_SCORE, "ignore_region": GT_IGNORE_SCORE}}},
            "data_list": self.entries})


__all__ = [
    "BagReader", "BagWriter", "CLOUD_DTYPE", "DEFAULT_GT_TOPIC", "DEFAULT_LIDAR_TOPIC", "POINTCLOUD2",
    "STORAGES", "SyntheticBag", "cloud_fields", "cloud_message", "cloud_to_points", "detected_objects_message",
    "detected_objects_to_boxes", "read_clouds", "read_detected_objects", "seconds_to_ns", "stamp_to_ns",
    "typestore", "write_synthetic_bag",
]
