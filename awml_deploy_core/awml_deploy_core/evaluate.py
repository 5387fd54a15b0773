"""pipeline x dataset x backend -> detections, 3D metrics and per-stage latency; and cross-backend verification.

The frames come from one reader (`InfoDataset`) whether they are a user's converted T4 data or the synthetic
default, which is generated once into the work dir through the same info format.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .bundle import sha256_json
from .config import DataConfig, EvaluateConfig, Tolerance
from .data.info_dataset import InfoDataset, Sample, generate_dataset
from .errors import DatasetError
from .metrics.detection3d import Detection3DConfig, Detection3DResult, evaluate_detection3d
from .metrics.latency import LatencyStats, summarize_stages
from .pipelines.centerpoint.pipeline import CenterPointPipeline
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
def scored_gt(sample: Sample) -> Boxes3D:
    """Ground truth that counts: boxes with at least one lidar point (bbox_3d_isvalid), as AWML and nuScenes do."""
    if len(sample.valid) == len(sample.gt):
        return sample.gt.select(sample.valid)
    return sample.gt


@dataclass
class BackendEvaluation:
    backend: str
    detections: list[Boxes3D]
    timings: list[dict[str, float]]
    metrics: Detection3DResult
    latency: dict[str, LatencyStats]
    voxel_overflow_frames: int = 0
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"backend": self.backend, "metrics": self.metrics.to_dict(),
                "latency_ms": {k: v.to_dict() for k, v in self.latency.items()},
                "voxel_overflow_frames": self.voxel_overflow_frames,
                "detections_per_frame": [len(d) for d in self.detections], **self.extra}


def metric_config(class_names: Sequence[str], ev: EvaluateConfig) -> Detection3DConfig:
    return Detection3DConfig(class_names=class_names, distance_thresholds=tuple(ev.distance_thresholds),
                             precision_envelope=ev.precision_envelope)


def evaluate_backend(name: str, pipeline: CenterPointPipeline, samples: Sequence[Sample], ev: EvaluateConfig,
                     progress: bool = True) -> BackendEvaluation:
    """Run every frame through the pipeline (after `ev.warmup` untimed runs) and score it."""
    for i in range(min(ev.warmup, len(samples)) if samples else 0):
        pipeline(samples[i].points)
    detections, timings, overflow = [], [], 0
    for s in tqdm(samples, desc=f"evaluate {name}", disable=not progress, leave=False):
        out = pipeline(s.points)
        detections.append(out.detections)
        timings.append(out.timings_ms)
        overflow += int(out.stats.voxels_overflow > 0 or out.stats.points_overflow > 0)
    metrics = evaluate_detection3d(detections, [scored_gt(s) for s in samples],
                                   metric_config(pipeline.cfg.class_names, ev))
    return BackendEvaluation(name, detections, timings, metrics, summarize_stages(timings), overflow)


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
                                       tol.atol, tol.rtol)
            spatial = ref.scatter(ref_pillars, pre.coords)
            outputs += compare_outputs(ref.head(spatial), cand.head(spatial), tol.atol, tol.rtol)
        diff = compare_detections(ref(s.points).detections, cand(s.points).detections)
        result.samples.append(SampleRecord(i, s.token, outputs, diff))
    return result


def map_at(result: Detection3DResult, threshold: float = 2.0) -> float:
    value = result.map_by_threshold.get(threshold)
    return float("nan") if value is None else float(value)

