"""The counters a window partial holds: flat ``{name: int}`` maps that add across partitions,
stores and minutes.

A name is a base counter, optionally followed by one dimension: ``orders``,
``orders|channel_group=email``, ``orders|device_type=mobile``, ``tickets_opened|channel=chat``,
``first_response_bucket|3``. Money counters are minor units of the reporting currency; durations
are milliseconds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

Counters = dict[str, int]
CellKey = tuple[int, str]  # (minute start in epoch ms, store label)
Cells = dict[CellKey, Counters]

# (ch/dev) counters: kept for the base and per channel_group and device_type.
SESSIONS = "sessions"
PAGE_VIEWS = "page_views"
ORDERS = "orders"
REVENUE = "revenue_minor"
DIMENSIONED = (SESSIONS, PAGE_VIEWS, ORDERS, REVENUE)

# Bookkeeping, not KPIs. A cell exists exactly where its store had an accepted event in its
# minute: every clickstream and cart event is a visitor sighting, every orders and tickets event
# an event mark. Counts and money read 0 in a window where their cells exist (kpi/report.py).
VISITOR_MARKS = "visitor_marks"  # visitor sightings the cell's sketches got
EVENT_MARKS = "event_marks"  # accepted events of the orders and tickets topics

# Session outcomes (at the session's start minute).
SESSIONS_CLOSED = "sessions_closed"
SESSIONS_CLOSED_PAGE_VIEWS = "sessions_closed_page_views"
SESSIONS_BOUNCED = "sessions_bounced"
SESSIONS_DURATION = "sessions_duration_ms"
SESSIONS_WITH_ORDER = "sessions_with_order"
SESSIONS_WITH_CART = "sessions_with_add_to_cart"
SESSIONS_WITH_INDEX = "sessions_with_index"
SESSIONS_NEW_VISITOR = "sessions_new_visitor"
SESSIONS_OPEN = "sessions_open"

# Orders and money (at the time of each event).
UNITS = "units"
ORDERS_WITH_INDEX = "orders_with_index"
ORDERS_NEW_CUSTOMER = "orders_new_customer"
REFUNDS = "refunds"
REFUNDED = "refunded_minor"
CANCELLED = "cancelled_minor"

# Carts (at the cart's creation minute).
CARTS_CREATED = "carts_created"
CARTS_CONVERTED = "carts_converted"
CARTS_ABANDONED = "carts_abandoned"
CARTS_UNDECIDED = "carts_undecided"
CARTS_CHECKOUT = "carts_with_checkout"
CARTS_CHECKOUT_ABANDONED = "carts_with_checkout_abandoned"
CHECKOUTS = "checkouts_started"
PAYMENT_FAILURES = "payment_failures"

# Support (at the time of each outcome).
TICKETS_OPENED = "tickets_opened"
TICKETS_ESCALATED = "tickets_escalated"
FIRST_RESPONSE = "first_response"  # first_response_bucket|i, _sum_ms, _count
RESOLUTION = "resolution"
CSAT_RESPONSES = "csat_responses"
CSAT_SUM = "csat_sum"
CSAT_POSITIVE = "csat_positive"
NPS_RESPONSES = "nps_responses"
NPS_PROMOTERS = "nps_promoters"
NPS_DETRACTORS = "nps_detractors"


def dim(name: str, dimension: str) -> str:
    """``dim("orders", "channel_group=email")`` -> ``"orders|channel_group=email"``."""
    return f"{name}|{dimension}"


def split(name: str) -> tuple[str, str | None]:
    """``"orders|channel_group=email"`` -> ``("orders", "channel_group=email")``."""
    base, _, dimension = name.partition("|")
    return base, dimension or None


def add_dimensioned(
    counters: Counters, name: str, amount: int, *, channel: str, device: str
) -> None:
    """Add to a (ch/dev) counter: the base, its channel_group and its device_type."""
    if amount:
        counters[name] = counters.get(name, 0) + amount
        key = f"{name}|channel_group={channel}"
        counters[key] = counters.get(key, 0) + amount
        key = f"{name}|device_type={device}"
        counters[key] = counters.get(key, 0) + amount


def bump(counters: Counters, name: str, amount: int = 1) -> None:
    if amount:
        counters[name] = counters.get(name, 0) + amount


def cell(cells: Cells, minute: int, store: str) -> Counters:
    key = (minute, store)
    found = cells.get(key)
    if found is None:
        found = cells[key] = {}
    return found


def add_counters(into: Counters, counters: Mapping[str, int], sign: int = 1) -> None:
    """``into += sign * counters``; counters that become zero are dropped."""
    for name, value in counters.items():
        total = into.get(name, 0) + sign * value
        if total:
            into[name] = total
        else:
            into.pop(name, None)


def add_cells(target: Cells, source: Mapping[CellKey, Counters], sign: int = 1) -> set[CellKey]:
    """``target += sign * source``; returns the cells that changed. Zero entries are dropped."""
    changed: set[CellKey] = set()
    for key, counters in source.items():
        if not counters:
            continue
        into = target.get(key)
        if into is None:
            into = target[key] = {}
        add_counters(into, counters, sign)
        changed.add(key)
    return changed


def add_difference(target: Counters, new: Mapping[str, int], old: Mapping[str, int]) -> None:
    """``target += new - old``; zero entries are dropped."""
    for name, value in new.items():
        delta = value - old.get(name, 0)
        if delta:
            total = target.get(name, 0) + delta
            if total:
                target[name] = total
            else:
                target.pop(name, None)
    for name, value in old.items():
        if name not in new:
            total = target.get(name, 0) - value
            if total:
                target[name] = total
            else:
                target.pop(name, None)


def sum_counters(parts: Iterable[Mapping[str, int]]) -> Counters:
    total: Counters = {}
    for part in parts:
        for name, value in part.items():
            total[name] = total.get(name, 0) + value
    return total
