"""``/api/kpis`` query parameters: parsing with clear errors into the ``ReportQuery`` they make.

``kpi``, ``window``, ``store_id`` and ``dimension`` are repeatable (any of the values); ``from`` and
``to`` are RFC 3339 times with an offset and select the windows overlapping ``[from, to)``. The
``open_tickets`` rows ("now") count as a window of no length at the time they describe.
"""

from __future__ import annotations

from collections.abc import Iterable

from streamproc.errors import BadQuery
from streamproc.kpi.epoch import window_label
from streamproc.kpi.report import CH_DEV, KPIS, PRIORITIES, TICKET_CHANNELS
from streamproc.kpi.selection import NOW, OPEN_TICKETS, ReportQuery
from streamproc.times import MissingOffset, parse_duration_seconds, rfc3339_ms

KPI_NAMES = (*(kpi.name for kpi in KPIS), OPEN_TICKETS)
DIMENSIONS = (
    *CH_DEV,
    *(f"channel={v}" for v in TICKET_CHANNELS),
    *(f"priority={v}" for v in PRIORITIES),
)
REPEATABLE = ("kpi", "window", "store_id", "dimension")
SINGLE = ("from", "to")


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
