"""pipeline x dataset x backend -> detections, 3D metrics and per-stage latency; and cross-backend verification.

The frames come from one reader (`InfoDataset`) whether they are a user's converted T4 data or the synthetic
default, which is generated once into the work dir through the same info format.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .bundle import sha256_json
from .config import CenterPointModelConfig, DataConfig, EvaluateConfig, Tolerance
from .data.info_dataset import InfoDataset, Sample, generate_dataset
from .errors import DatasetError
from .metrics.detection3d import Detection3DConfig, Detection3DResult, evaluate_detection3d
from .metrics.latency import LatencyStats, summarize_stages
from .pipelines.centerpoint.pipeline import CenterPointPipeline
from .pipelines.centerpoint.voxelize import VoxelStats
from .structures import Boxes3D
from .verify import SampleRecord, ScenarioResult, compare_detections, compare_outputs

log = logging.getLogger(__name__)
SYNTHETIC_DATASET_VERSION = 1


# --------------------------------------------------------------------------------------------- data
def open_dataset(data: DataConfig, cache_dir: Path, class_names: Sequence[str], progress: bool = True) -> InfoDataset:
    """The evaluation frames; synthetic ones are generated once into `cache_dir` (keyed by their settings)."""
    if data.num_frames == 0:
        raise DatasetError("data.num_frames is 0: there are no frames to verify or evaluate; set it to 1 or more")
    if data.source == "info":
        dataset = InfoDataset(data.info_path, class_names=class_names)
    else:
        key = sha256_json({"v": SYNTHETIC_DATASET_VERSION, "seed": data.seed, "n": data.num_frames,
                           "per_seq": data.frames_per_sequence})[:12]
        folder = Path(cache_dir) / f"synthetic_{key}"
        info = folder / "infos.pkl"
        if not info.exists():
            log.info("generating %d synthetic frames (seed %d) into %s", data.num_frames, data.seed, folder)
            tmp = folder.with_name(folder.name + ".partial")
            shutil.rmtree(tmp, ignore_errors=True)
            generate_dataset(tmp, data.num_frames, data.seed, frames_per_sequence=data.frames_per_sequence,
                             progress=progress)
            shutil.rmtree(folder, ignore_errors=True)
            tmp.rename(folder)  # the whole folder appears at once
        dataset = InfoDataset(info, class_names=class_names)
    if len(dataset) == 0:
        raise DatasetError(f"{dataset!r} holds no frames: nothing to verify or evaluate")
    return dataset


def take_samples(dataset: InfoDataset, limit: int, progress: bool = True) -> list[Sample]:
    n = min(limit, len(dataset))
    return [dataset[i] for i in tqdm(range(n), desc="loading frames", disable=not progress, leave=False)]


# --------------------------------------------------------------------------------------------- evaluation
# Which ground truth is scored, in export's evaluation, replay scoring and training's held-out evaluation alike.
GT_RULE = ("a ground-truth box is scored when it holds at least one lidar point (bbox_3d_isvalid / num_lidar_pts, "
           "where the data says; ground truth from a topic has no such field and counts) and its BEV centre lies "
           "inside the model's point_cloud_range: x_min <= x < x_max and y_min <= y < y_max (the voxelizer's test; "
           "mmdet3d's ObjectRangeFilter differs only on the boundary). A box failing both counts as no_points. "
           "Detections are scored by the same range test (filter, then match).")


def metric_config(model: CenterPointModelConfig, ev: EvaluateConfig | None = None) -> Detection3DConfig:
    """The one detection-metrics configuration, from the deploy config's model and ``evaluate`` sections.

    Export's evaluation, replay scoring and training's held-out evaluation all score with it, so the same
    detections and ground truth give the same AP everywhere. The GT range filter travels inside it
    (``eval_range`` = the model's point_cloud_range in x/y, applied to GT and detections alike), so no caller
    can forget it.
    """
    if not isinstance(model, CenterPointModelConfig):
        raise TypeError(f"metric_config needs the model config (cfg.model), got {type(model).__name__}: the "
                        "ground-truth range filter comes from its point_cloud_range")
    ev = ev if ev is not None else EvaluateConfig()
    r = model.point_cloud_range
    return Detection3DConfig(class_names=tuple(model.class_names), distance_thresholds=tuple(ev.distance_thresholds),
                             precision_envelope=ev.precision_envelope, eval_range=(r[0], r[1], r[3], r[4]))


def with_lidar_points(gt: Boxes3D, has_points: np.ndarray | None) -> tuple[Boxes3D, int]:
    """Drop GT boxes without a lidar point (nothing to detect), as AWML and nuScenes do; ``has_points``: one bool
    per box, or None when the data does not say (all kept). Returns the kept boxes and how many were dropped."""
    if has_points is None or len(has_points) != len(gt):
        return gt, 0
    keep = np.asarray(has_points, bool)
    return gt.select(keep), int((~keep).sum())


def sample_gt(sample: Sample) -> tuple[Boxes3D, int]:
    """A sample's GT with points (``bbox_3d_isvalid``) and the number without; the range filter is the metric's."""
    valid = sample.valid if len(sample.valid) == len(sample.gt) else None
    return with_lidar_points(sample.gt, valid)


def scored_gt(sample: Sample) -> Boxes3D:
    """A sample's GT boxes with at least one lidar point (see :func:`sample_gt`)."""
    return sample_gt(sample)[0]


def ground_truth_summary(metrics: Detection3DResult, excluded_no_points: int) -> dict:
    """What was scored and what was left out, and why (lands in report.json / summary.json)."""
    return {"scored": int(sum(metrics.num_gt.values())),
            "excluded_out_of_range": int(sum(metrics.num_gt_out_of_range.values())),
            "excluded_no_points": int(excluded_no_points), "rule": GT_RULE}


def score_detections(detections: Sequence[Boxes3D], samples: Sequence[Sample], model: CenterPointModelConfig,
                     ev: EvaluateConfig) -> tuple[Detection3DResult, dict]:
    """Export's metric path: detections per sample against the samples' GT -> metrics and the GT summary."""
    gts, no_points = [], 0
    for s in samples:
        g, dropped = sample_gt(s)
        gts.append(g)
        no_points += dropped
    metrics = evaluate_detection3d(detections, gts, metric_config(model, ev))
    return metrics, ground_truth_summary(metrics, no_points)


@dataclass
class VoxelCounts:
    """What voxelization left out over an evaluation: pillars beyond max_voxels (objects may be missed) and
    points beyond max_points_per_voxel in a kept pillar (normal for dense clouds), counted apart."""

    frames: int = 0
    frames_with_pillars_dropped: int = 0
    pillars_dropped: int = 0
    points_in_dropped_pillars: int = 0
    frames_with_points_truncated: int = 0
    pillars_truncated: int = 0
    points_truncated: int = 0

    def add(self, stats: VoxelStats) -> None:
        self.frames += 1
        self.frames_with_pillars_dropped += int(stats.pillars_dropped > 0)
        self.pillars_dropped += stats.pillars_dropped
        self.points_in_dropped_pillars += stats.points_in_dropped_pillars
        self.frames_with_points_truncated += int(stats.points_truncated > 0)
        self.pillars_truncated += stats.pillars_truncated
        self.points_truncated += stats.points_truncated

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass
class BackendEvaluation:
    backend: str
    detections: list[Boxes3D]
    timings: list[dict[str, float]]
    metrics: Detection3DResult
    latency: dict[str, LatencyStats]
    voxels: VoxelCounts = field(default_factory=VoxelCounts)
    ground_truth: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"backend": self.backend, "metrics": self.metrics.to_dict(), "ground_truth": self.ground_truth,
                "latency_ms": {k: v.to_dict() for k, v in self.latency.items()},
                "voxelization": self.voxels.to_dict(),
                "detections_per_frame": [len(d) for d in self.detections], **self.extra}


