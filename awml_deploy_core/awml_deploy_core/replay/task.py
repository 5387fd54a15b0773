"""What a replay needs to know about the kind of model it replays, in one place: :class:`ReplayTask`.

The replay machinery (offline loop, scorer, summary, criteria, report, comparison, fleet, real-time scoring and
the ROS process supervisor) is written once against this; a family's declaration names its task
(``ModelFamily.replay``). Three tasks exist: ``detection3d`` (lidar clouds -> DetectedObjects, :mod:`.lidar3d`),
``detection2d`` (camera images -> Detections2D, :mod:`.camera2d`) and ``calibration_status`` (camera images paired
with their cloud and CameraInfo -> CalibrationStatus, :mod:`.calibration`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

DEFAULT_TASK = "detection3d"  # a summary without a "task" key is a 3D one (the format before 2D replay)
_TASKS = {"detection3d": "awml_deploy_core.replay.lidar3d:TASK", "detection2d": "awml_deploy_core.replay.camera2d:TASK",
          "calibration_status": "awml_deploy_core.replay.calibration:TASK"}
DEFAULT_AGREEMENT_KEYS = ("tp", "fp", "fn", "num_detections", "num_gt")


@dataclass(frozen=True)
class Headline:
    """The metric a run is judged and compared by: the mean and its per-class values."""

    label: str  # "mAP@2m", "AP50"
    value: float | None
    per_class_label: str  # "AP@2m", "AP50"
    per_class: Mapping[str, float | None] | None


@dataclass(frozen=True)
class NodeSpec:
    """The ROS node a real-time replay starts for this task (a console script of awml_deploy_nodes)."""

    executable: str
    node_name: str
    input_remap: str  # the node's input topic name, remapped to the played topic
    output_remap: str  # the node's detections topic name, remapped to --objects-topic
    default_output_topic: str
    base_params_file: str | None  # config/<file> of awml_deploy_nodes with the node's defaults, if any
    # (deploy config, backend) -> the node's model-specific parameters (the generic ones: backend, device,
    # bundle_dir, config, checkpoint are the supervisor's)
    params: Callable[[Any, str], dict[str, Any]]
    accepts_onnx_cache_dir: bool = False
    # (bag, input topic) -> {node input name: played topic}: more inputs the node needs, played with the input
    # (calibration: the cloud and the CameraInfo of the camera); None: the input alone
    companion_inputs: Callable[[Any, str], dict[str, str]] | None = None
    # (bag, input topic) -> node parameters that depend on the bag (calibration: the nominal extrinsic)
    bag_params: Callable[[Any, str], dict[str, Any]] | None = None


@dataclass(frozen=True)
class ReplayTask:
    name: str
    input_role: str  # "lidar", "camera": for messages ("no camera topic ...")
    input_unit: str  # "cloud", "image": for progress bars and messages
    input_msgtype: str
    default_input_topic: str
    topic_key: str  # summary.json's key of the input topic ("lidar_topic", "image_topic")
    output_msgtype: str
    # rosbags message -> (pipeline input, JSON-safe fields for the frame line); ValueError when malformed
    decode: Callable[[Any], tuple[Any, dict[str, Any]]]
    # (reader, topic, class names) -> [(header stamp ns, detections)] of a recorded output topic
    read_outputs: Callable[[Any, str, Sequence[str]], list[tuple[int, Any]]]
    # (reader, class names, gt_topic, gt_info, input topic) -> scoring.GroundTruth
    open_ground_truth: Callable[[Any, Sequence[str], str | None, Any, str], Any]
    # (deploy config or None = the defaults, class names) -> the metric configuration of score_frame/aggregate
    metric_config: Callable[[Any, Sequence[str]], Any]
    # (detections, ground-truth item, metric config, class names) -> (frame-line fields, evidence detections,
    # evidence ground truth): tp/fp/fn per class, num_gt, recall, precision and what the aggregate needs
    score_frame: Callable[[Any, Any, Any, Sequence[str]], tuple[dict[str, Any], Any, Any]]
    # (detections per scored frame, ground truth per scored frame, metric config) -> metrics (to_dict()) or None
    aggregate: Callable[[Sequence[Any], Sequence[Any], Any], Any]
    # (metrics or None, excluded without points) -> summary.json's "ground_truth" block
    ground_truth_summary: Callable[[Any, int], dict[str, Any]]
    # metric config -> summary.json's per-frame matching rule keys ({"match_threshold_m": 2.0} | {"match_iou": ...})
    match_fields: Callable[[Any], dict[str, Any]]
    # (metrics or None, class names) -> the headline keys of summary.json, in order
    headline_fields: Callable[[Any, Sequence[str]], dict[str, Any]]
    # summary dict -> Headline
    headline: Callable[[Mapping[str, Any]], Headline]
    # (criteria, class names, deploy config, source) -> None; ConfigError on a criterion this task can't judge
    check_criteria: Callable[[Any, Sequence[str], Any, str], None]
    # (criteria, summary) -> (label, per-class AP, mean, per-class number of ground truth) for the AP gates
    criteria_ap: Callable[[Any, Mapping[str, Any]], tuple[str, Mapping[str, float | None], float | None,
                                                          Mapping[str, int]]]
    # summary -> Markdown lines of the run report's metric section
    report_section: Callable[[Mapping[str, Any]], list[str]]
    # summary -> {class: {label: (recall, precision)}} for the PR plot, and the label to draw
    pr_curves: Callable[[Mapping[str, Any]], tuple[dict[str, dict[str, tuple[list[float], list[float]]]], str]]
    # model config -> the post-processing overrides the node runs with (offline replay for the agreement check
    # applies them, so both runs use the same thresholds)
    node_overrides: Callable[[Any], dict[str, Any]]
    node: NodeSpec
    # evidence items (detections / ground truth) <-> JSON, for the fleet's workers
    dets_to_json: Callable[[Any], Any]
    dets_from_json: Callable[[Any], Any]
    gt_to_json: Callable[[Any], Any]
    gt_from_json: Callable[[Any], Any]
    # (reader, input topic) -> decode: a decoder that needs more of the bag than the message (calibration: the
    # cloud and CameraInfo of the image's instant); None: ``decode``
    bind_decode: Callable[[Any, str], Callable[[Any], tuple[Any, dict[str, Any]]]] | None = None
    # (pipeline, decoded input) -> (detections, per-stage ms); None: ``out = pipeline(x)``, its detections, timings_ms
    run: Callable[[Any, Any], tuple[Any, dict[str, float]]] | None = None
    # the frame-line keys the real-time run must reproduce exactly (the --check-offline agreement gate)
    agreement_keys: tuple[str, ...] = DEFAULT_AGREEMENT_KEYS
    # (criteria, summary) -> gates of criteria.classification; None: this task has no classification criteria
    extra_gates: Callable[[Any, Mapping[str, Any]], list[dict[str, Any]]] | None = None

    def decoder(self, reader: Any, topic: str) -> Callable[[Any], tuple[Any, dict[str, Any]]]:
        return self.bind_decode(reader, topic) if self.bind_decode is not None else self.decode

    def infer(self, pipeline: Any, data: Any) -> tuple[Any, dict[str, float]]:
        if self.run is not None:
            return self.run(pipeline, data)
        out = pipeline(data)
        return out.detections, out.timings_ms


def task_named(name: str | None) -> ReplayTask:
    import importlib

    from ..errors import ConfigError

    target = _TASKS.get(name or DEFAULT_TASK)
    if target is None:
        raise ConfigError(f"replay task {name!r} unknown; known: {', '.join(_TASKS)}")
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def task_of(cfg: Any) -> ReplayTask:
    """The replay task of a deploy config's family (``ModelFamily.replay``)."""
    from ..errors import ConfigError
    from ..families import get_family

    family = get_family(cfg.family)
    if family.replay is None:
        raise ConfigError(f"family {cfg.family!r} declares no replay task (ModelFamily.replay); replay-eval cannot "
                          "score it")
    return task_named(family.replay)


def task_of_summary(summary: Mapping[str, Any]) -> ReplayTask:
    return task_named(summary.get("task"))


def input_topic(task: ReplayTask, topic: str | None) -> str:
    return topic or task.default_input_topic


__all__ = ["DEFAULT_TASK", "Headline", "NodeSpec", "ReplayTask", "input_topic", "task_named", "task_of",
           "task_of_summary"]
