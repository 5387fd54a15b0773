"""``output_recorder``: record a detection node's outputs, and the inputs it was sent, into a rosbag2 (mcap).

What a real-time replay evaluation scores. Three topics, each optional (an empty name skips it):

- ``input_topic`` (``input_type``: sensor_msgs/PointCloud2 by default, or sensor_msgs/Image): the inputs sent to the
  node, to know which inputs were sent (an input without an output is a dropped frame). By default only their
  header is kept (a PointCloud2 with no points / an Image with no pixels, same stamp and frame_id), so the bag stays
  small; ``record_input_data: true`` keeps the inputs as received;
- ``objects_topic`` (``objects_type``: awml_deploy_msgs/DetectedObjects by default, awml_deploy_msgs/Detections2D
  for a camera detector, or awml_deploy_msgs/CalibrationStatus for calibration_status_node) and ``stats_topic`` (awml_deploy_msgs/InferenceStats): the node's outputs, as received.

Every message is written with its RECEIVE time as the bag's log time (the system clock, taken first thing in the
callback), so arrival times can be read back from the bag. Subscriptions are raw (``raw=True``): the CDR bytes are
written as they arrived, with no deserialize/serialize round trip, into an mcap (or sqlite3) rosbag2 written by the
core's :class:`~awml_deploy_core.data.rosbag_io.BagWriter` (``rosbags``; the connections carry the message
definitions, so ``ros2 bag info``/Foxglove/``rosbags`` read it). A writer thread does the disk I/O, so the
callbacks only stamp and queue.

Start it (parameters: :data:`PARAMS`)::

    ros2 run awml_deploy_nodes output_recorder --ros-args -p output_bag:=/tmp/recording \\
        -p input_topic:=/sensing/lidar/concatenated/pointcloud \\
        -p objects_topic:=/perception/object_recognition/detection/awml/objects \\
        -p stats_topic:=/centerpoint/debug/inference_stats

Log lines: ``ready: ...`` once subscribed, ``matched: ...`` once every recorded output topic has a publisher,
progress every ``progress_period_s``, ``closed: ...`` after the bag is complete. SIGINT or SIGTERM: the
subscriptions are removed, the queue is written out and the bag closed (metadata.yaml written): the bag is
readable afterwards. Exit code 0; 2 for a bad parameter or an output path that exists.

QoS: the input as sensor data, but deeper (best effort, keep last 50: a burst is not lost while the writer is
busy); the outputs reliable, keep last 100 (matches the node's reliable publishers).
"""

from __future__ import annotations

import queue
import signal
import struct
import sys
import threading
import time
from pathlib import Path
from typing import Any

from awml_deploy_nodes.node_params import ParamSpec, declare_read_only

NODE_NAME = "output_recorder"
POINTCLOUD2 = "sensor_msgs/msg/PointCloud2"
IMAGE = "sensor_msgs/msg/Image"
DETECTED_OBJECTS = "awml_deploy_msgs/msg/DetectedObjects"
DETECTIONS2D = "awml_deploy_msgs/msg/Detections2D"
CALIBRATION_STATUS = "awml_deploy_msgs/msg/CalibrationStatus"
INPUT_TYPES = (POINTCLOUD2, IMAGE)
OBJECTS_TYPES = (DETECTED_OBJECTS, DETECTIONS2D, CALIBRATION_STATUS)
INFERENCE_STATS = "awml_deploy_msgs/msg/InferenceStats"
DEFAULT_OBJECTS_TOPIC = "/perception/object_recognition/detection/awml/objects"
DEFAULT_STATS_TOPIC = "/centerpoint/debug/inference_stats"
DEFAULT_INPUT_TOPIC = "/sensing/lidar/concatenated/pointcloud"


PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec("output_bag", "", "rosbag2 folder to create (must not exist). Required."),
    ParamSpec("storage", "mcap", "mcap or sqlite3."),
    ParamSpec("input_topic", DEFAULT_INPUT_TOPIC, "Inputs sent to the node (input_type); empty: not recorded."),
    ParamSpec("input_type", POINTCLOUD2, f"Message type of input_topic: {' or '.join(INPUT_TYPES)}."),
    ParamSpec("objects_topic", DEFAULT_OBJECTS_TOPIC, "The node's detections (objects_type); empty: not recorded."),
    ParamSpec("objects_type", DETECTED_OBJECTS, f"Message type of objects_topic: {' or '.join(OBJECTS_TYPES)}."),
    ParamSpec("stats_topic", DEFAULT_STATS_TOPIC, "awml_deploy_msgs/InferenceStats output; empty: not recorded."),
    ParamSpec("record_input_data", False, "Keep the input clouds' points (default: header only)."),
    ParamSpec("progress_period_s", 5.0, "Period of the progress log line."),
)
PARAM_NAMES = tuple(p.name for p in PARAMS)


class RecorderError(Exception):
    """A bad parameter: one line, exit code 2."""


def cdr_header(raw: bytes) -> tuple[int, int, str]:
    """(sec, nanosec, frame_id) of a message that starts with a std_msgs/Header, from its CDR bytes."""
    little = raw[1] == 1  # encapsulation: 0x0001 CDR little-endian, 0x0000 big-endian
    e = "<" if little else ">"
    sec, nsec, n = struct.unpack_from(f"{e}iII", raw, 4)
    frame_id = bytes(raw[16:16 + max(n - 1, 0)]).decode("utf-8", "replace")
    return sec, nsec, frame_id


def header_only_cloud(raw: bytes, msgtype: str = POINTCLOUD2) -> bytes:
    """The CDR of a PointCloud2 (or an Image, ``msgtype``) with the same header as ``raw`` and no data."""
    from rclpy.serialization import serialize_message
    from sensor_msgs.msg import Image, PointCloud2

    sec, nsec, frame_id = cdr_header(raw)
    msg = Image() if msgtype == IMAGE else PointCloud2()
    msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id = sec, nsec, frame_id
    return serialize_message(msg)


