"""Health counters of a perception node and their ``diagnostic_msgs/DiagnosticArray`` form.

``diagnostic_updater`` is not installable everywhere this runs (not on PyPI), so this is the small part of it
the node needs: counters updated from the subscription callback and the worker thread (under one lock), and
a periodic report of two statuses, named like diagnostic_updater names them (``<node>: <task>``):

``<node>: inference``  processing time of the last period against the budget (OK / WARN above it), stamp-to-
    output latency, and the two voxelization limits counted apart: ``pillars_dropped`` (pillars beyond
    max_voxels, with ``points_in_dropped_pillars`` and ``frames_with_pillars_dropped``: WARN, objects may be
    missed) and ``points_truncated`` (points beyond max_points_per_voxel in a kept pillar, with
    ``pillars_truncated`` and ``frames_with_points_truncated``: normal for dense clouds, reported only).
``<node>: input``  clouds received, dropped (replaced by a newer cloud before they were processed), dropped
    by the middleware before the node took them (``input_gaps``: gaps in the writers' publication sequence
    numbers, where rclpy passes them: Iron and newer), lost by the middleware (message-lost events), malformed per kind (``malformed.<kind>``, kinds of
    conversions.MALFORMED_KINDS), unusual clouds that were processed (``accepted.*``: big-endian, organized,
    empty, with non-finite points) and internal errors. WARN when something was dropped or malformed during
    the period, ERROR when a frame failed inside the node.

The same class serves every model node: the camera node (``yolox_node``) passes its own input noun ("images"),
malformed and accepted kinds, no voxel counters, and the stamp-synchronisation drop reasons of its multi-camera
mode (``sync_dropped.<reason>``: WARN, images that found no partner within the window); ``calibration_status_node``
passes its malformed kinds per input (``cloud.*``, ``image.*``, ...) and adds statuses of its own (:func:`status`).

Counters are cumulative since start-up; ``*_in_period`` values and the levels refer to the last period.
Every value is a string (``KeyValue``); integers are written without decimals so tools can parse them.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Iterable

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

OK, WARN, ERROR = DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR
ACCEPTED_KINDS = ("big_endian", "organized", "empty", "with_non_finite")
# VoxelStats fields summed over frames (awml_deploy_core.pipelines.centerpoint.voxelize.VoxelStats).
OVERFLOW_KEYS = ("pillars_dropped", "points_in_dropped_pillars", "pillars_truncated", "points_truncated")


@dataclass
class _Period:
    """What happened since the last report."""

    times_ms: list[float] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    over_budget: int = 0
    received: int = 0
    dropped: int = 0
    lost: int = 0
    gaps: int = 0
    malformed: int = 0
    unsynced: int = 0
    internal_errors: int = 0
    pillars_dropped: int = 0


class NodeHealth:
    """Thread-safe counters; :meth:`report` turns them into a DiagnosticArray and starts a new period."""

    def __init__(self, node_name: str, budget_ms: float, malformed_kinds: Iterable[str],
                 info: dict[str, str] | None = None, *, noun: str = "clouds",
                 accepted_kinds: Iterable[str] = ACCEPTED_KINDS, overflow_keys: Iterable[str] = OVERFLOW_KEYS,
                 sync_reasons: Iterable[str] = ()) -> None:
        self.node_name = node_name
        self.noun = noun  # what the input is called in status messages
        self.budget_ms = float(budget_ms)
        self.info = dict(info or {})  # constant key-values (backend, precision, model)
        self._lock = threading.Lock()
        self.received = 0
        self.processed = 0
        self.dropped = 0
        self.lost = 0
        self.gaps = 0
        self.sequence_gaps_known = False  # the node sets it where rclpy gives publication sequence numbers
        self.internal_errors = 0
        self.over_budget = 0
        self.malformed = {k: 0 for k in malformed_kinds}
        self.accepted = {k: 0 for k in accepted_kinds}
        self.non_finite_points = 0
        self.overflow = {k: 0 for k in overflow_keys}
        self.unsynced = {k: 0 for k in sync_reasons}
        self.frames_with_pillars_dropped = 0
        self.frames_with_points_truncated = 0
        self.last_time_ms: float | None = None
        self._period = _Period()

    # ------------------------------------------------------------------ updates (any thread)
    def on_received(self, replaced_unprocessed: bool) -> None:
        with self._lock:
            self.received += 1
            self._period.received += 1
            if replaced_unprocessed:
                self.dropped += 1
                self._period.dropped += 1

    def on_dropped(self, count: int) -> None:
        """Inputs already counted as received that a newer input replaced before processing (a whole image set)."""
        with self._lock:
            self.dropped += int(count)
            self._period.dropped += int(count)

    def on_lost(self, count: int) -> None:
        with self._lock:
            self.lost += int(count)
            self._period.lost += int(count)

    def on_input_gap(self, count: int) -> None:
        with self._lock:
            self.gaps += int(count)
            self._period.gaps += int(count)

    def on_malformed(self, kind: str) -> int:
        """Count one malformed cloud; returns the total of malformed clouds so far."""
        with self._lock:
            self.malformed[kind] = self.malformed.get(kind, 0) + 1
            self._period.malformed += 1
            return sum(self.malformed.values())

    def count_accepted(self, *kinds: str) -> None:
        """One processed input of each of these unusual-but-valid kinds (e.g. rgb8, padded_rows)."""
        with self._lock:
            for k in kinds:
                self.accepted[k] = self.accepted.get(k, 0) + 1

    def on_sync_dropped(self, reason: str, count: int = 1) -> None:
        """Inputs the stamp synchronisation dropped (multi-input nodes; reasons of stamp_sync.DROP_REASONS)."""
        with self._lock:
            self.unsynced[reason] = self.unsynced.get(reason, 0) + int(count)
            self._period.unsynced += int(count)

    def on_accepted(self, big_endian: bool, organized: bool, empty: bool, non_finite: int) -> None:
        with self._lock:
            self.accepted["big_endian"] += int(big_endian)
            self.accepted["organized"] += int(organized)
            self.accepted["empty"] += int(empty)
            self.accepted["with_non_finite"] += int(non_finite > 0)
            self.non_finite_points += int(non_finite)

    def on_processed(self, time_ms: float, latency_ms: float, voxel_stats: Any) -> None:
        with self._lock:
            self.processed += 1
            self.last_time_ms = time_ms
            self._period.times_ms.append(time_ms)
            self._period.latencies_ms.append(latency_ms)
            if time_ms > self.budget_ms:
                self.over_budget += 1
                self._period.over_budget += 1
            for k in self.overflow:
                self.overflow[k] += int(getattr(voxel_stats, k, 0))
            dropped = int(getattr(voxel_stats, "pillars_dropped", 0))
            if dropped:
                self.frames_with_pillars_dropped += 1
                self._period.pillars_dropped += dropped
            self.frames_with_points_truncated += int(getattr(voxel_stats, "points_truncated", 0) > 0)

    def on_internal_error(self) -> None:
        with self._lock:
            self.internal_errors += 1
            self._period.internal_errors += 1

    # ------------------------------------------------------------------ report (timer thread)
    def snapshot(self) -> dict[str, Any]:
        """Plain copy of every counter (for tests and logs)."""
        with self._lock:
            return {"received": self.received, "processed": self.processed, "dropped": self.dropped,
                    "lost": self.lost, "gaps": self.gaps, "internal_errors": self.internal_errors, "over_budget": self.over_budget,
                    "malformed": dict(self.malformed), "accepted": dict(self.accepted),
                    "sync_dropped": dict(self.unsynced),
                    "non_finite_points": self.non_finite_points, "overflow": dict(self.overflow),
                    "frames_with_pillars_dropped": self.frames_with_pillars_dropped,
                    "frames_with_points_truncated": self.frames_with_points_truncated}

    def report(self, stamp: Any) -> DiagnosticArray:
        with self._lock:
            period, self._period = self._period, _Period()
            inference = self._inference_status(period)
            inputs = self._input_status(period)
        msg = DiagnosticArray()
        msg.header.stamp = stamp
        msg.status = [inference, inputs]
        return msg

    def _status(self, task: str, level: bytes, message: str, values: list[tuple[str, Any]]) -> DiagnosticStatus:
        return status(self.node_name, task, level, message, values)

    def _inference_status(self, p: _Period) -> DiagnosticStatus:
        times = p.times_ms
        mean = sum(times) / len(times) if times else None
        worst = max(times) if times else None
        values: list[tuple[str, Any]] = [
            *self.info.items(),
            ("processing_time_budget_ms", self.budget_ms),
            ("frames_processed", self.processed),
            ("frames_processed_in_period", len(times)),
            ("processing_time_ms_last", self.last_time_ms),
            ("processing_time_ms_mean_in_period", mean),
            ("processing_time_ms_max_in_period", worst),
            ("frames_over_budget", self.over_budget),
            ("frames_over_budget_in_period", p.over_budget),
            ("latency_ms_max_in_period", max(p.latencies_ms) if p.latencies_ms else None),
        ]
        if self.overflow:  # voxelizing nodes
            values += [*self.overflow.items(), ("frames_with_pillars_dropped", self.frames_with_pillars_dropped),
                       ("frames_with_points_truncated", self.frames_with_points_truncated)]
        if p.over_budget:
            level, text = WARN, (f"processing time over budget in {p.over_budget}/{len(times)} frames "
                                 f"(max {worst:.1f} ms > {self.budget_ms:g} ms)")
        elif p.pillars_dropped:
            level, text = WARN, (f"{p.pillars_dropped} pillars dropped beyond max_voxels in the last period: "
                                 f"objects may be missed")
        elif times:
            level, text = OK, f"{len(times)} frames, max {worst:.1f} ms <= budget {self.budget_ms:g} ms"
        else:
            level, text = OK, "no frame processed in the last period"
        return self._status("inference", level, text, values)

    def _input_status(self, p: _Period) -> DiagnosticStatus:
        values: list[tuple[str, Any]] = [
            ("received", self.received),
            ("dropped_inputs", self.dropped),
            ("dropped_inputs_in_period", p.dropped),
            ("input_gaps", self.gaps if self.sequence_gaps_known else "n/a"),
            ("transport_lost", self.lost),
            ("malformed_total", sum(self.malformed.values())),
            *((f"malformed.{k}", v) for k, v in self.malformed.items()),
            *((f"accepted.{k}", v) for k, v in self.accepted.items()),
            *((f"sync_dropped.{k}", v) for k, v in self.unsynced.items()),
        ]
        if "with_non_finite" in self.accepted:
            values.append(("non_finite_points_dropped", self.non_finite_points))
        values.append(("internal_error", self.internal_errors))
        n = self.noun
        problems = []
        if p.internal_errors:
            problems.append(f"{p.internal_errors} frames failed inside the node (see the log)")
        if p.malformed:
            problems.append(f"{p.malformed} malformed {n} dropped")
        if p.dropped:
            problems.append(f"{p.dropped} {n} dropped: input faster than processing (newest wins)")
        if p.unsynced:
            problems.append(f"{p.unsynced} {n} dropped without a partner within the sync window")
        if p.gaps:
            problems.append(f"{p.gaps} {n} dropped by the middleware before the node took them")
        if p.lost:
            problems.append(f"{p.lost} {n} lost by the middleware")
        level = ERROR if p.internal_errors else WARN if problems else OK
        text = "; ".join(problems) if problems else f"{p.received} {n} received in the last period"
        return self._status("input", level, text, values)


def status(node_name: str, task: str, level: bytes, message: str, values: Iterable[tuple[str, Any]],
           float_digits: int = 3) -> DiagnosticStatus:
    """One ``<node>: <task>`` status as diagnostic_updater names them; floats with ``float_digits`` decimals."""
    return DiagnosticStatus(level=level, name=f"{node_name}: {task}", message=message, hardware_id=node_name,
                            values=[KeyValue(key=k, value=_fmt(v, float_digits)) for k, v in values])


def _fmt(v: Any, float_digits: int = 3) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return f"{v:.{float_digits}f}"
    return str(v)


def values_of(status: Any) -> dict[str, str]:
    """KeyValues of a DiagnosticStatus (message or its dict form) as a plain dict."""
    vals = status["values"] if isinstance(status, dict) else status.values
    return {(kv["key"] if isinstance(kv, dict) else kv.key): (kv["value"] if isinstance(kv, dict) else kv.value)
            for kv in vals}
