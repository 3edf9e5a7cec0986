"""The simulated shop behaves as configured: funnel ratios, anomaly shifts, consistent orders,
sessions and visitors, tickets."""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest

from streamproc.events import models as m
from streamproc.simulate import (
    Anomalies,
    Funnel,
    Outage,
    SimConfig,
    Support,
    TimeRange,
    Visits,
    simulate,
)
from streamproc.simulate.options import parse_outage

START = datetime(2026, 11, 20, 6, tzinfo=UTC)
START_MS = int(START.timestamp() * 1000)
HOUR_MS = 3_600_000
HOURS = 8
FUNNEL = Funnel(p_add_to_cart=0.25, p_checkout=0.5, p_order=0.7, p_remove=0.3)
VISITS = Visits(mean_pageviews=2.0, ping_interval_seconds=0.0, p_bounce=0.35)
SPIKE = TimeRange(START + timedelta(hours=2), START + timedelta(hours=4), factor=4.0)
DROP = TimeRange(START + timedelta(hours=5), START + timedelta(hours=6), factor=3.0)


NO_ANOMALIES = Anomalies()


def config(anomalies: Anomalies = NO_ANOMALIES, **overrides: Any) -> SimConfig:
    fields: dict[str, Any] = {
        "start": START,
        "duration_seconds": HOURS * 3600,
        "seed": 11,
        "sessions_per_minute": 30,
        "diurnal_amplitude": 0.0,
        "stores": 3,
        "currencies": {"store-02": "EUR", "store-03": "JPY"},
        "visits": VISITS,
        "funnel": FUNNEL,
        "support": Support(tickets_per_session=0.02),
        "anomalies": anomalies,
    }
    return SimConfig(**(fields | overrides))


@dataclass
class SessionFacts:
    start_ms: int
    times: list[int] = field(default_factory=list)
    page_views: int = 0
    others: int = 0  # events other than session_start, page_view and page_ping
    carts: set[str] = field(default_factory=set)
    cart_created_ms: int | None = None
    checkouts: int = 0
    orders: int = 0
    fields: set[tuple[str, str]] = field(default_factory=set)


def events(cfg: SimConfig) -> Iterator[dict[str, Any]]:
    for record in simulate(cfg):
        event = msgspec.json.decode(record.value)
        event["_ms"] = record.timestamp_ms
        yield event


def sessions_of(evs: list[dict[str, Any]]) -> dict[str, SessionFacts]:
    sessions: dict[str, SessionFacts] = {}
    for ev in evs:
        if ev["event_type"] == "session_start":
            sessions[ev["session_id"]] = SessionFacts(ev["_ms"])
    for ev in evs:
        facts = sessions.get(ev.get("session_id", ""))
        if facts is None:
            continue
        kind = ev["event_type"]
        facts.orders += kind == "order_placed"
        if m.FAMILY_OF_TYPE[kind] not in (m.Family.CLICKSTREAM, m.Family.CART):
            continue  # orders (and their refunds) carry the session only to share its partition
        facts.times.append(ev["_ms"])
        facts.page_views += kind == "page_view"
        facts.others += kind not in ("session_start", "page_view", "page_ping")
        if "device_type" in ev:
            facts.fields.add(("device_type", ev["device_type"]))
        facts.fields.add(("store_id", ev["store_id"]))
        if kind == "add_to_cart":
            facts.carts.add(ev["cart_id"])
            if facts.cart_created_ms is None:
                facts.cart_created_ms = ev["_ms"]
        facts.checkouts += kind == "checkout_started"
    return sessions


@pytest.fixture(scope="module")
def clean() -> list[dict[str, Any]]:
    return list(events(config()))


@pytest.fixture(scope="module")
def troubled() -> list[dict[str, Any]]:
    return list(events(config(Anomalies(abandonment_spikes=(SPIKE,), conversion_drops=(DROP,)))))


def complete(sessions: dict[str, SessionFacts]) -> list[SessionFacts]:
    """Sessions that started early enough to have finished before the end of the run."""
    return [s for s in sessions.values() if s.start_ms < START_MS + (HOURS - 2) * HOUR_MS]


def assert_ratio(successes: int, trials: int, p: float) -> None:
    sigma = math.sqrt(p * (1 - p) / trials)
    assert trials > 200
    assert abs(successes / trials - p) <= 4 * sigma, (successes, trials, p)


