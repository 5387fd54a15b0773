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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rclpy
import rclpy.subscription
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import PointCloud2
from std_msgs.msg import Header

from awml_deploy_core.errors import ArtifactError, AwmlDeployError, BackendUnavailableError
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
# Parameters -> pipeline (core helpers only)
# --------------------------------------------------------------------------------------------------
@dataclass
class LoadedModel:
    pipeline: Any  # CenterPointPipeline
    backend: str
    precision: str  # InferenceStats.precision: fp32, tf32, fp16, int8
    device: str
    source: str  # where the model came from, for the start-up log line
    with_velocity: bool


def default_onnx_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "awml_deploy" / "onnx"


def onnx_from_checkpoint(model: Any, cfg: Any, ckpt_path: Path, cache_root: str | Path) -> dict[str, Path]:
    """ONNX graphs of `model`, exported into `<cache_root>/<model name>-<key>` unless a valid export is there.

    The folder is a bundle (manifest.json with config and checkpoint), so it can later be given as bundle_dir.
    The key covers what shapes the graphs: checkpoint bytes, model architecture, opset, simplification, exporter
    and torch versions (the same inputs the export job hashes).
    """
    import importlib.metadata

    import torch

    from awml_deploy_core.bundle import Bundle, ensure_writable_dir, sha256_file, sha256_json
    from awml_deploy_core.deploy import EXPORTER_VERSION
    from awml_deploy_core.export.onnx_export import export_centerpoint_onnx, onnx_file_names

    ckpt_sha = sha256_file(ckpt_path)
    arch = cfg.model.model_dump(mode="json", exclude={"score_threshold", "class_score_thresholds", "max_num", "nms"})
    key = sha256_json({"checkpoint": ckpt_sha, "model": arch, "opset": cfg.export.opset,
                       "simplify": cfg.export.simplify, "exporter": EXPORTER_VERSION, "torch": torch.__version__})
    root = ensure_writable_dir(Path(cache_root).expanduser() / f"{cfg.model.name}-{key[:12]}")
    bundle = Bundle.open(root)
    names = onnx_file_names(cfg.model)
    if all(bundle.reusable(k, key) for k in names):
        return {k: bundle.verify(k) for k in names}
    try:
        version = importlib.metadata.version("awml_deploy_core")
    except importlib.metadata.PackageNotFoundError:
        version = "0+unknown"
    graphs = export_centerpoint_onnx(model, cfg.model, root, cfg.export.opset, cfg.export.simplify, version)
    for k, g in graphs.items():
        bundle.record(k, g.path, key, kind="onnx", opset=cfg.export.opset, simplified=g.simplified,
                      simplify_error=g.simplify_error)
    bundle.save(config=cfg.model_dump(mode="json"), checkpoint={"path": str(ckpt_path), "sha256": ckpt_sha})
    return {k: g.path for k, g in graphs.items()}


def _bundle_config(bundle: Any) -> Any:
    from awml_deploy_core.config import DeployConfig, validate as validate_model

    data = bundle.manifest.get("config")
    if not isinstance(data, dict):
        raise ArtifactError(f"bundle {bundle.root}: manifest.json has no 'config' section; re-run awml-deploy export")
    return validate_model(DeployConfig, data, source=f"{bundle.root / 'manifest.json'}: config")


def _bundle_checkpoint(bundle: Any) -> Path:
    """The checkpoint the bundle was exported from, after checking it still has the recorded sha256."""
    from awml_deploy_core.bundle import sha256_file

    entry = bundle.manifest.get("checkpoint") or {}
    path = Path(entry.get("path", ""))
    if not entry.get("path") or not path.is_file():
        raise ArtifactError(f"bundle {bundle.root}: the checkpoint it was exported from ({entry.get('path')}) is not "
                            f"there; set the 'checkpoint' parameter (backend pytorch runs the checkpoint)")
    if entry.get("sha256") and sha256_file(path) != entry["sha256"]:
        raise ArtifactError(f"bundle {bundle.root}: checkpoint {path} changed since the export (sha256 differs from "
                            f"the manifest); re-run export or set the 'checkpoint' parameter")
    return path


def _trt_precision_name(policy: str) -> str:
    from awml_deploy_core.export.tensorrt_build import verification_precision

    return verification_precision(policy)


