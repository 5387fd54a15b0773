"""``centerpoint_node``: lidar point clouds in, CenterPoint 3D detections out.

ROS glue only. The detections come from :class:`awml_deploy_core.pipelines.centerpoint.CenterPointPipeline`, the
very object evaluation and verification run; the node converts the message to the (N, 5) array
(``conversions.validate_pointcloud2`` + ``pipeline_points``: zero-copy for the usual float32 layouts), calls the
pipeline, and serializes its ``Boxes3D`` straight into the DetectedObjects bytes it publishes
(``detections_cdr``; the same message ``conversions.boxes_to_detected_objects`` builds). Nothing of pre- or
post-processing lives here.

Start it (parameters: node_params.PARAMS, or ``config/centerpoint_node.param.yaml``)::

    ros2 run awml_deploy_nodes centerpoint_node --ros-args --params-file config/centerpoint_node.param.yaml \\
        -r '~/input/pointcloud:=/sensing/lidar/pointcloud'

(in this workspace without ``ros2``: ``install/awml_deploy_nodes/lib/awml_deploy_nodes/centerpoint_node --ros-args
...``, the same arguments).

Topics (relative to the node, ``centerpoint`` by default):

- ``~/input/pointcloud`` (sensor_msgs/PointCloud2, sensor-data QoS: best effort, keep last INPUT_DEPTH);
- ``~/output/objects`` (awml_deploy_msgs/DetectedObjects: the input's stamp, its frame_id or the override);
- ``~/output/autoware_objects`` (autoware_perception_msgs/DetectedObjects, with publish_autoware_objects);
- ``~/debug/inference_stats`` (awml_deploy_msgs/InferenceStats, one per processed cloud);
- ``/diagnostics`` (diagnostic_msgs/DiagnosticArray, every diagnostics_period_s; see diagnostics.py).

Threading and dropped clouds. A single-threaded executor runs the subscription callback and the diagnostics
timer; one worker thread runs the pipeline. The callback checks the cloud's layout (O(fields): a malformed
cloud is counted there and never takes a waiting good cloud's place), puts it into a one-slot mailbox and
returns: a cloud still waiting there when a newer one arrives is replaced and counted as dropped
(``dropped_inputs``), so the worker always takes the newest cloud and latency stays bounded by about two
frame times when the input is faster than the node. The reader keeps the last INPUT_DEPTH samples (not 1):
with depth 1 a good cloud followed at once by garbage was overwritten inside the middleware before the callback
saw it; the callback takes each in tens of microseconds and only the newest acceptable one is kept, so the depth
adds no latency. Clouds the middleware still discards never reach the callback: on Iron and newer it gets the
writer's publication sequence number, and gaps in it are counted as ``input_gaps``; Humble's rclpy does not
pass it (``input_gaps`` then reads "n/a"). Message-lost events of the middleware count as ``transport_lost``.

A bad message never stops the node: a ``MalformedCloudError`` drops the cloud with a throttled warning and a
per-kind count; any other exception while processing one frame is logged with its traceback (throttled),
counted as ``internal_error`` and the node carries on with the next cloud. A bad parameter or artifact stops
the node at start-up with one line on stderr and exit code 2 (configuration) or 3 (artifact, backend).
"""

from __future__ import annotations

import os
import sys
import threading
import time
import traceback
from typing import Any

import rclpy
import rclpy.subscription
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import PointCloud2
from std_msgs.msg import Header

from awml_deploy_core.errors import AwmlDeployError
from awml_deploy_msgs.msg import DetectedObjects, InferenceStats
from diagnostic_msgs.msg import DiagnosticArray

from .conversions import (
    MALFORMED_KINDS,
    MalformedCloudError,
    ValidCloud,
    pipeline_points,
    to_autoware_detected_objects,
    validate_pointcloud2,
)
from .detections_cdr import boxes_to_detected_objects_cdr
from .diagnostics import NodeHealth
from .node_params import PARAMS, NodeParams, ParamError, declare_read_only, validate
from .startup import init_ros, run_main

NODE_NAME = "centerpoint"
MALFORMED_WARN_PERIOD_S = 5.0
ERROR_LOG_PERIOD_S = 10.0