def test_funnel_ratios_match_the_configured_probabilities(clean: list[dict[str, Any]]) -> None:
    sessions = complete(sessions_of(clean))
    with_cart = [s for s in sessions if s.carts]
    with_checkout = [s for s in with_cart if s.checkouts]
    ordered = [s for s in with_checkout if s.orders]
    assert_ratio(len(with_cart), len(sessions), FUNNEL.p_add_to_cart)
    assert_ratio(len(with_checkout), len(with_cart), FUNNEL.p_checkout)
    assert_ratio(len(ordered), len(with_checkout), FUNNEL.p_order)
    assert all(len(s.carts) <= 1 and s.checkouts <= 1 and s.orders <= 1 for s in sessions)
    assert all(s.checkouts for s in sessions if s.orders), "no order without a checkout"


def test_bounce_share_matches(clean: list[dict[str, Any]]) -> None:
    sessions = complete(sessions_of(clean))
    bounced = [s for s in sessions if s.page_views == 1]
    assert_ratio(len(bounced), len(sessions), VISITS.p_bounce)
    assert all(not s.carts for s in bounced)


def test_abandonment_spike_and_conversion_drop_shift_the_ratios(
    troubled: list[dict[str, Any]],
) -> None:
    sessions = complete(sessions_of(troubled))

    def spiked(s: SessionFacts) -> bool:
        return s.cart_created_ms is not None and _inside(s.cart_created_ms, SPIKE)

    carts_in = [s for s in sessions if s.carts and spiked(s)]
    carts_out = [s for s in sessions if s.carts and not spiked(s)]
    assert_ratio(sum(1 for s in carts_in if s.checkouts), len(carts_in), FUNNEL.p_checkout / 4)
    assert_ratio(sum(1 for s in carts_out if s.checkouts), len(carts_out), FUNNEL.p_checkout)
    dropped = [s for s in sessions if _inside(s.start_ms, DROP)]
    normal = [s for s in sessions if not _inside(s.start_ms, DROP)]
    assert_ratio(sum(1 for s in dropped if s.carts), len(dropped), FUNNEL.p_add_to_cart / 3)
    assert_ratio(sum(1 for s in normal if s.carts), len(normal), FUNNEL.p_add_to_cart)


def _inside(t_ms: int, span: TimeRange) -> bool:
    return span.start.timestamp() * 1000 <= t_ms < span.end.timestamp() * 1000


def test_sessions_are_well_formed(clean: list[dict[str, Any]]) -> None:
    for facts in sessions_of(clean).values():
        assert min(facts.times) == facts.start_ms, "session_start comes first"
        times = sorted(facts.times)
        assert all(b - a < 30 * 60_000 for a, b in itertools.pairwise(times))
        assert len({v for k, v in facts.fields if k == "device_type"}) == 1
        assert len({v for k, v in facts.fields if k == "store_id"}) == 1


def test_returning_visitors_count_their_sessions(clean: list[dict[str, Any]]) -> None:
    indexes: dict[str, list[int]] = defaultdict(list)
    for ev in clean:
        if ev["event_type"] == "session_start":
            indexes[ev["visitor_id"]].append(ev["session_index"])
    assert all(seen == list(range(1, len(seen) + 1)) for seen in indexes.values())
    returning = sum(len(seen) - 1 for seen in indexes.values())
    total = sum(len(seen) for seen in indexes.values())
    assert 0.15 < returning / total <= VISITS.returning_share + 0.02


def test_orders_add_up(clean: list[dict[str, Any]]) -> None:
    orders = [ev for ev in clean if ev["event_type"] == "order_placed"]
    assert len(orders) > 300
    for order in orders:
        subtotal = sum(item["quantity"] * item["unit_price_minor"] for item in order["items"])
        parts = subtotal - order["discount_minor"] + order["shipping_minor"] + order["tax_minor"]
        assert order["total_minor"] == parts > 0
    currencies = {(o["store_id"], o["currency"]) for o in orders}
    assert currencies == {("store-01", "USD"), ("store-02", "EUR"), ("store-03", "JPY")}
    assert any("cart_id" not in o and "session_id" in o for o in orders), "orders without cart_id"
    assert any("session_id" not in o for o in orders), "orders without a session"


