"""stamp_sync.StampSync on hand-made stamp sequences, plus invariants over random ones."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from awml_deploy_nodes.stamp_sync import DROP_REASONS, StampSync, stamp_to_ns

MS = 1_000_000
PERIOD = 100 * MS  # 10 Hz cameras


def feed(sync: StampSync, events: list[tuple[int, int]]) -> list[tuple[int, ...]]:
    """Add (index, stamp) events with item = (index, stamp); returns the completed sets' stamps in order."""
    out = []
    for index, stamp in events:
        for s in sync.add(index, stamp, (index, stamp)):
            assert s.items == tuple((i, t) for i, t in enumerate(s.stamps_ns))  # items travel with their stamps
            out.append(s.stamps_ns)
    return out


def test_in_order_exact_stamps():
    sync = StampSync(3, window_ns=5 * MS)
    events = [(i, k * PERIOD) for k in range(4) for i in range(3)]
    assert feed(sync, events) == [(k * PERIOD,) * 3 for k in range(4)]
    assert sync.emitted == 4 and sync.dropped == dict.fromkeys(DROP_REASONS, 0) and sync.pending == [0, 0, 0]


def test_set_completes_on_the_last_arrival_only():
    sync = StampSync(3, window_ns=5 * MS)
    assert sync.add(0, 0, "a") == [] and sync.add(2, 1 * MS, "c") == []
    [s] = sync.add(1, 2 * MS, "b")
    assert s.items == ("a", "b", "c") and s.stamps_ns == (0, 2 * MS, 1 * MS) and s.spread_ns == 2 * MS


def test_out_of_order_across_inputs_with_jitter():
    # Camera 1 lags by more than a frame: its frame k arrives after cameras 0 and 2 sent frame k + 1.
    sync = StampSync(3, window_ns=10 * MS)
    # Camera 0 on time, camera 1 stamped 3 ms late, camera 2 4 ms early. Arrival order:
    # 0@0, 2@-4, 0@100, 2@96, 1@3, 0@200, 2@196, 1@103, ...
    events = [(0, 0), (2, -4 * MS)]
    for k in range(1, 5):
        events += [(0, k * PERIOD), (2, k * PERIOD - 4 * MS), (1, (k - 1) * PERIOD + 3 * MS)]
    got = feed(sync, events)
    assert got == [((k * PERIOD), k * PERIOD + 3 * MS, k * PERIOD - 4 * MS) for k in range(4)]
    assert sum(sync.dropped.values()) == 0 and sync.pending == [1, 0, 1]  # frame 4 of cameras 0 and 2 waits


def test_one_camera_misses_one_frame():
    sync = StampSync(2, window_ns=5 * MS)
    events = [(0, 0), (1, 0), (0, PERIOD), (0, 2 * PERIOD), (1, 2 * PERIOD), (0, 3 * PERIOD), (1, 3 * PERIOD)]
    assert feed(sync, events) == [(0, 0), (2 * PERIOD, 2 * PERIOD), (3 * PERIOD, 3 * PERIOD)]
    # Camera 0's frame at 100 ms can never be matched once camera 1 delivered 200 ms.
    assert sync.dropped == {"late": 0, "unmatched": 1, "overflow": 0} and sync.dropped_per_input == [1, 0]


def test_unmatched_is_dropped_as_soon_as_it_is_certain():
    sync = StampSync(2, window_ns=5 * MS)
    feed(sync, [(0, 0), (0, PERIOD)])
    assert sync.pending == [2, 0] and sync.dropped["unmatched"] == 0  # camera 1 may still send 0 ms
    assert feed(sync, [(1, PERIOD)]) == [(PERIOD, PERIOD)]  # now 0 ms of camera 0 is dead, 100 ms matches
    assert sync.dropped["unmatched"] == 1 and sync.pending == [0, 0]


def test_one_camera_missing_entirely_bounds_the_queues():
    sync = StampSync(3, window_ns=5 * MS, max_queue=4)
    events = [(i, k * PERIOD) for k in range(10) for i in (0, 1)]
    assert feed(sync, events) == []
    assert sync.pending == [4, 4, 0]
    # Camera 0's queue overflows first (its item arrives first); that makes camera 1's partner-less head unmatched.
    assert sync.dropped == {"late": 0, "unmatched": 6, "overflow": 6} and sync.dropped_per_input == [6, 6, 0]
    # The silent camera comes back at frame 9: the queued older frames (6..8) die, frame 9 matches.
    assert feed(sync, [(2, 9 * PERIOD)]) == [(9 * PERIOD,) * 3]
    assert sync.dropped["unmatched"] == 12 and sync.pending == [0, 0, 0]


