"""Pass/fail criteria of a replay run, from YAML: what a CI job or a release checklist gates on.

Example (every key optional)::

    ap_threshold_m: 2.0          # the matching threshold the AP minimums refer to (one of evaluate.distance_thresholds)
    min_ap:                      # per-class AP minimums
      car: 0.60
      pedestrian: 0.40
    min_map: 0.50                # mAP at ap_threshold_m
    frames:                      # per-frame criterion (2 m matching) and the share of frames that must meet it
      min_recall: 0.5
      min_precision: 0.5
      min_pass_rate_percent: 90
    latency:
      stage: total               # preprocess | encoder | scatter | head | postprocess | total (| queue, real time)
      max_p99_ms: 150
      max_p50_ms: 100
    max_skipped_percent: 10      # frames without ground truth within the tolerance
    max_dropped_percent: 1       # real-time replay: inputs without an output
    min_scored_frames: 1

A 2D (camera) model gates on COCO AP instead (``config/replay_criteria_2d.yaml``): ``ap_metric: ap50`` (default) or
``ap`` (AP@[.5:.95]) names what ``min_ap`` (per class) and ``min_map`` (mean over the classes present) refer to;
``ap_threshold_m`` is refused there, ``ap_metric`` for 3D. The per-frame criterion uses the task's per-frame rule
(3D: 2 m centre distance; 2D: IoU 0.5 at the node's score threshold, ignore regions honoured).

A calibration-status model gates on ``classification`` (``config/replay_criteria_calibration.yaml``):
``min_accuracy``, ``min_recall`` / ``min_precision`` / ``min_f1`` of "miscalibrated" and
``max_false_alarm_percent`` (calibrated pairs flagged); AP criteria are refused there, ``classification`` elsewhere.
Its per-frame criterion counts a pair as passing when its decision is right (ambiguous pairs pass).

A frame passes when its recall and precision meet the minimums (an undefined value - no ground truth, or no
detection - passes its check); dropped frames fail; the pass rate is over scored + dropped frames. A class
with AP minimum but no ground truth in the bag fails its gate (nothing proves it). Unknown keys and class
names are configuration errors (exit 2), reported before any frame is processed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from ..config import StrictModel, load_yaml, validate
from ..errors import ConfigError
from .scoring import DROPPED, SCORED, SKIPPED, frame_passes


class FrameCriteria(StrictModel):
    min_recall: float = Field(0.0, ge=0.0, le=1.0)
    min_precision: float = Field(0.0, ge=0.0, le=1.0)
    min_pass_rate_percent: float = Field(ge=0.0, le=100.0)


class LatencyCriteria(StrictModel):
    stage: str = "total"
    max_p99_ms: float | None = Field(None, gt=0.0)
    max_p50_ms: float | None = Field(None, gt=0.0)


class ClassificationCriteria(StrictModel):
    """A classifier's replay (calibration status; "miscalibrated" is the positive class); ambiguous pairs apart."""

    min_accuracy: float | None = Field(None, ge=0.0, le=1.0)
    min_recall: float | None = Field(None, ge=0.0, le=1.0)
    min_precision: float | None = Field(None, ge=0.0, le=1.0)
    min_f1: float | None = Field(None, ge=0.0, le=1.0)
    max_false_alarm_percent: float | None = Field(None, ge=0.0, le=100.0)


class ReplayCriteria(StrictModel):
    ap_threshold_m: float = Field(2.0, gt=0.0)
    ap_metric: str | None = None  # 2D only: "ap50" (default) | "ap"
    min_ap: dict[str, float] = Field(default_factory=dict)
    min_map: float | None = Field(None, ge=0.0, le=1.0)
    frames: FrameCriteria | None = None
    latency: LatencyCriteria | None = None
    max_skipped_percent: float | None = Field(None, ge=0.0, le=100.0)
    max_dropped_percent: float | None = Field(None, ge=0.0, le=100.0)
    min_scored_frames: int = Field(1, ge=0)
    classification: ClassificationCriteria | None = None  # calibration status only

    @field_validator("min_ap")
    @classmethod
    def _in_unit_range(cls, v: dict[str, float]) -> dict[str, float]:
        bad = {k: x for k, x in v.items() if not 0.0 <= x <= 1.0}
        if bad:
            raise ValueError(f"AP minimums must be in [0, 1], got {bad}")
        return v


