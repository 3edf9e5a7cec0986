"""streamproc/kpi/absorb.py: folding accepted events into per-key records (docs/semantics.md,
"Sessions", "Orders", "Carts", "Support tickets"), with small hand-built events."""

from __future__ import annotations

from typing import Any

from helpers import T0_MS, decoded

from streamproc.events import models as m
from streamproc.kpi import absorb
from streamproc.kpi.records import (
    ADD,
    CHECKOUT,
    CartEvent,
    Earliest,
    Refund,
    SessionRecord,
    TicketRecord,
    Visit,
    new_offsets,
)

M0 = T0_MS - 20_000  # 14:13:00.000Z, a minute start
MIN = 60_000
TIMEOUT = 30 * MIN  # session_timeout
STORE = "store-01"


def session(*events: tuple[str, int, str, dict[str, Any]]) -> SessionRecord:
    """A session id's record after absorbing ``(kind, t, event_id, overrides)`` in that order."""
    record = SessionRecord(new_offsets())
    for kind, t, eid, overrides in events:
        event = decoded(kind, t, eid, **overrides)
        if isinstance(event, m.WebEvent):
            absorb.add_session_event(record, event, STORE, session_timeout_ms=TIMEOUT)
        else:
            absorb.add_order_event(record, event, STORE)  # type: ignore[arg-type]
    return record


def ev(kind: str, t: int, eid: str, **overrides: Any) -> tuple[str, int, str, dict[str, Any]]:
    return kind, t, eid, overrides


def test_cell_keys_round_trip() -> None:
    assert absorb.cell_key(M0, "store-01", "v-1") == f"{M0}|store-01|v-1"
    assert absorb.mark_cell(f"{M0}|store|with|bars") == (M0, "store|with|bars")


def test_one_page_view_makes_one_segment() -> None:
    record = session(ev("page_view", M0 + 5_000, "e1"))
    assert len(record.segments) == 1
    segment = record.segments[0]
    assert (segment.start, segment.end) == (M0 + 5_000, M0 + 5_000)
    assert segment.first == Earliest(M0 + 5_000, "e1", store=STORE, text="v-1")
    assert segment.device == Earliest(M0 + 5_000, "e1", text="mobile")
    assert segment.start_event is None
    assert (segment.page_views, segment.others, segment.adds) == (1, 0, 0)
    assert segment.cells == {f"{M0}|{STORE}|v-1": 1}
    assert record.carts == [] and record.orders == [] and record.marks == {}


def test_segment_counts_views_others_and_adds_per_visitor_minute() -> None:
    record = session(
        ev("session_start", M0 + 1_000, "e1"),
        ev("page_view", M0 + 2_000, "e2"),
        ev("page_ping", M0 + 3_000, "e3"),
        ev("product_view", M0 + MIN + 1_000, "e4"),
        ev("page_view", M0 + MIN + 2_000, "e5", visitor_id="v-2"),
        ev("add_to_cart", M0 + MIN + 3_000, "e6"),
    )
    (segment,) = record.segments
    # session_start, page_view and page_ping are not "other" events; product_view and the cart
    # event are
    assert (segment.page_views, segment.others, segment.adds) == (2, 2, 1)
    assert segment.cells == {
        f"{M0}|{STORE}|v-1": 1,
        f"{M0 + MIN}|{STORE}|v-1": 0,  # present, no page view
        f"{M0 + MIN}|{STORE}|v-2": 1,
    }
    assert segment.start_event == Earliest(M0 + 1_000, "e1", text="email", extra="mobile", number=1)


def test_gap_of_the_session_timeout_starts_a_new_segment() -> None:
    """Consecutive events less than session_timeout apart: one session; a gap of it or more: a
    new one with the same id."""
    just_under = session(ev("page_view", M0, "e1"), ev("page_view", M0 + TIMEOUT - 1, "e2"))
    assert [(s.start, s.end) for s in just_under.segments] == [(M0, M0 + TIMEOUT - 1)]
    exactly = session(ev("page_view", M0, "e1"), ev("page_view", M0 + TIMEOUT, "e2"))
    assert [(s.start, s.end) for s in exactly.segments] == [(M0, M0), (M0 + TIMEOUT, M0 + TIMEOUT)]
    assert [s.page_views for s in exactly.segments] == [1, 1]


