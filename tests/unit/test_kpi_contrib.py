"""streamproc/kpi/contrib.py: what one record adds to the (minute, store) cells at a watermark
(docs/semantics.md), with small hand-built records and exact expected counters."""

from __future__ import annotations

from typing import Any

from helpers import T0_MS, decoded

from streamproc.events import models as m
from streamproc.kpi import absorb
from streamproc.kpi.contrib import (
    NEVER,
    Contribution,
    Shapes,
    Timeouts,
    contribute_session,
    session_head,
)
from streamproc.kpi.contrib import contribute_ticket as ticket_contribution
from streamproc.kpi.epoch import minute_of
from streamproc.kpi.records import SessionRecord, TicketRecord, new_offsets

M0 = T0_MS - 20_000  # 14:13:00.000Z, a minute start
MIN = 60_000
TIMEOUTS = Timeouts(session_ms=30 * MIN, abandonment_ms=20 * MIN, max_lateness_ms=60 * MIN)
STORE = "store-01"
CELL = (M0, STORE)


def record_of(*events: tuple[str, int, str, dict[str, Any]]) -> SessionRecord:
    record = SessionRecord(new_offsets())
    for kind, t, eid, overrides in events:
        event = decoded(kind, t, eid, **overrides)
        if isinstance(event, m.WebEvent):
            absorb.add_session_event(record, event, STORE, session_timeout_ms=TIMEOUTS.session_ms)
        else:
            absorb.add_order_event(record, event, STORE)  # type: ignore[arg-type]
    return record


def ev(kind: str, t: int, eid: str, **overrides: Any) -> tuple[str, int, str, dict[str, Any]]:
    return kind, t, eid, overrides


def at(record: SessionRecord, watermark: int, *, sessionless: bool = False) -> Contribution:
    return contribute_session(record, watermark, TIMEOUTS, sessionless=sessionless)


SESSION_STARTED = {  # a session_start (email, mobile, index 1) at M0 with one page_view
    "sessions": 1,
    "sessions|channel_group=email": 1,
    "sessions|device_type=mobile": 1,
    "sessions_with_index": 1,
    "sessions_new_visitor": 1,
    "page_views": 1,
    "page_views|channel_group=email": 1,
    "page_views|device_type=mobile": 1,
    "visitor_marks": 1,  # one visitor in one minute
}
BOUNCE = [ev("session_start", M0 + 1_000, "e1"), ev("page_view", M0 + 4_000, "e2")]
END = M0 + 4_000
CLOSE = END + TIMEOUTS.session_ms
SETTLE = CLOSE + TIMEOUTS.max_lateness_ms


def test_open_session_counts_at_its_start_and_changes_at_its_close() -> None:
    out = at(record_of(*BOUNCE), CLOSE - 1)
    assert out.cells == {CELL: {**SESSION_STARTED, "sessions_open": 1}}
    assert out.next_change == CLOSE
    assert out.open_tickets == {}


def test_closed_session_has_outcomes_and_changes_when_settled() -> None:
    out = at(record_of(*BOUNCE), CLOSE)
    assert out.cells == {
        CELL: {
            **SESSION_STARTED,
            "sessions_closed": 1,
            "sessions_closed_page_views": 1,
            "sessions_bounced": 1,
            "sessions_duration_ms": 3_000,
        }
    }
    assert out.next_change == SETTLE
    assert at(record_of(*BOUNCE), SETTLE - 1).next_change == SETTLE
    settled = at(record_of(*BOUNCE), SETTLE)
    assert settled.next_change == NEVER
    assert settled.cells == out.cells


def head(record: SessionRecord, watermark: int) -> Any:
    return session_head(record, watermark, TIMEOUTS, sessionless=False, bodies=[])


def test_a_growing_open_session_keeps_its_head_shapes_and_closing_changes_them() -> None:
    """The engine skips a record's recount when its head's shapes are equal before and after a
    run: equal shapes must be equal cells, and every change of the start cell a change of shape."""
    record = record_of(*BOUNCE)
    before = head(record, CLOSE - 1)
    assert isinstance(before, Shapes)
    # the head leaves out the session's body: its page views and visitor marks
    started = {k: v for k, v in SESSION_STARTED.items() if k.startswith("sessions")}
    assert before.cells == {CELL: {**started, "sessions_open": 1}}
    grown = record_of(*BOUNCE, ev("page_view", END + 60_000, "e3"))
    after = head(grown, CLOSE - 1)
    assert after.shapes == before.shapes
    assert after.cells == before.cells
    assert after.next_change == CLOSE + 60_000  # its end moved on: it closes later
    closed = head(record, CLOSE)
    assert closed.shapes != before.shapes
    assert closed.cells != before.cells
    bigger = head(grown, CLOSE + 60_000)  # two page views: no bounce, a longer duration
    assert bigger.shapes != closed.shapes
    assert bigger.cells[CELL]["sessions_closed_page_views"] == 2
    assert "sessions_bounced" not in bigger.cells[CELL]