class Recorder:
    """Raw subscriptions -> a queue -> a writer thread -> the bag."""

    def __init__(self, node: Any, p: dict[str, Any]) -> None:
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image, PointCloud2

        from awml_deploy_core.data.rosbag_io import BagWriter
        from awml_deploy_msgs.msg import CalibrationStatus, DetectedObjects, Detections2D, InferenceStats

        self.node = node
        self.log = node.get_logger()
        out = Path(p["output_bag"]).expanduser()
        if out.exists():
            raise RecorderError(f"parameter 'output_bag': {out} exists already; remove it or choose another path")
        if p["storage"] not in ("mcap", "sqlite3"):
            raise RecorderError(f"parameter 'storage': mcap or sqlite3 (got {p['storage']!r})")
        for key, allowed in (("input_type", INPUT_TYPES), ("objects_type", OBJECTS_TYPES)):
            if p[key] not in allowed:
                raise RecorderError(f"parameter '{key}': one of {', '.join(allowed)} (got {p[key]!r})")
        out.parent.mkdir(parents=True, exist_ok=True)
        self.path = out
        input_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=50, reliability=ReliabilityPolicy.BEST_EFFORT,
                               durability=DurabilityPolicy.VOLATILE)
        output_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE)
        classes = {POINTCLOUD2: PointCloud2, IMAGE: Image, DETECTED_OBJECTS: DetectedObjects,
                   DETECTIONS2D: Detections2D, CALIBRATION_STATUS: CalibrationStatus}
        plan = [(p["input_topic"], classes[p["input_type"]], p["input_type"], input_qos),
                (p["objects_topic"], classes[p["objects_type"]], p["objects_type"], output_qos),
                (p["stats_topic"], InferenceStats, INFERENCE_STATS, output_qos)]
        plan = [x for x in plan if x[0]]
        if not plan:
            raise RecorderError("nothing to record: input_topic, objects_topic and stats_topic are all empty")
        self.strip_input = not p["record_input_data"]
        self.queue: queue.Queue = queue.Queue()
        self.counts: dict[str, int] = {}
        self.bag = BagWriter(out, p["storage"]).__enter__()
        self.subs = []
        self.output_topics = []
        for topic, cls, msgtype, qos in plan:
            cell: dict[str, Any] = {"strip": self.strip_input and msgtype in INPUT_TYPES, "type": msgtype}
            sub = node.create_subscription(cls, topic, self._callback(cell), qos, raw=True)
            cell["name"] = name = sub.topic_name  # resolved (after remapping): the name the bag records
            self.bag.add_topic(name, msgtype)
            self.counts[name] = 0
            self.subs.append((sub, name))
            if msgtype not in INPUT_TYPES:
                self.output_topics.append(name)
        self._write_error: BaseException | None = None
        self._writer = threading.Thread(target=self._write, name="output_recorder_writer", daemon=True)
        self._writer.start()
        self.matched = False

    def _callback(self, cell: dict[str, Any]) -> Any:
        def on_raw(raw: bytes) -> None:
            self.queue.put((cell, time.time_ns(), raw))

        return on_raw

    def _write(self) -> None:
        while True:
            item = self.queue.get()
            if item is None:
                return
            cell, recv_ns, raw = item
            name = cell["name"]
            try:
                self.bag.write_raw(name, recv_ns, header_only_cloud(raw, cell["type"]) if cell["strip"] else raw)
                self.counts[name] += 1
            except BaseException as e:  # noqa: BLE001 - reported by close(); keep draining so shutdown is clean
                if self._write_error is None:
                    self._write_error = e
                    self.log.error(f"writing {name} failed: {type(e).__name__}: {e}")

    def check_matched(self) -> None:
        if self.matched:
            return
        if all(self.node.count_publishers(t) > 0 for t in self.output_topics):
            self.matched = True
            self.log.info(f"matched: publishers on {', '.join(self.output_topics) or '(no output topics)'}")

    def progress(self) -> str:
        return ", ".join(f"{name} {n}" for name, n in self.counts.items())

    def close(self) -> None:
        for sub, _ in self.subs:
            self.node.destroy_subscription(sub)
        self.queue.put(None)
        self._writer.join()
        self.bag.__exit__(None, None, None)
        total = sum(self.counts.values())
        self.log.info(f"closed: {self.path} ({total} messages: {self.progress()})")
        if self._write_error is not None:
            raise self._write_error


def read_params(node: Any) -> dict[str, Any]:
    values = declare_read_only(node, PARAMS)
    if not values["output_bag"]:
        raise RecorderError("parameter 'output_bag': required (a rosbag2 folder to create)")
    return values


def main(args: list[str] | None = None) -> int:
    from .startup import init_ros, run_main

    stop = threading.Event()

    def start() -> int:
        init_ros(args, signal_handlers=False)  # ours stop the recording loop
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        return _record(stop)

    return run_main("output_recorder", start)


def _record(stop: threading.Event) -> int:
    import rclpy

    node = rclpy.create_node(NODE_NAME)
    recorder = None
    try:
        p = read_params(node)
        recorder = Recorder(node, p)
        node.get_logger().info(f"ready: recording {', '.join(n for _, n in recorder.subs)} into {recorder.path}")
        period = float(p["progress_period_s"])
        next_progress = time.monotonic() + period
        last = recorder.progress()
        while not stop.is_set():
            rclpy.spin_once(node, timeout_sec=0.05)
            recorder.check_matched()
            if time.monotonic() >= next_progress:
                next_progress = time.monotonic() + period
                line = recorder.progress()
                if line != last:  # quiet while nothing arrives
                    node.get_logger().info(f"recorded: {line}")
                    last = line
        # Messages that arrived before the stop request are still in the middleware's queues: take them.
        t_end = time.monotonic() + 0.2
        while time.monotonic() < t_end:
            rclpy.spin_once(node, timeout_sec=0.02)
        return 0
    except RecorderError as e:
        print(f"output_recorder: error: {e}", file=sys.stderr, flush=True)
        return 2
    finally:
        if recorder is not None:
            recorder.close()
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()


if __name__ == "__main__":
    sys.exit(main())
