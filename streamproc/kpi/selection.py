"""Which rows a report holds: ``ReportQuery``, the filters of ``/api/kpis`` (``exporter/query.py``
parses them; ``ReportQuery()`` holds everything), and the minutes a report of them reads.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from streamproc.kpi.epoch import aligned_start, window_label
from streamproc.kpi.report import Row

OPEN_TICKETS = "open_tickets"
NOW = "now"  # the window of the open_tickets rows


@dataclass(frozen=True)
class ReportQuery:
    """A filter over report rows; None means "any"."""

    kpis: frozenset[str] | None = None
    windows: frozenset[str] | None = None
    stores: frozenset[str] | None = None
    dimensions: frozenset[str | None] | None = None
    from_ms: int | None = None
    to_ms: int | None = None

    def overlaps(self, start_ms: int, end_ms: int) -> bool:
        """Whether ``[start, end)`` overlaps ``[from, to)`` (an instant: lies in it)."""
        after_from = self.from_ms is None or max(end_ms, start_ms + 1) > self.from_ms
        return after_from and (self.to_ms is None or start_ms < self.to_ms)

    def wants_window(self, size_ms: int, start_ms: int, store: str) -> bool:
        return (
            (self.windows is None or window_label(size_ms) in self.windows)
            and (self.stores is None or store in self.stores)
            and self.overlaps(start_ms, start_ms + size_ms)
        )

    def wants_open_tickets(self, at_ms: int) -> bool:
        return (
            (self.kpis is None or OPEN_TICKETS in self.kpis)
            and (self.windows is None or NOW in self.windows)
            and self.overlaps(at_ms, at_ms)
        )

    def wants_row(self, row: Row) -> bool:
        """The row-level filters (window and time are decided per window)."""
        return (
            (self.kpis is None or row["kpi"] in self.kpis)
            and (self.stores is None or row["store_id"] in self.stores)
            and (self.dimensions is None or row["dimension"] in self.dimensions)
        )

    @property
    def needs_visitors(self) -> bool:
        return self.kpis is None or bool({"unique_visitors", "revenue_per_visitor"} & self.kpis)


def report_minutes(
    minutes: Iterable[int], *, sizes_ms: Iterable[int], query: ReportQuery, largest_ms: int = 0
) -> list[int]:
    """The minutes of the largest aligned windows holding a wanted window that overlaps the
    range: each wanted window whole, and the largest window holding it, whose breakdown rows
    decide which of the wanted window's read 0 (``kpi/report.py``). ``largest_ms``: the largest
    window, when it is larger than every one of ``sizes_ms`` (those reported)."""
    every = sorted(sizes_ms)
    wanted = [s for s in every if query.windows is None or window_label(s) in query.windows]
    largest = max(largest_ms, every[-1])
    minutes = list(minutes)
    inside: set[int] = set()  # of a wanted window
    outer: set[int] = set()  # starts of the largest windows holding one
    for minute in minutes:
        for size in wanted:
            start = aligned_start(minute, size)
            if query.overlaps(start, start + size):
                inside.add(minute)
                outer.add(aligned_start(start, largest))
    return [m for m in minutes if m in inside or aligned_start(m, largest) in outer]
