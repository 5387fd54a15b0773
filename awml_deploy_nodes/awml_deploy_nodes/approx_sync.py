"""Approximate-time synchronizer with message_filters' ApproximateTime semantics; pure Python, no ROS import.

Why not message_filters: it is not installable here (not on PyPI). Why not :mod:`stamp_sync`: that one is greedy
and immediate (the oldest queued item forms a set with the oldest of every other input as soon as all lie in a
fixed window), which is the exact matching only when the window is below half the frame period; the calibration
node pairs a 10 Hz lidar with a camera of any rate and must pick, like ApproximateTime, the set of *smallest
spread* among the candidates, waiting until no future message can give a better one. The two policies disagree on
ordinary inputs (A at 0 and 20 ms, B at 18 ms: greedy pairs A0-B18, ApproximateTime A20-B18), so one class
cannot carry both without changing what stamp_sync's tests pin. :class:`SyncedSet` and :func:`stamp_to_ns` are
shared.

The algorithm (as message_filters documents and implements it; written here from that description):

- Each input has a queue of messages in stamp order, and a "past" list of messages already looked at for the
  current candidate. Work happens only while every queue is non-empty.
- The *start* is the queue head with the earliest stamp, the *end* the head with the latest (ties: the lowest
  input index). With no candidate: if end - start exceeds ``max_interval_ns`` (the slop) the start message is
  dropped; if the end's input has dropped messages to queue overflow since it last was not the end, the start is
  dropped too (a dropped message could have been the better partner); otherwise the heads become the candidate
  and the end's input the *pivot* (its stamp ``pivot_t``).
- With a candidate, the heads form a better one when ``(end - cand_end) * (1 + age_penalty) < start -
  cand_start``; then messages looked at before the new candidate are dropped.
- After each step the start message moves to the past list. The candidate is published when the start was the
  pivot's message (every candidate containing the pivot has been seen), or when ``(end - cand_end) * (1 +
  age_penalty) >= pivot_t - cand_start`` (any later set must span [pivot_t, end]). With an empty queue, the
  optimality is tried once more on *virtual* heads: an empty input's next stamp is at least ``max(last stamp +
  lower bound, pivot_t)`` (``inter_message_lower_bounds_ns``, default 0).
- Publishing takes the candidate's message from every input and keeps every later one.
- A queue holding more than ``queue_size`` messages (queue + past) cancels the candidate search and drops the
  input's oldest message (``overflow``).

One deliberate difference: message_filters assumes stamps never decrease on one input and only warns when they
do (its queues then lose their order and later sets are wrong). Here such a message is dropped and counted as
``out_of_order``, so the queues stay sorted and every later set is exactly what the algorithm gives.

Every message ends in exactly one of: a published set, ``pending`` (still queued), or a drop counted by reason:
``out_of_order``, ``overflow``, ``unmatched`` (outside the slop, beaten by a better set, or behind a dropped pivot).
"""

from __future__ import annotations

from collections import deque
from typing import Any, Sequence

from .stamp_sync import SyncedSet, stamp_to_ns

__all__ = ["APPROX_DROP_REASONS", "ApproximateTimeSync", "SyncedSet", "stamp_to_ns"]

APPROX_DROP_REASONS = ("out_of_order", "overflow", "unmatched")


