"""``summary.json`` of a replay run: one typed summary for the offline and the real-time replay.

:class:`ReplaySummary` holds what a run did; :meth:`ReplaySummary.to_dict` is the file's schema (keys and their
order), :meth:`ReplaySummary.judge` the verdict. Real-time runs fill the fields marked real time; they are left
out of the file when None, so an offline summary has exactly the offline keys.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .criteria import ReplayCriteria, apply_criteria
from .scoring import SCORED, ReplayScores

SUMMARY_SCHEMA_VERSION = 1
EXIT_INTERRUPTED = 130
MODES = ("offline", "realtime")


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


@dataclass
class ReplaySummary:
    """One replay run. ``stopped``: None (complete), "interrupted" or "error" (then ``error`` says why)."""

    mode: str
    bag: str
    lidar_topic: str  # the input topic (a camera's image topic for a 2D run; the key in the file says which)
    backend: str
    model: str
    checkpoint: Any
    device: str
    scores: ReplayScores
    stopped: str | None = None
    error: str | None = None
    max_frames: int | None = None
    wall_s: float | None = None
    throughput_fps: float | None = None
    criteria: ReplayCriteria | None = None
    gates: list[dict[str, Any]] = field(default_factory=list)
    passed: bool | None = None
    dropped_frames: list[dict[str, Any]] | None = None  # real time: inputs without output
    realtime: dict[str, Any] | None = None  # real time: rates, end-to-end latency, process facts
    offline_agreement: dict[str, Any] | None = None  # real time with --check-offline
    created: str = field(default_factory=_now)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"ReplaySummary.mode must be one of {MODES}, got {self.mode!r}")

    @property
    def complete(self) -> bool:
        return self.stopped is None

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of ``summary.json`` (JSON-safe, no NaN)."""
        d: dict[str, Any] = {
            "schema_version": SUMMARY_SCHEMA_VERSION,
            "kind": "replay_eval",
            "mode": self.mode,
            "created": self.created,
            "complete": self.complete,
            "stopped": self.stopped,
            "error": self.error,
            "bag": self.bag,
            self.scores.task.topic_key: self.lidar_topic,  # "lidar_topic" (3D), "image_topic" (2D)
            "max_frames": self.max_frames,
            "backend": self.backend,
            "model": self.model,
            "checkpoint": self.checkpoint,
            "device": self.device,
            **self.scores.to_dict(),
        }
        if self.dropped_frames is not None:
            d["dropped_frames"] = self.dropped_frames
        d["wall_s"] = self.wall_s
        d["throughput_fps"] = self.throughput_fps
        if self.realtime is not None:
            d["realtime"] = self.realtime
        d["criteria"] = self.criteria.model_dump(mode="json") if self.criteria is not None else None
        d["gates"] = self.gates
        d["passed"] = self.passed
        if self.offline_agreement is not None:
            d["offline_agreement"] = self.offline_agreement
        return d

    def judge(self, extra_gates: Sequence[dict[str, Any]] = ()) -> None:
        """Gates and verdict of a complete run: the criteria's gates plus ``extra_gates``; with no gate at all,
        passed = at least one frame scored. An incomplete run keeps ``gates == []`` and ``passed is None``."""
        if not self.complete:
            return
        frames = self.scores.frames
        gates = apply_criteria(self.criteria, self.to_dict(), frames) if self.criteria is not None else []
        gates += list(extra_gates)
        self.gates = gates
        self.passed = all(g["passed"] for g in gates) if gates else self.scores.counts()[SCORED] > 0


__all__ = ["EXIT_INTERRUPTED", "MODES", "ReplaySummary", "SUMMARY_SCHEMA_VERSION"]
