"""Visitor unions are counted in round trips of bounded size (``KpiStore.visitor_counts``)."""

from __future__ import annotations

from streamproc.store import kpistore


def test_unions_are_cut_into_lists_of_bounded_minutes_in_order() -> None:
    keys = [
        ((1,), "a", None),
        ((1, 2, 3), "a", None),
        ((1, 2), "b", ""),
        (tuple(range(9)), "a", None),
        ((), "a", None),
    ]
    assert list(kpistore._by_minutes(keys, 4)) == [
        [((1,), "a", None), ((1, 2, 3), "a", None)],
        [((1, 2), "b", "")],
        [(tuple(range(9)), "a", None)],
        [((), "a", None)],
    ]
    assert list(kpistore._by_minutes([], 4)) == []
