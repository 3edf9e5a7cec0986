"""Window reports: per-minute cells summed into aligned windows, for every store and in total.

Building a report is two steps so that visitor counts can come from an asynchronous source
(Redis sketches): ``group_windows`` says which (minutes, store, dimension) counts are needed,
``rows`` turns the windows and those counts into report rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from streamproc.kpi import counters as c
from streamproc.kpi.contrib import NEVER
from streamproc.kpi.report import CH_DEV, Row, open_ticket_rows, window_rows
from streamproc.kpi.windows import aligned_start, rfc3339, window_label

VisitorKey = tuple[tuple[int, ...], str, str | None]  # (minutes, store or "all", dimension)


@dataclass(frozen=True)
class Window:
    size_ms: int
    start_ms: int
    store: str  # a store label or "all"
    counters: c.Counters
    minutes: tuple[int, ...]  # the minutes with data

    def visitor_keys(self) -> list[VisitorKey]:
        return [(self.minutes, self.store, dim) for dim in (None, *CH_DEV)]


def group_windows(cells: Mapping[c.CellKey, c.Counters], sizes_ms: Iterable[int]) -> list[Window]:
    """Every aligned window of every size that has data, for "all" and each store."""
    windows: list[Window] = []
    for size in sorted(sizes_ms):
        sums: dict[tuple[int, str], c.Counters] = {}
        minutes: dict[int, set[int]] = {}
        for (minute, store), counters in cells.items():
            start = aligned_start(minute, size)
            c.add_cells(sums, {(start, store): counters, (start, "all"): counters})
            minutes.setdefault(start, set()).add(minute)
        for start, store in sorted(sums, key=lambda k: (k[0], k[1] != "all", k[1])):
            span = tuple(sorted(minutes[start]))
            windows.append(Window(size, start, store, sums[(start, store)], span))
    return windows


def rows(
    windows: Iterable[Window],
    visitors: Callable[[VisitorKey], int],
    *,
    watermark: int,
    money: int,
) -> list[Row]:
    out: list[Row] = []
    for window in windows:
        end = window.start_ms + window.size_ms

        def count(dim: str | None, window: Window = window) -> int:
            return visitors((window.minutes, window.store, dim))

        out += window_rows(
            window=window_label(window.size_ms),
            start=rfc3339(window.start_ms),
            end=rfc3339(end),
            store=window.store,
            counters=window.counters,
            visitors=count,
            money=money,
            closed=watermark >= end,
        )
    return out


def ticket_rows(
    open_tickets: Mapping[tuple[str, str, str], int], *, at_ms: int, watermark: int
) -> list[Row]:
    if not open_tickets:
        return []
    return open_ticket_rows(open_tickets, at=rfc3339(at_ms), final=watermark >= NEVER)
