"""``calibration_status_node``: is the camera-lidar extrinsic still right? Lidar + image + camera info in, a
CalibrationStatus out.

ROS glue only. The decision comes from :class:`awml_deploy_core.pipelines.calibration.CalibrationStatusPipeline`
(input builder -> classifier -> softmax), the very object the export job evaluated; the node pairs messages,
converts them (``conversions.pipeline_points``, ``image_conversions.image_to_bgr``, K from CameraInfo), finds the
extrinsic, calls the pipeline and publishes.

Start it (parameters: calibration_status_params.PARAMS, or ``config/calibration_status_node.param.yaml``)::

    ros2 run awml_deploy_nodes calibration_status_node --ros-args \\
        --params-file config/calibration_status_node.param.yaml \\
        -r '~/input/pointcloud:=/sensing/lidar/concatenated/pointcloud' \\
        -r '~/input/image:=/sensing/camera/camera0/image_rect_color' \\
        -r '~/input/camera_info:=/sensing/camera/camera0/camera_info'

(in this workspace without ``ros2``: ``install/awml_deploy_nodes/lib/awml_deploy_nodes/calibration_status_node``).

Topics (relative to the node, ``calibration_status_node`` by default):

- ``~/input/pointcloud`` (PointCloud2), ``~/input/image`` (Image: bgr8, rgb8, mono8), ``~/input/camera_info``
  (CameraInfo: K; a non-zero plumb_bob/rational_polynomial distortion is undone on the image with OpenCV first):
  sensor-data QoS, paired by :class:`approx_sync.ApproximateTimeSync` (message_filters' ApproximateTime: queue
  ``sync_queue_size``, max interval ``sync_slop_s``);
- ``tf_static_topic`` (``/tf_static``, transient local) when ``extrinsic`` is not given: T_cam_lidar is looked up
  from the camera frame to the lidar frame through the static tree (:mod:`tf_static`);
- ``~/input/odometry`` (nav_msgs/Odometry) with ``use_odometry``: pairs are classified only while the ego moves
  slower than ``max_speed_mps`` and turns slower than ``max_yaw_rate_rps`` (AWML/Autoware: 3 m/s, 0.1745 rad/s);
- ``~/output/calibration_status`` (awml_deploy_msgs/CalibrationStatus: the image's stamp, the camera frame);
- ``~/debug/inference_stats`` (InferenceStats), ``~/debug/preview`` (Image, with ``publish_preview``);
- ``/diagnostics``: ``<node>: calibration_status`` (OK calibrated / ERROR miscalibrated / STALE before the first
  result, with scores, confidence, per-stage times and the projected point count), ``<node>: synchronizer``
  (messages per input, sync drops by reason, pairs classified, gated, without extrinsic), and NodeHealth's
  ``inference`` and ``input`` (malformed inputs by kind: ``cloud.*``, ``image.*``, ``camera_info.*``, ``tf.*``,
  ``pair.*``);
- service ``~/trigger`` (std_srvs/Trigger, mode manual): classifies the newest synchronized pair and answers with
  the result (success false with the reason when there is none, the gate is closed or the pair failed).

Modes: ``active`` classifies every synchronized pair (the newest wins when the node is behind: the waiting one is
counted as dropped), ``periodic`` the newest pair every ``period_s`` (a tick without a new pair does nothing),
``manual`` on a trigger. Threads: a multi-threaded executor runs the subscriptions and timers in one
mutually exclusive group and the trigger service in another (so a call can wait for its result while messages
keep arriving); one worker thread runs the pipeline. A bad message never stops the node: it is counted by kind; a
failure inside one pair is logged (throttled) and counted as internal_error. Start-up failures are one line and
exit 2 (configuration) or 3 (artifact, backend), as for centerpoint_node.
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import rclpy
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Header

from awml_deploy_core.errors import AwmlDeployError, DatasetError
from awml_deploy_msgs.msg import CalibrationStatus, InferenceStats
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

from .approx_sync import APPROX_DROP_REASONS, ApproximateTimeSync, SyncedSet, stamp_to_ns
from .calibration_status_params import PARAMS, CalibNodeParams, validate
from .conversions import MALFORMED_KINDS, MalformedCloudError, pipeline_points, validate_pointcloud2
from .diagnostics import NodeHealth
from .image_conversions import MALFORMED_IMAGE_KINDS, MalformedImageError, bgr_to_image_msg, check_image_header, \
    image_to_bgr
from .node_params import ParamError, declare_read_only
from .startup import init_ros, run_main
from .tf_static import MALFORMED_TF_KINDS, StaticTransforms

NODE_NAME = "calibration_status_node"
CLOUD, IMAGE, INFO = 0, 1, 2
INPUT_NAMES = ("pointcloud", "image", "camera_info")
CAMERA_INFO_KINDS = ("bad_k", "zero_size")
PAIR_KINDS = ("size_mismatch", "no_extrinsic", "bad_input")
MALFORMED = (tuple(f"cloud.{k}" for k in MALFORMED_KINDS) + tuple(f"image.{k}" for k in MALFORMED_IMAGE_KINDS)
             + tuple(f"camera_info.{k}" for k in CAMERA_INFO_KINDS) + tuple(f"tf.{k}" for k in MALFORMED_TF_KINDS)
             + tuple(f"pair.{k}" for k in PAIR_KINDS))
WARN_PERIOD_S = 5.0
TRIGGER_TIMEOUT_S = 60.0
DISTORTION_MODELS = ("plumb_bob", "rational_polynomial")

INPUT_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.BEST_EFFORT,
                       durability=DurabilityPolicy.VOLATILE)
OUTPUT_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE)
TF_STATIC_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE,
                           durability=DurabilityPolicy.TRANSIENT_LOCAL)


def tf_static_type() -> tuple[Any, str]:
    """tf2_msgs/TFMessage where installed (a vehicle), else geometry_msgs/TransformStamped (tf2_msgs is not on
    PyPI: one transform a message on the same transient-local topic)."""
    try:
        from tf2_msgs.msg import TFMessage

        return TFMessage, "tf2_msgs/msg/TFMessage"
    except ImportError:
        from geometry_msgs.msg import TransformStamped

        return TransformStamped, "geometry_msgs/msg/TransformStamped"


def camera_matrix(info: CameraInfo) -> np.ndarray:
    """K of a CameraInfo as (3, 3) float64; ValueError (kind bad_k / zero_size) when it cannot be used."""
    if int(info.width) == 0 or int(info.height) == 0:
        raise ValueError("zero_size")
    k = np.asarray(info.k, dtype=np.float64).reshape(3, 3)
    if not np.all(np.isfinite(k)) or k[0, 0] <= 0 or k[1, 1] <= 0 or k[2, 2] != 1.0:
        raise ValueError("bad_k")
    return k


def distortion(info: CameraInfo) -> np.ndarray | None:
    """The distortion coefficients to undo, or None when there is none (all zero or an unknown model)."""
    d = np.asarray(info.d, dtype=np.float64)
    if d.size == 0 or not np.any(d) or info.distortion_model not in DISTORTION_MODELS or not np.all(np.isfinite(d)):
        return None
    return d


def gate_reason(p: CalibNodeParams, odom: tuple[float, float, float] | None, now: float) -> str | None:
    """Why a pair must not be classified now (None: go). ``odom``: (receive time, speed, |yaw rate|)."""
    if not p.use_odometry:
        return None
    if odom is None:
        return "no odometry received"
    age = now - odom[0]
    if age > p.odometry_timeout_s:
        return f"odometry is {age:.1f} s old (> {p.odometry_timeout_s:g} s)"
    if odom[1] >= p.max_speed_mps:
        return f"ego speed {odom[1]:.2f} m/s >= {p.max_speed_mps:g}"
    if odom[2] >= p.max_yaw_rate_rps:
        return f"ego yaw rate {odom[2]:.3f} rad/s >= {p.max_yaw_rate_rps:g}"
    return None


@dataclass
class Job:
    pair: SyncedSet
    waiter: "Waiter | None" = None


class Waiter:
    """A trigger call waiting for the worker's answer."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.success = False
        self.message = ""

    def answer(self, success: bool, message: str) -> None:
        self.success, self.message = success, message
        self.done.set()