def test_bounce_is_one_page_view_and_nothing_but_starts_and_pings() -> None:
    pinged = record_of(*BOUNCE, ev("page_ping", END + 1, "e3"))
    assert at(pinged, SETTLE).cells[CELL]["sessions_bounced"] == 1
    viewed = record_of(*BOUNCE, ev("product_view", END + 1, "e3"))
    assert "sessions_bounced" not in at(viewed, SETTLE).cells[CELL]
    two_views = record_of(*BOUNCE, ev("page_view", END + 1, "e3"))
    closed = at(two_views, SETTLE).cells[CELL]
    assert "sessions_bounced" not in closed
    assert closed["sessions_closed_page_views"] == 2
    no_view = record_of(BOUNCE[0])
    assert "sessions_bounced" not in at(no_view, SETTLE).cells[CELL]


def test_visitor_presence_keys_once_the_dimensions_are_known() -> None:
    """A session_start with a device_type fixes the dimensions: the visitor counts in the
    breakdowns at once."""
    out = at(record_of(*BOUNCE), M0)
    assert out.presence == {
        (M0, STORE, "", "v-1"),
        (M0, STORE, "channel_group=email", "v-1"),
        (M0, STORE, "device_type=mobile", "v-1"),
    }


def test_session_without_session_start_is_other_and_known_only_when_settled() -> None:
    record = record_of(ev("page_view", M0 + 4_000, "e2", device_type="tablet"))
    open_ = at(record, M0 + 4_000)
    assert open_.cells[CELL] == {
        "sessions": 1,
        "sessions|channel_group=other": 1,
        "sessions|device_type=tablet": 1,
        "sessions_open": 1,
        "page_views": 1,
        "page_views|channel_group=other": 1,
        "page_views|device_type=tablet": 1,
        "visitor_marks": 1,
    }  # no session_index: neither with an index nor a new visitor
    assert open_.presence == {(M0, STORE, "", "v-1")}  # a session_start could still arrive
    assert at(record, SETTLE - 1).presence == {(M0, STORE, "", "v-1")}
    assert at(record, SETTLE).presence == {
        (M0, STORE, "", "v-1"),
        (M0, STORE, "channel_group=other", "v-1"),
        (M0, STORE, "device_type=tablet", "v-1"),
    }


def test_returning_visitor_has_an_index_but_is_not_new() -> None:
    record = record_of(ev("session_start", M0, "e1", session_index=3))
    cell = at(record, M0).cells[CELL]
    assert cell["sessions_with_index"] == 1
    assert "sessions_new_visitor" not in cell


def test_session_with_add_to_cart_and_a_cart() -> None:
    record = record_of(*BOUNCE, ev("add_to_cart", END + 1_000, "e3"))
    cell = at(record, END + 1_000).cells[CELL]
    assert cell["sessions_with_add_to_cart"] == 1
    assert cell["carts_created"] == 1
    assert cell["carts_undecided"] == 1


def test_order_belonging_to_a_session_takes_its_dimensions_and_is_no_bounce() -> None:
    order_t = M0 + 10 * MIN  # after the session's last event, before end + session_timeout
    record = record_of(*BOUNCE, ev("order_placed", order_t, "o1", device_type="desktop"))
    out = at(record, SETTLE)
    assert out.cells[CELL]["sessions_with_order"] == 1
    assert "sessions_bounced" not in out.cells[CELL]
    assert out.cells[(M0 + 10 * MIN, STORE)] == {
        "orders": 1,
        "orders|channel_group=email": 1,
        "orders|device_type=mobile": 1,  # the session's device, not the order's
        "revenue_minor": 4498,
        "revenue_minor|channel_group=email": 4498,
        "revenue_minor|device_type=mobile": 4498,
        "units": 2,
        "orders_with_index": 1,
        "orders_new_customer": 1,
        "visitor_marks": 1,
        "event_marks": 1,
    }
    assert out.next_change == NEVER


