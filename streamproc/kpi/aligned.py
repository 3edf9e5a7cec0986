"""Window reports: per-minute cells summed into aligned windows, for every store and in total.

Building a report is two steps so that visitor counts can come from an asynchronous source
(Redis sketches): ``group_windows`` says which (minutes, store, dimension) counts are needed,
``rows`` turns the windows and those counts into report rows.

Each window knows the largest window holding it (``outer``): its breakdown rows of counts and
money read 0 where that one has a row for the breakdown (``kpi/report.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from streamproc.kpi import counters as c
from streamproc.kpi.contrib import NEVER
from streamproc.kpi.epoch import aligned_start, rfc3339, window_label
from streamproc.kpi.report import CH_DEV, Row, open_ticket_rows, window_rows

VisitorKey = tuple[tuple[int, ...], str, str | None]  # (minutes, store or "all", dimension)


@dataclass(frozen=True)
class Window:
    size_ms: int
    start_ms: int
    store: str  # a store label or "all"
    counters: c.Counters
    minutes: tuple[int, ...]  # the minutes with data
    outer: tuple[int, int]  # (start, size) in ms of the largest window holding this one

    @property
    def largest(self) -> bool:
        return self.outer == (self.start_ms, self.size_ms)

    def visitor_keys(self) -> list[VisitorKey]:
        return [(self.minutes, self.store, dim) for dim in (None, *CH_DEV)]


def group_windows(cells: Mapping[c.CellKey, c.Counters], sizes_ms: Iterable[int]) -> list[Window]:
    """Every aligned window of every size that has data, for "all" and each store."""
    windows: list[Window] = []
    sizes = sorted(sizes_ms)
    for size in sizes:
        sums: dict[tuple[int, str], c.Counters] = {}
        minutes: dict[int, set[int]] = {}
        for (minute, store), counters in cells.items():
            start = aligned_start(minute, size)
            c.add_cells(sums, {(start, store): counters, (start, "all"): counters})
            minutes.setdefault(start, set()).add(minute)
        for start, store in sorted(sums, key=lambda k: (k[0], k[1] != "all", k[1])):
            span = tuple(sorted(minutes[start]))
            outer = (aligned_start(start, sizes[-1]), sizes[-1])
            windows.append(Window(size, start, store, sums[(start, store)], span, outer))
    return windows


def rows(
    windows: Iterable[Window],
    visitors: Callable[[VisitorKey], int],
    *,
    watermark: int,
    money: int,
    only: Callable[[Window], bool] | None = None,
) -> list[Row]:
    """The rows of the windows, in their order; ``only``: of the windows it accepts (the others
    are there as the largest windows of those)."""
    chosen = list(windows)
    largest = {
        (w.outer, w.store): _rows(w, visitors, watermark, money) for w in chosen if w.largest
    }
    appeared = {
        key: frozenset((row["kpi"], row["dimension"]) for row in found if row["dimension"])
        for key, found in largest.items()
    }
    out: list[Row] = []
    for window in chosen:
        if only is not None and not only(window):
            continue
        if window.largest:
            out += largest[(window.outer, window.store)]
        else:
            seen = appeared.get((window.outer, window.store), frozenset())
            out += _rows(window, visitors, watermark, money, seen)
    return out


def _rows(
    window: Window,
    visitors: Callable[[VisitorKey], int],
    watermark: int,
    money: int,
    breakdowns: frozenset[tuple[str, str]] = frozenset(),
) -> list[Row]:
    end = window.start_ms + window.size_ms

    def count(dim: str | None) -> int:
        return visitors((window.minutes, window.store, dim))

    return window_rows(
        window=window_label(window.size_ms),
        start=rfc3339(window.start_ms),
        end=rfc3339(end),
        store=window.store,
        counters=window.counters,
        visitors=count,
        money=money,
        closed=watermark >= end,
        breakdowns=breakdowns,
    )


def ticket_rows(
    open_tickets: Mapping[tuple[str, str, str], int], *, at_ms: int, watermark: int
) -> list[Row]:
    if not open_tickets:
        return []
    return open_ticket_rows(open_tickets, at=rfc3339(at_ms), final=watermark >= NEVER)
