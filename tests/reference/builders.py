"""Hand-built events and row look-ups for tests of the reference (times from 10:00 UTC)."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from reference.common import ReferenceSettings
from reference.kpis import reference_report
from reference.report import Row

T0 = datetime(2026, 11, 20, 10, tzinfo=UTC)
HOUR_10, HOUR_11, HOUR_12 = (f"2026-11-20T{hour}:00:00Z" for hour in (10, 11, 12))
_ids = itertools.count(1)


def at(minutes: float) -> str:
    """RFC 3339 time ``minutes`` after 10:00."""
    return (T0 + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")


def ev(kind: str, minutes: float, **fields: Any) -> dict[str, Any]:
    """An event of store ``s1`` with a fresh ``event_id`` (unless given)."""
    event = {"event_id": f"e-{next(_ids)}", "event_type": kind, "event_time": at(minutes)}
    return event | {"store_id": "s1"} | fields


def web(kind: str, minutes: float, session: str, **fields: Any) -> dict[str, Any]:
    """A clickstream or cart event of session ``session`` (visitor ``v-<session>``)."""
    return ev(kind, minutes, session_id=session, visitor_id=f"v-{session}", **fields)


def order(order_id: str, minutes: float, total: int, **fields: Any) -> dict[str, Any]:
    """An ``order_placed`` of ``total`` USD cents (unless ``currency`` is given)."""
    fields = {"order_id": order_id, "total_minor": total, "currency": "USD"} | fields
    return ev("order_placed", minutes, **fields)


def report(events: Iterable[dict[str, Any]], **settings: Any) -> list[Row]:
    """The reference report of these events, in this arrival order."""
    lines = [json.dumps(event).encode() for event in events]
    return reference_report(lines, ReferenceSettings(**settings))


def find(
    rows: list[Row], kpi: str, *, start: str = HOUR_10, window: str = "1h", **where: Any
) -> Row | None:
    """The one row of a KPI (default: the 10:00 hour, all stores, no breakdown), or None."""
    wanted = {"kpi": kpi, "window": window, "start": start, "store_id": "all", "dimension": None}
    wanted |= where
    found = [row for row in rows if all(row[k] == v for k, v in wanted.items())]
    assert len(found) <= 1, found
    return found[0] if found else None


def value(rows: list[Row], kpi: str, **where: Any) -> Any:
    """The value of the one row of a KPI (see ``find``), which must exist."""
    row = find(rows, kpi, **where)
    assert row is not None, f"no {kpi} row {where}"
    return row["value"]
