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
``manual`` on a trigger. Threads: a multi-threaded executor runs the subscriptions and timers in the node's
default (mutually exclusive) group and the trigger service in another (so a call can wait for its result while
messages keep arriving); one worker thread runs the pipeline. A bad message never stops the node: it is counted by
kind; a failure inside one pair is logged (throttled) and counted as internal_error. Start-up failures are one line
and exit 2 (configuration) or 3 (artifact, backend).

The plumbing (parameter table, loader call, mailbox, worker and its one broad catch, NodeHealth, InferenceStats,
start-up errors, main) is node_runtime's, shared with ``centerpoint_node`` and ``yolox_node``; what is the
calibration node's own is here (modes, odometry gate, trigger, extrinsic, preview, its two extra statuses), in
:mod:`.approx_sync` (the synchronizer) and :mod:`.tf_static` (the static transform tree).
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Header

from awml_deploy_core.errors import DatasetError
from awml_deploy_msgs.msg import CalibrationStatus
from diagnostic_msgs.msg import DiagnosticStatus

from .approx_sync import APPROX_DROP_REASONS, ApproximateTimeSync, SyncedSet, stamp_to_ns
from .calibration_status_params import DEFAULT_CHECKPOINT, PARAMS, CalibNodeParams, validate
from .conversions import MALFORMED_KINDS, MalformedCloudError, pipeline_points, validate_pointcloud2
from .diagnostics import NodeHealth, status
from .image_conversions import MALFORMED_IMAGE_KINDS, MalformedImageError, bgr_to_image_msg, check_image_header, \
    image_to_bgr
from .node_runtime import INPUT_QOS, OUTPUT_QOS, ModelNode, read_params, spin_main
from .node_runtime import load_model as load_family_model
from .tf_static import MALFORMED_TF_KINDS, StaticTransforms

NODE_NAME = "calibration_status_node"
CLOUD, IMAGE, INFO = 0, 1, 2
INPUT_NAMES = ("pointcloud", "image", "camera_info")
CAMERA_INFO_KINDS = ("bad_k", "zero_size")
PAIR_KINDS = ("size_mismatch", "no_extrinsic", "bad_input")
MALFORMED = (tuple(f"cloud.{k}" for k in MALFORMED_KINDS) + tuple(f"image.{k}" for k in MALFORMED_IMAGE_KINDS)
             + tuple(f"camera_info.{k}" for k in CAMERA_INFO_KINDS) + tuple(f"tf.{k}" for k in MALFORMED_TF_KINDS)
             + tuple(f"pair.{k}" for k in PAIR_KINDS))
TRIGGER_TIMEOUT_S = 60.0
DISTORTION_MODELS = ("plumb_bob", "rational_polynomial")
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


def load_model(p: CalibNodeParams) -> Any:
    """bundle_dir, else config, else checkpoint, else the shipped model -> LoadedPipeline (warmed up)."""
    overrides = None
    if p.miscalibrated_threshold is not None:
        overrides = {"miscalibrated_threshold": p.miscalibrated_threshold}
    loaded = load_family_model(p, DEFAULT_CHECKPOINT, "calibration_status", overrides)
    loaded.pipeline(*loaded.family.warm_up_input(loaded.cfg.model))  # first-call set-up off the first real pair
    return loaded


