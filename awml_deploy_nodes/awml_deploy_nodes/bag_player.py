"""``bag_player``: publish the messages of a rosbag2 (mcap or sqlite3) at their recorded rate.

A small ``ros2 bag play`` for machines without ``rosbag2_py``: the bag is read with the core's
:class:`~awml_deploy_core.data.rosbag_io.BagReader` (the pure-Python ``rosbags``), and every message is published
with its header stamps unchanged, so a node's outputs (stamped with their input's stamp) can be matched back to
the inputs. Start it (parameters: :data:`PARAMS`)::

    ros2 run awml_deploy_nodes bag_player --ros-args -p bag:=/path/to/drive \\
        -p "topics:=[/sensing/lidar/concatenated/pointcloud]" -p rate:=0.5

(in this workspace without ``ros2``: ``install/awml_deploy_nodes/lib/awml_deploy_nodes/bag_player --ros-args ...``).
Topics keep their names in the bag; rename them with ROS remapping (``-r /old:=/new``).

Timing. Messages are published on the schedule of their recorded (log) times, as ``ros2 bag play`` does:
message i goes out at ``start + (log_i - log_first) / rate``. A reader thread reads and decodes ahead (a bounded
queue of ``prefetch`` messages), so decoding does not delay publishing; a message the player could not publish
on time (a loaded machine) goes out late, never skipped, and the lateness is reported. Before the clock starts,
the player waits until every played topic has ``wait_for_subscribers`` matched subscriptions (at most
``wait_timeout_s``; exit code 1 when they do not come), then ``settle_s`` more, so that the subscribers' side of
the match is complete too (the first sample after discovery is otherwise easily lost).

Decoding. ``decode: rclpy`` (default) gives the bag's raw CDR bytes to ``rclpy.serialization.deserialize_message``:
every type, bit-exact, and fast for clouds (``msg.data`` becomes an ``array.array``; 1.8 ms for a 134k-point,
3.2 MB cloud on the project's 2-core machine). ``decode: fields`` builds PointCloud2 messages field by field from
the ``rosbags`` message instead, with ``data`` set through ``array.array('B').frombytes`` (2.2 ms for the same
cloud; assigning bytes or a numpy array element-wise is 100x slower on Humble); other types still go through
``deserialize_message``.

QoS. PointCloud2 (and Image) topics: sensor data (best effort, keep last 5, volatile), as lidar drivers publish;
other topics: reliable, keep last 10.

Output: a log line when playing starts, one every ``progress_period_s``, and ``done: N messages ...`` at the end
(exit 0). With ``sent_log`` set, one JSON line per published message (topic, header stamp, log time, publish
time, lateness) is written there: the exact list of what was sent, for the replay evaluation. ``loop: true``
plays the bag again and again until SIGINT/SIGTERM (stamps then repeat).
"""

from __future__ import annotations

import array
import heapq
import json
import queue
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from awml_deploy_nodes.node_params import ParamSpec, declare_read_only

NODE_NAME = "bag_player"
DECODERS = ("rclpy", "fields")
SENSOR_TYPES = ("sensor_msgs/msg/PointCloud2", "sensor_msgs/msg/Image")
_END = object()


PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec("bag", "", "rosbag2 folder (or a single .mcap / .db3 file) to play. Required."),
    ParamSpec("topics", [""], "Topics to play; empty: every topic of the bag."),
    ParamSpec("rate", 1.0, "Playback speed factor (0.5: half speed). > 0."),
    ParamSpec("start_offset", 0.0, "Skip the first seconds of the bag (by log time). >= 0."),
    ParamSpec("loop", False, "Play again from the start when the end is reached, until stopped."),
    ParamSpec("wait_for_subscribers", 1, "Matched subscriptions each played topic needs before the clock starts."),
    ParamSpec("wait_timeout_s", 60.0, "How long to wait for them; exit code 1 when they do not come."),
    ParamSpec("settle_s", 1.0, "Extra wait after the subscribers matched (the readers' side of discovery)."),
    ParamSpec("decode", "rclpy", "rclpy: deserialize_message on the raw CDR; fields: build PointCloud2 field by "
              "field (other types: rclpy)."),
    ParamSpec("prefetch", 8, "Messages read and decoded ahead of the publishing clock. >= 1."),
    ParamSpec("sent_log", "", "If set: a JSON line per published message is written to this file."),
    ParamSpec("progress_period_s", 5.0, "Period of the progress log line."),
    ParamSpec("linger_s", 2.0, "Keep the publishers this long after the last message before exiting (a reader "
              "that has not taken the last sample yet would lose it with the writer's shared memory)."),
)
PARAM_NAMES = tuple(p.name for p in PARAMS)


