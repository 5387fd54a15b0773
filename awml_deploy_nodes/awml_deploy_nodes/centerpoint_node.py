"""``centerpoint_node``: lidar point clouds in, CenterPoint 3D detections out.

ROS glue only. The detections come from :class:`awml_deploy_core.pipelines.centerpoint.CenterPointPipeline`, the
very object evaluation and verification run; the node reads the serialized cloud of its raw subscription
(``cloud_cdr``), converts it to the (N, 5) array (``conversions.validate_pointcloud2`` + ``pipeline_points``:
zero-copy into the received bytes for the usual float32 layouts), calls the
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

The plumbing (parameter table, loader call, mailbox, worker, diagnostics, start-up errors) is node_runtime's,
shared with ``yolox_node``.

A bad message never stops the node: a ``MalformedCloudError`` drops the cloud with a throttled warning and a
per-kind count; any other exception while processing one frame is logged with its traceback (throttled),
counted as ``internal_error`` and the node carries on with the next cloud. A bad parameter or artifact stops
the node at start-up with one line on stderr and exit code 2 (configuration) or 3 (artifact, backend).
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from sensor_msgs.msg import PointCloud2

from awml_deploy_msgs.msg import DetectedObjects

from .conversions import (
    MALFORMED_KINDS,
    MalformedCloudError,
    ValidCloud,
    pipeline_points,
    to_autoware_detected_objects,
    validate_pointcloud2,
)
from .cloud_cdr import Header as CloudHeader
from .cloud_cdr import SerializedCloud, pointcloud2_from_cdr
from .detections_cdr import boxes_to_detected_objects_cdr
from .diagnostics import NodeHealth
from .node_params import PARAMS, NodeParams, ParamError, validate
from .node_runtime import (
    INPUT_DEPTH,
    INPUT_QOS,
    OUTPUT_QOS,
    Mailbox,
    ModelNode,
    as_header,
    read_params,
    spin_main,
)
from .node_runtime import load_model as load_family_model

NODE_NAME = "centerpoint"
DEFAULT_CHECKPOINT = "package://awml_deploy_core/checkpoints/centerpoint_small.pth"
_Mailbox = Mailbox  # the name earlier tests and tools import
__all__ = ["INPUT_DEPTH", "INPUT_QOS", "OUTPUT_QOS", "CenterPointNode", "load_model", "main"]


# --------------------------------------------------------------------------------------------------
# Parameters -> pipeline: the core loader does all of it (node_runtime.load_model)
# --------------------------------------------------------------------------------------------------
def load_model(p: NodeParams) -> Any:
    """bundle_dir, else config, else checkpoint, else the shipped model -> awml_deploy_core.loader.LoadedPipeline."""
    overrides = None
    if p.score_threshold is not None:
        overrides = {"score_threshold": p.score_threshold, "class_score_thresholds": None}
    loaded = load_family_model(p, DEFAULT_CHECKPOINT, "centerpoint", overrides)
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
def _autoware_objects_type() -> Any:
    try:
        from autoware_perception_msgs.msg import DetectedObjects as AutowareObjects
    except ImportError:
        raise ParamError("parameter 'publish_autoware_objects' is true but autoware_perception_msgs is not "
                         "importable here; source an Autoware workspace or set it false") from None
    return AutowareObjects


class CenterPointNode(ModelNode):
    def __init__(self, node_name: str = NODE_NAME, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self.params = read_params(self, PARAMS, validate)
        autoware_type = _autoware_objects_type() if self.params.publish_autoware_objects else None
        self.model = load_model(self.params)
        self.pipeline = self.model.pipeline

        self._objects_pub = self.create_publisher(DetectedObjects, "~/output/objects", OUTPUT_QOS)
        self._autoware_pub = None
        if autoware_type is not None:
            self._autoware_pub = self.create_publisher(autoware_type, "~/output/autoware_objects", OUTPUT_QOS)
        self.start_runtime(NodeHealth(self.get_fully_qualified_name(), self.params.processing_time_budget_ms,
                                      MALFORMED_KINDS, info={"backend": self.model.backend,
                                                             "precision": self.model.precision,
                                                             "device": self.model.device,
                                                             "model": self.pipeline.cfg.name}),
                           "centerpoint_worker")
        # Raw: the callback reads the serialized cloud itself (cloud_cdr), ~1 ms less than rclpy's deserialization
        # of a 200k-point cloud, and the points stay in the received bytes (zero-copy to the pipeline).
        self._sub = self.subscribe(PointCloud2, "~/input/pointcloud", self._on_cloud, raw=True)
        self.get_logger().info(
            f"ready: {self.model.backend} ({self.model.precision}, {self.model.device}) from {self.model.source}; "
            f"input {self._sub.topic_name}, output {self._objects_pub.topic_name}; pid {os.getpid()}")

    # ------------------------------------------------------------------ executor thread
    def _on_cloud(self, data: bytes) -> None:
        # The layout is checked here (O(fields), tens of microseconds) so that a malformed cloud arriving right
        # after a good one never takes the good one's place in the mailbox; it is counted and dropped.
        received = time.perf_counter()
        try:
            msg = pointcloud2_from_cdr(data)
            valid = validate_pointcloud2(msg, self.params.max_points)
        except MalformedCloudError as e:
            self.health.on_received(False)
            self.on_malformed(e)
            return
        except Exception:  # noqa: BLE001 - see ModelNode.callback_failed
            self.health.on_received(False)
            self.callback_failed("checking a cloud")
            return
        self.health.on_received(self._mailbox.put((msg, valid), received))

    # ------------------------------------------------------------------ worker thread
    def process_item(self, item: Any) -> None:
        msg, valid = item if isinstance(item, tuple) else (item, None)
        self._process(msg, valid)

    def _process(self, msg: PointCloud2 | SerializedCloud, valid: ValidCloud | None = None) -> None:
        t0 = time.perf_counter()
        if valid is None:  # a cloud put into the mailbox directly (tests): validated here
            try:
                valid = validate_pointcloud2(msg, self.params.max_points)
            except MalformedCloudError as e:
                self.on_malformed(e)
                return
        # Zero-copy for the usual float32 layouts; the pipeline drops (and counts) non-finite x, y, z itself.
        points, info = pipeline_points(valid)
        out = self.pipeline(points)
        nan_dropped = int(getattr(out.stats, "nan_dropped", 0))
        self.health.on_accepted(info.byte_swapped, info.organized, info.num_points - nan_dropped <= 0,
                                info.non_finite + nan_dropped)
        # The input's own header unless the frame is overridden (a std_msgs Header costs ~40 us right after an
        # inference; the stats and the Autoware message get one after the detections are out: as_header)
        header = msg.header if not self.params.frame_id else CloudHeader(msg.header.stamp, self.params.frame_id)
        # Serialized in one numpy pass and published as bytes (no per-object message objects).
        objects = boxes_to_detected_objects_cdr(out.detections, self.params.class_names, header,
                                                self.model.cfg.model.with_velocity)
        autoware = None
        if self._autoware_pub is not None:
            autoware = to_autoware_detected_objects(out.detections, self.params.class_names, as_header(header),
                                                    self.model.cfg.model.with_velocity)
        now_ns = self.now_ns()
        total_ms = (time.perf_counter() - t0) * 1e3
        self._objects_pub.publish(objects)
        if autoware is not None:
            self._autoware_pub.publish(autoware)

        stamp_ns = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        latency_ms = (now_ns - stamp_ns) / 1e6
        t = out.timings_ms
        timings = {"preprocess": t["preprocess"], "inference": t["encoder"] + t["scatter"] + t["head"],
                   "postprocess": t["postprocess"]}
        self.publish_stats(header, timings, total_ms, latency_ms, info.num_points_in, len(out.detections))
        self.health.on_processed(total_ms, latency_ms, out.stats)


def main(args: list[str] | None = None) -> int:
    # Every start-up failure (ROS arguments, params files, parameters, artifacts, backends) is one line on stderr
    # and exit 2 (configuration) or 3 (artifact, backend): the problem is the user's to fix, not a crash.
    return spin_main("centerpoint_node", CenterPointNode, args)


if __name__ == "__main__":
    sys.exit(main())