class _Mailbox:
    """One slot: a newer job replaces a waiting one (answered as superseded when it had a waiter)."""

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self._item: Job | None = None
        self._closed = False

    def put(self, job: Job) -> bool:
        with self._cv:
            old, self._item = self._item, job
            self._cv.notify()
        if old is not None and old.waiter is not None:
            old.waiter.answer(False, "superseded by a newer trigger")
        return old is not None

    def take(self) -> Job | None:
        with self._cv:
            while self._item is None and not self._closed:
                self._cv.wait()
            if self._closed:
                return None
            job, self._item = self._item, None
            return job

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()


class CalibrationStatusNode(Node):
    def __init__(self, node_name: str = NODE_NAME, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self.params = self._read_params()
        p = self.params
        self.model = load_model(p)
        self.pipeline = self.model.pipeline
        self.health = NodeHealth(self.get_fully_qualified_name(), p.processing_time_budget_ms, MALFORMED,
                                 info={"backend": self.model.backend, "precision": self.model.precision,
                                       "device": self.model.device, "model": self.pipeline.cfg.name,
                                       "mode": p.mode})
        self.sync = ApproximateTimeSync(3, p.sync_queue_size, p.sync_slop_ns)
        self.tf = StaticTransforms()
        self._lock = threading.Lock()  # the counters below and the newest pair
        self._messages = [0, 0, 0]
        self._counts = {"pairs": 0, "classified": 0, "gated": 0, "no_pair": 0, "triggers": 0}
        self._newest: SyncedSet | None = None
        self._newest_taken = True
        self._odom: tuple[float, float, float] | None = None  # (monotonic receive time, speed, |yaw rate|)
        self._last: dict[str, Any] | None = None  # the last result, for /diagnostics

        self._sensors = MutuallyExclusiveCallbackGroup()
        self._service_group = MutuallyExclusiveCallbackGroup()
        self._status_pub = self.create_publisher(CalibrationStatus, "~/output/calibration_status", OUTPUT_QOS)
        self._stats_pub = self.create_publisher(InferenceStats, "~/debug/inference_stats", OUTPUT_QOS)
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", OUTPUT_QOS)
        self._preview_pub = self.create_publisher(Image, "~/debug/preview", OUTPUT_QOS) if p.publish_preview else None

        self._mailbox = _Mailbox()
        self._worker = threading.Thread(target=self._work, name="calibration_worker", daemon=True)
        self._worker.start()
        g = self._sensors
        self.create_subscription(PointCloud2, "~/input/pointcloud", self._on_cloud, INPUT_QOS, callback_group=g)
        self.create_subscription(Image, "~/input/image", self._on_image, INPUT_QOS, callback_group=g)
        self.create_subscription(CameraInfo, "~/input/camera_info", self._on_info, INPUT_QOS, callback_group=g)
        if p.extrinsic is None:
            tf_type, self.tf_type_name = tf_static_type()
            self.create_subscription(tf_type, p.tf_static_topic, self._on_tf, TF_STATIC_QOS, callback_group=g)
        if p.use_odometry:
            from nav_msgs.msg import Odometry

            self.create_subscription(Odometry, "~/input/odometry", self._on_odometry, INPUT_QOS, callback_group=g)
        if p.mode == "periodic":
            self.create_timer(p.period_s, self._on_period, callback_group=g)
        if p.mode == "manual":
            from std_srvs.srv import Trigger

            self.create_service(Trigger, "~/trigger", self._on_trigger, callback_group=self._service_group)
        self.create_timer(p.diagnostics_period_s, self._publish_diagnostics, callback_group=g)
        ext = "from parameters" if p.extrinsic is not None else f"from {p.tf_static_topic} ({self.tf_type_name})"
        self.get_logger().info(
            f"ready: {self.model.backend} ({self.model.precision}, {self.model.device}) from {self.model.source}; "
            f"mode {p.mode}; extrinsic {ext}; pid {os.getpid()}")

    # ------------------------------------------------------------------ parameters
    def _read_params(self) -> CalibNodeParams:
        values = declare_read_only(self, PARAMS, dynamic_typing=True)
        overrides = getattr(self, "_parameter_overrides", {}) or {}
        for name, param in overrides.items():
            if not self.has_parameter(name) and not name.startswith("qos_overrides."):
                values[name] = getattr(param, "value", param)
        return validate(values)

    # ------------------------------------------------------------------ inputs (executor, sensors group)
    def _malformed(self, kind: str, detail: str) -> None:
        total = self.health.on_malformed(kind)
        self.get_logger().warning(f"dropped: {detail} [{total} malformed inputs so far; counts per kind on "
                                  f"/diagnostics]", throttle_duration_sec=WARN_PERIOD_S)

    def _add(self, index: int, msg: Any, checked: Any) -> None:
        with self._lock:
            self._messages[index] += 1
        for pair in self.sync.add(index, stamp_to_ns(msg.header.stamp), (msg, checked)):
            self._on_pair(pair)

    def _on_cloud(self, msg: PointCloud2) -> None:
        try:
            valid = validate_pointcloud2(msg, self.params.max_points)
        except MalformedCloudError as e:
            self._malformed(f"cloud.{e.kind}", str(e))
            return
        self._add(CLOUD, msg, valid)

    def _on_image(self, msg: Image) -> None:
        try:
            check_image_header(msg, self.params.max_pixels)
        except MalformedImageError as e:
            self._malformed(f"image.{e.kind}", str(e))
            return
        self._add(IMAGE, msg, None)

    def _on_info(self, msg: CameraInfo) -> None:
        try:
            k = camera_matrix(msg)
        except ValueError as e:
            self._malformed(f"camera_info.{e}", f"camera info ({e}): K {list(msg.k)}, {msg.width}x{msg.height}")
            return
        self._add(INFO, msg, k)

    def _on_tf(self, msg: Any) -> None:
        for err in self.tf.add_message(msg):
            self._malformed(f"tf.{err.kind}", str(err))

    def _on_odometry(self, msg: Any) -> None:
        v = msg.twist.twist.linear
        speed = math.sqrt(v.x * v.x + v.y * v.y + v.z * v.z)
        yaw_rate = abs(msg.twist.twist.angular.z)
        if math.isfinite(speed) and math.isfinite(yaw_rate):
            self._odom = (time.monotonic(), speed, yaw_rate)

    def _on_pair(self, pair: SyncedSet) -> None:
        with self._lock:
            self._counts["pairs"] += 1
            self._newest, self._newest_taken = pair, False
        if self.params.mode == "active":
            self._submit(Job(pair))

    def _submit(self, job: Job) -> None:
        self.health.on_received(self._mailbox.put(job))

    def _take_newest(self) -> SyncedSet | None:
        with self._lock:
            if self._newest is None or self._newest_taken:
                return None
            self._newest_taken = True
            return self._newest

    def _on_period(self) -> None:
        pair = self._take_newest()
        if pair is None:
            with self._lock:
                self._counts["no_pair"] += 1
            return
        self._submit(Job(pair))

    def _on_trigger(self, request: Any, response: Any) -> Any:
        with self._lock:
            self._counts["triggers"] += 1
            pair = self._newest
        if pair is None:
            response.success, response.message = False, "no synchronized lidar/camera pair received yet"
            return response
        waiter = Waiter()
        self._submit(Job(pair, waiter))
        if not waiter.done.wait(TRIGGER_TIMEOUT_S):
            response.success, response.message = False, f"no result within {TRIGGER_TIMEOUT_S:g} s"
        else:
            response.success, response.message = waiter.success, waiter.message
        return response

    # ------------------------------------------------------------------ gating, extrinsic
    def gate(self) -> str | None:
        """None when the ego is slow enough (or gating is off), else why not."""
        return gate_reason(self.params, self._odom, time.monotonic())

    def frames(self, cloud: PointCloud2, image: Image) -> tuple[str, str]:
        p = self.params
        return (p.lidar_frame_id or cloud.header.frame_id, p.camera_frame_id or image.header.frame_id)

    def extrinsic(self, lidar_frame: str, camera_frame: str) -> np.ndarray | None:
        if self.params.extrinsic is not None:
            return self.params.extrinsic
        return self.tf.lookup(camera_frame, lidar_frame)

    # ------------------------------------------------------------------ worker thread
    def _work(self) -> None:
        while True:
            job = self._mailbox.take()
            if job is None:
                return
            try:
                ok, message = self._process(job.pair)
            except Exception:  # noqa: BLE001
                # The one broad catch (as in centerpoint_node): whatever fails inside one pair must not stop the
                # node. Counted as internal_error, logged with its traceback (throttled).
                self.health.on_internal_error()
                self.get_logger().error(f"classifying a pair failed (counted as internal_error, node continues):\n"
                                        f"{traceback.format_exc()}", throttle_duration_sec=WARN_PERIOD_S)
                ok, message = False, "internal error (see the node's log)"
            if job.waiter is not None:
                job.waiter.answer(ok, message)

    def _process(self, pair: SyncedSet) -> tuple[bool, str]:
        why = self.gate()
        if why is not None:
            with self._lock:
                self._counts["gated"] += 1
            return False, f"gated: {why}"
        (cloud, valid), (image, _), (info, k) = pair.items
        t0 = time.perf_counter()
        lidar_frame, camera_frame = self.frames(cloud, image)
        T = self.extrinsic(lidar_frame, camera_frame)
        if T is None:
            self._malformed("pair.no_extrinsic", f"no static transform from {lidar_frame!r} to {camera_frame!r} yet "
                                                 f"(known: {self.tf.describe()})")
            return False, f"no extrinsic from {lidar_frame!r} to {camera_frame!r}"
        if (int(info.width), int(info.height)) != (int(image.width), int(image.height)):
            self._malformed("pair.size_mismatch", f"camera info {info.width}x{info.height} but image "
                                                  f"{image.width}x{image.height}")
            return False, "camera info and image sizes differ"
        points, cloud_info = pipeline_points(valid)
        bgr, _ = image_to_bgr(image, self.params.max_pixels)
        d = distortion(info)
        if d is not None:
            bgr = cv2.undistort(np.ascontiguousarray(bgr), k, d)
        t_convert = (time.perf_counter() - t0) * 1e3
        try:
            out = self.pipeline(bgr, points, k, T)
        except DatasetError as e:
            self._malformed("pair.bad_input", str(e))
            return False, str(e)
        header = Header(stamp=image.header.stamp, frame_id=camera_frame)
        status = CalibrationStatus(header=header, is_calibrated=bool(out.is_calibrated),
                                   calibrated_score=float(out.calibrated_score),
                                   miscalibrated_score=float(out.miscalibrated_score),
                                   camera_frame_id=camera_frame, lidar_frame_id=lidar_frame)
        self._status_pub.publish(status)
        total_ms = (time.perf_counter() - t0) * 1e3
        latency_ms = (self.get_clock().now().nanoseconds - stamp_to_ns(image.header.stamp)) / 1e6
        t = out.timings_ms
        stats = InferenceStats(header=header, backend=self.model.backend, precision=self.model.precision,
                               preprocess_ms=float(t["input_build"] + t_convert), inference_ms=float(t["inference"]),
                               postprocess_ms=float(t["postprocess"]), total_ms=float(total_ms),
                               pipeline_latency_ms=float(latency_ms), input_size=int(cloud_info.num_points),
                               output_count=int(out.projected_points))
        self._stats_pub.publish(stats)
        self.health.on_processed(total_ms, latency_ms, None)
        result = {"is_calibrated": bool(out.is_calibrated), "calibrated_score": float(out.calibrated_score),
                  "miscalibrated_score": float(out.miscalibrated_score), "projected_points": int(out.projected_points),
                  "stamp_ns": stamp_to_ns(image.header.stamp), **{f"{k}_ms": float(v) for k, v in t.items()}}
        with self._lock:
            self._counts["classified"] += 1
            self._last = result
        if self._preview_pub is not None:
            self._preview_pub.publish(bgr_to_image_msg(self.preview(bgr, points, k, T), header))
        self._publish_diagnostics()
        verdict = "calibrated" if out.is_calibrated else "miscalibrated"
        return True, (f"{verdict}: calibrated_score={out.calibrated_score:.6f} miscalibrated_score="
                      f"{out.miscalibrated_score:.6f} projected_points={out.projected_points} stamp="
                      f"{image.header.stamp.sec}.{image.header.stamp.nanosec:09d}")

    def preview(self, bgr: np.ndarray, points: np.ndarray, k: np.ndarray, T: np.ndarray) -> np.ndarray:
        """The image (at the model's input size) with the projected depth channel drawn over it, near red."""
        _, built = self.pipeline.preprocess(bgr, points, k, T)
        depth = built.tensor[3]
        h, w = depth.shape
        base = bgr if bgr.shape[:2] == (h, w) else cv2.resize(np.ascontiguousarray(bgr), (w, h))
        out = np.array(base, dtype=np.uint8, copy=True)
        hit = depth > 0
        if hit.any():
            scaled = np.clip(255.0 * (1.0 - depth / depth[hit].max()), 0, 255).astype(np.uint8)
            colours = cv2.applyColorMap(scaled, cv2.COLORMAP_JET)
            out[hit] = colours[hit]
        return out

    # ------------------------------------------------------------------ diagnostics
    def _publish_diagnostics(self) -> None:
        msg = self.health.report(self.get_clock().now().to_msg())
        msg.status.extend([self._status_diag(), self._sync_diag()])
        self._diag_pub.publish(msg)

    def _kv(self, values: list[tuple[str, Any]]) -> list[KeyValue]:
        return [KeyValue(key=k, value=("" if v is None else f"{v:.6f}" if isinstance(v, float) else str(v).lower()
                                        if isinstance(v, bool) else str(v))) for k, v in values]

    def _status_diag(self) -> DiagnosticStatus:
        name = self.get_fully_qualified_name()
        with self._lock:
            last = dict(self._last) if self._last else None
        if last is None:
            return DiagnosticStatus(level=DiagnosticStatus.STALE, name=f"{name}: calibration_status",
                                    hardware_id=name, message="no pair classified yet")
        calibrated = last["is_calibrated"]
        confidence = last["calibrated_score"] if calibrated else last["miscalibrated_score"]
        text = (f"{'calibrated' if calibrated else 'MISCALIBRATED'} (confidence {confidence:.3f}, "
                f"{last['projected_points']} projected points)")
        values = [("is_calibrated", calibrated), ("confidence", confidence), *last.items()]
        return DiagnosticStatus(level=DiagnosticStatus.OK if calibrated else DiagnosticStatus.ERROR,
                                name=f"{name}: calibration_status", hardware_id=name, message=text,
                                values=self._kv(values))

    def _sync_diag(self) -> DiagnosticStatus:
        name = self.get_fully_qualified_name()
        with self._lock:
            messages, counts = list(self._messages), dict(self._counts)
        dropped = dict(self.sync.dropped)
        values: list[tuple[str, Any]] = [
            *((f"messages.{n}", messages[i]) for i, n in enumerate(INPUT_NAMES)),
            *((f"sync_dropped.{r}", dropped[r]) for r in APPROX_DROP_REASONS),
            *((f"sync_dropped.{n}", self.sync.dropped_per_input[i]) for i, n in enumerate(INPUT_NAMES)),
            *((f"sync_pending.{n}", self.sync.pending[i]) for i, n in enumerate(INPUT_NAMES)),
            *counts.items(),
        ]
        level = DiagnosticStatus.WARN if sum(dropped.values()) else DiagnosticStatus.OK
        text = f"{counts['pairs']} pairs, {counts['classified']} classified, {sum(dropped.values())} messages unpaired"
        return DiagnosticStatus(level=level, name=f"{name}: synchronizer", hardware_id=name, message=text,
                                values=self._kv(values))

    # ------------------------------------------------------------------ shutdown
    def close(self, timeout: float = 10.0) -> None:
        self._mailbox.close()
        self._worker.join(timeout)
        self.model.close()


def load_model(p: CalibNodeParams) -> Any:
    """bundle_dir, else config, else checkpoint, else the shipped model -> LoadedPipeline (warmed up)."""
    from awml_deploy_core.families import get_family
    from awml_deploy_core.loader import load_pipeline

    overrides = None
    if p.miscalibrated_threshold is not None:
        overrides = {"miscalibrated_threshold": p.miscalibrated_threshold}
    source = p.bundle_dir or p.config or p.checkpoint or get_family("calibration_status").default_checkpoint
    try:
        loaded = load_pipeline(source, p.backend, p.device or None, checkpoint=p.checkpoint or None,
                               model_overrides=overrides, onnx_cache_dir=p.onnx_cache_dir or None)
    except AwmlDeployError as e:
        named = [n for n in ("checkpoint", "bundle_dir", "config") if getattr(p, n) and getattr(p, n) in str(e)]
        raise type(e)(f"parameter '{named[0]}': {e}" if named else str(e)) from None
    if loaded.family.name != "calibration_status":
        loaded.close()
        raise ParamError(f"parameter '{'bundle_dir' if p.bundle_dir else 'config' if p.config else 'checkpoint'}': "
                         f"a {loaded.family.name} model, not a calibration_status one")
    loaded.pipeline(*loaded.family.warm_up_input(loaded.cfg.model))  # first-call set-up off the first real pair
    return loaded


def main(args: list[str] | None = None) -> int:
    return run_main("calibration_status_node", lambda: _run(args))


def _run(args: list[str] | None) -> int:
    from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor

    init_ros(args)
    node = CalibrationStatusNode()
    executor = MultiThreadedExecutor(num_threads=2)
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.close()
        executor.shutdown()
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