class PlayerError(Exception):
    """A bad parameter or bag: one line, exit code 2."""


# --------------------------------------------------------------------------------------------- decoding
def message_class(msgtype: str) -> type:
    """'sensor_msgs/msg/PointCloud2' -> the rclpy message class (msg_dict.message_type), or a PlayerError."""
    from .msg_dict import message_type

    try:
        return message_type(msgtype)
    except ValueError as e:
        raise PlayerError(f"{e} (source the workspace that builds it)") from None


def cloud_from_rosbags(msg: Any) -> Any:
    """A ``rosbags`` PointCloud2 -> an rclpy PointCloud2, field by field; ``data`` in one copy."""
    from builtin_interfaces.msg import Time
    from sensor_msgs.msg import PointCloud2, PointField
    from std_msgs.msg import Header

    out = PointCloud2()
    out.header = Header(stamp=Time(sec=int(msg.header.stamp.sec), nanosec=int(msg.header.stamp.nanosec)),
                        frame_id=msg.header.frame_id)
    out.height, out.width = int(msg.height), int(msg.width)
    out.fields = [PointField(name=f.name, offset=int(f.offset), datatype=int(f.datatype), count=int(f.count))
                  for f in msg.fields]
    out.is_bigendian = bool(msg.is_bigendian)
    out.point_step, out.row_step = int(msg.point_step), int(msg.row_step)
    data = array.array("B")
    data.frombytes(memoryview(msg.data))
    out.data = data  # an array.array: no per-byte check in the generated setter
    out.is_dense = bool(msg.is_dense)
    return out


def stamp_ns(msg: Any) -> int | None:
    header = getattr(msg, "header", None)
    if header is None or not hasattr(header, "stamp"):
        return None
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


# --------------------------------------------------------------------------------------------- reading
@dataclass
class Item:
    topic: str
    log_ns: int
    msg: Any


def _merged(bag: Path, topics: list[str], start_ns: int | None) -> Iterator[tuple[int, str, bytes]]:
    """(log time, topic, raw CDR) of every message of ``topics``, in log-time order.

    One reader per topic (a ``rosbags`` reader reads one stream at a time), merged by log time."""
    from awml_deploy_core.data.rosbag_io import BagReader

    def stream(reader: Any, topic: str) -> Iterator[tuple[int, str, bytes]]:
        for log_ns, raw in reader.messages(topic):
            if start_ns is None or log_ns >= start_ns:
                yield log_ns, topic, raw

    readers = [BagReader(bag) for _ in topics]
    try:
        yield from heapq.merge(*(stream(r, t) for r, t in zip(readers, topics)), key=lambda x: x[0])
    finally:
        for r in readers:
            r.close()


