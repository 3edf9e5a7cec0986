"""``aligned_report`` without Redis: everything for the replay and the backfill, and for a query
the same rows filtered, from fewer reads."""

from __future__ import annotations

from typing import Any

import pytest
from memstore import FakeStore

from streamproc.kpi.epoch import aligned_start, rfc3339, window_label
from streamproc.kpi.report import Row
from streamproc.kpi.selection import ReportQuery
from streamproc.reporting import aligned_report
from streamproc.times import rfc3339_ms

M = 60_000
H = 60 * M
T = 1_790_000_000_000 - 1_790_000_000_000 % 86_400_000  # midnight UTC
SIZES = (M, 15 * M, H)


def day_store() -> FakeStore:
    """Two stores over 01:40-02:10, partition 0 at 02:04 and partition 1 done; open tickets.
    Orders by email at 01:50 only: in the 01:00 hour, so its 15m window 01:30 reads 0 of them."""
    store = FakeStore([0.0])
    for k in range(30):
        minute = T + H + 40 * M + k * M
        email = {"orders|channel_group=email": 1} if k == 10 else {}
        store.put(minute, "s1", sessions=2, orders=k % 3, visitor_marks=1, **email)
        if k % 4 == 0:
            store.put(minute, "s2", sessions=1, revenue_minor=1250)
    store.reached(0, T + 2 * H + 4 * M)
    store.status[1] = {"watermark": 2**62, "max_ts": [T + 2 * H + 9 * M], "at": 0}
    store.tickets = {("s1", "chat", "high"): 2, ("s2", "email", "low"): 1}
    return store


async def report(store: FakeStore, **options: Any) -> list[Row]:
    return await aligned_report(store, sizes_ms=SIZES, reporting_currency="USD", **options)


async def test_everything_is_every_window_with_data_and_the_open_tickets() -> None:
    store = day_store()
    found = await report(store)
    windows = {(r["window"], r["start"], r["store_id"]) for r in found if r["window"] != "now"}
    expected = {
        (window_label(size), rfc3339(aligned_start(minute, size)), scope)
        for (minute, shop) in store.cells_
        for size in SIZES
        for scope in ("all", shop)
    }
    assert windows == expected
    tickets = [r["store_id"] for r in found if r["window"] == "now" and not r["dimension"]]
    assert tickets == ["all", "s1", "s2"]
    assert store.cells_read == [sorted(store.changed)] and store.tickets_read == 1
    # one read of visitor counts: of each union of minutes, with no dimension and with 14
    assert len(store.visitor_calls) == 1 and store.visitor_calls[0] % 15 == 0
    # closed: the windows ending by the lowest watermark, 02:04 less 2 minutes' lateness
    closed = {r["end"] for r in found if r["kpi"] == "sessions" and r["final"]}
    assert max(closed) == rfc3339(T + 2 * H + 2 * M)


async def test_some_sizes_report_as_they_do_with_all() -> None:
    """``largest_ms``: a window's rows do not depend on which others are reported with it."""
    everything = await report(day_store())
    some = await aligned_report(
        day_store(), sizes_ms=[15 * M], reporting_currency="USD", largest_ms=H
    )
    assert some == [r for r in everything if r["window"] in ("15m", "now")]


QUERIES = [
    ReportQuery(kpis=frozenset({"orders"})),
    ReportQuery(kpis=frozenset({"unique_visitors"}), dimensions=frozenset({None})),
    ReportQuery(stores=frozenset({"s1"})),  # the backfill's --store
    ReportQuery(windows=frozenset({"15m"}), stores=frozenset({"s2"})),
    ReportQuery(from_ms=T + 2 * H, to_ms=T + 2 * H + 5 * M, windows=frozenset({"1m", "now"})),
    ReportQuery(kpis=frozenset({"open_tickets"}), dimensions=frozenset({"priority=high"})),
]


@pytest.mark.parametrize("query", QUERIES)
async def test_a_query_is_everything_filtered(query: ReportQuery) -> None:
    everything = await report(day_store())

    def selected(row: Row) -> bool:
        start = rfc3339_ms(row["start"])
        if row["window"] == "now":
            return query.wants_open_tickets(start) and query.wants_row(row)
        size = rfc3339_ms(row["end"]) - start
        return query.wants_window(size, start, row["store_id"]) and query.wants_row(row)

    assert await report(day_store(), query=query) == [r for r in everything if selected(r)]


async def test_a_query_reads_only_what_it_needs() -> None:
    store = day_store()
    await report(store, query=ReportQuery(kpis=frozenset({"orders"}), windows=frozenset({"1m"})))
    assert store.visitor_calls == [0] and store.tickets_read == 0  # no visitor KPI, no tickets
    store = day_store()
    query = ReportQuery(from_ms=T + 2 * H, to_ms=T + 2 * H + M, windows=frozenset({"15m"}))
    await report(store, query=query)
    # the wanted 15m window 02:00-02:15 whole, and the hour holding it
    assert store.cells_read == [[m for m in sorted(store.changed) if m >= T + 2 * H]]