class Waiter:
    """A trigger call waiting for the worker's answer."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.success = False
        self.message = ""

    def answer(self, success: bool, message: str) -> None:
        self.success, self.message = success, message
        self.done.set()


@dataclass
class Job:
    """What the worker takes from the mailbox: a synchronized (cloud, image, camera info) set, and the trigger
    call waiting for its result (manual mode)."""

    pair: SyncedSet
    waiter: Waiter | None = None


class CalibrationStatusNode(ModelNode):
    def __init__(self, node_name: str = NODE_NAME, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self.params = p = read_params(self, PARAMS, validate)
        self.model = load_model(p)
        self.pipeline = self.model.pipeline
        self.sync = ApproximateTimeSync(3, p.sync_queue_size, p.sync_slop_ns)
        self.tf = StaticTransforms()
        self._lock = threading.Lock()  # the counters below and the newest pair
        self._messages = [0, 0, 0]
        self._counts = {"pairs": 0, "classified": 0, "gated": 0, "no_pair": 0, "triggers": 0}
        self._newest: SyncedSet | None = None
        self._newest_taken = True
        self._odom: tuple[float, float, float] | None = None  # (monotonic receive time, speed, |yaw rate|)
        self._last: dict[str, Any] | None = None  # the last result, for /diagnostics

        self._status_pub = self.create_publisher(CalibrationStatus, "~/output/calibration_status", OUTPUT_QOS)
        self._preview_pub = self.create_publisher(Image, "~/debug/preview", OUTPUT_QOS) if p.publish_preview else None
        self.start_runtime(NodeHealth(self.get_fully_qualified_name(), p.processing_time_budget_ms, MALFORMED,
                                      info={"backend": self.model.backend, "precision": self.model.precision,
                                            "device": self.model.device, "model": self.pipeline.cfg.name,
                                            "mode": p.mode},
                                      noun="inputs", accepted_kinds=(), overflow_keys=()),
                           "calibration_worker")
        # Subscriptions and timers share the node's default (mutually exclusive) callback group; the trigger
        # service has its own, so that a call can wait for the worker while messages keep arriving.
        self.subscribe(PointCloud2, "~/input/pointcloud", self._on_cloud)
        self.subscribe(Image, "~/input/image", self._on_image)
        self.subscribe(CameraInfo, "~/input/camera_info", self._on_info)
        if p.extrinsic is None:
            tf_type, self.tf_type_name = tf_static_type()
            self.create_subscription(tf_type, p.tf_static_topic, self._on_tf, TF_STATIC_QOS)
        if p.use_odometry:
            from nav_msgs.msg import Odometry

            self.create_subscription(Odometry, "~/input/odometry", self._on_odometry, INPUT_QOS)
        if p.mode == "periodic":
            self.create_timer(p.period_s, self._on_period)
        if p.mode == "manual":
            from std_srvs.srv import Trigger

            self.create_service(Trigger, "~/trigger", self._on_trigger,
                                callback_group=MutuallyExclusiveCallbackGroup())
        ext = "from parameters" if p.extrinsic is not None else f"from {p.tf_static_topic} ({self.tf_type_name})"
        self.get_logger().info(
            f"ready: {self.model.backend} ({self.model.precision}, {self.model.device}) from {self.model.source}; "
            f"mode {p.mode}; extrinsic {ext}; pid {os.getpid()}")

    # ------------------------------------------------------------------ inputs (executor, default group)
    def _add(self, index: int, msg: Any, checked: Any) -> None:
        with self._lock:
            self._messages[index] += 1
        for pair in self.sync.add(index, stamp_to_ns(msg.header.stamp), (msg, checked)):
            self._on_pair(pair)

    def _on_cloud(self, msg: PointCloud2) -> None:
        try:
            valid = validate_pointcloud2(msg, self.params.max_points)
        except MalformedCloudError as e:
            self.on_malformed(e, f"cloud.{e.kind}")
            return
        self._add(CLOUD, msg, valid)

    def _on_image(self, msg: Image) -> None:
        try:
            check_image_header(msg, self.params.max_pixels)
        except MalformedImageError as e:
            self.on_malformed(e, f"image.{e.kind}")
            return
        self._add(IMAGE, msg, None)

    def _on_info(self, msg: CameraInfo) -> None:
        try:
            k = camera_matrix(msg)
        except ValueError as e:
            self.on_malformed(f"camera info ({e}): K {list(msg.k)}, {msg.width}x{msg.height}", f"camera_info.{e}")
            return
        self._add(INFO, msg, k)

    def _on_tf(self, msg: Any) -> None:
        for err in self.tf.add_message(msg):
            self.on_malformed(err, f"tf.{err.kind}")

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
        """Into the mailbox; a job it replaces is a dropped pair, and its trigger call is answered."""
        old = self._mailbox.swap(job)
        if old is not None and old.waiter is not None:
            old.waiter.answer(False, "superseded by a newer trigger")
        self.health.on_received(old is not None)

    def _on_period(self) -> None:
        with self._lock:
            pair = None if self._newest_taken else self._newest
            self._newest_taken = True
            if pair is None:
                self._counts["no_pair"] += 1
        if pair is not None:
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
    def process_item(self, job: Job) -> None:
        """Classify one pair; a waiting trigger call gets the result (or, when the pair failed inside the node, the
        failure, which node_runtime's worker counts and logs)."""
        ok, message = False, "internal error (see the node's log)"
        try:
            ok, message = self._process(job.pair)
        finally:
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
            self.on_malformed(f"pair without extrinsic: no static transform from {lidar_frame!r} to {camera_frame!r} "
                              f"yet (known: {self.tf.describe()})", "pair.no_extrinsic")
            return False, f"no extrinsic from {lidar_frame!r} to {camera_frame!r}"
        if (int(info.width), int(info.height)) != (int(image.width), int(image.height)):
            self.on_malformed(f"pair: camera info {info.width}x{info.height} but image {image.width}x{image.height}",
                              "pair.size_mismatch")
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
            self.on_malformed(f"pair: {e}", "pair.bad_input")
            return False, str(e)
        header = Header(stamp=image.header.stamp, frame_id=camera_frame)
        self._status_pub.publish(CalibrationStatus(
            header=header, is_calibrated=bool(out.is_calibrated), calibrated_score=float(out.calibrated_score),
            miscalibrated_score=float(out.miscalibrated_score), camera_frame_id=camera_frame,
            lidar_frame_id=lidar_frame))
        total_ms = (time.perf_counter() - t0) * 1e3
        latency_ms = (self.now_ns() - stamp_to_ns(image.header.stamp)) / 1e6
        t = out.timings_ms
        self.publish_stats(header, {"preprocess": t["input_build"] + t_convert, "inference": t["inference"],
                                    "postprocess": t["postprocess"]}, total_ms, latency_ms, cloud_info.num_points,
                           out.projected_points)
        self.health.on_processed(total_ms, latency_ms, None)
        result = {"is_calibrated": bool(out.is_calibrated), "calibrated_score": float(out.calibrated_score),
                  "miscalibrated_score": float(out.miscalibrated_score), "projected_points": int(out.projected_points),
                  "stamp_ns": stamp_to_ns(image.header.stamp), **{f"{k}_ms": float(v) for k, v in t.items()}}
        with self._lock:
            self._counts["classified"] += 1
            self._last = result
        if self._preview_pub is not None:
            self._preview_pub.publish(bgr_to_image_msg(self.preview(bgr, points, k, T), header))
        self.publish_diagnostics()
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

    # ------------------------------------------------------------------ diagnostics (after NodeHealth's two)
    def extra_statuses(self) -> list[DiagnosticStatus]:
        return [self._status_diag(), self._sync_diag()]

    def _status_diag(self) -> DiagnosticStatus:
        name = self.get_fully_qualified_name()
        with self._lock:
            last = dict(self._last) if self._last else None
        if last is None:
            return status(name, "calibration_status", DiagnosticStatus.STALE, "no pair classified yet", [])
        calibrated = last["is_calibrated"]
        confidence = last["calibrated_score"] if calibrated else last["miscalibrated_score"]
        text = (f"{'calibrated' if calibrated else 'MISCALIBRATED'} (confidence {confidence:.3f}, "
                f"{last['projected_points']} projected points)")
        return status(name, "calibration_status", DiagnosticStatus.OK if calibrated else DiagnosticStatus.ERROR,
                      text, [("is_calibrated", calibrated), ("confidence", confidence), *last.items()], 6)

    def _sync_diag(self) -> DiagnosticStatus:
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
        return status(self.get_fully_qualified_name(), "synchronizer", level, text, values, 6)


def main(args: list[str] | None = None) -> int:
    return spin_main("calibration_status_node", CalibrationStatusNode, args, threads=2)


if __name__ == "__main__":
    sys.exit(main())