class Prefetcher(threading.Thread):
    """Reads and decodes ahead into a bounded queue; ``_END`` after the last message (per pass when looping)."""

    def __init__(self, bag: Path, topics: dict[str, str], start_ns: int | None, decode: str, depth: int,
                 loop: bool, stop: threading.Event) -> None:
        super().__init__(name="bag_player_reader", daemon=True)
        self.bag, self.topics, self.start_ns, self.decode = bag, topics, start_ns, decode
        self.loop, self.stop = loop, stop
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.classes = {t: message_class(m) for t, m in topics.items()}
        self.error: BaseException | None = None

    def _put(self, item: Any) -> bool:
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _decode(self, topic: str, raw: bytes) -> Any:
        from rclpy.serialization import deserialize_message

        if self.decode == "fields" and self.topics[topic] == "sensor_msgs/msg/PointCloud2":
            from awml_deploy_core.data.rosbag_io import typestore

            return cloud_from_rosbags(typestore().deserialize_cdr(raw, self.topics[topic]))
        return deserialize_message(raw, self.classes[topic])

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                for log_ns, topic, raw in _merged(self.bag, list(self.topics), self.start_ns):
                    if not self._put(Item(topic, log_ns, self._decode(topic, raw))):
                        return
                if not self._put(_END) or not self.loop:
                    return
        except BaseException as e:  # noqa: BLE001 - handed to the publishing thread, which reports it
            self.error = e
            self._put(_END)


# --------------------------------------------------------------------------------------------- the node
def _qos(msgtype: str) -> Any:
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

    if msgtype in SENSOR_TYPES:
        return qos_profile_sensor_data
    return QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


def read_params(node: Any) -> dict[str, Any]:
    values = declare_read_only(node, PARAMS)
    values["topics"] = [t for t in (values["topics"] or []) if t]
    if not values["bag"]:
        raise PlayerError("parameter 'bag': required (a rosbag2 folder or .mcap/.db3 file)")
    if not float(values["rate"]) > 0:
        raise PlayerError(f"parameter 'rate': must be > 0 (got {values['rate']})")
    if float(values["start_offset"]) < 0:
        raise PlayerError(f"parameter 'start_offset': must be >= 0 (got {values['start_offset']})")
    if values["decode"] not in DECODERS:
        raise PlayerError(f"parameter 'decode': one of {', '.join(DECODERS)} (got {values['decode']!r})")
    if int(values["prefetch"]) < 1:
        raise PlayerError(f"parameter 'prefetch': must be >= 1 (got {values['prefetch']})")
    return values


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))]


