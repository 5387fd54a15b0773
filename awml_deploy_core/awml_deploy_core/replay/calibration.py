"""The calibration-status replay task: camera images (with the lidar cloud and CameraInfo of the same instant) ->
CalibrationStatus decisions, scored against the drive's calibration labels; see :mod:`.task` for the interface.

The drive: ``awml-deploy make-bag OUT --cameras 1 --miscalibrated-frames A:B [--miscalibration DEG,M]``
(:func:`~awml_deploy_core.data.rosbag_io.write_synthetic_bag`): in frames [A, B) camera0 has physically moved,
while its CameraInfo and the sidecar's ``lidar2cam`` keep the NOMINAL calibration (what the vehicle believes).
Ground truth: the sidecar ``awml_info/camera_infos.json`` of the bag (or ``--gt-info``), per image the rotation and
translation error of the true camera pose against the nominal one; the label follows from the deploy config's
``model.miscalibration`` thresholds (miscalibrated above either, calibrated below half of both, ambiguous between).

Offline, each image of the camera is paired with the cloud and the CameraInfo nearest in stamp (within
``PAIR_SLOP_NS``, the node's default synchronizer slop; the generated drive stamps them equally) and classified
with the nominal extrinsic, as ``calibration_status_node`` does in mode active. Decisions carry the scores
rounded to float32 (what the CalibrationStatus message carries), so an offline frame and the node's are compared
exactly by the agreement gate (:data:`AGREEMENT_KEYS`).

Per pair (``frames.jsonl``): the label, the decision and scores, ``correct`` (None for an ambiguous pair), TP/FP/FN
per class ("miscalibrated" is the positive class; the "calibrated" columns are the mirror), ``recall`` = ``precision``
= 1 when correct, 0 when not (so the per-frame criterion is the share of correct pairs). Over the run: accuracy,
precision / recall / F1 of "miscalibrated", F1 of "calibrated", false-alarm rate (calibrated pairs flagged), and the
confusion counts; ambiguous pairs are counted apart and left out of every metric.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..data.rosbag_camera import (CAMERA_INFO, CAMERA_INFO_FILE, IMAGE, camera_info_topic, camera_name,
                                  camera_of_image_topic, image_to_bgr, image_topic)
from ..data.rosbag_io import DEFAULT_LIDAR_TOPIC, INFO_DIR, POINTCLOUD2, cloud_to_points, stamp_to_ns
from ..errors import ConfigError, DatasetError
from .task import Headline, NodeSpec, ReplayTask

CALIBRATION_STATUS = "awml_deploy_msgs/msg/CalibrationStatus"
DEFAULT_OUTPUT_TOPIC = "/awml/calibration_status/camera0"
PAIR_SLOP_NS = 50_000_000  # calibration_status_node's default sync_slop_s
MIS, CAL, AMB = "miscalibrated", "calibrated", "ambiguous"
GT_RULE_CAL = ("every image is labelled by its camera's true pose against the nominal extrinsic, with the config's "
               "model.miscalibration thresholds; ambiguous pairs (between half and the full threshold) are counted "
               "apart and left out of every metric")
AGREEMENT_KEYS = ("label", "is_calibrated", "calibrated_score", "miscalibrated_score")


@dataclass(frozen=True)
class Decision:
    """One CalibrationStatus: the verdict and the softmax scores as float32 values (the message's fields)."""

    is_calibrated: bool
    calibrated_score: float
    miscalibrated_score: float

    def __len__(self) -> int:  # one decision per pair ("num_detections" of a frame line)
        return 1


@dataclass(frozen=True)
class Truth:
    """The label source of one image: the true pose's error against the nominal extrinsic."""

    rotation_error_deg: float
    translation_error_m: float


@dataclass
class Pair:
    """What the node classifies: image (H, W, 3) BGR, cloud (N, 5), K (3, 3), nominal extrinsic (4, 4)."""

    image: np.ndarray
    points: np.ndarray
    K: np.ndarray
    T: np.ndarray


# --------------------------------------------------------------------------------------------- the bag
def _camera(topic: str) -> str:
    name = camera_of_image_topic(topic)
    if name is None:
        raise DatasetError(f"image topic {topic!r}: a calibration replay needs /sensing/camera/<name>/image_raw (its "
                           "CameraInfo and the sidecar entry are found by the camera's name)")
    return name


def _sidecar(bag: Path, gt_info: Any = None) -> tuple[Path, dict[str, Any]]:
    path = Path(gt_info) if gt_info is not None else Path(bag) / INFO_DIR / CAMERA_INFO_FILE
    try:
        return path, json.loads(path.read_text())
    except FileNotFoundError:
        raise DatasetError(f"bag {bag}: no camera sidecar {path}; write the drive with `awml-deploy make-bag OUT "
                           "--cameras 1 --miscalibrated-frames A:B`") from None
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None


def nominal_extrinsic(bag: str | Path, topic: str) -> np.ndarray:
    """The camera's nominal lidar -> camera-optical transform (4x4) from the bag's sidecar: what the node is told."""
    path, info = _sidecar(Path(bag))
    name = _camera(topic)
    try:
        return np.asarray(info["data_list"][0]["images"][name]["lidar2cam"], np.float64).reshape(4, 4)
    except (KeyError, IndexError, ValueError) as e:
        raise DatasetError(f"{path}: no lidar2cam of camera {name!r} ({type(e).__name__}: {e})") from None


def lidar_topic_of(reader: Any) -> str:
    """The bag's PointCloud2 topic: the default one when there are several."""
    names = sorted(t for t, s in reader.topics.items() if s.msgtype == POINTCLOUD2)
    if DEFAULT_LIDAR_TOPIC in names or not names:
        return DEFAULT_LIDAR_TOPIC
    if len(names) > 1:
        raise DatasetError(f"bag {reader.path}: {len(names)} lidar topics {names} and none is {DEFAULT_LIDAR_TOPIC!r}")
    return names[0]


class _Nearest:
    """Messages of one topic read lazily in bag order, looked up by nearest header stamp within the slop; older
    ones are dropped as the images move on (memory stays a few messages)."""

    def __init__(self, reader: Any, topic: str, msgtype: str, convert: Any) -> None:
        reader.require(topic, (msgtype,), msgtype.rsplit("/", 1)[-1])
        self._it: Iterator[Any] = (convert(reader.deserialize(raw, msgtype, topic, i))
                                   for i, (_, raw) in enumerate(reader.messages(topic)))
        self.topic = topic
        self._buf: list[tuple[int, Any]] = []
        self._done = False

    def get(self, stamp: int) -> Any:
        while not self._done and (not self._buf or self._buf[-1][0] <= stamp + PAIR_SLOP_NS):
            item = next(self._it, None)
            if item is None:
                self._done = True
            else:
                self._buf.append(item)
        near = [(abs(s - stamp), k) for k, (s, _) in enumerate(self._buf) if abs(s - stamp) <= PAIR_SLOP_NS]
        if not near:
            raise ValueError(f"no message on {self.topic} within {PAIR_SLOP_NS / 1e6:g} ms of stamp {stamp}")
        k = min(near)[1]
        value = self._buf[k][1]
        self._buf = self._buf[k:]
        return value


def _bind_decode(reader: Any, topic: str) -> Any:
    """decode(image message) -> (Pair, frame-line fields), with the cloud and CameraInfo nearest in stamp."""
    name = _camera(topic)
    T = nominal_extrinsic(reader.path, topic)
    clouds = _Nearest(reader, lidar_topic_of(reader), POINTCLOUD2,
                      lambda m: (stamp_to_ns(m.header.stamp), cloud_to_points(m)))
    infos = _Nearest(reader, camera_info_topic(name), CAMERA_INFO,
                     lambda m: (stamp_to_ns(m.header.stamp), np.array(m.k, np.float64).reshape(3, 3)))

    def decode(msg: Any) -> tuple[Pair, dict[str, Any]]:
        stamp = stamp_to_ns(msg.header.stamp)
        img = image_to_bgr(msg)
        points, K = clouds.get(stamp), infos.get(stamp)
        return (Pair(img if img.flags.writeable else img.copy(), points, K, T),
                {"width": int(img.shape[1]), "height": int(img.shape[0]), "num_points": len(points)})

    return decode


def _decode_unbound(msg: Any) -> Any:
    raise DatasetError("the calibration replay pairs each image with its cloud and CameraInfo: its decoder is bound "
                       "to the bag (ReplayTask.bind_decode)")


def _run(pipeline: Any, pair: Pair) -> tuple[Decision, dict[str, float]]:
    r = pipeline(pair.image, pair.points, pair.K, pair.T)
    return (Decision(bool(r.is_calibrated), float(np.float32(r.calibrated_score)),
                     float(np.float32(r.miscalibrated_score))), dict(r.timings_ms))


def _read_outputs(reader: Any, topic: str, class_names: Sequence[str]) -> list[tuple[int, Decision]]:
    msgtype = reader.require(topic, (CALIBRATION_STATUS,), "calibration-status")
    out = []
    for i, (_, raw) in enumerate(reader.messages(topic)):
        m = reader.deserialize(raw, msgtype, topic, i)
        out.append((stamp_to_ns(m.header.stamp), Decision(bool(m.is_calibrated), float(m.calibrated_score),
                                                          float(m.miscalibrated_score))))
    return out


def _open_gt(reader: Any, class_names: Sequence[str], gt_topic: str | None, gt_info: Any, input_topic: str) -> Any:
    from .scoring import GroundTruth

    if gt_topic is not None:
        raise DatasetError("a calibration replay's labels come from the camera sidecar (--gt-info), not a topic")
    name = _camera(input_topic)
    path, info = _sidecar(reader.path, gt_info)
    stamps, items = [], []
    try:
        for e in info["data_list"]:
            c = e["images"][name].get("calibration")
            if c is None:
                raise DatasetError(f"{path}: camera {name!r} has no calibration labels; write the drive with "
                                   "`awml-deploy make-bag OUT --cameras 1 --miscalibrated-frames A:B`")
            stamps.append(int(e["timestamp_ns"]))
            items.append(Truth(float(c["rotation_error_deg"]), float(c["translation_error_m"])))
    except (KeyError, TypeError, ValueError) as e:
        raise DatasetError(f"{path}: not a camera sidecar with camera {name!r} ({type(e).__name__}: {e})") from None
    if not stamps:
        raise DatasetError(f"{path}: holds no labelled images")
    return GroundTruth(stamps, items, f"info file {path} ({name})")


# --------------------------------------------------------------------------------------------- scoring
def _metric_config(cfg: Any, class_names: Sequence[str]) -> Any:
    from ..config import MiscalibrationConfig

    return MiscalibrationConfig() if cfg is None else cfg.model.miscalibration


def _ratio(num: int, den: int) -> float | None:
    return None if den == 0 else num / den


def _f1(p: float | None, r: float | None) -> float | None:
    return None if p is None or r is None else (0.0 if p + r == 0 else 2 * p * r / (p + r))


def _score_frame(d: Decision, truth: Truth, mc: Any, class_names: Sequence[str]
                 ) -> tuple[dict[str, Any], Decision, str]:
    from ..data.calibration_pairs import label_of

    label = label_of(truth.rotation_error_deg, truth.translation_error_m, mc)
    flagged = not d.is_calibrated
    mis, cal = label == MIS, label == CAL
    counts = {MIS: (mis and flagged, cal and flagged, mis and not flagged),
              CAL: (cal and not flagged, mis and not flagged, cal and flagged)}
    correct = None if label == AMB else (flagged == mis)
    line: dict[str, Any] = {
        "label": label, "rotation_error_deg": truth.rotation_error_deg, "translation_error_m": truth.translation_error_m,
        "is_calibrated": d.is_calibrated, "calibrated_score": d.calibrated_score,
        "miscalibrated_score": d.miscalibrated_score, "correct": correct, "num_gt": int(label != AMB),
        **{k: {c: int(counts[c][j]) if c in counts else 0 for c in class_names} for j, k in enumerate(("tp", "fp", "fn"))},
        "recall": None if correct is None else float(correct), "precision": None if correct is None else float(correct)}
    return line, d, label


@dataclass
class CalibrationReplayMetrics:
    """Decisions against labels over a run ("miscalibrated" positive); ambiguous pairs apart."""

    counts: dict[str, dict[str, int]]  # label -> {"flagged", "passed"}

    @classmethod
    def of(cls, decisions: Sequence[Decision], labels: Sequence[str]) -> "CalibrationReplayMetrics":
        counts = {lab: {"flagged": 0, "passed": 0} for lab in (MIS, CAL, AMB)}
        for d, lab in zip(decisions, labels):
            counts[lab]["passed" if d.is_calibrated else "flagged"] += 1
        return cls(counts)

    def to_dict(self) -> dict[str, Any]:
        m, c = self.counts[MIS], self.counts[CAL]
        tp, fn, fp, tn = m["flagged"], m["passed"], c["flagged"], c["passed"]
        p, r = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
        p_cal, r_cal = _ratio(tn, tn + fn), _ratio(tn, tn + fp)
        return {"pairs_scored": tp + fn + fp + tn, "pairs_ambiguous": sum(self.counts[AMB].values()),
                "accuracy": _ratio(tp + tn, tp + fn + fp + tn), "precision_miscalibrated": p,
                "recall_miscalibrated": r, "f1_miscalibrated": _f1(p, r), "f1_calibrated": _f1(p_cal, r_cal),
                "false_alarm_rate": _ratio(fp, fp + tn),
                "confusion": {"miscalibrated": {"flagged": tp, "passed": fn},
                              "calibrated": {"flagged": fp, "passed": tn}, "ambiguous": dict(self.counts[AMB])}}


def _aggregate(decisions: Sequence[Decision], labels: Sequence[str], mc: Any) -> CalibrationReplayMetrics | None:
    return CalibrationReplayMetrics.of(decisions, labels) if decisions else None


def _gt_summary(m: Any, no_points: int) -> dict[str, Any]:
    d = m.to_dict() if m is not None else {"pairs_scored": 0, "pairs_ambiguous": 0}
    return {"scored": d["pairs_scored"], "ambiguous": d["pairs_ambiguous"], "rule": GT_RULE_CAL}


HEADLINE_KEYS = ("accuracy", "precision_miscalibrated", "recall_miscalibrated", "f1_miscalibrated", "false_alarm_rate")


def _headline_fields(m: Any, class_names: Sequence[str]) -> dict[str, Any]:
    d = m.to_dict() if m is not None else {}
    return {**{k: d.get(k) for k in HEADLINE_KEYS},
            "f1_per_class": {MIS: d.get("f1_miscalibrated"), CAL: d.get("f1_calibrated")} if d else None}


def _headline(s: Mapping[str, Any]) -> Headline:
    return Headline("accuracy", s.get("accuracy"), "F1", s.get("f1_per_class"))


# --------------------------------------------------------------------------------------------- criteria
def _check_criteria(c: Any, class_names: Sequence[str], cfg: Any, source: str) -> None:
    given = sorted({"ap_threshold_m", "ap_metric", "min_ap", "min_map"} & c.model_fields_set)
    if given:
        raise ConfigError(f"{source}: {', '.join(given)}: AP criteria of a detector; a calibration-status replay "
                          "gates on `classification` (min_accuracy, min_recall, min_precision, min_f1, "
                          "max_false_alarm_percent)")


def _criteria_ap(c: Any, s: Mapping[str, Any]) -> tuple[str, dict[str, float | None], float | None, dict[str, int]]:
    return "", {}, None, {}


def _gate(name: str, value: float | None, limit: float, at_least: bool) -> dict[str, Any]:
    ok = value is not None and (value >= limit if at_least else value <= limit)
    return {"name": name, "passed": bool(ok), "detail": "n/a (no such pair)" if value is None else f"{value:.4f}"}


def _classification_gates(c: Any, s: Mapping[str, Any]) -> list[dict[str, Any]]:
    k = c.classification
    gates = []
    for key, limit, label in (("accuracy", k.min_accuracy, "accuracy"),
                              ("recall_miscalibrated", k.min_recall, "recall of miscalibrated"),
                              ("precision_miscalibrated", k.min_precision, "precision of miscalibrated"),
                              ("f1_miscalibrated", k.min_f1, "F1 of miscalibrated")):
        if limit is not None:
            gates.append(_gate(f"{label} >= {limit:g}", s.get(key), limit, True))
    if k.max_false_alarm_percent is not None:
        far = s.get("false_alarm_rate")
        gates.append(_gate(f"false alarms (calibrated pairs flagged) <= {k.max_false_alarm_percent:g}%",
                           None if far is None else 100.0 * far, k.max_false_alarm_percent, False))
    return gates


# --------------------------------------------------------------------------------------------- report
def _report_section(s: Mapping[str, Any]) -> list[str]:
    from ..report import markdown_table
    from .report import _f

    m = s.get("metrics")
    if not m:
        return []
    cf = m["confusion"]
    return [f"## Calibration status ({m['pairs_scored']} pairs scored, {m['pairs_ambiguous']} ambiguous apart)", "",
            f"accuracy **{_f(m['accuracy'])}** - miscalibrated: precision {_f(m['precision_miscalibrated'])}, recall "
            f"{_f(m['recall_miscalibrated'])}, F1 {_f(m['f1_miscalibrated'])} - false alarms "
            f"{_f(m['false_alarm_rate'])}", "",
            markdown_table(["label", "flagged (miscalibrated)", "passed (calibrated)"],
                           [[lab, v["flagged"], v["passed"]] for lab, v in cf.items()]), "",
            f"Labels: the true camera pose against the nominal extrinsic, thresholds {s.get('rotation_threshold_deg')} "
            f"deg / {s.get('translation_threshold_m')} m (miscalibrated above either, calibrated below half of "
            "both).", ""]


# --------------------------------------------------------------------------------------------- node, fleet
def _node_params(cfg: Any, backend: str) -> dict[str, Any]:
    # mode active: every synchronized pair, as the offline replay does; a generous budget keeps CPU runs quiet
    return {"mode": "active", "processing_time_budget_ms": 10000.0}


def _companions(bag: Path, topic: str) -> dict[str, str]:
    from ..data.rosbag_io import BagReader

    with BagReader(bag) as reader:
        lidar = lidar_topic_of(reader)
    return {"~/input/pointcloud": lidar, "~/input/camera_info": camera_info_topic(_camera(topic))}


def _bag_params(bag: Path, topic: str) -> dict[str, Any]:
    return {"extrinsic": [float(v) for v in nominal_extrinsic(bag, topic).ravel()]}


TASK = ReplayTask(
    name="calibration_status", input_role="camera", input_unit="image", input_msgtype=IMAGE,
    default_input_topic=image_topic(camera_name(0)), topic_key="image_topic", output_msgtype=CALIBRATION_STATUS,
    decode=_decode_unbound, read_outputs=_read_outputs, open_ground_truth=_open_gt, metric_config=_metric_config,
    score_frame=_score_frame, aggregate=_aggregate, ground_truth_summary=_gt_summary,
    match_fields=lambda mc: {"rotation_threshold_deg": mc.rotation_threshold_deg,
                             "translation_threshold_m": mc.translation_threshold_m},
    headline_fields=_headline_fields, headline=_headline, check_criteria=_check_criteria, criteria_ap=_criteria_ap,
    report_section=_report_section, pr_curves=lambda s: ({}, ""), node_overrides=lambda model: {},
    node=NodeSpec("calibration_status_node", "calibration_status", "~/input/image", "~/output/calibration_status",
                  DEFAULT_OUTPUT_TOPIC, "calibration_status_node.param.yaml", _node_params,
                  accepts_onnx_cache_dir=True, companion_inputs=_companions, bag_params=_bag_params),
    dets_to_json=lambda d: [d.is_calibrated, d.calibrated_score, d.miscalibrated_score],
    dets_from_json=lambda v: Decision(bool(v[0]), float(v[1]), float(v[2])),
    gt_to_json=lambda lab: lab, gt_from_json=lambda lab: str(lab),
    bind_decode=_bind_decode, run=_run, agreement_keys=AGREEMENT_KEYS, extra_gates=_classification_gates,
)

__all__ = ["AGREEMENT_KEYS", "CALIBRATION_STATUS", "CalibrationReplayMetrics", "Decision", "Pair", "TASK", "Truth",
           "lidar_topic_of", "nominal_extrinsic"]
