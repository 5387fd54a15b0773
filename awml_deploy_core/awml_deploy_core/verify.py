"""Numerical parity between two backends: every output compared with |a - b| <= atol + rtol * |b|.

Each graph is fed the *same* inputs on both backends (so an error is attributed to the graph that made it), and
the decoded detections of each backend's full pipeline are compared too. Records are kept per sample, not only a
pass/fail.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .structures import Boxes3D


@dataclass
class OutputStats:
    name: str
    shape_ref: tuple[int, ...]
    shape_cand: tuple[int, ...]
    num_elements: int
    max_abs: float
    mean_abs: float
    p99_abs: float
    max_rel: float
    mean_rel: float
    p99_rel: float
    out_of_tolerance: int
    passed: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def compare_arrays(name: str, ref: Any, cand: Any, atol: float, rtol: float,
                   max_outlier_fraction: float = 0.0) -> OutputStats:
    """Statistics of `cand` against the reference `ref`; a shape mismatch fails outright. Passed when at most
    `max_outlier_fraction` of the elements lie outside atol + rtol * |ref| (0: none may; INT8 allows a few)."""
    a, b = _numpy(ref).astype(np.float64), _numpy(cand).astype(np.float64)
    if a.shape != b.shape:
        nan = float("nan")
        return OutputStats(name, a.shape, b.shape, int(a.size), nan, nan, nan, nan, nan, nan, int(max(a.size, b.size)),
                           False)
    if a.size == 0:
        return OutputStats(name, a.shape, b.shape, 0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0, True)
    abs_err = np.abs(b - a)
    rel_err = abs_err / np.maximum(np.abs(a), np.finfo(np.float32).tiny)
    # Non-finite anywhere counts as out of tolerance unless both sides agree exactly (inf == inf).
    bad = ~(abs_err <= atol + rtol * np.abs(a))
    bad &= ~((a == b) & ~np.isnan(a))
    abs_f, rel_f = np.nan_to_num(abs_err, nan=np.inf), np.nan_to_num(rel_err, nan=np.inf)
    return OutputStats(
        name=name, shape_ref=a.shape, shape_cand=b.shape, num_elements=int(a.size),
        max_abs=float(abs_f.max()), mean_abs=float(abs_f.mean()), p99_abs=float(np.percentile(abs_f, 99)),
        max_rel=float(rel_f.max()), mean_rel=float(rel_f.mean()), p99_rel=float(np.percentile(rel_f, 99)),
        out_of_tolerance=int(bad.sum()), passed=int(bad.sum()) <= max_outlier_fraction * a.size,
    )


def compare_outputs(ref: Mapping[str, Any], cand: Mapping[str, Any], atol: float, rtol: float,
                    max_outlier_fraction: float = 0.0) -> list[OutputStats]:
    """Compare every named output; a name missing on one side is a failure."""
    missing = set(ref) ^ set(cand)
    if missing:
        raise ValueError(f"outputs differ by name: {sorted(missing)}")
    return [compare_arrays(name, ref[name], cand[name], atol, rtol, max_outlier_fraction) for name in ref]


@dataclass
class DetectionDiff:
    count_ref: int
    count_cand: int
    matched: int
    max_centre: float = 0.0
    max_size: float = 0.0
    max_yaw: float = 0.0
    max_score: float = 0.0
    max_velocity: float = 0.0

    @property
    def identical_count(self) -> bool:
        return self.count_ref == self.count_cand

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "identical_count": self.identical_count}


def compare_detections(ref: Boxes3D, cand: Boxes3D, max_distance: float = 1.0) -> DetectionDiff:
    """Greedy one-to-one matching (same label, BEV centre distance, by reference score) and worst differences."""
    diff = DetectionDiff(len(ref), len(cand), 0)
    if not len(ref) or not len(cand):
        return diff
    d = np.linalg.norm(ref.boxes[:, None, :2] - cand.boxes[None, :, :2], axis=-1)
    d[ref.labels[:, None] != cand.labels[None, :]] = np.inf
    taken = np.zeros(len(cand), bool)
    for i in np.argsort(-ref.scores, kind="stable"):
        row = np.where(taken, np.inf, d[i])
        j = int(np.argmin(row))
        if row[j] > max_distance:
            continue
        taken[j] = True
        diff.matched += 1
        yaw = abs((float(ref.boxes[i, 6]) - float(cand.boxes[j, 6]) + np.pi) % (2 * np.pi) - np.pi)
        diff.max_centre = max(diff.max_centre, float(np.linalg.norm(ref.boxes[i, :3] - cand.boxes[j, :3])))
        diff.max_size = max(diff.max_size, float(np.abs(ref.boxes[i, 3:6] - cand.boxes[j, 3:6]).max()))
        diff.max_yaw = max(diff.max_yaw, yaw)
        diff.max_score = max(diff.max_score, abs(float(ref.scores[i]) - float(cand.scores[j])))
        diff.max_velocity = max(diff.max_velocity, float(np.abs(ref.velocities[i] - cand.velocities[j]).max()))
    return diff


@dataclass
class SampleRecord:
    index: int
    token: str
    outputs: list[OutputStats]
    detections: DetectionDiff

    @property
    def passed(self) -> bool:
        return all(o.passed for o in self.outputs)

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "token": self.token, "passed": self.passed,
                "outputs": [o.to_dict() for o in self.outputs], "detections": self.detections.to_dict()}


@dataclass
class ScenarioResult:
    reference: str
    candidate: str
    precision: str
    atol: float
    rtol: float
    samples: list[SampleRecord] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.samples) and all(s.passed for s in self.samples)

    def summary(self) -> dict[str, dict[str, float]]:
        """Worst case per output over all samples."""
        out: dict[str, dict[str, float]] = {}
        for s in self.samples:
            for o in s.outputs:
                cur = out.setdefault(o.name, {"max_abs": 0.0, "max_rel": 0.0, "p99_abs": 0.0, "out_of_tolerance": 0})
                cur["max_abs"] = max(cur["max_abs"], o.max_abs)
                cur["max_rel"] = max(cur["max_rel"], o.max_rel)
                cur["p99_abs"] = max(cur["p99_abs"], o.p99_abs)
                cur["out_of_tolerance"] += o.out_of_tolerance
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"reference": self.reference, "candidate": self.candidate, "precision": self.precision,
                "atol": self.atol, "rtol": self.rtol, "passed": self.passed, "summary": self.summary(),
                "detection_count_mismatches": sum(not s.detections.identical_count for s in self.samples),
                "samples": [s.to_dict() for s in self.samples]}