def play(node: Any, p: dict[str, Any], stop: threading.Event) -> int:
    from awml_deploy_core.data.rosbag_io import BagReader
    from awml_deploy_core.errors import DatasetError

    log = node.get_logger()
    bag = Path(p["bag"]).expanduser()
    try:
        with BagReader(bag) as reader:
            chosen = p["topics"] or sorted(reader.topics)
            missing = [t for t in chosen if t not in reader.topics]
            if missing:
                raise PlayerError(f"bag {bag}: no topic {missing[0]!r}; {reader.describe_topics()}")
            topics = {t: reader.topics[t].msgtype for t in chosen}
            total = sum(reader.topics[t].count for t in chosen)
            first_ns = min((next(reader.messages(t), (None,))[0] for t in chosen if reader.topics[t].count),
                           default=None)
    except DatasetError as e:
        raise PlayerError(str(e)) from None
    if first_ns is None:
        raise PlayerError(f"bag {bag}: the chosen topics {chosen} hold no messages")
    start_ns = first_ns + int(round(float(p["start_offset"]) * 1e9)) if p["start_offset"] else None
    pubs = {t: node.create_publisher(message_class(m), t, _qos(m)) for t, m in topics.items()}

    # Wait (bounded) for the subscribers; the node's subscription exists only once its model is loaded.
    need = int(p["wait_for_subscribers"])
    deadline = time.monotonic() + float(p["wait_timeout_s"])

    def matched(pub: Any) -> int:
        count = getattr(pub, "get_subscription_count", None)
        return count() if count is not None else node.count_subscribers(pub.topic_name)

    while need > 0 and any(matched(pub) < need for pub in pubs.values()):
        if stop.is_set():
            return 130
        if time.monotonic() > deadline:
            short = {t: matched(pub) for t, pub in pubs.items() if matched(pub) < need}
            log.error(f"gave up after {p['wait_timeout_s']} s waiting for {need} subscriber(s) on each topic "
                      f"(matched: {short}); is the node running? (wait_for_subscribers:=0 plays regardless)")
            return 1
        stop.wait(0.05)
    if need > 0:
        log.info(f"{need} subscriber(s) matched on {', '.join(pubs)}; starting in {p['settle_s']} s")
        stop.wait(float(p["settle_s"]))

    reader = Prefetcher(bag, topics, start_ns, p["decode"], int(p["prefetch"]), bool(p["loop"]), stop)
    reader.start()
    primed = time.monotonic() + 30.0  # fill the prefetch queue before the clock starts (first decodes are slower)
    while not reader.queue.full() and reader.is_alive() and not stop.is_set() and time.monotonic() < primed:
        time.sleep(0.01)
    sent_log = open(p["sent_log"], "w", encoding="utf-8") if p["sent_log"] else None
    rate = float(p["rate"])
    period = float(p["progress_period_s"])
    log.info(f"playing {', '.join(f'{t} ({m})' for t, m in topics.items())}, {total} messages, from {bag} at "
             f"rate {rate:g}" + (f", from +{p['start_offset']} s" if start_ns else "")
             + (", looping" if p["loop"] else ""))
    sent, late_ms = 0, []
    t0 = wall0 = None
    finished = False
    next_progress = time.monotonic() + period
    try:
        while not stop.is_set():
            try:
                item = reader.queue.get(timeout=0.1)
            except queue.Empty:
                continue
            if item is _END:
                if reader.error is not None:
                    raise reader.error
                if not p["loop"]:
                    finished = True
                    break
                t0 = None  # the next pass starts its own clock
                continue
            if t0 is None:
                t0, first = time.monotonic(), item.log_ns
                wall0 = time.time() if wall0 is None else wall0
            due = t0 + (item.log_ns - first) / 1e9 / rate
            while not stop.is_set():
                left = due - time.monotonic()
                if left <= 0:
                    break
                stop.wait(min(left, 0.05))
            if stop.is_set():
                break
            pubs[item.topic].publish(item.msg)
            now_mono, now_ns = time.monotonic(), time.time_ns()
            late = max(0.0, (now_mono - due) * 1e3)
            late_ms.append(late)
            sent += 1
            if sent_log is not None:
                sent_log.write(json.dumps({"topic": item.topic, "stamp_ns": stamp_ns(item.msg), "log_ns": item.log_ns,
                                           "publish_ns": now_ns, "late_ms": round(late, 3)}) + "\n")
                sent_log.flush()
            if now_mono >= next_progress:
                next_progress = now_mono + period
                log.info(f"played {sent}/{total} ({100 * sent / max(total, 1):.0f}%), late p99 "
                         f"{_percentile(late_ms, 99):.1f} ms")
    finally:
        if not finished:
            stop.set()  # ends the reader thread too
        reader.join(5.0)
        if sent_log is not None:
            sent_log.close()
    wall = time.time() - wall0 if wall0 is not None else 0.0
    log.info(f"done: {sent} messages published in {wall:.1f} s; late p50/p99/max "
             f"{_percentile(late_ms, 50):.1f}/{_percentile(late_ms, 99):.1f}/{max(late_ms, default=0.0):.1f} ms")
    if finished and sent:
        stop.wait(float(p["linger_s"]))  # a signal ends it early
    return 0


def main(args: list[str] | None = None) -> int:
    stop, interrupted = threading.Event(), threading.Event()

    def on_signal(*_: Any) -> None:
        interrupted.set()
        stop.set()

    from .startup import init_ros, run_main

    def start() -> int:
        init_ros(args, signal_handlers=False)  # ours stop the play loop
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, on_signal)
        return _play_node(stop, interrupted)

    return run_main("bag_player", start)


def _play_node(stop: threading.Event, interrupted: threading.Event) -> int:
    import rclpy

    node = rclpy.create_node(NODE_NAME)
    code = 0
    try:
        code = play(node, read_params(node), stop)
        if interrupted.is_set() and code == 0:
            code = 130
    except PlayerError as e:
        print(f"bag_player: error: {e}", file=sys.stderr, flush=True)
        code = 2
    finally:
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return code


if __name__ == "__main__":
    sys.exit(main())
