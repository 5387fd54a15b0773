"""YOLOX evaluation and verification: latency per stage + COCO metrics over the camera frames, and PyTorch vs
candidate parity on the graph output and on the detections after NMS."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm import tqdm

from ..metrics.detection2d import Detection2DMetrics, GroundTruth2D, evaluate_coco
from ..metrics.latency import LatencyStats, summarize_stages
from ..verify import DetectionDiff, SampleRecord, ScenarioResult, compare_arrays, compare_outputs

NUM_EXAMPLES = 3  # images kept for the report's drawings


def ground_truth(sample: Any) -> GroundTruth2D:
    h, w = sample.image.shape[:2]
    return GroundTruth2D(np.asarray(sample.boxes, np.float32).reshape(-1, 4), np.asarray(sample.labels, np.int64),
                         np.asarray(sample.ignore, bool), int(h), int(w))


@dataclass
class Evaluation2D:
    backend: str
    detections: list[Any]
    timings: list[dict[str, float]]
    metrics: Detection2DMetrics
    latency: dict[str, LatencyStats]
    class_names: list[str] = field(default_factory=list)
    # (image, ground truth, detections) of the first frames, for the report's drawings (not serialised)
    examples: list[tuple[np.ndarray, GroundTruth2D, Any]] = field(default_factory=list)

    def headline(self) -> str:
        m = self.metrics.stats
        return (f"{self.backend}: AP {m['map']:.4f} AP50 {m['ap50']:.4f} AP75 {m['ap75']:.4f} "
                f"p50 {self.latency['total'].p50:.1f} ms")

    def to_dict(self) -> dict[str, Any]:
        return {"backend": self.backend, "metrics": self.metrics.to_dict(),
                "latency_ms": {k: v.to_dict() for k, v in self.latency.items()},
                "detections_per_frame": [len(d) for d in self.detections]}


def evaluate_backend(name: str, pipeline: Any, samples: Sequence[Any], warmup: int, class_names: Sequence[str],
                     progress: bool = True) -> Evaluation2D:
    """Every frame through the pipeline (after ``warmup`` untimed runs), scored by pycocotools."""
    for i in range(min(warmup, len(samples))):
        pipeline(samples[i].image)
    dets, timings = [], []
    for s in tqdm(samples, desc=f"evaluate {name}", disable=not progress, leave=False):
        out = pipeline(s.image)
        dets.append(out.detections)
        timings.append(out.timings_ms)
    gts = [ground_truth(s) for s in samples]
    metrics = evaluate_coco(gts, dets, class_names)
    examples = [(s.image, g, d) for s, g, d in list(zip(samples, gts, dets))[:NUM_EXAMPLES]]
    return Evaluation2D(name, dets, timings, metrics, summarize_stages(timings), list(class_names), examples)


def _ordered(d: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    order = np.lexsort((d.labels, -np.round(d.scores, 4)))
    return d.boxes[order], d.scores[order], d.labels[order]


def compare_detections_2d(ref: Any, cand: Any, atol: float, rtol: float) -> tuple[list[Any], DetectionDiff]:
    """Detections after NMS as outputs (boxes, scores, labels; a count mismatch fails on shape) plus a summary."""
    rb, rs, rl = _ordered(ref)
    cb, cs, cl = _ordered(cand)
    stats = [compare_arrays("detections.boxes", rb, cb, max(atol, 1e-3), rtol),
             compare_arrays("detections.scores", rs, cs, atol, rtol),
             compare_arrays("detections.labels", rl, cl, 0.0, 0.0)]
    diff = DetectionDiff(len(ref), len(cand), 0)
    if len(ref) == len(cand) and len(ref):
        same = rl == cl
        diff.matched = int(same.sum())
        diff.max_centre = float(np.abs(rb - cb).max())
        diff.max_score = float(np.abs(rs - cs).max())
    return stats, diff


def verify_backends(reference: tuple[str, Any], candidate: tuple[str, Any], samples: Sequence[Any], tol: Any,
                    precision: str, progress: bool = True) -> ScenarioResult:
    """The graph gets the same letterboxed batch on both backends; then each full pipeline's detections (boxes
    after NMS, tolerance at least 1e-3 px) must match: same count, labels, and boxes/scores within tolerance."""
    (ref_name, ref), (cand_name, cand) = reference, candidate
    result = ScenarioResult(ref_name, cand_name, precision, tol.atol, tol.rtol)
    for i, s in enumerate(tqdm(samples, desc=f"verify {ref_name}->{cand_name}", disable=not progress, leave=False)):
        batch, _ = ref.preprocess([s.image])
        outputs = compare_outputs({"output": ref.infer(batch)}, {"output": cand.infer(batch)}, tol.atol, tol.rtol)
        det_stats, diff = compare_detections_2d(ref(s.image).detections, cand(s.image).detections, tol.atol,
                                                tol.rtol)
        result.samples.append(SampleRecord(i, str(getattr(s, "token", i)), outputs + det_stats, diff))
    return result
