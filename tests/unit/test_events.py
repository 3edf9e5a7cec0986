"""The event contract: every event type accepted, every kind of bad input rejected precisely."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from helpers import (
    EXAMPLES,
    NOW_MS,
    REQUIRED,
    T0_MS,
    dumps,
    family,
    invalid_variants,
    make_event,
    wrong_value,
)

from streamproc.errors import InvalidEvent
from streamproc.events import models as m
from streamproc.events.parse import (
    Converter,
    EventDecoder,
    Reason,
    build_converters,
    minor_unit_exponent,
    parse_event_time,
)
from streamproc.events.routing import key_for

ALL_TYPES = sorted(EXAMPLES)
DECODER = EventDecoder(fx_rates={"EUR": Decimal("1.10"), "JPY": Decimal("0.0067")})


def decode(event: dict[str, Any] | bytes, event_type: str = "page_view") -> m.Event:
    raw = event if isinstance(event, bytes) else dumps(event)
    return DECODER.decode(raw, family(event_type), now_ms=NOW_MS)


def rejected(event: dict[str, Any] | bytes, event_type: str = "page_view") -> InvalidEvent:
    with pytest.raises(InvalidEvent) as info:
        decode(event, event_type)
    return info.value


def test_every_family_has_examples() -> None:
    assert set(ALL_TYPES) == set(m.EVENT_TYPES)


@pytest.mark.parametrize("event_type", ALL_TYPES)
def test_valid_example_is_accepted(event_type: str) -> None:
    event = decode(make_event(event_type), event_type)
    assert event.event_type == event_type
    assert isinstance(event, m.EVENT_TYPES[event_type])
    assert event.event_time == T0_MS + 250
    assert event.store_id == "store-01"


@pytest.mark.parametrize(
    ("event_type", "field"),
    [(t, f) for t in ALL_TYPES for f in ("event_id", "event_type", "event_time", *REQUIRED[t])],
)
def test_missing_required_field(event_type: str, field: str) -> None:
    error = rejected(make_event(event_type, **{field: None}), event_type)
    assert error.reason == Reason.MISSING_FIELD
    assert error.field == f"$.{field}"
    assert field in error.detail


@pytest.mark.parametrize(
    ("event_type", "field"),
    [(t, f) for t in ALL_TYPES for f in make_event(t) if f != "event_type"],
)
def test_wrong_type(event_type: str, field: str) -> None:
    event = make_event(event_type)
    event[field] = wrong_value(field, event[field])
    error = rejected(event, event_type)
    assert error.reason == Reason.WRONG_TYPE, error
    assert error.field == f"$.{field}"


@pytest.mark.parametrize(
    ("event_type", "field"),
    [(t, f) for t in ALL_TYPES for f in EXAMPLES[t] if f in m.MONEY_FIELDS],
)
def test_negative_money(event_type: str, field: str) -> None:
    error = rejected(make_event(event_type, **{field: -1}), event_type)
    assert error.reason == Reason.NEGATIVE_MONEY
    assert error.field == f"$.{field}"


def test_negative_item_price_and_zero_quantity() -> None:
    items = [{"product_id": "p", "quantity": 1, "unit_price_minor": -5}]
    error = rejected(make_event("order_placed", items=items), "order_placed")
    assert (error.reason, error.field) == (Reason.NEGATIVE_MONEY, "$.items[0].unit_price_minor")
    items = [{"product_id": "p", "quantity": 0}]
    error = rejected(make_event("order_placed", items=items), "order_placed")
    assert (error.reason, error.field) == (Reason.INVALID_QUANTITY, "$.items[0].quantity")
    error = rejected(make_event("add_to_cart", quantity=0), "add_to_cart")
    assert error.reason == Reason.INVALID_QUANTITY


@pytest.mark.parametrize(
    ("survey_type", "score", "ok"),
    [
        ("csat", 1, True),
        ("csat", 5, True),
        ("csat", 0, False),
        ("csat", 6, False),
        ("nps", 0, True),
        ("nps", 10, True),
        ("nps", -1, False),
        ("nps", 11, False),
        ("ces", 99, True),  # an unknown survey type maps to "other": no range to check
    ],
)
def test_survey_score_range(survey_type: str, score: int, ok: bool) -> None:
    event = make_event("survey_response", survey_type=survey_type, score=score)
    if ok:
        decoded = decode(event, "survey_response")
        assert isinstance(decoded, m.SurveyResponse)
        assert decoded.survey_type in {"csat", "nps", "other"}
    else:
        error = rejected(event, "survey_response")
        assert (error.reason, error.field) == (Reason.SCORE_OUT_OF_RANGE, "$.score")


@pytest.mark.parametrize("event_type", ALL_TYPES)
def test_future_time(event_type: str) -> None:
    at_limit = make_event(event_type, event_time=NOW_MS + 300_000)
    decode(at_limit, event_type)
    error = rejected(make_event(event_type, event_time=NOW_MS + 300_001), event_type)
    assert (error.reason, error.field) == (Reason.FUTURE_TIME, "$.event_time")


@pytest.mark.parametrize("event_type", [t for t in ALL_TYPES if "currency" in EXAMPLES[t]])
def test_unknown_currency(event_type: str) -> None:
    error = rejected(make_event(event_type, currency="CHF"), event_type)
    assert error.reason == Reason.UNKNOWN_CURRENCY
    assert "CHF" in error.detail


def test_price_without_currency_is_rejected() -> None:
    error = rejected(make_event("add_to_cart", currency=None), "add_to_cart")
    assert (error.reason, error.field) == (Reason.MISSING_FIELD, "$.currency")
    decode(make_event("add_to_cart", currency=None, unit_price_minor=None), "add_to_cart")


@pytest.mark.parametrize("event_type", ALL_TYPES)
def test_oversize_message(event_type: str) -> None:
    event = make_event(event_type, padding="x" * 70_000)  # unknown fields are ignored ...
    error = rejected(event, event_type)  # ... but the message is too large
    assert error.reason == Reason.TOO_LARGE
    decode(make_event(event_type, padding="x" * 60_000), event_type)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"nope",
        b'{"event_type": "page_view",',
        b"\xff\xfe{}",
        dumps(make_event("page_view")).replace(b"e-page_view", b"\xff"),  # invalid UTF-8
    ],
)
def test_not_json(raw: bytes) -> None:
    assert rejected(raw).reason == Reason.NOT_JSON


@pytest.mark.parametrize("raw", [b"[]", b'"page_view"', b"42", b"null", b"true"])
def test_not_an_object(raw: bytes) -> None:
    error = rejected(raw)
    assert (error.reason, error.field) == (Reason.NOT_OBJECT, None)


def test_unknown_and_misplaced_event_types() -> None:
    error = rejected(make_event("page_view", event_type="page_zoom"))
    assert (error.reason, error.field) == (Reason.UNKNOWN_EVENT_TYPE, "$.event_type")
    order = make_event("order_placed")
    with pytest.raises(InvalidEvent) as info:
        DECODER.decode(dumps(order), m.Family.CLICKSTREAM, now_ms=NOW_MS)
    assert info.value.reason == Reason.WRONG_TOPIC
    assert "orders" in info.value.detail


def test_too_long_ids() -> None:
    error = rejected(make_event("page_view", event_id="e" * 129))
    assert (error.reason, error.field) == (Reason.TOO_LONG, "$.event_id")
    error = rejected(make_event("page_view", store_id="s" * 65))
    assert (error.reason, error.field) == (Reason.TOO_LONG, "$.store_id")
    decode(make_event("page_view", event_id="e" * 128, store_id="s" * 64))
    error = rejected(make_event("page_view", session_id=""))
    assert (error.reason, error.field) == (Reason.INVALID_VALUE, "$.session_id")


def test_unknown_enum_values_map_to_other() -> None:
    event = decode(make_event("page_view", page_type="Landing", device_type="watch"))
    assert isinstance(event, m.PageView)
    assert (event.page_type, event.device_type) == ("other", "other")
    event = decode(make_event("page_view", page_type="PRODUCT", device_type="Desktop"))
    assert isinstance(event, m.PageView)
    assert (event.page_type, event.device_type) == ("product", "desktop")
    opened = decode(make_event("ticket_opened", channel="fax", priority="p1"), "ticket_opened")
    assert isinstance(opened, m.TicketOpened)
    assert (opened.channel, opened.priority) == ("other", "other")
    message = decode(make_event("message_added", author_type="system"), "message_added")
    assert isinstance(message, m.MessageAdded) and message.author_type == "other"
    start = decode(make_event("session_start", channel_group="tiktok"), "session_start")
    assert isinstance(start, m.SessionStart) and start.channel_group == "other"


def test_optional_fields_default() -> None:
    event = decode(make_event("page_view", store_id=None, device_type=None, page_type=None))
    assert isinstance(event, m.PageView)
    assert (event.store_id, event.device_type, event.page_type) == ("default", None, "other")
    assert event.schema_version == 1
    opened = decode(make_event("ticket_opened", channel=None, priority=None), "ticket_opened")
    assert isinstance(opened, m.TicketOpened)
    assert (opened.channel, opened.priority) == ("other", "other")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-09-21T14:13:20Z", T0_MS),
        ("2026-09-21T14:13:20.123Z", T0_MS + 123),
        ("2026-09-21T14:13:20.1239Z", T0_MS + 123),  # truncated to the millisecond
        ("2026-09-21T16:13:20.5+02:00", T0_MS + 500),
        ("2026-09-21T09:13:20-05:00", T0_MS),
        (T0_MS + 7, T0_MS + 7),
    ],
)
def test_event_time_forms(value: Any, expected: int) -> None:
    assert parse_event_time(value) == expected
    event = decode(make_event("page_view", event_time=value))
    assert event.event_time == expected and type(event.event_time) is m.EpochMs


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("2026-09-21T14:13:20", Reason.INVALID_TIME),  # no offset
        ("yesterday", Reason.INVALID_TIME),
        ("2026-13-01T00:00:00Z", Reason.INVALID_TIME),
        (1_790_000_000, Reason.INVALID_TIME),  # seconds, not milliseconds
        ("1999-12-31T23:59:59Z", Reason.INVALID_TIME),
        (1.79e12, Reason.WRONG_TYPE),
        (True, Reason.WRONG_TYPE),
    ],
)
def test_bad_event_times(value: Any, reason: Reason) -> None:
    error = rejected(make_event("page_view", event_time=value))
    assert (error.reason, error.field) == (reason, "$.event_time")


def test_opened_at_is_normalised() -> None:
    event = decode(make_event("ticket_resolved"), "ticket_resolved")
    assert isinstance(event, m.TicketResolved)
    assert event.opened_at == T0_MS - 4_400_000


def test_money_is_converted_to_reporting_minor_units() -> None:
    order = make_event("order_placed", currency="EUR", total_minor=1001, shipping_minor=5)
    event = decode(order, "order_placed")
    assert isinstance(event, m.OrderPlaced)
    assert (event.total_minor, event.shipping_minor, event.currency) == (1101, 6, "USD")
    assert event.items is not None and event.items[0].unit_price_minor == 2199  # 2198.9
    yen = make_event("order_refunded", currency="JPY", refund_minor=1500)  # 1500 JPY = 10.05 USD
    refund = decode(yen, "order_refunded")
    assert isinstance(refund, m.OrderRefunded) and refund.refund_minor == 1005
    lower = decode(make_event("order_placed", currency="eur", total_minor=100), "order_placed")
    assert isinstance(lower, m.OrderPlaced) and lower.total_minor == 110


@pytest.mark.parametrize(
    ("rate", "amount", "expected"),
    [("1.5", 1, 2), ("1.5", 3, 4), ("2.5", 1, 2), ("2.5", 3, 8), ("0.1", 5, 0), ("0.1", 15, 2)],
)
def test_conversion_rounds_half_to_even(rate: str, amount: int, expected: int) -> None:
    converter = build_converters("USD", {"EUR": Decimal(rate)})["EUR"]
    assert converter(amount) == expected


def test_minor_unit_exponents() -> None:
    assert [minor_unit_exponent(c) for c in ("USD", "JPY", "KWD", "EUR")] == [2, 0, 3, 2]
    # reporting in JPY: 1.00 USD (100 cents) at 150 JPY/USD = 150 yen
    assert build_converters("JPY", {"USD": Decimal("150")})["USD"](100) == 150
    assert Converter.__slots__  # no per-instance dict on the hot path


def test_unknown_fields_are_ignored() -> None:
    event = decode(make_event("page_view", future_field={"nested": [1, 2]}, schema_version=2))
    assert event.schema_version == 2


@pytest.mark.parametrize(
    ("event_type", "overrides", "key"),
    [
        ("page_view", {}, "s-1"),
        ("add_to_cart", {}, "s-1"),
        ("order_placed", {}, "s-1"),
        ("order_placed", {"session_id": None}, "o-1"),
        ("ticket_opened", {}, "t-1"),
        ("survey_response", {"ticket_id": None, "customer_id": "cu-1"}, "cu-1"),
        ("survey_response", {"ticket_id": None}, "e-survey_response"),
        ("page_view", {"session_id": None}, None),
    ],
)
def test_routing_keys(event_type: str, overrides: dict[str, Any], key: str | None) -> None:
    event = json.loads(dumps(make_event(event_type, **overrides)))
    assert key_for(event, family(event_type)) == key


@pytest.mark.parametrize("event_type", ALL_TYPES)
def test_invalid_variants_matrix(event_type: str) -> None:
    """The matrix the integration test sends through the worker gives the reasons it expects."""
    for label, raw, reason in invalid_variants(event_type, future_ms=NOW_MS + 86_400_000):
        with pytest.raises(InvalidEvent) as info:
            DECODER.decode(raw, family(event_type), now_ms=NOW_MS)
        assert info.value.reason == reason, label