# Sensor data, newest frame wins. Autoware's lidar_centerpoint keeps the last 1; here the newest-wins choice is
# made after the cheap layout check in the callback (the mailbox), so the reader keeps a few samples: a burst of
# malformed messages right behind a good cloud must reach the callback (and be counted) instead of overwriting
# the good cloud inside the middleware (measured: 24 of 144 such messages reached a depth-1 reader).
INPUT_DEPTH = 32
INPUT_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=INPUT_DEPTH, reliability=ReliabilityPolicy.BEST_EFFORT,
                       durability=DurabilityPolicy.VOLATILE)
OUTPUT_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE)


# --------------------------------------------------------------------------------------------------
# Parameters -> pipeline: the core loader does all of it
# --------------------------------------------------------------------------------------------------
def load_model(p: NodeParams) -> Any:
    """bundle_dir, else config, else checkpoint, else the shipped model -> awml_deploy_core.loader.LoadedPipeline."""
    from awml_deploy_core.loader import load_pipeline

    overrides = None
    if p.score_threshold is not None:
        overrides = {"score_threshold": p.score_threshold, "class_score_thresholds": None}
    try:
        loaded = load_pipeline(p.bundle_dir or p.config or p.checkpoint or None, p.backend, p.device or None,
                               checkpoint=p.checkpoint or None, engine_precision=p.precision, model_overrides=overrides,
                               onnx_cache_dir=p.onnx_cache_dir or None)
    except AwmlDeployError as e:
        named = [n for n in ("checkpoint", "bundle_dir", "config") if getattr(p, n) and getattr(p, n) in str(e)]
        raise type(e)(f"parameter '{named[0]}': {e}" if named else str(e)) from None
    names = loaded.cfg.model.class_names
    if len(p.class_names) != len(names):
        loaded.close()
        raise ParamError(f"parameter 'class_names': {len(p.class_names)} names {list(p.class_names)} but the model has "
                         f"{len(names)} classes {list(names)}; list the model's classes")
    loaded.pipeline(loaded.family.warm_up_input(loaded.cfg.model))  # first-call set-up off the first real frame
    return loaded


# --------------------------------------------------------------------------------------------------
# The node
# --------------------------------------------------------------------------------------------------
class _Mailbox:
    """One slot between the subscription callback and the worker: a newer cloud replaces a waiting one."""

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self._item: Any = None
        self._closed = False

    def put(self, item: Any) -> bool:
        """Store `item`; True when it replaced one the worker had not taken yet (a dropped cloud)."""
        with self._cv:
            replaced = self._item is not None
            self._item = item
            self._cv.notify()
        return replaced

    def take(self) -> Any:
        """The newest item (waits for one); None once closed."""
        with self._cv:
            while self._item is None and not self._closed:
                self._cv.wait()
            if self._closed:
                return None
            item, self._item = self._item, None
            return item

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()


# Iron and newer pass (message, MessageInfo) to two-argument subscription callbacks; Humble passes the message only.
_CALLBACKS_WITH_INFO = hasattr(rclpy.subscription.Subscription, "CallbackType")


def _event_callbacks(on_lost: Any) -> Any:
    """Subscription event callbacks with message_lost (rclpy.event_handler from Iron, rclpy.qos_event on Humble)."""
    try:
        from rclpy.event_handler import SubscriptionEventCallbacks
    except ImportError:  # Humble
        from rclpy.qos_event import SubscriptionEventCallbacks
    try:
        return SubscriptionEventCallbacks(message_lost=on_lost)
    except TypeError:  # a distribution without the message_lost event
        return None


def _autoware_objects_type() -> Any:
    try:
        from autoware_perception_msgs.msg import DetectedObjects as AutowareObjects
    except ImportError:
        raise ParamError("parameter 'publish_autoware_objects' is true but autoware_perception_msgs is not "
                         "importable here; source an Autoware workspace or set it false") from None
    return AutowareObjects


