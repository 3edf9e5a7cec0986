"""KPI values from merged counters, as report rows (what ``replay --report``, ``backfill --report``
and ``/api/kpis`` give).

Row conventions: counts have ``numerator`` = value and no denominator; money is in major units;
ratios are ``numerator / denominator``; means carry sum and count; percentiles carry the count as
denominator.

Zero is a value: a count or money KPI has a row in every window that has data for its store (a
window with no cell of the store has no rows), 0 when nothing was counted. Its breakdown rows (by
channel group, device type, ticket channel) read 0 where the breakdown value had a row in the
largest window holding this one (``breakdowns``), and are left out otherwise, so that a value
seen once does not stay at 0 forever. Ratios, means and percentiles with nothing to divide by are
left out.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Mapping
from dataclasses import dataclass
from typing import Any

from streamproc.kpi import counters as c
from streamproc.kpi.histogram import BUCKETS, quantile

Row = dict[str, Any]

CHANNELS = (
    "direct", "organic_search", "paid_search", "organic_social", "paid_social", "email",
    "referral", "display", "affiliate", "other",
)  # fmt: skip
DEVICES = ("desktop", "mobile", "tablet", "other")
TICKET_CHANNELS = ("email", "chat", "phone", "social", "web_form", "other")
PRIORITIES = ("low", "normal", "high", "urgent", "other")
CH_DEV = tuple(f"channel_group={v}" for v in CHANNELS) + tuple(f"device_type={v}" for v in DEVICES)
OUTCOME_COUNTERS = {  # KPIs that wait for an outcome: not final while these are non-zero
    "session": c.SESSIONS_OPEN,
    "cart": c.CARTS_UNDECIDED,
}
ZERO_KINDS = ("count", "money")  # read 0 rather than be left out (module docstring)


@dataclass(frozen=True)
class Kpi:
    name: str
    kind: str  # count, money, ratio, mean, quantile, nps, abandonment
    numerator: str
    denominator: str = ""
    dimensions: tuple[str, ...] = ()
    waits_for: str = ""  # "session" or "cart"
    divisor: int = 1  # of means' sums (ms -> s: 1000)
    q: float = 0.0


VISITORS = "@visitors"  # pseudo counter: unique visitors come from sketches, not counters

KPIS: tuple[Kpi, ...] = (
    Kpi("sessions", "count", c.SESSIONS, dimensions=CH_DEV),
    Kpi("unique_visitors", "count", VISITORS, dimensions=CH_DEV),
    Kpi("page_views", "count", c.PAGE_VIEWS, dimensions=CH_DEV),
    Kpi("orders", "count", c.ORDERS, dimensions=CH_DEV),
    Kpi("revenue", "money", c.REVENUE, dimensions=CH_DEV),
    Kpi("net_revenue", "money", "@net_revenue"),
    Kpi("conversion_rate", "ratio", c.ORDERS, c.SESSIONS, CH_DEV),
    Kpi("average_order_value", "ratio", "@revenue", c.ORDERS, CH_DEV),
    Kpi("revenue_per_visitor", "ratio", "@revenue", VISITORS, CH_DEV),
    Kpi("session_conversion_rate", "ratio", c.SESSIONS_WITH_ORDER, c.SESSIONS, waits_for="session"),
    Kpi("add_to_cart_rate", "ratio", c.SESSIONS_WITH_CART, c.SESSIONS, waits_for="session"),
    Kpi("pageviews_per_session", "ratio", c.SESSIONS_CLOSED_PAGE_VIEWS, c.SESSIONS_CLOSED,
        waits_for="session"),
    Kpi("bounce_rate", "ratio", c.SESSIONS_BOUNCED, c.SESSIONS_CLOSED, waits_for="session"),
    Kpi("average_session_duration_seconds", "mean", c.SESSIONS_DURATION, c.SESSIONS_CLOSED,
        waits_for="session", divisor=1000),
    Kpi("new_visitor_share", "ratio", c.SESSIONS_NEW_VISITOR, c.SESSIONS_WITH_INDEX),
    Kpi("units_per_order", "ratio", c.UNITS, c.ORDERS),
    Kpi("new_customer_order_share", "ratio", c.ORDERS_NEW_CUSTOMER, c.ORDERS_WITH_INDEX),
    Kpi("refund_rate", "ratio", c.REFUNDS, c.ORDERS),
    Kpi("carts_created", "count", c.CARTS_CREATED),
    Kpi("cart_abandonment_rate", "abandonment", c.CARTS_CONVERTED, c.CARTS_CREATED,
        waits_for="cart"),
    Kpi("checkout_abandonment_rate", "ratio", c.CARTS_CHECKOUT_ABANDONED, c.CARTS_CHECKOUT,
        waits_for="cart"),
    Kpi("payment_failure_rate", "ratio", c.PAYMENT_FAILURES, c.CHECKOUTS),
    Kpi("tickets_opened", "count", c.TICKETS_OPENED,
        dimensions=tuple(f"channel={v}" for v in TICKET_CHANNELS)),
    *(
        Kpi(f"{name}_seconds_p{round(q * 100)}", "quantile", name, f"{name}_count", q=q)
        for name in (c.FIRST_RESPONSE, c.RESOLUTION)
        for q in (0.5, 0.9, 0.99)
    ),
    Kpi("first_response_seconds_mean", "mean", "first_response_sum_ms", "first_response_count",
        divisor=1000),
    Kpi("resolution_seconds_mean", "mean", "resolution_sum_ms", "resolution_count", divisor=1000),
    Kpi("escalation_rate", "ratio", c.TICKETS_ESCALATED, c.TICKETS_OPENED),
    Kpi("csat_score", "mean", c.CSAT_SUM, c.CSAT_RESPONSES),
    Kpi("csat_positive_share", "ratio", c.CSAT_POSITIVE, c.CSAT_RESPONSES),
    Kpi("nps", "nps", "@nps", c.NPS_RESPONSES),
)  # fmt: skip


def _value_of(
    name: str, counters: Mapping[str, int], visitors: int, money: int, dimension: str | None
) -> float:
    """A counter (with the dimension), or a derived quantity."""

    def get(base: str) -> int:
        return counters.get(c.dim(base, dimension) if dimension else base, 0)

    if name == VISITORS:
        return float(visitors)
    if name == "@revenue":
        return get(c.REVENUE) / money
    if name == "@net_revenue":
        return (get(c.REVENUE) - get(c.REFUNDED) - get(c.CANCELLED)) / money
    if name == "@nps":
        return float(get(c.NPS_PROMOTERS) - get(c.NPS_DETRACTORS))
    return float(get(name))


def kpi_row(
    kpi: Kpi,
    counters: Mapping[str, int],
    *,
    dimension: str | None,
    visitors: int,
    money: int,
    zero: bool = False,
) -> tuple[float | None, float | None, float | None] | None:
    """(value, numerator, denominator) of one KPI, or None when there is no data.

    ``money`` is the number of minor units in a major unit of the reporting currency; ``zero``:
    a count or money KPI reads 0 rather than None."""
    num = (
        _value_of(kpi.numerator, counters, visitors, money, dimension)
        if kpi.kind != "quantile"
        else 0.0
    )
    den = (
        _value_of(kpi.denominator, counters, visitors, money, dimension) if kpi.denominator else 0.0
    )
    if kpi.kind == "count":
        return (num, num, None) if num or zero else None
    if kpi.kind == "money":
        if kpi.numerator == c.REVENUE:  # a row wherever there are orders, even at 0.00
            orders = _value_of(c.ORDERS, counters, visitors, money, dimension)
            return (num / money, num / money, None) if orders or zero else None
        takes_effect = any(counters.get(n) for n in (c.ORDERS, c.REFUNDS, c.CANCELLED))
        return (num, num, None) if takes_effect or zero else None
    if not den:
        return None
    if kpi.kind == "quantile":
        buckets = [counters.get(f"{kpi.numerator}_bucket|{i}", 0) for i in range(BUCKETS)]
        return quantile(kpi.q, buckets), None, den
    if kpi.kind == "mean":
        total = num / kpi.divisor if kpi.divisor != 1 else num
        return total / den, total, den
    if kpi.kind == "nps":
        return num / den * 100, num, den
    if kpi.kind == "abandonment":
        return 1 - num / den, den - num, den
    return num / den, num, den


def window_rows(
    *,
    window: str,
    start: str,
    end: str,
    store: str,
    counters: Mapping[str, int],
    visitors: Callable[[str | None], int],
    money: int,
    closed: bool,
    breakdowns: Container[tuple[str, str]] = frozenset(),
) -> list[Row]:
    """Every KPI row of one window and store (and its breakdowns), which has data.

    ``breakdowns``: the (KPI, dimension) rows that had a row in the largest window holding this
    one; those of counts and money read 0 here rather than be left out."""
    rows: list[Row] = []
    pending = {key: counters.get(name, 0) > 0 for key, name in OUTCOME_COUNTERS.items()}
    for kpi in KPIS:
        final = closed and not (kpi.waits_for and pending[kpi.waits_for])
        zeros = kpi.kind in ZERO_KINDS
        for dimension in (None, *kpi.dimensions):
            needs_visitors = VISITORS in (kpi.numerator, kpi.denominator)
            seen = visitors(dimension) if needs_visitors else 0
            zero = zeros and (dimension is None or (kpi.name, dimension) in breakdowns)
            found = kpi_row(
                kpi, counters, dimension=dimension, visitors=seen, money=money, zero=zero
            )
            if found is None:
                continue
            value, numerator, denominator = found
            rows.append(
                {
                    "kpi": kpi.name,
                    "window": window,
                    "start": start,
                    "end": end,
                    "store_id": store,
                    "dimension": dimension,
                    "value": value,
                    "numerator": numerator,
                    "denominator": denominator,
                    "final": final,
                }
            )
    return rows


def open_ticket_rows(
    gauge: Mapping[tuple[str, str, str], int], *, at: str, final: bool = False
) -> list[Row]:
    """``open_tickets`` now, for all stores and each, overall and by channel and priority."""
    totals: dict[tuple[str, str | None], int] = {}
    for (store, channel, priority), count in gauge.items():
        for scope in ("all", store):
            for dimension in (None, f"channel={channel}", f"priority={priority}"):
                totals[(scope, dimension)] = totals.get((scope, dimension), 0) + count
    return [
        {
            "kpi": "open_tickets", "window": "now", "start": at, "end": at, "store_id": scope,
            "dimension": dimension, "value": float(count), "numerator": float(count),
            "denominator": None, "final": final,
        }
        for (scope, dimension), count in sorted(totals.items(), key=_scope_order)
        if count
    ]  # fmt: skip


def _scope_order(item: tuple[tuple[str, str | None], int]) -> tuple[bool, str, str]:
    (scope, dimension), _ = item
    return scope != "all", scope, dimension or ""
