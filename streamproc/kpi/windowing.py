"""Window reports: per-minute cells summed into aligned windows, for every store and in total."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from streamproc.kpi import counters as c
from streamproc.kpi.contrib import NEVER
from streamproc.kpi.report import Row, open_ticket_rows, window_rows
from streamproc.kpi.windows import aligned_start, rfc3339, window_label

# (minutes of the window, store or "all", dimension or None) -> distinct visitors
VisitorCount = Callable[[list[int], str, str | None], int]


def merge_partitions(
    parts: Iterable[Mapping[c.CellKey, c.Counters]],
) -> dict[c.CellKey, c.Counters]:
    """Sum the cells of several partitions."""
    total: dict[c.CellKey, c.Counters] = {}
    for part in parts:
        c.add_cells(total, part)
    return total


def aligned_report(
    cells: Mapping[c.CellKey, c.Counters],
    *,
    sizes_ms: Iterable[int],
    visitors: VisitorCount,
    watermark: int,
    money: int,
    open_tickets: Mapping[tuple[str, str, str], int] | None = None,
    now_ms: int | None = None,
) -> list[Row]:
    """Rows of every aligned window of every size that has data, for "all" and each store."""
    rows: list[Row] = []
    for size in sorted(sizes_ms):
        windows: dict[tuple[int, str], c.Counters] = {}
        minutes: dict[int, set[int]] = {}
        for (minute, store), counters in cells.items():
            start = aligned_start(minute, size)
            c.add_cells(windows, {(start, store): counters, (start, "all"): counters})
            minutes.setdefault(start, set()).add(minute)
        label = window_label(size)
        for start, store in sorted(windows, key=lambda k: (k[0], k[1] != "all", k[1])):
            span = sorted(minutes[start])

            def count(dim: str | None, span: list[int] = span, store: str = store) -> int:
                return visitors(span, store, dim)

            rows += window_rows(
                window=label,
                start=rfc3339(start),
                end=rfc3339(start + size),
                store=store,
                counters=windows[(start, store)],
                visitors=count,
                money=money,
                closed=watermark >= start + size,
            )
    if open_tickets:
        at = rfc3339(now_ms if now_ms is not None else watermark)
        rows += open_ticket_rows(open_tickets, at=at, final=watermark >= NEVER)
    return rows
