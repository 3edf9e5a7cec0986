"""Zero is a value: counts and money read 0 where their store had data, other kinds stay absent."""

from __future__ import annotations

import json
from typing import Any

import pytest
from helpers import make_event
from reference.common import ReferenceSettings
from reference.kpis import reference_report
from reference.report import compare_reports, rfc3339
from test_engine import DECODER, SETTINGS

from streamproc.kpi import counters as c
from streamproc.kpi.aligned import group_windows, rows
from streamproc.kpi.report import KPIS, Row, window_rows
from streamproc.offline import OfflinePipeline

M, H = 60_000, 3_600_000
T = 1_790_000_000_000 - 1_790_000_000_000 % 86_400_000  # midnight UTC
ZERO = {
    "sessions", "unique_visitors", "page_views", "orders", "revenue", "net_revenue",
    "carts_created", "tickets_opened",
}  # fmt: skip


def rows_of(counters: c.Counters, **options: Any) -> dict[tuple[str, str | None], Row]:
    found = window_rows(
        window="1h", start="s", end="e", store="store-01", counters=counters,
        visitors=lambda dim: 0, money=100, closed=True, **options,
    )  # fmt: skip
    return {(row["kpi"], row["dimension"]): row for row in found}


@pytest.mark.parametrize("kpi", KPIS, ids=lambda kpi: kpi.name)
def test_a_window_with_data_but_nothing_counted(kpi: Any) -> None:
    """A cell that only saw an event: counts and money are 0, every other kind is absent."""
    found = rows_of({c.EVENT_MARKS: 1})
    if kpi.kind in ("count", "money"):
        assert kpi.name in ZERO
        row = found[(kpi.name, None)]
        assert (row["value"], row["numerator"], row["denominator"]) == (0.0, 0.0, None)
    else:
        assert (kpi.name, None) not in found  # nothing to divide by: no ratio, mean, percentile
    for dimension in kpi.dimensions:
        assert (kpi.name, dimension) not in found  # a breakdown never seen stays absent


def test_breakdowns_seen_in_the_largest_window_read_0() -> None:
    seen = {("orders", "channel_group=email"), ("conversion_rate", "channel_group=email")}
    found = rows_of({c.EVENT_MARKS: 1, c.SESSIONS: 2}, breakdowns=seen)
    assert found[("orders", "channel_group=email")]["value"] == 0.0
    assert ("orders", "channel_group=direct") not in found
    assert ("conversion_ratio", "channel_group=email") not in found  # a ratio: still absent
    assert found[("conversion_rate", None)]["value"] == 0.0  # 0 orders in 2 sessions


def test_aligned_windows_take_breakdowns_from_the_day_holding_them() -> None:
    cells = {
        (T + 10 * M, "s1"): {c.ORDERS: 1, c.dim(c.ORDERS, "channel_group=email"): 1},
        (T + 70 * M, "s1"): {c.VISITOR_MARKS: 1},  # the next hour: only a visitor seen
        (T + 24 * H + 5 * M, "s1"): {c.VISITOR_MARKS: 1},  # the next day
    }
    windows = group_windows(cells, [H, 24 * H])
    found = rows(windows, lambda key: 0, watermark=-1, money=100)
    orders = {
        (row["start"], row["window"], row["store_id"], row["dimension"]): row["value"]
        for row in found
        if row["kpi"] == "orders"
    }
    hour = rfc3339(T + H)
    assert orders[(hour, "1h", "s1", None)] == 0.0
    assert orders[(hour, "1h", "s1", "channel_group=email")] == 0.0
    assert orders[(hour, "1h", "all", "channel_group=email")] == 0.0
    next_day = rfc3339(T + 24 * H)
    assert orders[(next_day, "1h", "s1", None)] == 0.0
    assert (next_day, "1h", "s1", "channel_group=email") not in orders  # not seen that day
    assert (rfc3339(T + 2 * H), "1h", "s1", None) not in orders  # no data of s1 in that hour


def line(kind: str, minute: int, eid: str, **fields: Any) -> bytes:
    if kind.startswith(("order", "ticket", "message")):
        fields.setdefault("visitor_id", None)  # no visitor sighting to make the cell
    event = make_event(kind, event_id=eid, event_time=T + minute * M + 1000, **fields)
    return json.dumps(event).encode()


def test_events_that_count_nothing_still_make_their_stores_counts_0() -> None:
    """A session running on past the hour, a customer's message, a second cancellation."""
    lines = [  # in time order, as the reference reads them
        line("ticket_opened", 10, "c1", ticket_id="t-1", store_id="store-03"),
        line("session_start", 50, "a1", session_id="s-1"),
        line("page_view", 55, "a2", session_id="s-1"),
        line("order_placed", 58, "b1", session_id="s-1", order_id="o-1", store_id="store-02"),
        line("order_cancelled", 59, "b2", session_id="s-1", order_id="o-1", store_id="store-02"),
        line("page_view", 65, "a3", session_id="s-1"),  # 01:05: no session starts this hour
        line("order_cancelled", 125, "b3", session_id="s-1", order_id="o-1", store_id="store-02"),
        line("message_added", 190, "c2", ticket_id="t-1", store_id="store-03",
             author_type="customer"),
    ]  # fmt: skip
    sizes = (H, 24 * H)
    engine = OfflinePipeline(SETTINGS, decoder=DECODER, partitions=2).run(lines).report(sizes)
    reference = reference_report(lines, ReferenceSettings(window_sizes_s=(3600, 86400)))
    assert not compare_reports(engine, reference)
    values = {
        (row["kpi"], row["start"], row["store_id"]): row["value"]
        for row in engine
        if row["window"] == "1h" and row["dimension"] is None
    }
    assert values[("sessions", rfc3339(T + H), "store-01")] == 0.0
    assert values[("page_views", rfc3339(T + H), "store-01")] == 1.0
    assert values[("orders", rfc3339(T + 2 * H), "store-02")] == 0.0  # the second cancellation
    assert values[("net_revenue", rfc3339(T + 2 * H), "store-02")] == 0.0
    assert values[("tickets_opened", rfc3339(T + 3 * H), "store-03")] == 0.0  # the message
    assert values[("sessions", rfc3339(T + 3 * H), "all")] == 0.0
    assert ("conversion_rate", rfc3339(T + H), "store-01") not in values  # 0 sessions
    assert ("sessions", rfc3339(T + 3 * H), "store-01") not in values  # store-01 was quiet