class CenterPointNode(Node):
    def __init__(self, node_name: str = NODE_NAME, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self.params = self._read_params()
        autoware_type = _autoware_objects_type() if self.params.publish_autoware_objects else None
        self.model = load_model(self.params)
        self.pipeline = self.model.pipeline

        p = self.params
        self.health = NodeHealth(self.get_fully_qualified_name(), p.processing_time_budget_ms, MALFORMED_KINDS,
                                 info={"backend": self.model.backend, "precision": self.model.precision,
                                       "device": self.model.device, "model": self.pipeline.cfg.name})
        self._objects_pub = self.create_publisher(DetectedObjects, "~/output/objects", OUTPUT_QOS)
        self._stats_pub = self.create_publisher(InferenceStats, "~/debug/inference_stats", OUTPUT_QOS)
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", OUTPUT_QOS)
        self._autoware_pub = None
        if autoware_type is not None:
            self._autoware_pub = self.create_publisher(autoware_type, "~/output/autoware_objects", OUTPUT_QOS)

        self._mailbox = _Mailbox()
        self._worker = threading.Thread(target=self._work, name="centerpoint_worker", daemon=True)
        self._worker.start()
        self._last_seq: dict[bytes, int] = {}  # per publisher: last publication sequence number seen
        self._lost_total = 0  # the middleware's cumulative message-lost count
        on_cloud = self._on_cloud_with_info if _CALLBACKS_WITH_INFO else self._on_cloud
        self._sub = self.create_subscription(PointCloud2, "~/input/pointcloud", on_cloud, INPUT_QOS,
                                             event_callbacks=_event_callbacks(self._on_lost))
        self.health.sequence_gaps_known = _CALLBACKS_WITH_INFO
        self._timer = self.create_timer(p.diagnostics_period_s, self._publish_diagnostics)
        self.get_logger().info(
            f"ready: {self.model.backend} ({self.model.precision}, {self.model.device}) from {self.model.source}; "
            f"input {self._sub.topic_name}, output {self._objects_pub.topic_name}; pid {os.getpid()}")

    # ------------------------------------------------------------------ parameters
    def _read_params(self) -> NodeParams:
        values = declare_read_only(self, PARAMS, dynamic_typing=True)
        # Overrides (params file, -p) that name no declared parameter are typos: refuse them rather than ignore.
        overrides = getattr(self, "_parameter_overrides", {}) or {}
        for name, param in overrides.items():
            if not self.has_parameter(name) and not name.startswith("qos_overrides."):
                values[name] = getattr(param, "value", param)
        return validate(values)

    # ------------------------------------------------------------------ executor thread
    def _on_cloud(self, msg: PointCloud2) -> None:
        # The layout is checked here (O(fields), tens of microseconds) so that a malformed cloud arriving right
        # after a good one never takes the good one's place in the mailbox; it is counted and dropped.
        try:
            valid = validate_pointcloud2(msg, self.params.max_points)
        except MalformedCloudError as e:
            self.health.on_received(False)
            self._on_malformed(e)
            return
        except Exception:  # noqa: BLE001
            # Same policy as the worker: an exception escaping a callback would stop the executor, and with it
            # the node. Counted as internal_error and logged with its traceback (throttled).
            self.health.on_received(False)
            self.health.on_internal_error()
            self.get_logger().error(f"checking a cloud failed (counted as internal_error, node continues):\n"
                                    f"{traceback.format_exc()}", throttle_duration_sec=ERROR_LOG_PERIOD_S)
            return
        self.health.on_received(self._mailbox.put((msg, valid)))

    def _on_malformed(self, e: MalformedCloudError) -> None:
        total = self.health.on_malformed(e.kind)
        self.get_logger().warning(f"dropped a {e} [{total} malformed clouds so far; counts per kind on /diagnostics]",
                                  throttle_duration_sec=MALFORMED_WARN_PERIOD_S)

    def _on_cloud_with_info(self, msg: PointCloud2, info: Any) -> None:
        """Iron and newer: the writer's sequence number shows clouds the middleware dropped before the callback."""
        self._on_cloud(msg)
        seq = info.get("publication_sequence_number")
        gid = info.get("publisher_gid")
        if seq is None or gid is None:
            return
        key = bytes(gid.get("data", b""))
        last = self._last_seq.get(key)
        self._last_seq[key] = seq
        if last is not None and seq > last + 1:
            self.health.on_input_gap(seq - last - 1)

    def _on_lost(self, info: Any) -> None:
        # total_count is cumulative; its change field has been seen to carry garbage (2**64 - 2**31 + ...), so
        # the increase is computed here and never negative.
        total = getattr(info, "total_count", None)
        if isinstance(total, int) and 0 <= total < 2**31:
            change, self._lost_total = max(0, total - self._lost_total), max(self._lost_total, total)
        else:
            change = 1
        self.health.on_lost(change)

    def _publish_diagnostics(self) -> None:
        self._diag_pub.publish(self.health.report(self.get_clock().now().to_msg()))

    # ------------------------------------------------------------------ worker thread
    def _work(self) -> None:
        while True:
            item = self._mailbox.take()
            if item is None:
                return
            msg, valid = item if isinstance(item, tuple) else (item, None)
            try:
                self._process(msg, valid)
            except Exception:  # noqa: BLE001
                # The one broad catch: whatever fails inside one frame (a backend error, a bug hit by an odd
                # cloud) must not stop a perception node on a vehicle. Counted as internal_error, reported with
                # its traceback (throttled: a repeating failure does not flood the log), next cloud processed.
                if not self.context.ok():
                    return  # shutting down: publishing into a finished context fails, and that is expected
                self.health.on_internal_error()
                self.get_logger().error(f"frame failed (counted as internal_error, node continues):\n"
                                        f"{traceback.format_exc()}", throttle_duration_sec=ERROR_LOG_PERIOD_S)

    def _process(self, msg: PointCloud2, valid: ValidCloud | None = None) -> None:
        t0 = time.perf_counter()
        if valid is None:  # a cloud put into the mailbox directly (tests): validated here
            try:
                valid = validate_pointcloud2(msg, self.params.max_points)
            except MalformedCloudError as e:
                self._on_malformed(e)
                return
        # Zero-copy for the usual float32 layouts; the pipeline drops (and counts) non-finite x, y, z itself.
        points, info = pipeline_points(valid)
        out = self.pipeline(points)
        nan_dropped = int(getattr(out.stats, "nan_dropped", 0))
        self.health.on_accepted(info.byte_swapped, info.organized, info.num_points - nan_dropped <= 0,
                                info.non_finite + nan_dropped)
        header = Header(stamp=msg.header.stamp, frame_id=self.params.frame_id or msg.header.frame_id)
        # Serialized in one numpy pass and published as bytes (no per-object message objects).
        objects = boxes_to_detected_objects_cdr(out.detections, self.params.class_names, header,
                                                self.model.cfg.model.with_velocity)
        autoware = None
        if self._autoware_pub is not None:
            autoware = to_autoware_detected_objects(out.detections, self.params.class_names, header,
                                                    self.model.cfg.model.with_velocity)
        now_ns = self.get_clock().now().nanoseconds
        total_ms = (time.perf_counter() - t0) * 1e3
        self._objects_pub.publish(objects)
        if autoware is not None:
            self._autoware_pub.publish(autoware)

        stamp_ns = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        latency_ms = (now_ns - stamp_ns) / 1e6
        t = out.timings_ms
        stats = InferenceStats()
        stats.header = header
        stats.backend = self.model.backend
        stats.precision = self.model.precision
        stats.preprocess_ms = float(t["preprocess"])
        stats.inference_ms = float(t["encoder"] + t["scatter"] + t["head"])
        stats.postprocess_ms = float(t["postprocess"])
        stats.total_ms = float(total_ms)
        stats.pipeline_latency_ms = float(latency_ms)
        stats.input_size = int(info.num_points_in)
        stats.output_count = len(out.detections)
        self._stats_pub.publish(stats)
        self.health.on_processed(total_ms, latency_ms, out.stats)

    # ------------------------------------------------------------------ shutdown
    def close(self, timeout: float = 10.0) -> None:
        """Stop the worker, then release the backend (sessions, engines, device memory)."""
        self._mailbox.close()
        self._worker.join(timeout)
        self.model.close()


GIL_SWITCH_INTERVAL_S = 0.0005


def main(args: list[str] | None = None) -> int:
    # The executor thread hands each cloud to the worker thread; both need the GIL only for short Python stretches
    # (the model's kernels release it). A shorter forced-switch interval than Python's 5 ms keeps that hand-over
    # from waiting on the other thread's time slice: measured here under CPU load, the node's own part of the
    # latency went from 2.6-6.8 ms to 1.7-4.4 ms median (3 interleaved runs each), at no cost to the pipeline.
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    # Every start-up failure (ROS arguments, params files, parameters, artifacts, backends) is one line on stderr
    # and exit 2 (configuration) or 3 (artifact, backend): the problem is the user's to fix, not a crash.
    return run_main("centerpoint_node", lambda: _run(args))


def _run(args: list[str] | None) -> int:
    init_ros(args)
    node = CenterPointNode()
    try:
        from rclpy.executors import ExternalShutdownException
    except ImportError:  # very old rclpy
        ExternalShutdownException = KeyboardInterrupt  # noqa: N806
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.close()
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