def evaluate_backend(name: str, pipeline: CenterPointPipeline, samples: Sequence[Sample], ev: EvaluateConfig,
                     progress: bool = True) -> BackendEvaluation:
    """Run every frame through the pipeline (after `ev.warmup` untimed runs) and score it."""
    for i in range(min(ev.warmup, len(samples)) if samples else 0):
        pipeline(samples[i].points)
    detections, timings, voxels = [], [], VoxelCounts()
    for s in tqdm(samples, desc=f"evaluate {name}", disable=not progress, leave=False):
        out = pipeline(s.points)
        detections.append(out.detections)
        timings.append(out.timings_ms)
        voxels.add(out.stats)
    metrics, gt_summary = score_detections(detections, samples, pipeline.cfg, ev)
    return BackendEvaluation(name, detections, timings, metrics, summarize_stages(timings), voxels, gt_summary)


# --------------------------------------------------------------------------------------------- verification
def verify_backends(reference: tuple[str, CenterPointPipeline], candidate: tuple[str, CenterPointPipeline],
                    samples: Sequence[Sample], tol: Tolerance, precision: str, progress: bool = True) -> ScenarioResult:
    """Each graph gets the same inputs on both backends; the full pipelines' detections are compared as well."""
    (ref_name, ref), (cand_name, cand) = reference, candidate
    result = ScenarioResult(ref_name, cand_name, precision, tol.atol, tol.rtol)
    for i, s in enumerate(tqdm(samples, desc=f"verify {ref_name}->{cand_name}", disable=not progress, leave=False)):
        pre = ref.preprocess(s.points)
        outputs = []
        if pre.input_features.shape[0]:
            ref_pillars, cand_pillars = ref.encode(pre.input_features), cand.encode(pre.input_features)
            outputs += compare_outputs({"pillar_features": ref_pillars}, {"pillar_features": cand_pillars},
                                       tol.atol, tol.rtol, tol.max_outlier_fraction)
            spatial = ref.scatter(ref_pillars, pre.coords)
            outputs += compare_outputs(ref.head(spatial), cand.head(spatial), tol.atol, tol.rtol,
                                       tol.max_outlier_fraction)
        diff = compare_detections(ref(s.points).detections, cand(s.points).detections)
        result.samples.append(SampleRecord(i, s.token, outputs, diff))
    return result


def map_at(result: Detection3DResult, threshold: float = 2.0) -> float:
    value = result.map_by_threshold.get(threshold)
    return float("nan") if value is None else float(value)

