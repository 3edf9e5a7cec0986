"""Trailing windows: where they end, and sums kept by deltas equal sums made from scratch."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamproc.exporter.trailing import (
    Position,
    Trailing,
    lowest_watermark,
    reached,
    trailing_end,
)
from streamproc.kpi import counters as c
from streamproc.kpi.contrib import NEVER

M = 60_000
T = 1_790_000_040_000  # a minute start
LATENESS = 120_000


def pos(partition: int, *max_ts: int, watermark: int | None = None) -> Position:
    """A running partition: watermark = highest event time - lateness unless given."""
    if watermark is None:
        watermark = max(max_ts) - LATENESS if max(max_ts) >= 0 else -1
    return Position(partition, watermark, tuple(max_ts))


@pytest.mark.parametrize(
    ("positions", "latest_minute", "end"),
    [
        # the slowest partition decides; the minute holding its position is still filling
        ([pos(0, T + 5 * M + 30_000, T), pos(1, T + 4 * M + 10_000)], None, T + 4 * M),
        # the busiest topic of a partition counts, not its slowest
        ([pos(0, T + 2 * M, T - 9 * M, -1, T + 3 * M + 1)], None, T + 3 * M),
        # an event exactly at a minute start opens that minute
        ([pos(0, T + 5 * M)], None, T + 5 * M),
        # an idle partition: its watermark moved on with the wall clock, past its events
        ([pos(0, T, watermark=T + 8 * M), pos(1, T + 9 * M + 1)], None, T + 9 * M),
        # a partition that has read nothing yet holds nothing back
        ([pos(0, -1, -1, watermark=-1), pos(1, T + 3 * M)], T + 3 * M, T + 3 * M),
        # ended partitions hold nothing back...
        ([pos(0, T + M, watermark=NEVER), pos(1, T + 2 * M + 5)], T + 9 * M, T + 2 * M),
        # ...and when all have ended every published minute is in
        ([pos(0, T + M, watermark=NEVER), pos(1, T, watermark=NEVER)], T + 9 * M, T + 10 * M),
        # no status yet: the minute after the latest published one
        ([], T + 2 * M, T + 3 * M),
        ([], None, None),
    ],
)
def test_trailing_end(positions: list[Position], latest_minute: int | None, end: int) -> None:
    assert trailing_end(positions, allowed_lateness_ms=LATENESS, latest_minute=latest_minute) == end


def test_reached_and_lowest_watermark() -> None:
    assert reached(pos(0, T + 5), allowed_lateness_ms=LATENESS) == T + 5
    assert reached(pos(0, T, watermark=NEVER), allowed_lateness_ms=LATENESS) is None
    assert reached(pos(0, -1, watermark=-1), allowed_lateness_ms=LATENESS) is None
    assert lowest_watermark([pos(0, T + M), pos(1, T + 3 * M)]) == T + M - LATENESS
    assert lowest_watermark([pos(0, T, watermark=NEVER), pos(1, T + M)]) == T + M - LATENESS
    assert lowest_watermark([pos(0, T, watermark=NEVER)]) is None
    assert lowest_watermark([pos(0, -1, watermark=-1), pos(1, T + M)]) is None
    assert lowest_watermark([]) is None


def test_position_from_a_published_status() -> None:
    status = {"watermark": T, "max_ts": [T + 1, -1, T + 2, -1], "at": 7}
    assert Position.of(3, status) == Position(3, T, (T + 1, -1, T + 2, -1), 7)
    assert Position.of(3, status).latest_ms == T + 2


def brute(cells: dict[int, dict[str, c.Counters]], end: int, size: int) -> dict[str, c.Counters]:
    sums: dict[str, c.Counters] = {}
    for minute, stores in cells.items():
        if end - size <= minute < end:
            for store, counters in stores.items():
                for scope in (store, "all"):
                    into = sums.setdefault(scope, {})
                    for name, value in counters.items():
                        into[name] = into.get(name, 0) + value
    return {s: {k: v for k, v in cs.items() if v} for s, cs in sums.items() if any(cs.values())}


def test_windows_hold_the_minutes_of_their_span() -> None:
    trailing = Trailing([5 * M, M])
    cells = {
        T: {"s1": {"orders": 1}},
        T + 3 * M: {"s1": {"orders": 2}, "s2": {"sessions": 4}},
        T + 4 * M: {"s2": {"sessions": 1}},
        T + 5 * M: {"s1": {"orders": 9}},  # in progress: not in any window
    }
    trailing.reset(T + 5 * M, cells)
    found = [(w.size_ms, w.start_ms, w.store, w.counters, w.minutes) for w in trailing.windows()]
    assert found == [
        (M, T + 4 * M, "all", {"sessions": 1}, (T + 4 * M,)),
        (M, T + 4 * M, "s1", {}, ()),  # in the largest window: its counts read 0
        (M, T + 4 * M, "s2", {"sessions": 1}, (T + 4 * M,)),
        (5 * M, T, "all", {"orders": 3, "sessions": 5}, (T, T + 3 * M, T + 4 * M)),
        (5 * M, T, "s1", {"orders": 3}, (T, T + 3 * M)),
        (5 * M, T, "s2", {"sessions": 5}, (T + 3 * M, T + 4 * M)),
    ]


def test_update_reports_only_real_changes_and_move_evicts() -> None:
    trailing = Trailing([2 * M])
    trailing.reset(T + 2 * M, {T: {"s1": {"orders": 1}}, T + M: {"s1": {"orders": 2}}})
    assert trailing.update({T: {"s1": {"orders": 1}}, T + M: {"s1": {"orders": 5}}}) == {T + M}
    assert trailing.sums[2 * M]["all"] == {"orders": 6}
    assert trailing.update({T + M: {}}) == {T + M}  # the minute lost its data
    assert trailing.sums[2 * M]["all"] == {"orders": 1}
    trailing.move(T + 4 * M)
    assert trailing.cells == {} and trailing.sums[2 * M] == {}
    assert trailing.needs_reload(T + 3 * M) and not trailing.needs_reload(T + 4 * M)
    with pytest.raises(ValueError, match="forward"):
        trailing.move(T + 3 * M)


cell_values = st.dictionaries(
    st.sampled_from(["s1", "s2", "s3"]),
    st.dictionaries(st.sampled_from(["orders", "sessions", "revenue_minor"]), st.integers(0, 9)),
    max_size=3,
)
steps = st.lists(
    st.one_of(
        st.tuples(st.just("update"), st.dictionaries(st.integers(0, 40), cell_values, max_size=5)),
        st.tuples(st.just("move"), st.integers(0, 12)),
    ),
    max_size=25,
)


@settings(max_examples=150, deadline=None)
@given(first=st.dictionaries(st.integers(0, 40), cell_values, max_size=10), steps=steps)
def test_delta_sums_equal_sums_from_scratch(
    first: dict[int, dict[str, c.Counters]], steps: list[tuple[str, object]]
) -> None:
    sizes = (M, 5 * M, 15 * M)
    trailing = Trailing(sizes)
    truth = {T + k * M: v for k, v in first.items()}  # every minute Redis holds
    end = T + 20 * M
    trailing.reset(end, truth)
    for kind, arg in steps:
        if kind == "update":
            assert isinstance(arg, dict)
            changed = {T + k * M: v for k, v in arg.items()}
            truth.update(changed)
            trailing.update(changed)
        else:
            assert isinstance(arg, int)
            end += arg * M
            trailing.move(end)
        for size in sizes:
            assert trailing.sums[size] == brute(truth, end, size)
    starts = {w.size_ms: w.start_ms for w in trailing.windows()}
    assert all(start == end - size for size, start in starts.items())