def test_late_event_that_bridges_two_segments_merges_them() -> None:
    record = session(
        ev("page_view", M0 + 50 * MIN, "e3", visitor_id="v-3"),
        ev("page_view", M0, "e1"),
    )
    assert [(s.start, s.end) for s in record.segments] == [(M0, M0), (M0 + 50 * MIN, M0 + 50 * MIN)]
    absorb.add_session_event(
        record, decoded("product_view", M0 + 25 * MIN, "e2"), STORE, session_timeout_ms=TIMEOUT
    )
    (segment,) = record.segments
    assert (segment.start, segment.end) == (M0, M0 + 50 * MIN)
    assert (segment.page_views, segment.others) == (2, 1)
    assert segment.first.eid == "e1"
    assert segment.cells == {
        f"{M0}|{STORE}|v-1": 1,
        f"{M0 + 25 * MIN}|{STORE}|v-1": 0,
        f"{M0 + 50 * MIN}|{STORE}|v-3": 1,
    }


def test_late_earlier_event_becomes_the_sessions_first() -> None:
    """Store and visitor come from the earliest event, device from the earliest one with a
    device_type, whatever the arrival order; segments stay sorted by start."""
    record = session(
        ev("page_view", M0 + 2 * TIMEOUT, "e9"),
        ev("page_view", M0 + 10_000, "e2", visitor_id="v-2", device_type=None),
    )
    absorb.add_session_event(
        record, decoded("page_ping", M0 + 5_000, "e1", visitor_id="v-1", device_type="desktop"),
        "store-02", session_timeout_ms=TIMEOUT,
    )  # fmt: skip
    assert [s.start for s in record.segments] == [M0 + 5_000, M0 + 2 * TIMEOUT]
    first = record.segments[0]
    assert first.first == Earliest(M0 + 5_000, "e1", store="store-02", text="v-1")
    assert first.device == Earliest(M0 + 5_000, "e1", text="desktop")
    assert (first.start, first.end) == (M0 + 5_000, M0 + 10_000)


def test_ties_in_time_are_broken_by_event_id() -> None:
    record = session(
        ev("session_start", M0, "e-b", channel_group="paid_search"),
        ev("session_start", M0, "e-a", channel_group="referral"),
        ev("session_start", M0, "e-c", channel_group="direct"),
    )
    (segment,) = record.segments
    assert segment.first.eid == "e-a"
    assert segment.start_event is not None
    assert (segment.start_event.eid, segment.start_event.text) == ("e-a", "referral")


def test_cart_is_created_by_its_earliest_add_to_cart() -> None:
    record = session(
        ev("checkout_started", M0 + 1_000, "e1"),
        ev("add_to_cart", M0 + 9_000, "e3"),
        ev("add_to_cart", M0 + 5_000, "e2"),
    )
    (cart,) = record.carts
    assert cart.cart_id == "c-1"
    assert cart.created == Earliest(M0 + 5_000, "e2", STORE)
    assert cart.events == [
        CartEvent(M0 + 1_000, CHECKOUT, STORE),  # kept; contrib ignores it (before creation)
        CartEvent(M0 + 9_000, ADD, STORE),
        CartEvent(M0 + 5_000, ADD, STORE),
    ]


def test_cart_events_without_an_add_leave_the_cart_uncreated() -> None:
    record = session(ev("checkout_started", M0, "e1"), ev("payment_failed", M0 + 1, "e2"))
    (cart,) = record.carts
    assert cart.created is None
    assert len(cart.events) == 2


def test_order_placed_once() -> None:
    record = session(ev("order_placed", M0 + 7_000, "o1"))
    (order,) = record.orders
    assert order.order_id == "o-1"
    assert order.placed == Earliest(M0 + 7_000, "o1", STORE, text="v-1", extra="mobile", number=1)
    assert (order.total, order.units, order.cart_id) == (4498, 2, "c-1")
    assert order.repeats == [] and order.cancelled is None
    assert record.marks == {f"{M0}|{STORE}": 1}
    assert record.segments == []  # orders never open a session