def test_order_outside_its_sessions_time_is_other_until_no_session_can_reach_it() -> None:
    order_t = M0 + 31 * MIN  # [start, end + session_timeout) does not hold it
    record = record_of(*BOUNCE, ev("order_placed", order_t, "o1", device_type=None))
    order_cell = (order_t, STORE)
    early = at(record, CLOSE)
    assert "sessions_with_order" not in early.cells[CELL]
    assert early.cells[CELL]["sessions_bounced"] == 1
    assert early.cells[order_cell]["orders|channel_group=other"] == 1
    assert early.cells[order_cell]["orders|device_type=other"] == 1
    assert early.next_change == SETTLE  # the session's settle time comes first
    order_settle = order_t + TIMEOUTS.max_lateness_ms
    assert at(record, SETTLE).next_change == order_settle
    assert (order_cell[0], STORE, "channel_group=other", "v-1") not in early.presence
    assert (order_cell[0], STORE, "channel_group=other", "v-1") in at(record, order_settle).presence


def test_sessionless_order_is_other_with_its_own_device_and_final_at_once() -> None:
    record = record_of(ev("order_placed", M0 + 7_000, "o1", session_id=None))
    out = at(record, M0, sessionless=True)
    assert out.cells == {
        CELL: {
            "orders": 1,
            "orders|channel_group=other": 1,
            "orders|device_type=mobile": 1,
            "revenue_minor": 4498,
            "revenue_minor|channel_group=other": 4498,
            "revenue_minor|device_type=mobile": 4498,
            "units": 2,
            "orders_with_index": 1,
            "orders_new_customer": 1,
            "visitor_marks": 1,
            "event_marks": 1,
        }
    }
    assert out.next_change == NEVER
    assert out.presence == {
        (M0, STORE, "", "v-1"),
        (M0, STORE, "channel_group=other", "v-1"),
        (M0, STORE, "device_type=mobile", "v-1"),
    }


def test_cancelled_order_subtracts_its_total_at_the_cancellation() -> None:
    record = record_of(
        ev("order_placed", M0, "o1", session_id=None),
        ev("order_cancelled", M0 + 5 * MIN, "x2", session_id=None),
        ev("order_cancelled", M0 + 3 * MIN, "x1", session_id=None, store_id="store-02"),
    )
    cells = at(record, M0, sessionless=True).cells
    assert cells[CELL]["orders"] == 1
    # the earliest cancellation counts, once; the later one only marks its cell
    assert cells[(M0 + 3 * MIN, STORE)] == {
        "cancelled_minor": 4498,
        "event_marks": 1,
        "visitor_marks": 1,
    }
    assert cells[(M0 + 5 * MIN, STORE)] == {"event_marks": 1, "visitor_marks": 1}


def test_cancelling_an_unknown_order_changes_nothing_but_its_mark() -> None:
    record = record_of(ev("order_cancelled", M0, "x1", visitor_id=None))
    assert at(record, M0, sessionless=True).cells == {CELL: {"event_marks": 1}}


def test_refund_counts_at_its_own_time() -> None:
    record = record_of(ev("order_refunded", M0 + 2 * 60 * MIN, "r1", session_id=None))
    out = at(record, M0, sessionless=True)
    refund_cell = (M0 + 2 * 60 * MIN, STORE)
    assert out.cells == {
        refund_cell: {"refunds": 1, "refunded_minor": 1999, "event_marks": 1, "visitor_marks": 1}
    }
    assert out.presence == {
        (refund_cell[0], STORE, "", "v-1"),
        (refund_cell[0], STORE, "channel_group=other", "v-1"),
        (refund_cell[0], STORE, "device_type=mobile", "v-1"),
    }


def test_repeated_order_placed_counts_once_but_its_visitor_is_seen() -> None:
    record = record_of(
        ev("order_placed", M0, "o1", session_id=None),
        ev("order_placed", M0 + MIN, "o2", session_id=None, visitor_id="v-2"),
    )
    out = at(record, M0, sessionless=True)
    assert out.cells[CELL]["orders"] == 1
    assert out.cells[CELL]["revenue_minor"] == 4498
    assert out.cells[(M0 + MIN, STORE)] == {"visitor_marks": 1, "event_marks": 1}
    assert (M0 + MIN, STORE, "", "v-2") in out.presence


CART = [
    ev("session_start", M0, "e1"),
    ev("add_to_cart", M0 + 1_000, "a1"),
    ev("checkout_started", M0 + 2_000, "k1"),
]
ABANDON_AT = M0 + 2_000 + TIMEOUTS.abandonment_ms


