"""``yolox_node``: camera images in, YOLOX 2D detections out; one camera, or N cameras batched by stamp.

ROS glue only. The detections come from :class:`awml_deploy_core.pipelines.yolox.pipeline.YOLOXPipeline`, loaded
with ``load_pipeline`` like every other consumer (export, evaluation, bench, replay), with the node's thresholds
(yolox_params.node_model_overrides: ``score_threshold``, else the model config's ``node_score_threshold``, and its
``node_nms_iou``: Autoware tensorrt_yolox's). The node converts each message to a BGR array
(:mod:`.image_conversions`: zero-copy for bgr8), calls the pipeline once per image (set), and serializes the boxes
straight into the Detections2D bytes it publishes (:mod:`.detections2d`). The plumbing (parameters, start-up errors,
mailbox, worker, diagnostics) is node_runtime's, the same as ``centerpoint_node``'s.

Start it (parameters: yolox_params.PARAMS, or ``config/yolox_node.param.yaml``)::

    ros2 run awml_deploy_nodes yolox_node --ros-args --params-file config/yolox_node.param.yaml \\
        -r '~/input/image:=/sensing/camera/camera0/image_rect_color'

Topics (relative to the node, ``yolox_node`` by default):

- one camera (``camera_names`` empty): ``~/input/image`` (sensor_msgs/Image: bgr8, rgb8, mono8) or, with
  ``compressed``, ``~/input/image/compressed`` (sensor_msgs/CompressedImage: JPEG, PNG); ``~/output/detections``
  (awml_deploy_msgs/Detections2D: the image's stamp and frame_id, boxes in its pixels);
- N cameras (``camera_names: [a, b]``): ``~/input/<name>/image`` (or ``.../image/compressed``) and
  ``~/output/<name>/detections``. Images whose stamps lie within ``sync_window_ms`` form a set (stamp_sync) and
  run as one batched inference; images left without a partner are counted on /diagnostics (``sync_dropped.*``);
- ``~/output/objects`` (per camera ``~/output/<name>/objects``): tier4_perception_msgs/DetectedObjectsWithFeature,
  one ROI per detection, with ``publish_autoware_objects`` where that package is importable;
- ``~/debug/inference_stats`` (InferenceStats, one per processed image or set) and ``/diagnostics``.

Input checks: the header of every image is checked in the subscription callback (O(1), no pixel read), so a
malformed image is counted by kind and never takes a good one's place in the mailbox; a compressed image is decoded
in the worker, where a decode failure is counted the same way. Newest input (set) wins, as in centerpoint_node.
Nothing a message holds stops the node; a bad parameter or artifact stops it at start-up with one line on stderr
and exit code 2 (configuration) or 3 (artifact, backend).
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import numpy as np
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from awml_deploy_msgs.msg import Detections2D

from .detections2d import detections2d_cdr
from .diagnostics import NodeHealth
from .image_conversions import (
    MALFORMED_IMAGE_KINDS,
    MalformedImageError,
    check_compressed_header,
    check_image_header,
    compressed_to_bgr,
    image_to_bgr,
)
from .node_runtime import OUTPUT_QOS, ModelNode, read_params, spin_main, with_model_overrides
from .node_runtime import load_model as load_family_model
from .stamp_sync import DROP_REASONS, StampSync, stamp_to_ns
from .yolox_params import DEFAULT_CHECKPOINT, PARAMS, YoloxNodeParams, node_model_overrides, validate

NODE_NAME = "yolox_node"
ACCEPTED_KINDS = ("rgb8", "mono8", "padded_rows", "jpeg", "png")  # valid inputs that cost a conversion
MAX_SYNC_QUEUE = 10


# --------------------------------------------------------------------------------------------------
# Parameters -> pipeline: the core loader does all of it (node_runtime.load_model)
# --------------------------------------------------------------------------------------------------
def load_model(p: YoloxNodeParams) -> Any:
    """bundle_dir, else config, else checkpoint, else the shipped YOLOX -> LoadedPipeline with the node's
    thresholds; one warm-up call per batch size the node will run."""
    loaded = load_family_model(p, DEFAULT_CHECKPOINT, "yolox")
    loaded = with_model_overrides(loaded, node_model_overrides(loaded.cfg.model, p.score_threshold))
    image = loaded.family.warm_up_input(loaded.cfg.model)
    loaded.pipeline([image] * max(1, len(p.camera_names)))  # first-call set-up off the first real frame
    return loaded


def _tier4_types() -> tuple[Any, Any, Any] | None:
    """(DetectedObjectsWithFeature, DetectedObjectWithFeature, ObjectClassification), or None where absent."""
    try:
        from tier4_perception_msgs.msg import DetectedObjectsWithFeature, DetectedObjectWithFeature
    except ImportError:
        return None
    # ObjectClassification of the package DetectedObjectWithFeature.object comes from (autoware_perception_msgs
    # today, autoware_auto_perception_msgs in older releases)
    package = sys.modules[type(DetectedObjectWithFeature().object).__module__.rsplit(".", 1)[0]]
    return DetectedObjectsWithFeature, DetectedObjectWithFeature, package.ObjectClassification


def to_tier4_objects(dets: Any, class_names: Any, header: Header, width: int, height: int, types: Any) -> Any:
    """Detections2D (core) -> tier4_perception_msgs/DetectedObjectsWithFeature as Autoware tensorrt_yolox fills
    it: per box an object with existence_probability = score, one classification (Autoware label, score), and the
    feature ROI (integer pixel rectangle, clipped to the image)."""
    from awml_deploy_core.labels import labels_to_autoware

    objects_type, object_type, classification_type = types
    msg = objects_type()
    msg.header = header
    boxes = np.asarray(dets.boxes, np.float64).reshape(-1, 4)
    x0 = np.clip(np.floor(boxes[:, 0]), 0, width).astype(int)
    y0 = np.clip(np.floor(boxes[:, 1]), 0, height).astype(int)
    x1 = np.clip(np.ceil(boxes[:, 2]), 0, width).astype(int)
    y1 = np.clip(np.ceil(boxes[:, 3]), 0, height).astype(int)
    labels = labels_to_autoware(np.asarray(dets.labels), class_names).tolist()
    for i, score in enumerate(np.asarray(dets.scores, np.float64).tolist()):
        obj = object_type()
        obj.object.existence_probability = float(score)
        obj.object.classification = [classification_type(label=int(labels[i]), probability=float(score))]
        roi = obj.feature.roi
        roi.x_offset, roi.y_offset = int(x0[i]), int(y0[i])
        roi.width, roi.height = int(x1[i] - x0[i]), int(y1[i] - y0[i])
        msg.feature_objects.append(obj)
    return msg


# --------------------------------------------------------------------------------------------------
# The node
# --------------------------------------------------------------------------------------------------
class YoloxNode(ModelNode):
    def __init__(self, node_name: str = NODE_NAME, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self.params = p = read_params(self, PARAMS, validate)
        tier4 = _tier4_types() if p.publish_autoware_objects else None
        if p.publish_autoware_objects and tier4 is None:
            self.get_logger().warning("publish_autoware_objects is true but tier4_perception_msgs is not importable "
                                      "here: publishing Detections2D only (source an Autoware workspace for both)")
        self.model = load_model(p)
        self.pipeline = self.model.pipeline
        self._tier4 = tier4

        cameras = p.camera_names or ("",)  # "" = the single camera
        self._det_pubs = [self.create_publisher(Detections2D, _topic("output", c, "detections"), OUTPUT_QOS)
                          for c in cameras]
        self._tier4_pubs = [] if tier4 is None else [
            self.create_publisher(tier4[0], _topic("output", c, "objects"), OUTPUT_QOS) for c in cameras]
        multi = bool(p.camera_names)
        self._sync = StampSync(len(cameras), int(round(p.sync_window_ms * 1e6)), MAX_SYNC_QUEUE) if multi else None
        self._sync_counted = dict.fromkeys(DROP_REASONS, 0)
        self.start_runtime(NodeHealth(self.get_fully_qualified_name(), p.processing_time_budget_ms,
                                      MALFORMED_IMAGE_KINDS, info={"backend": self.model.backend,
                                                                   "precision": self.model.precision,
                                                                   "device": self.model.device,
                                                                   "model": self.pipeline.cfg.name,
                                                                   "cameras": str(len(cameras))},
                                      noun="images", accepted_kinds=ACCEPTED_KINDS, overflow_keys=(),
                                      sync_reasons=DROP_REASONS if multi else ()),
                           "yolox_worker")
        msg_type, leaf = (CompressedImage, "image/compressed") if p.compressed else (Image, "image")
        self._subs = [self.subscribe(msg_type, _topic("input", c, leaf), self._image_callback(i))
                      for i, c in enumerate(cameras)]
        self.get_logger().info(
            f"ready: {self.model.backend} ({self.model.precision}, {self.model.device}) from {self.model.source}; "
            f"input {', '.join(s.topic_name for s in self._subs)}, output "
            f"{', '.join(q.topic_name for q in self._det_pubs)}; pid {os.getpid()}")

    # ------------------------------------------------------------------ executor thread
    def _image_callback(self, index: int) -> Any:
        def on_image(msg: Any) -> None:
            self._on_image(index, msg)
        return on_image

    def _check(self, msg: Any) -> None:
        if self.params.compressed:
            check_compressed_header(msg, self.params.max_image_pixels)
        else:
            check_image_header(msg, self.params.max_image_pixels)

    def _on_image(self, index: int, msg: Any) -> None:
        # Header checks here (O(1)): a malformed image never takes a waiting good one's place in the mailbox.
        received = time.perf_counter()
        try:
            self._check(msg)
        except MalformedImageError as e:
            self.health.on_received(False)
            self.on_malformed(e)
            return
        except Exception:  # noqa: BLE001 - see ModelNode.callback_failed
            self.health.on_received(False)
            self.callback_failed("checking an image")
            return
        if self._sync is None:
            self.health.on_received(self._mailbox.put((msg,), received))
            return
        self.health.on_received(False)
        sets = self._sync.add(index, stamp_to_ns(msg.header.stamp), msg)
        for reason, total in self._sync.dropped.items():
            if total > self._sync_counted[reason]:
                self.health.on_sync_dropped(reason, total - self._sync_counted[reason])
                self._sync_counted[reason] = total
        for synced in sets:
            if self._mailbox.put(synced.items):
                self.health.on_dropped(len(synced.items))

    # ------------------------------------------------------------------ worker thread
    def _to_bgr(self, msg: Any) -> tuple[np.ndarray, Any]:
        if self.params.compressed:
            return compressed_to_bgr(msg, self.params.max_image_pixels)
        return image_to_bgr(msg, self.params.max_image_pixels)

    def process_item(self, item: Any) -> None:
        """One image (tuple of one message) or one synchronized set (one message per camera, camera order)."""
        t0 = time.perf_counter()
        msgs = item if isinstance(item, tuple) else (item,)
        images, cams, infos = [], [], []
        for cam, msg in enumerate(msgs):
            try:
                img, info = self._to_bgr(msg)
            except MalformedImageError as e:  # a compressed image that does not decode
                self.on_malformed(e)
                continue
            images.append(img)
            cams.append(cam)
            infos.append(info)
        if not images:
            return
        out = self.pipeline(images)
        headers = [Header(stamp=msgs[c].header.stamp, frame_id=msgs[c].header.frame_id) for c in cams]
        # Serialized in one numpy pass per image and published as bytes (no per-box message objects).
        payloads = [detections2d_cdr(d.boxes, d.scores, d.labels, h) for d, h in zip(out.batch, headers)]
        now_ns = self.now_ns()
        total_ms = (time.perf_counter() - t0) * 1e3
        for cam, payload in zip(cams, payloads):
            self._det_pubs[cam].publish(payload)
        if self._tier4_pubs:
            names = self.model.cfg.model.class_names
            for cam, d, h, info in zip(cams, out.batch, headers, infos):
                self._tier4_pubs[cam].publish(to_tier4_objects(d, names, h, info.width, info.height, self._tier4))

        latency_ms = max((now_ns - stamp_to_ns(h.stamp)) / 1e6 for h in headers)
        for info in infos:
            kinds = [k for k in (info.encoding,) if k in ACCEPTED_KINDS]
            self.health.count_accepted(*kinds, *(["padded_rows"] if info.row_padding else []))
        self.publish_stats(headers[0], out.timings_ms, total_ms, latency_ms,
                           sum(i.width * i.height for i in infos), sum(len(d) for d in out.batch))
        self.health.on_processed(total_ms, latency_ms, None)


def _topic(direction: str, camera: str, leaf: str) -> str:
    return f"~/{direction}/{camera}/{leaf}" if camera else f"~/{direction}/{leaf}"


def main(args: list[str] | None = None) -> int:
    return spin_main("yolox_node", YoloxNode, args)


if __name__ == "__main__":
    sys.exit(main())
