"""``/api/kpis`` query parameters: parsing with clear errors, and the filters they make.

``kpi``, ``window``, ``store_id`` and ``dimension`` are repeatable (any of the values); ``from`` and
``to`` are RFC 3339 times with an offset and select the windows overlapping ``[from, to)``. The
``open_tickets`` rows ("now") count as a window of no length at the time they describe.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from streamproc.errors import BadQuery
from streamproc.kpi.epoch import aligned_start, window_label
from streamproc.kpi.report import CH_DEV, KPIS, PRIORITIES, TICKET_CHANNELS, Row
from streamproc.times import MissingOffset, parse_duration_seconds, rfc3339_ms

OPEN_TICKETS = "open_tickets"
NOW = "now"
KPI_NAMES = (*(kpi.name for kpi in KPIS), OPEN_TICKETS)
DIMENSIONS = (
    *CH_DEV,
    *(f"channel={v}" for v in TICKET_CHANNELS),
    *(f"priority={v}" for v in PRIORITIES),
)
REPEATABLE = ("kpi", "window", "store_id", "dimension")
SINGLE = ("from", "to")


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


def parse_time(name: str, text: str) -> int:
    """RFC 3339 with an offset (``2026-11-02T10:00:00Z``) -> epoch ms, floored."""
    try:
        return rfc3339_ms(text)
    except MissingOffset:
        raise BadQuery(
            f"{name}: needs a date, a time and an offset (Z or +hh:mm): {text!r}"
        ) from None
    except ValueError:
        example = "2026-11-02T10:00:00Z"
        raise BadQuery(f"{name}: not an RFC 3339 time like {example}: {text!r}") from None


def _window(text: str, labels: Iterable[str]) -> str:
    if text == NOW:
        return NOW
    try:
        label = window_label(parse_duration_seconds(text) * 1000)
    except ValueError:
        label = text
    if label not in labels:
        raise BadQuery(f"window: {text!r} is not reported; one of {', '.join((*labels, NOW))}")
    return label


def _one_of(name: str, value: str, allowed: Iterable[str]) -> str:
    allowed = tuple(allowed)
    if value not in allowed:
        raise BadQuery(f"{name}: unknown value {value!r}; one of {', '.join(allowed)}")
    return value


def parse_query(params: Iterable[tuple[str, str]], *, window_labels: Iterable[str]) -> ReportQuery:
    """The query of ``/api/kpis`` from its parameters (name, value), in order."""
    labels = tuple(window_labels)
    values: dict[str, list[str]] = {}
    for name, value in params:
        if name not in REPEATABLE + SINGLE:
            expected = ", ".join(REPEATABLE + SINGLE)
            raise BadQuery(f"unknown parameter {name!r}; expected {expected}")
        if not value.strip():
            raise BadQuery(f"{name}: empty value")
        if name in SINGLE and name in values:
            raise BadQuery(f"{name}: given more than once")
        values.setdefault(name, []).append(value.strip())

    def many(name: str) -> list[str] | None:
        return values.get(name)

    kpis = many("kpi")
    windows = many("window")
    stores = many("store_id")
    dims = many("dimension")
    from_ms = parse_time("from", values["from"][0]) if "from" in values else None
    to_ms = parse_time("to", values["to"][0]) if "to" in values else None
    if from_ms is not None and to_ms is not None and from_ms >= to_ms:
        raise BadQuery("from: must be before to")
    if stores is not None and any(len(s) > 64 for s in stores):
        raise BadQuery("store_id: longer than 64 characters")
    return ReportQuery(
        kpis=frozenset(_one_of("kpi", k, KPI_NAMES) for k in kpis) if kpis else None,
        windows=frozenset(_window(w, labels) for w in windows) if windows else None,
        stores=frozenset(stores) if stores else None,
        dimensions=(
            frozenset(
                None if d == "none" else _one_of("dimension", d, ("none", *DIMENSIONS))
                for d in dims
            )
            if dims
            else None
        ),
        from_ms=from_ms,
        to_ms=to_ms,
    )


def report_minutes(
    minutes: Iterable[int], *, sizes_ms: Iterable[int], query: ReportQuery
) -> list[int]:
    """The minutes of the largest aligned windows holding a wanted window that overlaps the
    range: each wanted window whole, and the largest window holding it, whose breakdown rows
    decide which of the wanted window's read 0 (``kpi/report.py``)."""
    every = sorted(sizes_ms)
    wanted = [s for s in every if query.windows is None or window_label(s) in query.windows]
    largest = every[-1]
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