def load_criteria(path: str | Path) -> ReplayCriteria:
    return validate(ReplayCriteria, load_yaml(path), source=str(path))


def check_criteria(c: ReplayCriteria, cfg: Any, source: str = "criteria") -> None:
    """Configuration errors that depend on the model (``cfg``: the deploy config): unknown classes, a criterion
    its replay task can't judge (3D: a threshold that is not evaluated; 2D: an unknown ap_metric)."""
    from .task import task_of

    class_names = cfg.model.class_names
    unknown = sorted(set(c.min_ap) - set(class_names))
    if unknown:
        raise ConfigError(f"{source}: min_ap: unknown classes {unknown}; the model's classes are {list(class_names)}")
    task = task_of(cfg)
    if c.classification is not None and task.extra_gates is None:
        raise ConfigError(f"{source}: classification: criteria of a classifier's replay (calibration status); this "
                          f"config's replay task is {task.name}")
    task.check_criteria(c, class_names, cfg, source)


def _gate(name: str, passed: bool, detail: str) -> dict[str, Any]:
    return {"name": name, "passed": bool(passed), "detail": detail}


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4f}"


def pass_rate(frames: Sequence[dict[str, Any]], fc: FrameCriteria) -> tuple[int, int]:
    """(passing, counted) frames for a per-frame criterion: scored and dropped frames are counted."""
    counted = [f for f in frames if f["status"] in (SCORED, DROPPED)]
    return sum(frame_passes(f, fc.min_recall, fc.min_precision) for f in counted), len(counted)


def apply_criteria(c: ReplayCriteria, summary: dict[str, Any],
                   frames: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Gates ({name, passed, detail}) of a run, from its summary (``summary.json``) and frame lines."""
    gates = []
    counts = summary["counts"]
    total = max(counts["frames"], 1)
    gates.append(_gate(f"scored frames >= {c.min_scored_frames}", counts[SCORED] >= c.min_scored_frames,
                       f"{counts[SCORED]} of {counts['frames']} frames scored"))
    from .task import task_of_summary

    task = task_of_summary(summary)
    label, per_class, mean, num_gt = task.criteria_ap(c, summary)
    for cls, minimum in c.min_ap.items():
        ap = per_class.get(cls)
        detail = f"AP {_fmt(ap)}" + ("" if num_gt.get(cls, 0) else " (no ground truth of this class in the bag)")
        gates.append(_gate(f"AP {cls} {label} >= {minimum:g}", ap is not None and ap >= minimum, detail))
    if c.min_map is not None:
        gates.append(_gate(f"mAP {label} >= {c.min_map:g}", mean is not None and mean >= c.min_map,
                           f"mAP {_fmt(mean)}"))
    if c.classification is not None and task.extra_gates is not None:
        gates += task.extra_gates(c, summary)
    if c.frames is not None:
        ok, n = pass_rate(frames, c.frames)
        rate = 100.0 * ok / n if n else 0.0
        gates.append(_gate(f"frames with recall >= {c.frames.min_recall:g} and precision >= "
                           f"{c.frames.min_precision:g}: >= {c.frames.min_pass_rate_percent:g}%",
                           n > 0 and rate >= c.frames.min_pass_rate_percent, f"{ok}/{n} frames pass ({rate:.1f}%)"))
    if c.latency is not None:
        stats = (summary.get("latency_ms") or {}).get(c.latency.stage)
        for q, budget in (("p99", c.latency.max_p99_ms), ("p50", c.latency.max_p50_ms)):
            if budget is None:
                continue
            v = stats.get(q) if stats else None
            gates.append(_gate(f"latency {c.latency.stage} {q} <= {budget:g} ms", v is not None and v <= budget,
                               f"{q} {v:.1f} ms" if v is not None else f"no latency recorded for stage "
                               f"{c.latency.stage!r}"))
    for what, limit in ((SKIPPED, c.max_skipped_percent), (DROPPED, c.max_dropped_percent)):
        if limit is not None:
            pct = 100.0 * counts[what] / total
            gates.append(_gate(f"{what} frames <= {limit:g}%", pct <= limit,
                               f"{counts[what]}/{counts['frames']} frames {what} ({pct:.1f}%)"))
    return gates


__all__ = ["ClassificationCriteria", "FrameCriteria", "LatencyCriteria", "ReplayCriteria", "apply_criteria", "check_criteria", "load_criteria",
           "pass_rate"]
