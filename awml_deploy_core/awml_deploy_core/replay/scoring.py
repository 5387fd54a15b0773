"""Scoring a replay: detections per input frame -> ground truth by timestamp -> per-frame counts and 3D metrics.

One implementation for every way of producing the detections: the offline replay (pipeline called on each
cloud of the bag) and the real-time replay (a node's recorded outputs) both build :class:`FrameRecord` s and
score them with :class:`FrameScorer` / :func:`score_frames`, so the two are scored exactly alike.

Rules:

* A frame is matched to the ground-truth frame whose stamp is nearest to its own (header) stamp; it is
  **scored** when ``|dt| <= tolerance_ms``. Otherwise it is **skipped**: listed with the reason, never
  counted in any metric (neither as misses nor as false positives). A frame with the same stamp as an earlier
  one is skipped too (``duplicate stamp``), so no ground truth is counted twice.
* ``FrameRecord.detections is None`` means the system gave no output for that input (real-time drop):
  status **dropped**; not part of AP (AP is computed on the outputs that exist), counted in the drop rate,
  and a failed frame for per-frame criteria.
* Stamps that go backwards (a frame older than one already seen) are **out of order**: they are detected,
  flagged on the frame (``"out_of_order": true``) and counted, and still scored, because matching is by
  stamp and does not depend on order. ``FrameScorer(strict_order=True)`` makes them an error instead.
* Per frame: TP / FP / FN per class with the greedy rule of the metrics (:func:`match_frame`) at
  ``MATCH_THRESHOLD_M`` (2 m BEV centre distance); ``recall = TP / (TP + FN)`` and
  ``precision = TP / (TP + FP)`` over all classes, ``null`` when undefined (no ground truth / no detection).
* Over the scored frames: :func:`~awml_deploy_core.metrics.detection3d.evaluate_detection3d` (AP per class
  and threshold, mAP, TP errors, distance bands), with :func:`awml_deploy_core.evaluate.metric_config` of the
  deploy config - the same configuration export's evaluation and training use.
* Ground truth is scored by the rule of ``evaluate.GT_RULE``: boxes (and detections) whose BEV centre lies
  outside the model's point_cloud_range are left out (per frame and in AP alike) and counted; summary.json's
  ``ground_truth`` gives scored / excluded_out_of_range / excluded_no_points.
* Latency percentiles over every frame that produced output (scored and skipped alike).

Ground truth comes from a topic of awml_deploy_msgs/DetectedObjects (no point counts: every box inside the range
counts) or from an AWML info file (boxes with at least one lidar point count, as in ``evaluate``), see
:func:`open_ground_truth`.
Recorded DetectedObjects (``rosbags`` messages, rclpy messages or their dicts) become ``Boxes3D`` with
:func:`detected_objects_to_boxes`; :func:`records_from_bag` turns a bag of recorded outputs into FrameRecords.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..data.detected_objects import detected_objects_to_boxes
from ..data.rosbag_io import DEFAULT_GT_TOPIC, INFO_DIR, BagReader, read_detected_objects, seconds_to_ns
from ..errors import DatasetError
from ..metrics.detection3d import Detection3DConfig
from ..metrics.latency import LatencyStats, summarize_stages
from ..structures import Boxes3D
from .lidar3d import MATCH_THRESHOLD_M
from .lidar3d import TASK as LIDAR3D
from .task import DEFAULT_TASK, ReplayTask

log = logging.getLogger(__name__)

DEFAULT_TOLERANCE_MS = 75.0
SCORED, SKIPPED, DROPPED = "scored", "skipped", "dropped"


@dataclass
class FrameRecord:
    """One input frame and what the system under test gave for it.

    ``detections``: labels index ``class_names``; None = no output for this input (a drop).
    ``latency_ms``: per-stage milliseconds ({"total": ...} at least, when known).
    ``extra``: JSON-safe values copied into the frame's line (e.g. ``log_time_ns``, ``num_points``).
    """

    stamp_ns: int
    detections: Boxes3D | None
    latency_ms: dict[str, float] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------- ground truth
class GroundTruth:
    """Ground-truth frames sorted by stamp, looked up by nearest stamp."""

    def __init__(self, stamps_ns: Sequence[int], boxes: Sequence[Boxes3D], source: str,
                 no_points: Sequence[int] | None = None) -> None:
        """``no_points``: per frame, the boxes already left out for holding no lidar point (counted in reports)."""
        if len(stamps_ns) != len(boxes) or (no_points is not None and len(no_points) != len(boxes)):
            raise ValueError("GroundTruth: one Boxes3D (and one no_points count) per stamp")
        order = np.argsort(np.asarray(stamps_ns, np.int64), kind="stable")
        self.stamps = np.asarray(stamps_ns, np.int64)[order]
        self.boxes = [boxes[i] for i in order]
        self.no_points = [int(no_points[i]) if no_points is not None else 0 for i in order]
        self.source = source
        dup = np.flatnonzero(np.diff(self.stamps) == 0)
        if len(dup):
            raise DatasetError(f"{source}: {len(dup)} ground-truth frames share a stamp with another "
                               f"(first {int(self.stamps[dup[0]])} ns); one ground truth per stamp is needed")

    def __len__(self) -> int:
        return len(self.stamps)

    def nearest(self, stamp_ns: int) -> tuple[int, int] | None:
        """(index, stamp_ns - gt_stamp_ns) of the nearest ground-truth frame (earlier one on a tie)."""
        if not len(self.stamps):
            return None
        j = int(np.searchsorted(self.stamps, stamp_ns))
        cands = [k for k in (j - 1, j) if 0 <= k < len(self.stamps)]
        k = min(cands, key=lambda c: abs(int(stamp_ns) - int(self.stamps[c])))
        return k, int(stamp_ns) - int(self.stamps[k])

    def span(self) -> str:
        if not len(self.stamps):
            return "no frames"
        return f"{len(self.stamps)} frames, stamps {self.stamps[0] / 1e9:.3f}..{self.stamps[-1] / 1e9:.3f} s"

    # --------------------------------------------------------------------------- sources
    @classmethod
    def from_info(cls, path: str | Path, class_names: Sequence[str]) -> "GroundTruth":
        """An AWML info file: boxes with >= 1 lidar point (``bbox_3d_isvalid``), point files not needed."""
        from ..data.info_dataset import InfoDataset

        class _GtOnly(InfoDataset):
            def load_points(self, i: int) -> np.ndarray:  # ground truth only: the point files may be absent
                return np.zeros((0, 5), np.float32)

        ds = _GtOnly(path, class_names=class_names)
        return cls.from_samples([ds[i] for i in range(len(ds))], f"info file {path}")

    @classmethod
    def from_samples(cls, samples: Sequence[Any], source: str) -> "GroundTruth":
        """Info samples (``evaluate``'s Sample): their GT with points, stamped by the sample's timestamp."""
        from ..evaluate import sample_gt

        picked = [sample_gt(s) for s in samples]
        return cls([seconds_to_ns(s.timestamp) for s in samples], [g for g, _ in picked], source,
                   [n for _, n in picked])

    @classmethod
    def from_topic(cls, reader: BagReader, topic: str, class_names: Sequence[str]) -> "GroundTruth":
        frames = read_detected_objects(reader, topic, class_names)
        return cls([s for s, _ in frames], [b for _, b in frames], f"bag {reader.path}: topic {topic!r}")


def open_ground_truth(reader: BagReader, class_names: Sequence[str], gt_topic: str | None = None,
                      gt_info: str | Path | None = None) -> GroundTruth:
    """The ground truth of a bag: ``gt_info`` if given, else ``gt_topic`` if given, else the default topic
    (``/awml/ground_truth/objects``) when the bag has it, else ``<bag>/awml_info/infos.pkl`` when it exists."""
    if gt_info is not None and gt_topic is not None:
        raise DatasetError("give ground truth either as a topic (--gt-topic) or as an info file (--gt-info), not both")
    if gt_info is not None:
        gt = GroundTruth.from_info(gt_info, class_names)
    elif gt_topic is not None:
        gt = GroundTruth.from_topic(reader, gt_topic, class_names)
    elif DEFAULT_GT_TOPIC in reader.topics:
        gt = GroundTruth.from_topic(reader, DEFAULT_GT_TOPIC, class_names)
    elif reader.path.is_dir() and (reader.path / INFO_DIR / "infos.pkl").is_file():
        gt = GroundTruth.from_info(reader.path / INFO_DIR / "infos.pkl", class_names)
    else:
        raise DatasetError(f"bag {reader.path}: no ground truth: no topic {DEFAULT_GT_TOPIC!r} in the bag and no "
                           f"--gt-topic / --gt-info given ({reader.describe_topics()})")
    if not len(gt):
        raise DatasetError(f"{gt.source}: holds no ground-truth frames")
    return gt


# --------------------------------------------------------------------------------------------- scoring
def _ratio(num: int, den: int) -> float | None:
    return None if den == 0 else num / den


@dataclass
class ReplayScores:
    class_names: tuple[str, ...]
    tolerance_ms: float
    gt_source: str
    frames: list[dict[str, Any]]
    metrics: Any  # the task's aggregate (Detection3DResult, Detection2DMetrics) or None
    latency: dict[str, LatencyStats]
    out_of_order: list[int]
    gt_excluded_no_points: int = 0  # over the scored frames
    task: ReplayTask = LIDAR3D
    metric_cfg: Any = None

    def ground_truth(self) -> dict[str, Any]:
        """GT scored and left out (and why) over the scored frames; see ``evaluate.GT_RULE``."""
        return self.task.ground_truth_summary(self.metrics, self.gt_excluded_no_points)

    def counts(self) -> dict[str, int]:
        c = {"frames": len(self.frames), SCORED: 0, SKIPPED: 0, DROPPED: 0}
        for f in self.frames:
            c[f["status"]] += 1
        c["out_of_order"] = len(self.out_of_order)
        return c

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe summary (no NaN): counts, skipped frames, totals, the task's metrics, latency. A 2D run
        starts with ``"task": "detection2d"``; a 3D one has no ``task`` key (the format before 2D replay)."""
        totals = {k: {c: 0 for c in self.class_names} for k in ("tp", "fp", "fn")}
        for f in self.frames:
            if f["status"] == SCORED:
                for k in totals:
                    for c in self.class_names:
                        totals[k][c] += f[k][c]
        m = self.metrics
        head = {} if self.task.name == DEFAULT_TASK else {"task": self.task.name}
        return {
            **head,
            "class_names": list(self.class_names),
            "tolerance_ms": self.tolerance_ms,
            **self.task.match_fields(self.metric_cfg),
            "gt_source": self.gt_source,
            "ground_truth": self.ground_truth(),
            "counts": self.counts(),
            "drop_rate": _ratio(self.counts()[DROPPED], len(self.frames)),
            "skipped_frames": [{"index": f["index"], "stamp_ns": f["stamp_ns"], "reason": f["reason"]}
                               for f in self.frames if f["status"] == SKIPPED],
            "out_of_order_frames": self.out_of_order,
            "frame_totals": totals,
            **self.task.headline_fields(m, self.class_names),
            "metrics": m.to_dict() if m is not None else None,
            "latency_ms": {k: v.to_dict() for k, v in self.latency.items()},
        }


class FrameScorer:
    """Scores frames one at a time (:meth:`add` returns the frame's JSON line); :meth:`result` aggregates.
    ``task``: the replay task (3D by default); ``metric_cfg`` None: the task's default configuration."""

    def __init__(self, gt: GroundTruth, class_names: Sequence[str], tolerance_ms: float = DEFAULT_TOLERANCE_MS,
                 metric_cfg: Any = None, strict_order: bool = False, task: ReplayTask | None = None) -> None:
        if not tolerance_ms >= 0:
            raise ValueError(f"tolerance_ms must be >= 0, got {tolerance_ms}")
        self.gt = gt
        self.task = task or LIDAR3D
        self.class_names = tuple(class_names)
        self.tolerance_ms = float(tolerance_ms)
        self._tol_ns = int(round(tolerance_ms * 1e6))
        self.metric_cfg = metric_cfg if metric_cfg is not None else self.task.metric_config(None, self.class_names)
        self._no_points = 0
        self.strict_order = strict_order
        self.frames: list[dict[str, Any]] = []
        self._dets: list[Any] = []
        self._gts: list[Any] = []
        self._latency: list[dict[str, float]] = []
        self._seen: set[int] = set()
        self._latest: int | None = None
        self.out_of_order: list[int] = []

    def add(self, rec: FrameRecord) -> dict[str, Any]:
        index = len(self.frames)
        stamp = int(rec.stamp_ns)
        line: dict[str, Any] = {"index": index, "stamp_ns": stamp, "status": SCORED}
        if self._latest is not None and stamp < self._latest:
            if self.strict_order:
                raise DatasetError(f"frame {index}: stamp {stamp} ns is {(self._latest - stamp) / 1e6:.1f} ms older "
                                   "than an earlier frame's (stamps out of order)")
            line["out_of_order"] = True
            self.out_of_order.append(index)
        self._latest = stamp if self._latest is None else max(self._latest, stamp)
        near = self.gt.nearest(stamp)
        if near is not None:
            line["gt_stamp_ns"] = int(self.gt.stamps[near[0]])
            line["gt_dt_ms"] = near[1] / 1e6
        if rec.detections is None:
            line["status"] = DROPPED
        elif stamp in self._seen:
            line.update(status=SKIPPED, reason="duplicate stamp (an earlier frame has the same stamp)")
        elif near is None or abs(near[1]) > self._tol_ns:
            line.update(status=SKIPPED, reason=f"no ground truth within {self.tolerance_ms:g} ms"
                        + (f" (nearest {abs(near[1]) / 1e6:.1f} ms away)" if near is not None else ""))
        self._seen.add(stamp)
        if rec.detections is not None:
            line["num_detections"] = len(rec.detections)
        if line["status"] == SCORED:
            fields, dets, gt = self.task.score_frame(rec.detections, self.gt.boxes[near[0]],  # type: ignore[index]
                                                     self.metric_cfg, self.class_names)
            line.update(fields)
            self._dets.append(dets)
            self._gts.append(gt)
            self._no_points += self.gt.no_points[near[0]]  # type: ignore[index]
        if rec.latency_ms is not None:
            line["latency_ms"] = {k: float(v) for k, v in rec.latency_ms.items()}
            if rec.detections is not None:
                self._latency.append(line["latency_ms"])
        line.update(rec.extra)
        self.frames.append(line)
        return line

    def evidence(self) -> ScoredEvidence:
        """What the aggregate is computed from, in frame order (the fleet replay ships it from its workers)."""
        return ScoredEvidence(list(self._dets), list(self._gts), list(self._latency), self._no_points)

    def result(self) -> ReplayScores:
        return scores_from_evidence(self.class_names, self.tolerance_ms, self.gt.source, self.frames, self.evidence(),
                                    self.out_of_order, self.metric_cfg, self.task)


@dataclass
class ScoredEvidence:
    """The raw inputs of a replay's aggregate, per scored frame in order: the detections and the ground truth
    they were scored against (all of it: the metric applies its own range rule), plus the latency of every frame
    with output and the GT left out for holding no point. Concatenating the evidence of several runs and
    aggregating once gives exactly the metrics of all their frames together (AP is not a mean of per-run APs)."""

    detections: list[Any]
    ground_truth: list[Any]
    latency: list[dict[str, float]]
    no_points: int = 0

    @staticmethod
    def concatenate(parts: Sequence["ScoredEvidence"]) -> "ScoredEvidence":
        return ScoredEvidence([d for p in parts for d in p.detections], [g for p in parts for g in p.ground_truth],
                              [x for p in parts for x in p.latency], sum(p.no_points for p in parts))


def scores_from_evidence(class_names: Sequence[str], tolerance_ms: float, gt_source: str,
                         frames: Sequence[dict[str, Any]], evidence: ScoredEvidence, out_of_order: Sequence[int],
                         metric_cfg: Any, task: ReplayTask | None = None) -> ReplayScores:
    """The one aggregation of scored frames: the task's metrics over all of them at once, latency percentiles."""
    task = task or LIDAR3D
    metrics = task.aggregate(evidence.detections, evidence.ground_truth, metric_cfg) if evidence.detections else None
    return ReplayScores(tuple(class_names), float(tolerance_ms), gt_source, list(frames), metrics,
                        summarize_stages(evidence.latency), list(out_of_order), evidence.no_points, task, metric_cfg)


def score_frames(frames: Iterable[FrameRecord], gt_source: GroundTruth | str | Path, class_names: Sequence[str],
                 tolerance_ms: float = DEFAULT_TOLERANCE_MS, metric_cfg: Detection3DConfig | None = None,
                 strict_order: bool = False, task: ReplayTask | None = None) -> ReplayScores:
    """Score recorded frames (in the order they were produced) against ground truth; see the module doc.

    ``gt_source``: a :class:`GroundTruth` or the path of an AWML info file.
    """
    gt = gt_source if isinstance(gt_source, GroundTruth) else GroundTruth.from_info(gt_source, class_names)
    scorer = FrameScorer(gt, class_names, tolerance_ms, metric_cfg, strict_order, task)
    for rec in frames:
        scorer.add(rec)
    return scorer.result()


def records_from_bag(reader: BagReader, detections_topic: str, class_names: Sequence[str],
                     input_topic: str | None = None, stats_topic: str | None = None,
                     task: ReplayTask | None = None) -> list[FrameRecord]:
    """FrameRecords from a bag of recorded outputs (the real-time path): the task's detections (DetectedObjects,
    Detections2D) on ``detections_topic``, matched to inputs by header stamp (a node stamps its output with its input's stamp).

    With ``input_topic`` (the clouds that were played): one record per input, in input order; an input without
    an output is a drop (``detections=None``). Without it: one record per output. ``stats_topic``
    (awml_deploy_msgs/InferenceStats) adds per-frame latency: preprocess, inference, postprocess, total, queue
    (received -> processing started, in the node) and pipeline (``pipeline_latency_ms``: publish time minus input
    stamp), by stamp.
    """
    from ..data.msg_definitions import INFERENCE_STATS
    from ..data.rosbag_io import stamp_to_ns

    task = task or LIDAR3D
    outputs: dict[int, Any] = {}
    order: list[int] = []
    for stamp, boxes in task.read_outputs(reader, detections_topic, class_names):
        if stamp not in outputs:  # a repeated output for the same input: the first one counts
            outputs[stamp] = boxes
            order.append(stamp)
    latency: dict[int, dict[str, float]] = {}
    if stats_topic is not None:
        msgtype = reader.require(stats_topic, (INFERENCE_STATS,), "inference-stats")
        for i, (_, raw) in enumerate(reader.messages(stats_topic)):
            m = reader.deserialize(raw, msgtype, stats_topic, i)
            latency.setdefault(stamp_to_ns(m.header.stamp), {
                "preprocess": m.preprocess_ms, "inference": m.inference_ms, "postprocess": m.postprocess_ms,
                "total": m.total_ms, "queue": m.queue_ms, "pipeline": m.pipeline_latency_ms})
    if input_topic is not None:
        msgtype = reader.require(input_topic, (task.input_msgtype,), "input")
        order = []
        for i, (_, raw) in enumerate(reader.messages(input_topic)):
            order.append(stamp_to_ns(reader.deserialize(raw, msgtype, input_topic, i).header.stamp))
    return [FrameRecord(s, outputs.get(s), latency.get(s)) for s in order]


def frame_passes(line: dict[str, Any], min_recall: float, min_precision: float) -> bool:
    """The per-frame criterion: a scored frame passes when recall >= min_recall and precision >= min_precision
    (an undefined value - no ground truth, or no detection - passes its check); a dropped frame fails."""
    if line["status"] == DROPPED:
        return False
    r, p = line.get("recall"), line.get("precision")
    return (r is None or r >= min_recall) and (p is None or p >= min_precision)


__all__ = [
    "DEFAULT_TOLERANCE_MS", "DROPPED", "FrameRecord", "FrameScorer", "GroundTruth", "MATCH_THRESHOLD_M",
    "ReplayScores", "SCORED", "SKIPPED", "ScoredEvidence", "detected_objects_to_boxes", "frame_passes",
    "open_ground_truth", "records_from_bag", "score_frames", "scores_from_evidence",
]
