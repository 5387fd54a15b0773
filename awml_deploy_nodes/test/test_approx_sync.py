"""approx_sync.ApproximateTimeSync on hand-made stamp sequences (expected sets worked out by hand from
ApproximateTime's rules, each step in the comments), plus invariants over random sequences."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from awml_deploy_nodes.approx_sync import APPROX_DROP_REASONS, ApproximateTimeSync

MS = 1_000_000
A, B, C = 0, 1, 2


def feed(sync: ApproximateTimeSync, events: list[tuple[int, int]]) -> list[tuple[tuple[int, ...], int]]:
    """Add (input, stamp in ms) events; returns (set stamps in ms, index of the event that completed it)."""
    out = []
    for k, (index, stamp_ms) in enumerate(events):
        for s in sync.add(index, stamp_ms * MS, (index, stamp_ms)):
            assert s.items == tuple((i, t // MS) for i, t in enumerate(s.stamps_ns))  # items travel with stamps
            out.append((tuple(t // MS for t in s.stamps_ns), k))
    return out


def drops(sync: ApproximateTimeSync, **counts: int) -> dict[str, int]:
    return {r: counts.get(r, 0) for r in APPROX_DROP_REASONS}


def test_equal_stamps_are_published_at_once():
    # Heads equal: start = end = input 0 (ties to the lowest index), so the start is the pivot: published at once.
    sync = ApproximateTimeSync(3, queue_size=5)
    events = [(i, k * 100) for k in range(3) for i in range(3)]
    assert feed(sync, events) == [((0, 0, 0), 2), ((100, 100, 100), 5), ((200, 200, 200), 8)]
    assert sync.dropped == drops(sync) and sync.pending == [0, 0, 0]


def test_offset_topics_wait_for_the_next_message():
    # A at 0, 10, 20; B at 3, 13, 23. After B3 the candidate {A0, B3} (pivot B) is not provably optimal: A's next
    # message could be stamped 3. A10 makes {A10, B3} worse (7 > 3) and B3 is the pivot: {A0, B3} goes out.
    sync = ApproximateTimeSync(2, queue_size=5)
    events = [(A, 0), (B, 3), (A, 10), (B, 13), (A, 20), (B, 23)]
    assert feed(sync, events) == [((0, 3), 2), ((10, 13), 4)]
    assert sync.pending == [1, 1] and sync.dropped == drops(sync)


def test_inter_message_lower_bound_proves_optimality_early():
    # Same stamps, A known to come at most every 10 ms: after B3, A's next stamp is >= 0 + 10, so any later set
    # spans at least [3, 10] (7 > 3): {A0, B3} is published on B3's arrival.
    sync = ApproximateTimeSync(2, queue_size=5, inter_message_lower_bounds_ns=[10 * MS, 0])
    events = [(A, 0), (B, 3), (A, 10), (B, 13)]
    assert feed(sync, events) == [((0, 3), 1), ((10, 13), 3)]


def test_a_better_candidate_replaces_the_first_and_drops_its_message():
    # A0 and A20 wait; B18 arrives. Candidate {A0, B18} (pivot B at 18); then heads A20, B18: (20 - 18) < (18 - 0),
    # so {A20, B18} is better and A0 is dropped; B18 (the pivot) is the start: published.
    # stamp_sync's greedy policy would pair A0 with B18 here (the oldest first).
    sync = ApproximateTimeSync(2, queue_size=5)
    assert feed(sync, [(A, 0), (A, 20), (B, 18)]) == [((20, 18), 2)]
    assert sync.dropped == drops(sync, unmatched=1) and sync.dropped_per_input == [1, 0]


def test_closest_partner_is_kept_when_the_other_is_further():
    # A0, B45, B90, A100. {A0, B45} is the candidate after B45 (pivot B). A100: heads A100, B45 -> (100 - 45) >= 45:
    # not better; B45 (pivot) is the start -> {A0, B45}. Then heads A100, B90 -> candidate {A100, B90}, pivot A,
    # not provably optimal (B's next message could be stamped 100): pending.
    sync = ApproximateTimeSync(2, queue_size=5)
    assert feed(sync, [(A, 0), (B, 45), (B, 90), (A, 100)]) == [((0, 45), 3)]
    assert sync.pending == [1, 1]


def test_three_inputs_arriving_out_of_order_across_topics():
    # B10, B30, C28 queue; A0 completes the heads {A0, B10, C28}: candidate (spread 28), pivot C at 28, not yet
    # provably optimal (virtual heads: A >= 28, B10: 0 < 10 - 0, a set starting at B10 could still be better).
    # A40: heads A40, B10, C28: (40 - 28) = 12 < 10 - 0? no: not better, B10 to past; heads A40, B30, C28:
    # 12 < 28 - 0: better, {A40, B30, C28} (spread 12) replaces it and A0, B10 are dropped; C28 (pivot) is the
    # start: published.
    sync = ApproximateTimeSync(3, queue_size=5)
    assert feed(sync, [(B, 10), (B, 30), (C, 28), (A, 0), (A, 40)]) == [((40, 30, 28), 4)]
    assert sync.pending == [0, 0, 0] and sync.dropped == drops(sync, unmatched=2)
    assert sync.dropped_per_input == [1, 1, 0]


def test_slop_drops_the_start_beyond_max_interval_and_keeps_the_boundary():
    sync = ApproximateTimeSync(2, queue_size=5, max_interval_ns=20 * MS)
    # A0, B50: spread 50 > 20: A0 dropped. A60: {A60, B50} (spread 10) is the candidate, pending.
    assert feed(sync, [(A, 0), (B, 50), (A, 60)]) == []
    assert sync.dropped == drops(sync, unmatched=1) and sync.dropped_per_input == [1, 0]
    # Exactly at the slop: spread 20 == max_interval is accepted (the rule drops only when it is exceeded).
    edge = ApproximateTimeSync(2, queue_size=5, max_interval_ns=20 * MS)
    assert feed(edge, [(A, 0), (B, 20), (A, 100)]) == [((0, 20), 2)]
    over = ApproximateTimeSync(2, queue_size=5, max_interval_ns=20 * MS - 1)
    # ... 1 ns less: A0 dropped on B20; A100 then B20 (spread 80).
    assert feed(over, [(A, 0), (B, 20), (A, 100)]) == []
    assert over.dropped == drops(over, unmatched=2) and over.pending == [1, 0]


def test_queue_overflow_drops_the_oldest_and_the_dropped_input_is_not_a_pivot_at_once():
    # queue_size 2, B silent: A0, A10, A20 -> A0 dropped (overflow). B19: heads A10, B19 -> candidate, pivot B;
    # heads A20, B19: 1 < 9 -> better {A20, B19}, A10 dropped; B19 (pivot) is the start: published.
    sync = ApproximateTimeSync(2, queue_size=2)
    assert feed(sync, [(A, 0), (A, 10), (A, 20), (B, 19)]) == [((20, 19), 3)]
    assert sync.dropped == drops(sync, overflow=1, unmatched=1) and sync.dropped_per_input == [2, 0]


def test_an_input_with_overflow_drops_cannot_be_the_pivot():
    # queue_size 2, A silent: B0, B10, B20 -> B0 dropped (overflow, B marked). A5: heads A5, B10, end = B, which has
    # dropped messages (B0 could have matched A5 better) -> A5 dropped. A15: heads A15, B10, end = A (B unmarked):
    # candidate {A15, B10}, pivot A; heads A15, B20: (20 - 15) >= (15 - 10): not better, A15 (pivot) is the start.
    sync = ApproximateTimeSync(2, queue_size=2)
    assert feed(sync, [(B, 0), (B, 10), (B, 20), (A, 5), (A, 15)]) == [((15, 10), 4)]
    assert sync.dropped == drops(sync, overflow=1, unmatched=1) and sync.dropped_per_input == [1, 1]
    assert sync.pending == [0, 1]


def test_out_of_order_on_one_input_is_dropped_and_counted():
    # A5 after A10 on the same input: dropped (message_filters would only warn and lose its queue order).
    sync = ApproximateTimeSync(2, queue_size=5)
    assert feed(sync, [(A, 10), (A, 5), (B, 10), (A, 20), (B, 20), (A, 30)]) == [((10, 10), 2), ((20, 20), 4)]
    assert sync.dropped == drops(sync, out_of_order=1) and sync.dropped_per_input == [1, 0]


def test_a_missing_camera_frame_drops_the_lonely_cloud():
    # Lidar (A) at 0, 100, 200, 300; camera (B) misses 100: {A0, B0}, {A200, B200} at once (equal stamps);
    # A100 is dropped when the better {A200, B200} replaces the candidate {A100, B200}.
    sync = ApproximateTimeSync(2, queue_size=5, max_interval_ns=50 * MS)
    events = [(A, 0), (B, 0), (A, 100), (A, 200), (B, 200), (A, 300), (B, 300)]
    assert feed(sync, events) == [((0, 0), 1), ((200, 200), 4), ((300, 300), 6)]
    assert sync.dropped == drops(sync, unmatched=1) and sync.dropped_per_input == [1, 0]


def test_bad_arguments():
    with pytest.raises(ValueError):
        ApproximateTimeSync(1, queue_size=5)
    with pytest.raises(ValueError):
        ApproximateTimeSync(2, queue_size=0)
    with pytest.raises(ValueError):
        ApproximateTimeSync(2, queue_size=2, inter_message_lower_bounds_ns=[0])
    with pytest.raises(IndexError):
        ApproximateTimeSync(2, queue_size=2).add(2, 0, None)


def _best_span_reference(stamps: list[list[int]]) -> int:
    """Smallest spread of any set of one stamp per input (brute force)."""
    return min(max(c) - min(c) for c in itertools.product(*stamps))


@settings(max_examples=150, deadline=None)
@given(st.integers(2, 3), st.lists(st.tuples(st.integers(0, 2), st.integers(0, 60)), max_size=40),
       st.integers(1, 6), st.one_of(st.none(), st.integers(0, 30)))
def test_invariants(n, raw, queue_size, slop_ms):
    sync = ApproximateTimeSync(n, queue_size=queue_size, max_interval_ns=None if slop_ms is None else slop_ms * MS)
    # Per input, stamps mostly increase (a random walk); some steps go back to exercise out_of_order.
    last = [0] * n
    events = []
    for i, step in raw:
        i %= n
        last[i] += step - 5
        events.append((i, last[i]))
    got = feed(sync, events)
    used_per_input = [[s[0][i] for s in got] for i in range(n)]
    for seq in used_per_input:
        assert seq == sorted(seq)  # messages of one input are used in stamp order
    for stamps, _ in got:
        if slop_ms is not None:
            assert max(stamps) - min(stamps) <= slop_ms  # within the slop
    # Every message is in a set, still held, or counted as dropped exactly once.
    assert sync.received == len(events)
    assert sync.emitted * n + sum(sync.dropped.values()) + sum(sync.pending) == len(events)
    assert sum(sync.dropped_per_input) == sum(sync.dropped.values())


def test_first_set_has_the_minimal_spread_of_what_was_queued():
    # With a big queue, no slop and every message in order, the first published set is the best of all
    # combinations of the messages queued up to its pivot (checked against brute force on fixed sequences).
    a, b, c = [0, 7, 19, 31], [4, 15, 26], [9, 21, 33]
    sync = ApproximateTimeSync(3, queue_size=20)
    events = sorted([(A, t) for t in a] + [(B, t) for t in b] + [(C, t) for t in c], key=lambda e: e[1])
    got = feed(sync, events)
    first = got[0][0]
    # The first set contains the earliest pivot; the reference: the best set among sets whose newest stamp is
    # at most that set's newest stamp.
    cut = max(first)
    ref = _best_span_reference([[t for t in s if t <= cut] for s in (a, b, c)])
    assert max(first) - min(first) == ref
