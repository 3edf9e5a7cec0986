"""The reference KPI report: every KPI of docs/semantics.md over a whole events file.

``reference_report(lines, settings)`` reads the lines in arrival order, keeps the accepted
events, turns them into facts (what each session, order, cart, ticket ... counts, when and
where), sums the facts per aligned window, store and breakdown, and applies the KPI formulas.
The whole input is known, so every session is closed and every cart decided: every row is final.

Row conventions (value, numerator, denominator):

* counts: n, n, null. Money: major units (minor / 10 ** exponent), twice, null.
* ratios and means: numerator / denominator, numerator, denominator; seconds are Σ ms / 1000.
* percentiles: bucket-interpolated seconds, null, number of samples.
* ``cart_abandonment_rate``: 1 - converted / created, created - converted, created.
* ``nps``: (promoters - detractors) / responses * 100, promoters - detractors, responses.

A row exists when its cell has data for the KPI: at least one fact for counts, money, means and
percentiles (a zero sum still gives a row), a non-zero denominator for ratios. Zero is a value
for counts and money: they have a row, 0 when nothing was counted, in every window in which the
store (or any store, for ``all``) had an accepted event; and so does each of their breakdown rows
that has a row in the largest window holding that window.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from reference.accept import accepted_events
from reference.carts import all_carts, cart_facts, checkout_facts
from reference.common import Event, Fact, ReferenceSettings
from reference.histogram import histogram_quantile
from reference.money import to_major
from reference.orders import cancellation_facts, counted_orders, order_facts, refund_facts
from reference.report import Row, make_row, parse_time_ms, window_label
from reference.sessions import SessionIndex, build_sessions, session_facts
from reference.tickets import build_tickets, opened_facts, survey_facts, ticket_facts
from reference.traffic import page_view_facts, visitor_facts
from reference.windows import ALL_STORES, Cell, CellKey, aggregate, window_start_ms

Values = tuple[float | None, float | None, float | None]  # value, numerator, denominator
Formula = Callable[[Cell, ReferenceSettings], Values | None]  # None: no row


def reference_report(lines: Iterable[bytes], settings: ReferenceSettings) -> list[Row]:
    """The KPI report rows of an events file (lines in arrival order)."""
    events = accepted_events(lines, settings)
    cells = aggregate(reference_facts(events, settings), settings.window_sizes_s)
    return window_rows(cells, settings) + open_ticket_rows(events)


def reference_facts(events: list[Event], settings: ReferenceSettings) -> list[Fact]:
    """What every accepted event, session, order, cart and ticket counts."""
    sessions = build_sessions(events, settings)
    index = SessionIndex(sessions, settings)
    orders = counted_orders(events)
    for order in orders:
        session = index.of_order(order)
        if session is not None:
            session.orders.append(order)
    facts: list[Fact] = []
    for session in sessions:
        facts += session_facts(session)
    for order in orders:
        facts += order_facts(order, index)
    facts += refund_facts(events) + cancellation_facts(events, orders)
    for cart in all_carts(events, orders, settings):
        facts += cart_facts(cart)
    facts += checkout_facts(events)
    facts += page_view_facts(events, index) + visitor_facts(events, index)
    for ticket in build_tickets(events):
        facts += ticket_facts(ticket)
    facts += opened_facts(events) + survey_facts(events)
    # which stores had an accepted event in which minutes (one fact per minute is enough)
    active = {
        (event["event_time"] - event["event_time"] % 60_000, event["store_id"]) for event in events
    }
    facts += [Fact(EVENTS, minute, store) for minute, store in sorted(active)]
    return facts


# --- formulas: how a KPI's row is computed from a cell ----------------------------------------


def count(counter: str) -> Formula:
    def formula(cell: Cell, settings: ReferenceSettings) -> Values | None:
        n = cell.total(counter)
        return (n, n, None) if cell.count(counter) else None

    return formula


def money(counter: str) -> Formula:
    def formula(cell: Cell, settings: ReferenceSettings) -> Values | None:
        major = to_major(cell.total(counter), settings)
        return (major, major, None) if cell.count(counter) else None

    return formula


def ratio(numerator: str, denominator: str) -> Formula:
    def formula(cell: Cell, settings: ReferenceSettings) -> Values | None:
        n, d = cell.total(numerator), cell.total(denominator)
        return (n / d, n, d) if d else None

    return formula


def money_per(counter: str, denominator: str) -> Formula:
    def formula(cell: Cell, settings: ReferenceSettings) -> Values | None:
        major, d = to_major(cell.total(counter), settings), cell.total(denominator)
        return (major / d, major, d) if d else None

    return formula


def mean_seconds(counter_ms: str, denominator: str | None = None) -> Formula:
    """Σ milliseconds / 1000 over the denominator (default: the number of samples)."""

    def formula(cell: Cell, settings: ReferenceSettings) -> Values | None:
        d = cell.count(counter_ms) if denominator is None else cell.total(denominator)
        seconds = cell.total(counter_ms) / 1000
        return (seconds / d, seconds, d) if d else None

    return formula


def percentile(counter_ms: str, q: float) -> Formula:
    def formula(cell: Cell, settings: ReferenceSettings) -> Values | None:
        samples = cell.samples(counter_ms)
        return (histogram_quantile(q, samples), None, len(samples)) if samples else None

    return formula


def unique_visitors(cell: Cell, settings: ReferenceSettings) -> Values | None:
    n = len(cell.visitors)
    return (n, n, None) if n else None


def revenue_per_visitor(cell: Cell, settings: ReferenceSettings) -> Values | None:
    major, d = to_major(cell.total("revenue_minor"), settings), len(cell.visitors)
    return (major / d, major, d) if d else None


def cart_abandonment_rate(cell: Cell, settings: ReferenceSettings) -> Values | None:
    created, converted = cell.total("carts_created"), cell.total("carts_converted")
    return (1 - converted / created, created - converted, created) if created else None


def nps(cell: Cell, settings: ReferenceSettings) -> Values | None:
    n = cell.total("nps_promoters") - cell.total("nps_detractors")
    d = cell.total("nps_responses")
    return (n / d * 100, n, d) if d else None


@dataclass(frozen=True)
class Kpi:
    """A KPI: its formula, and the breakdowns it is also reported by."""

    name: str
    formula: Formula
    breakdowns: tuple[str, ...] = ()


CH_DEV = ("channel_group", "device_type")
KPIS = (
    Kpi("sessions", count("sessions"), CH_DEV),
    Kpi("unique_visitors", unique_visitors, CH_DEV),
    Kpi("page_views", count("page_views"), CH_DEV),
    Kpi("orders", count("orders"), CH_DEV),
    Kpi("revenue", money("revenue_minor"), CH_DEV),
    Kpi("net_revenue", money("net_revenue_minor")),
    Kpi("conversion_rate", ratio("orders", "sessions"), CH_DEV),
    Kpi("average_order_value", money_per("revenue_minor", "orders"), CH_DEV),
    Kpi("revenue_per_visitor", revenue_per_visitor, CH_DEV),
    Kpi("session_conversion_rate", ratio("sessions_with_order", "sessions")),
    Kpi("add_to_cart_rate", ratio("sessions_with_add_to_cart", "sessions")),
    Kpi("pageviews_per_session", ratio("session_page_views", "sessions")),
    Kpi("bounce_rate", ratio("sessions_bounced", "sessions")),
    Kpi("average_session_duration_seconds", mean_seconds("session_duration_ms", "sessions")),
    Kpi("new_visitor_share", ratio("sessions_new", "sessions_with_index")),
    Kpi("units_per_order", ratio("units", "orders")),
    Kpi("new_customer_order_share", ratio("orders_first", "orders_with_index")),
    Kpi("refund_rate", ratio("refunds", "orders")),
    Kpi("carts_created", count("carts_created")),
    Kpi("cart_abandonment_rate", cart_abandonment_rate),
    Kpi("checkout_abandonment_rate", ratio("carts_checkout_abandoned", "carts_with_checkout")),
    Kpi("payment_failure_rate", ratio("payment_failures", "checkouts")),
    Kpi("tickets_opened", count("tickets_opened"), ("channel",)),
    *(
        Kpi(f"{name}_seconds_p{round(q * 100)}", percentile(f"{name}_ms", q))
        for name in ("first_response", "resolution")
        for q in (0.5, 0.9, 0.99)
    ),
    Kpi("first_response_seconds_mean", mean_seconds("first_response_ms")),
    Kpi("resolution_seconds_mean", mean_seconds("resolution_ms")),
    Kpi("escalation_rate", ratio("tickets_escalated", "tickets_opened")),
    Kpi("csat_score", ratio("csat_score_sum", "csat_responses")),
    Kpi("csat_positive_share", ratio("csat_positive", "csat_responses")),
    Kpi("nps", nps),
)
KPI_NAMES = (*(kpi.name for kpi in KPIS), "open_tickets")
# Counts and money: 0 rather than no row (module docstring).
ZERO_KPIS = (
    *("sessions", "unique_visitors", "page_views", "orders", "revenue", "net_revenue"),
    *("carts_created", "tickets_opened"),
)
EVENTS = "events"  # a fact per accepted event: which stores had one in which windows


def reported_by(kpi: Kpi, dimension: str | None) -> bool:
    return dimension is None or dimension.split("=")[0] in kpi.breakdowns


def window_rows(cells: dict[CellKey, Cell], settings: ReferenceSettings) -> list[Row]:
    """Every KPI row of every cell that has data for it, and the zero rows, in a stable order."""
    found: dict[tuple[CellKey, str], Values] = {}
    for key, cell in cells.items():
        for kpi in KPIS:
            values = kpi.formula(cell, settings) if reported_by(kpi, key.dimension) else None
            if values is not None:
                found[(key, kpi.name)] = values
    for key, name in zero_rows(cells, set(found), max(settings.window_sizes_s)):
        found[(key, name)] = (0, 0, None)
    rows = [
        make_row(
            name,
            window=window_label(key.size_s),
            span_ms=(key.start_ms, key.start_ms + key.size_s * 1000),
            store_id=key.store_id,
            dimension=key.dimension,
            values=values,
        )
        for (key, name), values in found.items()
    ]
    return sorted(rows, key=row_order)


def zero_rows(
    cells: dict[CellKey, Cell], found: set[tuple[CellKey, str]], largest_s: int
) -> list[tuple[CellKey, str]]:
    """The count and money rows that read 0: without a breakdown in every window with a cell
    of the store (it had an accepted event there), with one where the largest window holding
    the window has that row."""
    appeared: dict[tuple[int, str], set[tuple[str, str]]] = {}
    for key, name in found:
        if key.size_s == largest_s and key.dimension is not None and name in ZERO_KPIS:
            appeared.setdefault((key.start_ms, key.store_id), set()).add((name, key.dimension))
    zeros: list[tuple[CellKey, str]] = []
    for key in cells:
        if key.dimension is not None:
            continue
        outer = (window_start_ms(key.start_ms, largest_s), key.store_id)
        wanted = [(name, None) for name in ZERO_KPIS] + sorted(appeared.get(outer, ()))
        for name, dimension in wanted:
            target = key._replace(dimension=dimension)
            if (target, name) not in found:
                zeros.append((target, name))
    return zeros


def row_order(row: Row) -> tuple[int, int, str, bool, str, bool, str]:
    """KPI order of the table, then window size, start, ``all`` first, no breakdown first."""
    return (
        KPI_NAMES.index(row["kpi"]),
        time_ms(row["end"]) - time_ms(row["start"]),
        row["start"],
        row["store_id"] != ALL_STORES,
        row["store_id"],
        row["dimension"] is not None,
        row["dimension"] or "",
    )


def time_ms(text: str) -> int:
    parsed = parse_time_ms(text)
    assert isinstance(parsed, int)
    return parsed


def open_ticket_rows(events: list[Event]) -> list[Row]:
    """``open_tickets``: tickets open now, per store and by channel and priority (a gauge).

    "Now" is the latest accepted event time; start and end are both that time.
    """
    if not events:
        return []
    now_ms = max(event["event_time"] for event in events)
    counts: dict[tuple[str, str | None], int] = {}
    for ticket in build_tickets(events):
        if not ticket.is_open:
            continue
        for store_id in (ALL_STORES, ticket.store_id):
            for dimension in (None, f"channel={ticket.channel}", f"priority={ticket.priority}"):
                counts[(store_id, dimension)] = counts.get((store_id, dimension), 0) + 1
    rows = [
        make_row(
            "open_tickets",
            window="now",
            span_ms=(now_ms, now_ms),
            store_id=store_id,
            dimension=dimension,
            values=(n, n, None),
        )
        for (store_id, dimension), n in counts.items()
    ]
    return sorted(rows, key=row_order)
