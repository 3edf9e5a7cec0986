"""KPI reports from what the workers published in Redis (replay, backfill, the exporter)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from streamproc.events.parse import minor_unit_exponent
from streamproc.kpi.aligned import group_windows, rows, ticket_rows
from streamproc.kpi.contrib import NEVER
from streamproc.kpi.report import Row
from streamproc.store import KpiStore


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
    store: KpiStore,
    *,
    sizes_ms: Iterable[int],
    reporting_currency: str,
    minutes: Iterable[int] | None = None,
    largest_ms: int = 0,
) -> list[Row]:
    """Rows of every aligned window with data (or of the given minutes' windows).

    ``largest_ms``: the largest window of the settings, when ``sizes_ms`` are only some of
    them; its breakdown rows decide which breakdowns of a smaller window read 0, so a window's
    rows do not depend on which others are reported with it."""
    sizes = sorted(set(sizes_ms))
    chosen = list(minutes) if minutes is not None else await store.minutes()
    cells = await store.cells(chosen)
    windows = group_windows(cells, {*sizes, max(largest_ms, sizes[-1])})
    keys = {key for window in windows for key in window.visitor_keys()}
    counts = await store.visitor_counts(keys)
    mark = marks(await store.statuses())
    money = 10 ** minor_unit_exponent(reporting_currency)
    found = rows(
        windows,
        lambda key: counts.get(key, 0),
        watermark=mark.watermark,
        money=money,
        only=lambda window: window.size_ms in sizes,
    )
    tickets = await store.open_tickets()
    return found + ticket_rows(tickets, at_ms=mark.at_ms, watermark=mark.watermark)
