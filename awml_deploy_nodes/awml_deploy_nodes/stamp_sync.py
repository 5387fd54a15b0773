"""Group messages of N inputs (camera topics) into sets whose header stamps lie within a window; pure Python.

Why not message_filters: it is not installable here, and the batched multi-camera inference needs the drop counts.

Model: each input delivers its stamps in non-decreasing order (one driver per topic); the inputs interleave in any
order. An item older than the newest stamp already seen on its own input is dropped as ``late``. Completion is
greedy and immediate: whenever every input has an item queued, the oldest queued item (the pivot, stamp t) forms a
set with the oldest item of every other input, provided all of them are <= t + window_ns (they are >= t, so the
set's spread is <= window_ns). An item that can never be part of a set is dropped as ``unmatched``: that is the
pivot when some other input has already moved past t + window_ns (its oldest queued item, or, with nothing queued,
the newest stamp it delivered, is newer), since that input's later items can only be newer still. With a
window below half the frame period every item has at most one partner per input and greedy is the exact
matching. A queue holding more than ``max_queue`` items (an input that went silent keeps the others waiting)
drops its oldest as ``overflow``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DROP_REASONS", "StampSync", "SyncedSet", "stamp_to_ns"]

DROP_REASONS = ("late", "unmatched", "overflow")


def stamp_to_ns(stamp: Any) -> int:
    """builtin_interfaces/Time (``header.stamp``) -> int nanoseconds, the unit :class:`StampSync` compares."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


@dataclass(frozen=True)
class SyncedSet:
    """One item per input, in input order, with their stamps."""

    stamps_ns: tuple[int, ...]
    items: tuple[Any, ...]

    @property
    def spread_ns(self) -> int:
        return max(self.stamps_ns) - min(self.stamps_ns)


@dataclass
class StampSync:
    """Matches items of ``num_inputs`` inputs whose stamps (int nanoseconds) lie within ``window_ns``."""

    num_inputs: int
    window_ns: int
    max_queue: int = 10
    dropped: dict[str, int] = field(init=False)
    dropped_per_input: list[int] = field(init=False)
    emitted: int = field(init=False, default=0)
    _queues: list[deque[tuple[int, Any]]] = field(init=False, repr=False)  # (stamp, item), oldest first
    _newest: list[int | None] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.num_inputs < 1 or self.window_ns < 0 or self.max_queue < 1:
            raise ValueError(
                f"StampSync: need num_inputs >= 1, window_ns >= 0, max_queue >= 1; got {self.num_inputs}, "
                f"{self.window_ns}, {self.max_queue}"
            )
        self.dropped = dict.fromkeys(DROP_REASONS, 0)
        self.dropped_per_input = [0] * self.num_inputs
        self._queues = [deque() for _ in range(self.num_inputs)]
        self._newest = [None] * self.num_inputs

    def _drop(self, index: int, reason: str) -> None:
        self.dropped[reason] += 1
        self.dropped_per_input[index] += 1

    @property
    def pending(self) -> list[int]:
        """Items queued per input."""
        return [len(q) for q in self._queues]

    def add(self, index: int, stamp_ns: int, item: Any) -> list[SyncedSet]:
        """Queue ``item`` of input ``index``; returns the sets this completed (oldest first, usually 0 or 1)."""
        if not 0 <= index < self.num_inputs:
            raise IndexError(f"StampSync.add: input index {index} outside 0..{self.num_inputs - 1}")
        stamp = int(stamp_ns)
        newest = self._newest[index]
        if newest is not None and stamp < newest:
            self._drop(index, "late")
            return []  # nothing changed: the queues were already matched as far as possible
        self._newest[index] = stamp
        queue = self._queues[index]
        queue.append((stamp, item))  # stamps of one input never decrease (late ones are dropped above): stays sorted
        if len(queue) > self.max_queue:
            queue.popleft()
            self._drop(index, "overflow")
        return self._match()

    def _passed(self, j: int, limit: int) -> bool:
        """Input j can no longer deliver an item with stamp <= limit."""
        q = self._queues[j]
        if q:
            return q[0][0] > limit
        newest = self._newest[j]
        return newest is not None and newest > limit

    def _match(self) -> list[SyncedSet]:
        out: list[SyncedSet] = []
        while True:
            heads = [(q[0][0], i) for i, q in enumerate(self._queues) if q]
            if not heads:
                return out
            t, pivot = min(heads)
            limit = t + self.window_ns
            if any(self._passed(j, limit) for j in range(self.num_inputs) if j != pivot):
                self._queues[pivot].popleft()
                self._drop(pivot, "unmatched")
                continue
            if len(heads) < self.num_inputs:
                return out
            entries = [q.popleft() for q in self._queues]
            out.append(SyncedSet(tuple(e[0] for e in entries), tuple(e[1] for e in entries)))
            self.emitted += 1