def test_cart_undecided_then_abandoned_at_the_abandonment_timeout() -> None:
    record = record_of(*CART)
    undecided = at(record, ABANDON_AT - 1)
    cart_counters = {
        k: v for k, v in undecided.cells[CELL].items() if "cart" in k or "checkout" in k
    }
    assert cart_counters == {
        "sessions_with_add_to_cart": 1,
        "checkouts_started": 1,
        "carts_created": 1,
        "carts_with_checkout": 1,
        "carts_undecided": 1,
    }
    assert undecided.next_change == ABANDON_AT  # before the session closes
    abandoned = at(record, ABANDON_AT)
    cart_counters = {k: v for k, v in abandoned.cells[CELL].items() if k.startswith("carts")}
    assert cart_counters == {
        "carts_created": 1,
        "carts_with_checkout": 1,
        "carts_abandoned": 1,
        "carts_with_checkout_abandoned": 1,
    }
    assert abandoned.next_change == M0 + 2_000 + TIMEOUTS.session_ms


def test_order_before_the_timeout_converts_the_cart() -> None:
    record = record_of(*CART, ev("order_placed", ABANDON_AT - 1, "o1"))
    cells = at(record, ABANDON_AT + 1).cells
    carts = {k: v for k, v in cells[CELL].items() if k.startswith("carts")}
    assert carts == {"carts_created": 1, "carts_with_checkout": 1, "carts_converted": 1}
    assert cells[(minute_of(ABANDON_AT - 1), STORE)]["orders"] == 1


def test_order_at_the_timeout_is_too_late_to_convert() -> None:
    """An open cart whose last event is at or before t - abandonment_timeout is abandoned before
    the order at t: the order still counts, the cart stays abandoned."""
    record = record_of(*CART, ev("order_placed", ABANDON_AT, "o1"))
    cells = at(record, ABANDON_AT).cells
    carts = {k: v for k, v in cells[CELL].items() if k.startswith("carts")}
    assert carts == {
        "carts_created": 1,
        "carts_with_checkout": 1,
        "carts_abandoned": 1,
        "carts_with_checkout_abandoned": 1,
    }
    assert cells[(minute_of(ABANDON_AT), STORE)]["orders"] == 1


def test_order_without_cart_id_converts_the_newest_open_cart() -> None:
    record = record_of(
        ev("add_to_cart", M0 + 1_000, "a1", cart_id="c-1"),
        ev("add_to_cart", M0 + 2_000, "a2", cart_id="c-2"),
        ev("order_placed", M0 + 3_000, "o1", cart_id=None),
    )
    out = at(record, M0 + 3_000 + TIMEOUTS.abandonment_ms)
    carts = {k: v for k, v in out.cells[CELL].items() if k.startswith("carts")}
    # c-2 converted; c-1 (last event at M0 + 1 s) abandoned at M0 + 1 s + the timeout
    assert carts == {"carts_created": 2, "carts_converted": 1, "carts_abandoned": 1}


def test_ticket_contribution() -> None:
    record = TicketRecord(new_offsets())
    for kind, t, eid, overrides in (
        ("ticket_opened", M0, "t1", {}),
        ("message_added", M0 + 20_000, "t2", {}),  # 20 s: bucket 1 (<= 30 s)
        ("ticket_escalated", M0 + MIN, "t3", {}),
        ("survey_response", M0 + MIN, "t4", {"survey_type": "csat", "score": 4}),
    ):
        absorb.add_ticket_event(record, decoded(kind, t, eid, **overrides), STORE)  # type: ignore[arg-type]
    out = ticket_contribution(record)
    assert out.cells == {
        CELL: {
            "tickets_opened": 1,
            "tickets_opened|channel=chat": 1,
            "first_response_bucket|1": 1,
            "first_response_sum_ms": 20_000,
            "first_response_count": 1,
            "event_marks": 2,
            "visitor_marks": 2,
        },
        (M0 + MIN, STORE): {
            "csat_responses": 1,
            "csat_sum": 4,
            "csat_positive": 1,
            "tickets_escalated": 1,
            "event_marks": 2,
            "visitor_marks": 2,
        },
    }
    assert out.open_tickets == {(STORE, "chat", "high"): 1}
    assert out.next_change == NEVER


def test_an_order_belongs_to_a_session_up_to_but_excluding_end_plus_timeout() -> None:
    """Belongs: [start, end + session_timeout) holds the order time."""
    inside = at(record_of(*BOUNCE, ev("order_placed", CLOSE - 1, "o1")), SETTLE)
    assert inside.cells[CELL]["sessions_with_order"] == 1
    assert inside.cells[(minute_of(CLOSE - 1), STORE)]["orders|channel_group=email"] == 1
    outside = at(record_of(*BOUNCE, ev("order_placed", CLOSE, "o1")), SETTLE)
    assert "sessions_with_order" not in outside.cells[CELL]
    assert outside.cells[(minute_of(CLOSE), STORE)]["orders|channel_group=other"] == 1