class ApproximateTimeSync:
    """Sets of one message per input with minimal stamp spread (int nanoseconds), ApproximateTime's rules."""

    def __init__(self, num_inputs: int, queue_size: int, max_interval_ns: int | None = None,
                 age_penalty: float = 0.0, inter_message_lower_bounds_ns: Sequence[int] | None = None) -> None:
        if num_inputs < 2 or queue_size < 1 or (max_interval_ns is not None and max_interval_ns < 0) or age_penalty < 0:
            raise ValueError(f"ApproximateTimeSync: need num_inputs >= 2, queue_size >= 1, max_interval_ns None or "
                             f">= 0, age_penalty >= 0; got {num_inputs}, {queue_size}, {max_interval_ns}, "
                             f"{age_penalty}")
        bounds = list(inter_message_lower_bounds_ns or [0] * num_inputs)
        if len(bounds) != num_inputs or any(b < 0 for b in bounds):
            raise ValueError(f"ApproximateTimeSync: inter_message_lower_bounds_ns needs {num_inputs} values >= 0, "
                             f"got {bounds}")
        self.num_inputs = num_inputs
        self.queue_size = queue_size
        self.max_interval_ns = max_interval_ns
        self.age_penalty = float(age_penalty)
        self.lower_bounds_ns = [int(b) for b in bounds]
        self.dropped = dict.fromkeys(APPROX_DROP_REASONS, 0)
        self.dropped_per_input = [0] * num_inputs
        self.emitted = 0
        self.received = 0
        self._queues: list[deque[tuple[int, Any]]] = [deque() for _ in range(num_inputs)]
        self._past: list[list[tuple[int, Any]]] = [[] for _ in range(num_inputs)]
        self._newest: list[int | None] = [None] * num_inputs
        self._had_drop = [False] * num_inputs
        self._candidate: list[tuple[int, Any]] | None = None
        self._cand_start = self._cand_end = 0
        self._pivot: int | None = None
        self._pivot_t = 0

    # ------------------------------------------------------------------ public
    @property
    def pending(self) -> list[int]:
        """Messages held per input (queued or looked at for the current candidate)."""
        return [len(q) + len(p) for q, p in zip(self._queues, self._past)]

    def add(self, index: int, stamp_ns: int, item: Any) -> list[SyncedSet]:
        """Queue ``item`` of input ``index``; returns the sets this completed, oldest first (usually 0 or 1)."""
        if not 0 <= index < self.num_inputs:
            raise IndexError(f"ApproximateTimeSync.add: input index {index} outside 0..{self.num_inputs - 1}")
        stamp = int(stamp_ns)
        self.received += 1
        newest = self._newest[index]
        if newest is not None and stamp < newest:
            self._drop(index, "out_of_order")
            return []
        self._newest[index] = stamp
        queue = self._queues[index]
        queue.append((stamp, item))
        out: list[SyncedSet] = []
        if len(queue) == 1 and all(self._queues):
            out += self._process()
        if len(queue) + len(self._past[index]) > self.queue_size:
            self._recover_all()  # cancel the candidate search: every message back into its queue
            queue.popleft()
            self._drop(index, "overflow")
            self._had_drop[index] = True
            if self._pivot is not None:
                self._candidate, self._pivot = None, None
                out += self._process()
        return out

    # ------------------------------------------------------------------ bookkeeping
    def _drop(self, index: int, reason: str, count: int = 1) -> None:
        self.dropped[reason] += count
        self.dropped_per_input[index] += count

    def _scaled(self, d: int) -> float | int:
        return d if self.age_penalty == 0.0 else d * (1.0 + self.age_penalty)

    def _heads(self, times: list[int]) -> tuple[int, int, int, int]:
        """(start index, start time, end index, end time) of the given per-input times; ties to the lowest index."""
        si = ei = 0
        for i in range(1, self.num_inputs):
            if times[i] < times[si]:
                si = i
            if times[i] > times[ei]:
                ei = i
        return si, times[si], ei, times[ei]

    def _virtual_time(self, i: int) -> int:
        q = self._queues[i]
        if q:
            return q[0][0]
        last = self._past[i][-1][0]  # an empty queue of a candidate's input has the candidate's message in past
        return max(last + self.lower_bounds_ns[i], self._pivot_t)

    def _move_front_to_past(self, i: int) -> None:
        self._past[i].append(self._queues[i].popleft())

    def _recover(self, moves: list[int]) -> None:
        for i, n in enumerate(moves):
            for _ in range(n):
                self._queues[i].appendleft(self._past[i].pop())

    def _recover_all(self) -> None:
        self._recover([len(p) for p in self._past])

    def _make_candidate(self, start_t: int, end_t: int) -> None:
        self._candidate = [q[0] for q in self._queues]
        for i, past in enumerate(self._past):  # looked at before this better candidate: never part of a set
            if past:
                self._drop(i, "unmatched", len(past))
                past.clear()
        self._cand_start, self._cand_end = start_t, end_t

    def _publish(self) -> SyncedSet:
        cand = self._candidate
        assert cand is not None
        for i, (queue, past) in enumerate(zip(self._queues, self._past)):
            queue.extendleft(reversed(past))
            past.clear()
            taken = queue.popleft()
            assert taken is cand[i]  # the candidate's message is the oldest one held for its input
        self._candidate, self._pivot = None, None
        self.emitted += 1
        return SyncedSet(tuple(c[0] for c in cand), tuple(c[1] for c in cand))

    # ------------------------------------------------------------------ the algorithm
    def _process(self) -> list[SyncedSet]:
        out: list[SyncedSet] = []
        while all(self._queues):
            si, st, ei, et = self._heads([q[0][0] for q in self._queues])
            for i in range(self.num_inputs):
                if i != ei:
                    self._had_drop[i] = False  # no dropped message of i could have been a better partner
            if self._pivot is None:
                if self.max_interval_ns is not None and et - st > self.max_interval_ns:
                    self._queues[si].popleft()
                    self._drop(si, "unmatched")
                    continue
                if self._had_drop[ei]:
                    self._queues[si].popleft()
                    self._drop(si, "unmatched")
                    continue
                self._make_candidate(st, et)
                self._pivot, self._pivot_t = ei, et
            elif self._scaled(et - self._cand_end) < st - self._cand_start:
                self._make_candidate(st, et)  # a better candidate; same pivot
            self._move_front_to_past(si)

            if si == self._pivot:
                out.append(self._publish())  # every candidate containing the pivot's message was seen
            elif self._scaled(et - self._cand_end) >= self._pivot_t - self._cand_start:
                out.append(self._publish())  # any later set spans [pivot_t, end]: no better one can come
            elif not all(self._queues):
                published = self._virtual_search()
                if published is not None:
                    out.append(published)
        return out

    def _virtual_search(self) -> SyncedSet | None:
        """Try to prove the candidate optimal with the lower bounds of the empty inputs' next stamps."""
        moves = [0] * self.num_inputs
        while True:
            si, st, _, et = self._heads([self._virtual_time(i) for i in range(self.num_inputs)])
            if self._scaled(et - self._cand_end) >= self._pivot_t - self._cand_start:
                self._recover(moves)
                return self._publish()
            if self._scaled(et - self._cand_end) < st - self._cand_start:
                self._recover(moves)  # a future message could start a better set: wait for it
                return None
            # st < pivot_t here (else one of the two tests holds), so input si has a real queued message.
            self._move_front_to_past(si)
            moves[si] += 1