def test_repeated_order_placed_keeps_the_earliest() -> None:
    """A later-arriving but earlier order_placed takes over; the other becomes a repeat."""
    record = session(
        ev("order_placed", M0 + MIN, "o2", total_minor=100, items=[]),
        ev("order_placed", M0, "o1", visitor_id="v-9"),
        ev("order_placed", M0 + 2 * MIN, "o3", total_minor=7),
    )
    (order,) = record.orders
    assert order.placed is not None
    assert (order.placed.eid, order.placed.text, order.total, order.units) == ("o1", "v-9", 4498, 2)
    assert [r.eid for r in order.repeats] == ["o2", "o3"]
    assert record.marks == {
        f"{M0}|{STORE}": 1,
        f"{M0 + MIN}|{STORE}": 1,
        f"{M0 + 2 * MIN}|{STORE}": 1,
    }


def test_cancellations_keep_the_earliest_and_refunds_add_up() -> None:
    record = session(
        ev("order_cancelled", M0 + 3 * MIN, "c2"),
        ev("order_cancelled", M0 + 2 * MIN, "c1", store_id="store-02"),
        ev("order_refunded", M0 + 4 * MIN, "r1"),
        ev("order_refunded", M0 + 4 * MIN, "r2", refund_minor=1, visitor_id=None),
    )
    (order,) = record.orders
    assert order.placed is None  # cancelling an order not (yet) placed
    assert order.cancelled == Earliest(M0 + 2 * MIN, "c1", STORE)
    assert record.refunds == [Refund(M0 + 4 * MIN, STORE, 1999), Refund(M0 + 4 * MIN, STORE, 1)]
    # visitors seen outside a session: both cancellations and the refund with a visitor
    assert record.visits == [
        Visit(M0 + 3 * MIN, STORE, "v-1", "mobile"),
        Visit(M0 + 2 * MIN, STORE, "v-1", "mobile"),
        Visit(M0 + 4 * MIN, STORE, "v-1", "mobile"),
    ]
    assert sum(record.marks.values()) == 4


def test_records_do_not_depend_on_arrival_order() -> None:
    events = [
        ev("session_start", M0, "e1"),
        ev("page_view", M0 + 20 * MIN, "e2"),
        ev("page_view", M0 + 45 * MIN, "e3"),
        ev("page_view", M0 + 80 * MIN, "e4"),
        ev("order_placed", M0 + 46 * MIN, "o1"),
    ]
    forward, backward = session(*events), session(*reversed(events))
    assert forward.segments == backward.segments
    assert [(s.start, s.end) for s in forward.segments] == [
        (M0, M0 + 45 * MIN),
        (M0 + 80 * MIN,) * 2,
    ]
    assert forward.orders == backward.orders


def test_ticket_events() -> None:
    record = TicketRecord(new_offsets())
    opened_at = M0 - 60 * MIN
    for kind, t, eid, overrides in (
        ("ticket_resolved", M0 + 30 * MIN, "t4", {"opened_at": opened_at}),
        ("message_added", M0 + 20 * MIN, "t3", {}),
        ("message_added", M0 + 5 * MIN, "t2", {"author_type": "customer"}),
        ("ticket_opened", M0, "t1", {}),
        ("ticket_escalated", M0 + 25 * MIN, "t5", {}),
        ("ticket_escalated", M0 + 15 * MIN, "t6", {}),
        ("survey_response", M0 - 2 * 60 * MIN, "t0", {}),
    ):
        absorb.add_ticket_event(record, decoded(kind, t, eid, **overrides), STORE)  # type: ignore[arg-type]
    assert record.opened == Earliest(M0, "t1", STORE, text="chat", extra="high")
    assert record.opened_at == opened_at
    assert record.first == Earliest(M0, "t1", STORE)  # the survey is not part of the ticket
    assert record.agent_replies == [M0 + 20 * MIN]
    assert record.resolutions == [M0 + 30 * MIN]
    assert record.escalated == M0 + 15 * MIN
    assert record.lifecycle == Earliest(M0 + 30 * MIN, "t4", text="resolved")
    assert [(o.t, o.channel) for o in record.openings] == [(M0, "chat")]
    assert [(s.kind, s.score) for s in record.surveys] == [("nps", 9)]
    assert sum(record.marks.values()) == 7
