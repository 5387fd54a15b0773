"""Latency statistics per pipeline stage: the percentiles a real-time budget is judged by."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class LatencyStats:
    count: int
    p50: float
    p90: float
    p95: float
    p99: float
    mean: float
    std: float
    max: float
    min: float

    @classmethod
    def from_samples(cls, samples_ms: Iterable[float]) -> "LatencyStats":
        a = np.asarray(list(samples_ms), dtype=np.float64)
        if a.size == 0:
            nan = float("nan")
            return cls(0, nan, nan, nan, nan, nan, nan, nan, nan)
        p50, p90, p95, p99 = np.percentile(a, [50, 90, 95, 99])
        return cls(int(a.size), float(p50), float(p90), float(p95), float(p99), float(a.mean()), float(a.std()),
                   float(a.max()), float(a.min()))

    def to_dict(self) -> dict[str, float | int | None]:
        return {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in asdict(self).items()}


def summarize_stages(per_frame: Iterable[Mapping[str, float]]) -> dict[str, LatencyStats]:
    """{stage: stats} from per-frame {stage: milliseconds} records (stages in first-seen order)."""
    columns: dict[str, list[float]] = {}
    for record in per_frame:
        for stage, ms in record.items():
            columns.setdefault(stage, []).append(float(ms))
    return {stage: LatencyStats.from_samples(values) for stage, values in columns.items()}
