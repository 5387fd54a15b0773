"""Calibration-status evaluation and verification: every pair through the pipeline, scikit-learn metrics on the
labelled pairs (the ambiguous band apart), accuracy against the rotation and translation error, latency per stage;
PyTorch vs candidate parity on the logits and on the decision."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from ..bundle import sha256_json
from ..errors import ConfigError, DatasetError
from ..metrics.classification import BinaryMetrics, binary_metrics
from ..metrics.latency import LatencyStats, summarize_stages
from ..verify import DetectionDiff, SampleRecord, ScenarioResult, compare_arrays, compare_outputs

log = logging.getLogger(__name__)

# error bins of the accuracy-vs-magnitude curves (edges), degrees and metres
ROTATION_BINS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0)
TRANSLATION_BINS = (0.0, 0.0125, 0.025, 0.0375, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25)
LARGE_ROTATION_DEG, LARGE_TRANSLATION_M = 2.0, 0.10  # the acceptance's "large error" recall


def open_pair_dataset(cfg: Any, cache_dir: Path, progress: bool) -> Any:
    """``data.num_frames`` pairs of ``data.seed`` (held out: training seeds are below 10000), the scenes rendered
    once into the cache folder (keyed by seed and scene count)."""
    from ..data.calibration_pairs import CalibrationPairDataset, generate_pair_scenes

    data, mis = cfg.data, cfg.model.miscalibration
    if data.num_frames == 0:
        raise DatasetError("data.num_frames is 0: there are no pairs to verify or evaluate; set it to 1 or more")
    if data.source != "synthetic":
        raise ConfigError("data.source: the calibration_status family reads synthetic pairs only (source: synthetic)")
    scenes = -(-data.num_frames // mis.pairs_per_scene)
    key = sha256_json({"calibration_pairs": 1, "seed": data.seed, "scenes": scenes})[:12]
    folder = Path(cache_dir) / f"calibration_pairs_{key}"
    if not (folder / "index.json").is_file():
        log.info("rendering %d synthetic scenes (lidar + camera, seed %d) into %s", scenes, data.seed, folder)
        tmp = folder.with_name(folder.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        generate_pair_scenes(tmp, data.seed, scenes, progress=progress)
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)  # the whole folder appears at once
    return CalibrationPairDataset(folder, data.num_frames, mis)


def accuracy_by_bins(values: np.ndarray, correct: np.ndarray, flagged: np.ndarray, labelled: np.ndarray,
                     edges: Sequence[float]) -> list[dict[str, Any]]:
    """Per bin [lo, hi) of ``values`` (the last bin closed): pairs, labelled pairs, accuracy on the labelled ones
    and the share of ALL pairs (ambiguous too) called miscalibrated."""
    rows = []
    for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
        last = i == len(edges) - 2
        m = (values >= lo) & ((values <= hi) if last else (values < hi))
        lab = m & labelled
        rows.append({"lo": float(lo), "hi": float(hi), "pairs": int(m.sum()), "labelled": int(lab.sum()),
                     "accuracy": float(correct[lab].mean()) if lab.any() else None,
                     "flagged": float(flagged[m].mean()) if m.any() else None})
    return rows


@dataclass
class CalibrationEvaluation:
    backend: str
    timings: list[dict[str, float]]
    latency: dict[str, LatencyStats]
    metrics: BinaryMetrics  # labelled pairs (ambiguous band excluded)
    large_error_recall: float  # recall of miscalibrated at >= 2 deg or >= 10 cm
    large_error_pairs: int
    ambiguous: dict[str, Any]
    by_rotation: list[dict[str, Any]]
    by_translation: list[dict[str, Any]]
    records: list[dict[str, Any]] = field(default_factory=list)
    # (rotation deg, translation m) above which a pair is miscalibrated (half of them: calibrated below)
    thresholds: tuple[float, float] = (1.0, 0.05)

    def headline(self) -> str:
        m = self.metrics
        return (f"{self.backend}: accuracy {m.accuracy:.4f} recall(mis) {m.recall:.4f} false alarms "
                f"{m.false_alarm_rate:.4f} AUC {m.roc_auc:.4f} p50 {self.latency['total'].p50:.1f} ms")

    def to_dict(self) -> dict[str, Any]:
        return {"backend": self.backend, "metrics": self.metrics.to_dict(),
                "large_error_recall": self.large_error_recall, "large_error_pairs": self.large_error_pairs,
                "ambiguous": self.ambiguous, "by_rotation": self.by_rotation, "by_translation": self.by_translation,
                "latency_ms": {k: v.to_dict() for k, v in self.latency.items()}, "pairs": self.records}


def score_records(records: list[dict[str, Any]], miscalibration: Any) -> dict[str, Any]:
    """Metrics of per-pair records {rotation_deg, translation_m, label, miscalibrated_score, is_calibrated}."""
    rot = np.array([r["rotation_deg"] for r in records], np.float64)
    trans = np.array([r["translation_m"] for r in records], np.float64)
    label = np.array([r["label"] for r in records])
    flagged = np.array([not r["is_calibrated"] for r in records], bool)
    score = np.array([r["miscalibrated_score"] for r in records], np.float64)
    labelled = label != "ambiguous"
    truth = label == "miscalibrated"
    correct = flagged == truth
    metrics = binary_metrics(truth[labelled], flagged[labelled], score[labelled])
    large = truth & ((rot >= LARGE_ROTATION_DEG) | (trans >= LARGE_TRANSLATION_M))
    amb = ~labelled
    return {"metrics": metrics, "large_error_recall": float(flagged[large].mean()) if large.any() else float("nan"),
            "large_error_pairs": int(large.sum()),
            "ambiguous": {"pairs": int(amb.sum()), "flagged_miscalibrated": int(flagged[amb].sum()),
                          "mean_miscalibrated_score": float(score[amb].mean()) if amb.any() else None},
            "by_rotation": accuracy_by_bins(rot, correct, flagged, labelled, ROTATION_BINS),
            "by_translation": accuracy_by_bins(trans, correct, flagged, labelled, TRANSLATION_BINS)}


def evaluate_backend(name: str, pipeline: Any, samples: Sequence[Any], warmup: int, miscalibration: Any,
                     progress: bool = True) -> CalibrationEvaluation:
    """Every pair through the pipeline (after ``warmup`` untimed runs)."""
    for i in range(min(warmup, len(samples))):
        s = samples[i]
        pipeline(s.image, s.points, s.K, s.T)
    timings, records = [], []
    for s in tqdm(samples, desc=f"evaluate {name}", disable=not progress, leave=False):
        out = pipeline(s.image, s.points, s.K, s.T)
        timings.append(out.timings_ms)
        records.append({"token": s.token, "rotation_deg": s.rotation_deg, "translation_m": s.translation_m,
                        "label": s.label, "miscalibrated_score": out.miscalibrated_score,
                        "is_calibrated": out.is_calibrated, "projected_points": out.projected_points})
    sc = score_records(records, miscalibration)
    thresholds = (miscalibration.rotation_threshold_deg, miscalibration.translation_threshold_m)
    return CalibrationEvaluation(name, timings, summarize_stages(timings), sc["metrics"], sc["large_error_recall"],
                                 sc["large_error_pairs"], sc["ambiguous"], sc["by_rotation"], sc["by_translation"],
                                 records, thresholds)


def verify_backends(reference: tuple[str, Any], candidate: tuple[str, Any], samples: Sequence[Any], tol: Any,
                    precision: str, progress: bool = True) -> ScenarioResult:
    """Both graphs get the same built input; the logits must agree within tolerance, and each full pipeline's
    decision must be the same class (exact) with softmax scores within tolerance."""
    (ref_name, ref), (cand_name, cand) = reference, candidate
    result = ScenarioResult(ref_name, cand_name, precision, tol.atol, tol.rtol)
    for i, s in enumerate(tqdm(samples, desc=f"verify {ref_name}->{cand_name}", disable=not progress, leave=False)):
        batch, _ = ref.preprocess(s.image, s.points, s.K, s.T)
        outputs = compare_outputs({"output": ref.infer(batch)}, {"output": cand.infer(batch)}, tol.atol, tol.rtol,
                                  tol.max_outlier_fraction)
        a, b = ref(s.image, s.points, s.K, s.T), cand(s.image, s.points, s.K, s.T)
        stats = [compare_arrays("decision.is_calibrated", np.array([a.is_calibrated]), np.array([b.is_calibrated]),
                                0.0, 0.0),
                 compare_arrays("decision.scores", np.array([a.miscalibrated_score, a.calibrated_score]),
                                np.array([b.miscalibrated_score, b.calibrated_score]), tol.atol, tol.rtol)]
        same = int(a.is_calibrated == b.is_calibrated)
        diff = DetectionDiff(1, 1, same, max_score=abs(a.miscalibrated_score - b.miscalibrated_score))
        result.samples.append(SampleRecord(i, str(getattr(s, "token", i)), outputs + stats, diff))
    return result
