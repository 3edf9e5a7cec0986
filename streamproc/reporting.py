"""KPI reports from what the workers published in Redis: ``aligned_report`` makes the replay's
and the backfill's (of everything) and the exporter's ``/api/kpis`` (of what its query selects).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

from streamproc.events.parse import minor_unit_exponent
from streamproc.kpi import counters as c
from streamproc.kpi.aligned import VisitorKey, Window, group_windows, rows, ticket_rows
from streamproc.kpi.contrib import NEVER
from streamproc.kpi.report import Row
from streamproc.kpi.selection import ReportQuery, report_minutes
from streamproc.store import ReportStore

EVERYTHING = ReportQuery()


class Marks(NamedTuple):
    """Where a report stands, from one read of the partitions' statuses."""

    watermark: int  # the lowest over the partitions that reported one; -1: none; NEVER: all done
    at_ms: int  # when open tickets are counted: the latest event time once all are done


def marks(statuses: Mapping[Any, Mapping[str, Any]]) -> Marks:
    """The ``Marks`` of ``store.statuses()``: the replay's, the backfill's and the exporter's."""
    found = [int(s["watermark"]) for s in statuses.values()]
    mark = min(found) if found else -1
    latest = max((max(s["max_ts"]) for s in statuses.values()), default=0)
    return Marks(mark, latest if mark >= NEVER else max(mark, 0))


async def aligned_report(
    store: ReportStore,
    *,
    sizes_ms: Iterable[int],
    reporting_currency: str,
    largest_ms: int = 0,
    query: ReportQuery = EVERYTHING,
) -> list[Row]:
    """Rows of the aligned windows with data, and of the open tickets, that ``query`` selects.

    ``largest_ms``: the settings' largest window, when ``sizes_ms`` are only some: its breakdown
    rows decide which breakdowns of a smaller window read 0 (rows do not depend on which other
    windows are reported). Grouping and rows run in a thread: a day of data takes seconds of
    CPU, and the exporter serves scrapes meanwhile."""
    sizes = sorted(set(sizes_ms))
    largest = max(largest_ms, sizes[-1])
    # Statuses before cells: a window is not called closed (final) before its cells are read.
    statuses = await store.statuses()
    minutes = report_minutes(await store.minutes(), sizes_ms=sizes, query=query, largest_ms=largest)
    cells = await store.cells(minutes)

    def wanted(w: Window) -> bool:
        return w.size_ms in sizes and query.wants_window(w.size_ms, w.start_ms, w.store)

    windows = await asyncio.to_thread(_wanted_windows, cells, {*sizes, largest}, wanted)
    keys = _visitor_keys(windows, query)
    counts = await store.visitor_counts(keys)
    mark = marks(statuses)
    report = await asyncio.to_thread(
        rows,
        windows,
        lambda key: counts.get(key, 0),
        watermark=mark.watermark,
        money=10 ** minor_unit_exponent(reporting_currency),
        only=wanted,
    )
    if query.wants_open_tickets(mark.at_ms):
        tickets = await store.open_tickets()
        report += ticket_rows(tickets, at_ms=mark.at_ms, watermark=mark.watermark)
    return [row for row in report if query.wants_row(row)]


def _wanted_windows(
    cells: Mapping[c.CellKey, c.Counters], sizes_ms: Iterable[int], wanted: Callable[[Window], bool]
) -> list[Window]:
    """The wanted windows, and the largest windows holding them (``aligned.rows``)."""
    found = group_windows(cells, sizes_ms)
    chosen = [wanted(window) for window in found]
    outer = {(w.outer, w.store) for w, yes in zip(found, chosen, strict=True) if yes}
    return [
        w
        for w, yes in zip(found, chosen, strict=True)
        if yes or (w.largest and (w.outer, w.store) in outer)
    ]


def _visitor_keys(windows: Iterable[Window], query: ReportQuery) -> set[VisitorKey]:
    """The visitor counts the rows need: of the dimensions wanted, if any visitor KPI is."""
    if not query.needs_visitors:
        return set()
    dims = query.dimensions
    return {key for w in windows for key in w.visitor_keys() if dims is None or key[2] in dims}