def build_pipeline(p: NodeParams) -> LoadedModel:
    """Bundle / config / checkpoint + backend -> the core CenterPointPipeline, with core helpers only."""
    import torch

    from awml_deploy_core.bundle import Bundle
    from awml_deploy_core.config import DEFAULT_CHECKPOINT, CenterPointModelConfig, DeployConfig, load_deploy_config
    from awml_deploy_core.deploy import resolve_checkpoint
    from awml_deploy_core.models.checkpoint import load_checkpoint
    from awml_deploy_core.pipelines.centerpoint.pipeline import CenterPointPipeline

    if p.backend == "tensorrt":
        from awml_deploy_core.backends.tensorrt_backend import import_tensorrt

        import_tensorrt()  # one clear line when TensorRT is absent, before looking for a bundle, engines or a GPU

    bundle = cfg = None
    source = ""
    if p.bundle_dir:
        root = Path(p.bundle_dir).expanduser()
        if not (root / "manifest.json").is_file():
            raise ParamError(f"parameter 'bundle_dir': {root} holds no manifest.json (make one with `awml-deploy export "
                             f"CONFIG --work-dir {root}`)")
        bundle = Bundle.open(root)
        cfg = _bundle_config(bundle)
        source = f"bundle {root}"
    elif p.config:
        cfg = load_deploy_config(p.config)
        source = f"config {p.config}"

    if p.backend == "tensorrt":
        if bundle is None:
            raise ParamError("parameter 'bundle_dir': the tensorrt backend runs the engines of an export bundle; "
                             "set bundle_dir to the work_dir of `awml-deploy export CONFIG --mode both`")

    # The model: needed for pytorch, and for onnxruntime when there is no bundle to take the graphs from.
    model = None
    ckpt_path = None
    if p.backend == "pytorch" or (p.backend == "onnxruntime" and bundle is None):
        if p.checkpoint:
            uri = p.checkpoint
        elif bundle is not None:
            uri = str(_bundle_checkpoint(bundle))
        elif cfg is not None:
            uri = cfg.checkpoint
        else:
            uri = DEFAULT_CHECKPOINT
        try:
            ckpt_path = resolve_checkpoint(uri)
        except AwmlDeployError as e:
            if p.checkpoint:
                raise type(e)(f"parameter 'checkpoint': {e}") from None
            if cfg is None:
                raise type(e)(f"bundle_dir, config and checkpoint are all empty and the shipped checkpoint is not "
                              f"installed ({e}); set one of them") from None
            raise
        model, model_cfg = load_checkpoint(ckpt_path, cfg.model if cfg is not None else None)
        if cfg is None:
            cfg = DeployConfig(model=model_cfg, checkpoint=str(ckpt_path))
            source = f"checkpoint {ckpt_path}"
        else:
            source += f", checkpoint {ckpt_path}"

    model_cfg = cfg.model
    if p.score_threshold is not None:
        model_cfg = CenterPointModelConfig.model_validate(
            {**model_cfg.model_dump(), "score_threshold": p.score_threshold, "class_score_thresholds": None})
    if len(p.class_names) != len(model_cfg.class_names):
        raise ParamError(f"parameter 'class_names': {len(p.class_names)} names {list(p.class_names)} but the model has "
                         f"{len(model_cfg.class_names)} classes {list(model_cfg.class_names)}; list the model's classes")

    device = p.device or cfg.device
    if p.backend == "tensorrt" and not device.startswith("cuda"):
        device = "cuda"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BackendUnavailableError(f"device '{device}' asked for (parameter 'device' or the config), but torch sees "
                                      f"no CUDA device here; use device cpu")

    precision = "fp32"
    if p.backend == "pytorch":
        from awml_deploy_core.backends.torch_backend import torch_runners

        runners = torch_runners(model, device)
    elif p.backend == "onnxruntime":
        from awml_deploy_core.backends.onnxruntime_backend import onnxruntime_runners
        from awml_deploy_core.export.onnx_export import onnx_file_names

        if bundle is not None:
            paths = {k: bundle.verify(k) for k in onnx_file_names(model_cfg)}
        else:
            paths = onnx_from_checkpoint(model, cfg, ckpt_path, p.onnx_cache_dir or default_onnx_cache())
            source += f", ONNX cache {paths['encoder'].parent}"
        o = cfg.onnxruntime
        runners = onnxruntime_runners(paths["encoder"], paths["head"], o.providers, o.graph_optimization,
                                      o.intra_op_threads, o.allow_spinning)
    else:
        from awml_deploy_core.backends.tensorrt_backend import tensorrt_runners
        from awml_deploy_core.export.tensorrt_plan import GRAPHS, engine_artifact

        engines = {}
        for graph in GRAPHS:
            entry = bundle.artifacts.get(engine_artifact(graph))
            if entry is None:
                raise ArtifactError(f"bundle {bundle.root}: no TensorRT {graph} engine; build them with "
                                    f"`awml-deploy export CONFIG --mode trt` (export.tensorrt.precision {p.precision})")
            if entry.get("precision") != p.precision:
                raise ParamError(f"parameter 'precision': the bundle's {graph} engine was built with precision "
                                 f"{entry.get('precision')!r}, not {p.precision!r}; set precision to "
                                 f"{entry.get('precision')!r} or rebuild the engines")
            engines[graph] = bundle.verify(engine_artifact(graph))
        runners = tensorrt_runners(engines["encoder"], engines["head"], device)
        precision = _trt_precision_name(p.precision)

    pipeline = CenterPointPipeline(model_cfg, runners, device)
    return LoadedModel(pipeline, p.backend, precision, device, source, model_cfg.with_velocity)


def _warm_up(pipeline: Any) -> None:
    """One inference on a small random cloud: first-call initialisation does not land on the first real frame."""
    import numpy as np

    r = pipeline.cfg.point_cloud_range
    rng = np.random.default_rng(0)
    pts = np.zeros((2000, 5), np.float32)
    for axis in range(3):
        pts[:, axis] = rng.uniform(r[axis], r[axis + 3], len(pts))
    pipeline(pts)


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
        self.model = build_pipeline(self.params)
        self.pipeline = self.model.pipeline
        _warm_up(self.pipeline)

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
                                                self.model.with_velocity)
        autoware = None
        if self._autoware_pub is not None:
            autoware = to_autoware_detected_objects(out.detections, self.params.class_names, header,
                                                    self.model.with_velocity)
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
        self._mailbox.close()
        self._worker.join(timeout)


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
