"""/api/kpis parameters: what they select, and clear errors for what they cannot."""

from __future__ import annotations

from typing import Any

import pytest

from streamproc.errors import BadQuery
from streamproc.exporter.query import parse_query
from streamproc.kpi.selection import ReportQuery, report_minutes

LABELS = ("1m", "5m", "15m", "1h", "1d")
M = 60_000
H = 3_600_000
T = 1_790_000_000_000 - 1_790_000_000_000 % 86_400_000  # midnight UTC


def parse(*params: tuple[str, str]) -> ReportQuery:
    return parse_query(params, window_labels=LABELS)


def test_no_parameters_select_everything() -> None:
    query = parse()
    assert query == ReportQuery()
    assert query.needs_visitors
    assert query.wants_window(H, T, "store-01") and query.wants_open_tickets(T)


def test_parameters_repeat_and_normalise() -> None:
    query = parse(
        ("kpi", "orders"), ("kpi", "open_tickets"), ("window", "60m"), ("window", "now"),
        ("store_id", "all"), ("dimension", "none"), ("dimension", "channel=chat"),
        ("from", "2026-11-02T10:00:00Z"), ("to", "2026-11-02T12:30:00+01:00"),
    )  # fmt: skip
    assert query.kpis == {"orders", "open_tickets"}
    assert query.windows == {"1h", "now"}
    assert query.stores == {"all"}
    assert query.dimensions == {None, "channel=chat"}
    assert query.from_ms == 1_793_613_600_000
    assert query.to_ms == query.from_ms + H + 30 * M
    assert not query.needs_visitors


def row(**fields: Any) -> dict[str, Any]:
    return {"kpi": "orders", "store_id": "all", "dimension": None, **fields}


def test_row_filters() -> None:
    query = parse(("kpi", "orders"), ("store_id", "s1"), ("dimension", "device_type=mobile"))
    assert query.wants_row(row(store_id="s1", dimension="device_type=mobile"))
    assert not query.wants_row(row(store_id="s1"))
    assert not query.wants_row(row(store_id="s2", dimension="device_type=mobile"))
    assert not query.wants_row(row(kpi="sessions", store_id="s1", dimension="device_type=mobile"))


@pytest.mark.parametrize(
    ("start", "size", "wanted"),
    [
        (T + 9 * H, H, False),  # ends where the range starts
        (T + 9 * H, 2 * H, True),  # reaches into it
        (T + 11 * H, H, False),  # starts where it ends
        (T + 10 * H + 59 * M, M, True),
        (T, 86_400_000, True),  # the day holding it
    ],
)
def test_windows_overlapping_the_range(start: int, size: int, wanted: bool) -> None:
    query = ReportQuery(from_ms=T + 10 * H, to_ms=T + 11 * H)
    assert query.wants_window(size, start, "all") is wanted


def test_open_tickets_are_an_instant() -> None:
    query = ReportQuery(from_ms=T, to_ms=T + H)
    assert query.wants_open_tickets(T) and not query.wants_open_tickets(T + H)
    assert not ReportQuery(windows=frozenset({"1h"})).wants_open_tickets(T)
    assert not ReportQuery(kpis=frozenset({"orders"})).wants_open_tickets(T)


def test_report_minutes_cover_whole_windows_and_the_largest_holding_them() -> None:
    minutes = [T + k * 15 * M for k in range(8)]  # 00:00 .. 01:45, every 15 min
    query = ReportQuery(from_ms=T + 40 * M, to_ms=T + 50 * M, windows=frozenset({"15m", "1h"}))
    chosen = report_minutes(minutes, sizes_ms=(15 * M, H, 2 * H), query=query)
    assert chosen == minutes  # the wanted hour 00:00-01:00 and the 2h window holding it
    chosen = report_minutes(minutes, sizes_ms=(15 * M, H), query=query)
    assert chosen == [T + k * 15 * M for k in range(4)]  # the whole hour 00:00-01:00
    query = ReportQuery(from_ms=T + 40 * M, to_ms=T + 50 * M, windows=frozenset({"15m"}))
    assert report_minutes(minutes, sizes_ms=(15 * M,), query=query) == [T + 30 * M, T + 45 * M]
    # a 45m window straddles the hours: whole, and the hour holding its start
    query = ReportQuery(from_ms=T + 50 * M, to_ms=T + 55 * M, windows=frozenset({"45m"}))
    chosen = report_minutes(minutes, sizes_ms=(45 * M, H), query=query)
    assert chosen == [T + k * 15 * M for k in range(6)]  # 00:45-01:30, and 00:00-01:00


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ([("kpis", "orders")], "unknown parameter 'kpis'; expected kpi, window"),
        ([("kpi", "conversion")], "kpi: unknown value 'conversion'; one of sessions,"),
        ([("kpi", "")], "kpi: empty value"),
        ([("window", "2h")], "window: '2h' is not reported; one of 1m, 5m, 15m, 1h, 1d, now"),
        ([("window", "hourly")], "window: 'hourly' is not reported"),
        ([("dimension", "channel_group=tv")], "dimension: unknown value 'channel_group=tv'"),
        ([("dimension", "null")], "dimension: unknown value 'null'; one of none,"),
        ([("from", "yesterday")], "from: not an RFC 3339 time"),
        ([("from", "2026-11-02T10:00:00")], "from: needs a date, a time and an offset"),
        ([("to", "2026-11-02")], "to: needs a date, a time and an offset"),
        ([("from", "2026-11-02T10:00:00Z"), ("from", "2026-11-02T11:00:00Z")],
         "from: given more than once"),
        ([("from", "2026-11-02T10:00:00Z"), ("to", "2026-11-02T10:00:00Z")],
         "from: must be before to"),
        ([("store_id", "x" * 65)], "store_id: longer than 64 characters"),
    ],
)  # fmt: skip
def test_bad_parameters_say_which_and_why(params: list[tuple[str, str]], message: str) -> None:
    with pytest.raises(BadQuery) as caught:
        parse(*params)
    assert str(caught.value).startswith(message)