@pytest.mark.parametrize("window", [0, 7 * MS])
def test_window_edge_is_inclusive(window):
    sync = StampSync(2, window_ns=window)
    assert feed(sync, [(0, 1000), (1, 1000 + window)]) == [(1000, 1000 + window)]
    sync = StampSync(2, window_ns=window)
    assert feed(sync, [(0, 1000), (1, 1000 + window + 1)]) == []
    assert sync.dropped["unmatched"] == 1 and sync.pending == [0, 1]  # camera 0's item died, camera 1's waits
    sync = StampSync(2, window_ns=window)
    assert feed(sync, [(1, 1000 + window + 1), (0, 1000)]) == []  # same the other way round
    assert sync.dropped["unmatched"] == 1 and sync.pending == [0, 1]


def test_late_item_of_one_input_is_dropped():
    sync = StampSync(2, window_ns=5 * MS)
    feed(sync, [(0, PERIOD), (0, 50 * MS)])
    assert sync.dropped["late"] == 1 and sync.pending == [1, 0]
    assert feed(sync, [(1, PERIOD)]) == [(PERIOD, PERIOD)]
    assert feed(sync, [(1, PERIOD)]) == []  # an equal stamp is not late: it waits for camera 0's next item
    assert sync.pending == [0, 1] and sync.dropped["late"] == 1


def test_single_input_passes_through():
    sync = StampSync(1, window_ns=0)
    assert feed(sync, [(0, 5), (0, 7)]) == [(5,), (7,)]


def test_bad_arguments():
    for args in [(0, 1, 1), (2, -1, 1), (2, 1, 0)]:
        with pytest.raises(ValueError, match="StampSync"):
            StampSync(*args)
    with pytest.raises(IndexError, match="0..1"):
        StampSync(2, 1).add(2, 0, None)


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 4), st.integers(0, 30), st.integers(1, 6),
       st.lists(st.tuples(st.integers(0, 3), st.integers(0, 200)), max_size=80))
def test_invariants(num_inputs, window, max_queue, events):
    sync = StampSync(num_inputs, window, max_queue)
    added = 0
    last_emitted = [-1] * num_inputs
    for index, stamp in events:
        index %= num_inputs
        added += 1
        for s in sync.add(index, stamp, (index, stamp)):
            assert len(s.items) == num_inputs and s.spread_ns <= window
            assert s.items == tuple(enumerate(s.stamps_ns))
            for i, t in enumerate(s.stamps_ns):
                assert t >= last_emitted[i]  # per input, sets come out in stamp order
                last_emitted[i] = t
        assert all(n <= max_queue for n in sync.pending)
    # Every item is accounted for exactly once.
    assert added == sync.emitted * num_inputs + sum(sync.dropped.values()) + sum(sync.pending)
    assert sum(sync.dropped_per_input) == sum(sync.dropped.values())


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 4), st.lists(st.integers(1, 50), min_size=1, max_size=15), st.data())
def test_matchable_streams_lose_nothing_in_any_interleaving(num_inputs, gaps, data):
    """Every input sends the same frames (stamps jittered by <= window / 2, frames > 2 windows apart), each input
    in order, the inputs interleaved at random: every frame comes out as one set, nothing is dropped."""
    window = 10
    frames = [sum(gaps[: k + 1]) * (2 * window + 1) for k in range(len(gaps))]
    streams = [[(i, t + data.draw(st.integers(-window // 2, window // 2))) for t in frames] for i in range(num_inputs)]
    order = data.draw(st.permutations([i for i in range(num_inputs) for _ in frames]))
    sync = StampSync(num_inputs, window, max_queue=len(frames))
    got = feed(sync, [streams[i].pop(0) for i in order])
    assert len(got) == len(frames) and sum(sync.dropped.values()) == 0 and sync.pending == [0] * num_inputs
    for stamps, t in zip(got, frames):
        assert all(abs(s - t) <= window // 2 for s in stamps)


def test_stamp_to_ns():
    from builtin_interfaces.msg import Time

    assert stamp_to_ns(Time(sec=1_700_000_000, nanosec=999_999_999)) == 1_700_000_000_999_999_999
    assert stamp_to_ns(Time(sec=-1, nanosec=500_000_000)) == -500_000_000