def test_orders_match_their_cart(clean: list[dict[str, Any]]) -> None:
    """Items are the cart's adds minus its removes."""
    lines: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for ev in clean:
        if ev["event_type"] in ("add_to_cart", "remove_from_cart"):
            sign = 1 if ev["event_type"] == "add_to_cart" else -1
            lines[ev["cart_id"]][ev["product_id"]] += sign * ev["quantity"]
    checked = 0
    for order in clean:
        if order["event_type"] == "order_placed" and "cart_id" in order:
            expected = {p: q for p, q in lines[order["cart_id"]].items() if q > 0}
            assert {i["product_id"]: i["quantity"] for i in order["items"]} == expected
            checked += 1
    assert checked > 100


def test_customer_order_index_counts_orders(clean: list[dict[str, Any]]) -> None:
    indexes: dict[str, list[int]] = defaultdict(list)
    guests = 0
    for ev in clean:
        if ev["event_type"] == "order_placed":
            if "customer_id" in ev:
                indexes[ev["customer_id"]].append(ev["customer_order_index"])
            else:
                guests += 1
                assert "customer_order_index" not in ev
    assert all(seen == list(range(1, len(seen) + 1)) for seen in indexes.values())
    assert any(len(seen) > 1 for seen in indexes.values()), "repeat customers"
    assert guests > 0


def test_refunds_and_cancellations_follow_their_order(clean: list[dict[str, Any]]) -> None:
    orders = {ev["order_id"]: ev for ev in clean if ev["event_type"] == "order_placed"}
    later = [ev for ev in clean if ev["event_type"] in ("order_refunded", "order_cancelled")]
    assert later
    for ev in later:
        order = orders[ev["order_id"]]
        assert ev["_ms"] >= order["_ms"] + 60_000
        assert ev.get("session_id") == order.get("session_id")
        if ev["event_type"] == "order_refunded":
            assert 0 < ev["refund_minor"] <= order["total_minor"]
            assert ev["currency"] == order["currency"]


def test_tickets_unfold_in_order(clean: list[dict[str, Any]]) -> None:
    by_ticket: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for ev in clean:
        if "ticket_id" in ev:
            by_ticket[ev["ticket_id"]].append(ev)
    assert len(by_ticket) > 50
    for evs in by_ticket.values():
        opened = [ev for ev in evs if ev["event_type"] == "ticket_opened"]
        assert len(opened) == 1
        t0 = opened[0]["_ms"]
        assert all(ev["_ms"] >= t0 for ev in evs)
        assert all(ev.get("opened_at", t0) == t0 for ev in evs)
        agents = [ev["_ms"] for ev in evs if ev.get("author_type") == "agent"]
        resolved = [ev["_ms"] for ev in evs if ev["event_type"] == "ticket_resolved"]
        if resolved:
            assert agents and min(agents) < min(resolved)
        surveys = [ev for ev in evs if ev["event_type"] == "survey_response"]
        assert not surveys or (resolved and min(ev["_ms"] for ev in surveys) > min(resolved))


def test_a_checkout_outage_stops_one_stores_orders_only() -> None:
    outage = Outage(START + timedelta(hours=1), START + timedelta(hours=2), "store-02")
    evs = list(events(config(Anomalies(checkout_outages=(outage,)), duration_seconds=3 * 3600)))
    inside_ms = (START_MS + HOUR_MS + 5 * 60_000, START_MS + 2 * HOUR_MS)  # orders take minutes

    def count(kind: str, store: str, span: tuple[int, int]) -> int:
        return sum(
            1
            for ev in evs
            if ev["event_type"] == kind
            and ev["store_id"] == store
            and span[0] <= ev["_ms"] < span[1]
        )

    assert count("order_placed", "store-02", inside_ms) == 0
    assert count("checkout_started", "store-02", inside_ms) > 30  # sessions and carts go on
    assert count("payment_failed", "store-02", inside_ms) > 0
    assert count("order_placed", "store-01", inside_ms) > 30
    after_ms = (START_MS + 2 * HOUR_MS + 5 * 60_000, START_MS + 3 * HOUR_MS)
    assert count("order_placed", "store-02", after_ms) > 30  # checkout works again


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30m..45m", Outage(START + timedelta(minutes=30), START + timedelta(minutes=45), "")),
        (
            "1h..2h@store-02",
            Outage(START + timedelta(hours=1), START + timedelta(hours=2), "store-02"),
        ),
    ],
)
def test_checkout_outage_option(text: str, expected: Outage) -> None:
    assert parse_outage(text, start=START) == expected
    with pytest.raises(ValueError, match="an outage has no factor"):
        parse_outage("30m..45m*3", start=START)
