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
from streamproc.events import parse
from streamproc.events.parse import (
    MAX_DEPTH,
    MAX_EPOCH_MS,
    MIN_EPOCH_MS,
    Converter,
    EventDecoder,
    Reason,
    build_converters,
    minor_unit_exponent,
    nesting_depth,
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
        ("2026-09-21t14:13:20z", T0_MS),  # RFC 3339 5.6: T and Z may be lower case
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
        # ISO 8601 forms that datetime.fromisoformat takes and RFC 3339 does not
        ("2026-W39-1T14:13:20Z", Reason.INVALID_TIME),  # week date
        ("20260921T141320Z", Reason.INVALID_TIME),  # basic format
        ("2026-264T14:13:20Z", Reason.INVALID_TIME),  # ordinal date
        ("2026-09-21T14:13Z", Reason.INVALID_TIME),  # no seconds
        ("2026-09-21T14:13:20,5Z", Reason.INVALID_TIME),  # comma before the fraction
        ("2026-09-21 14:13:20Z", Reason.INVALID_TIME),  # space for T
        ("2026-09-21T14:13:20+0200", Reason.INVALID_TIME),  # offset without a colon
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


# --- bounds: every integer is range-checked, so no accepted value can break arithmetic or state -


@pytest.mark.parametrize(
    ("event_type", "field", "low", "high", "reason"),
    [
        *[
            (t, f, 0, m.MAX_MONEY_MINOR, Reason.INVALID_VALUE)
            for t in ALL_TYPES
            for f in EXAMPLES[t]
            if f in m.MONEY_FIELDS
        ],
        ("add_to_cart", "quantity", 1, m.MAX_QUANTITY, Reason.INVALID_QUANTITY),
        ("remove_from_cart", "quantity", 1, m.MAX_QUANTITY, Reason.INVALID_QUANTITY),
        ("session_start", "session_index", 1, m.MAX_INT32, Reason.INVALID_VALUE),
        ("order_placed", "customer_order_index", 1, m.MAX_INT32, Reason.INVALID_VALUE),
        ("page_ping", "engagement_ms", 0, m.MAX_INT32, Reason.INVALID_VALUE),
        ("page_view", "schema_version", 0, m.MAX_INT32, Reason.INVALID_VALUE),
        ("survey_response", "score", m.MIN_SCORE, m.MAX_SCORE, Reason.SCORE_OUT_OF_RANGE),
    ],
)
def test_integer_bounds(event_type: str, field: str, low: int, high: int, reason: Reason) -> None:
    overrides = {"survey_type": "ces"} if field == "score" else {}
    for value in (low, high):
        decode(make_event(event_type, **{field: value}, **overrides), event_type)
    for value in (high + 1, 10**19, 10**400):
        error = rejected(make_event(event_type, **{field: value}, **overrides), event_type)
        assert (error.reason, error.field) == (reason, f"$.{field}"), value
        assert f"<= {high}" in error.detail
    if field not in m.MONEY_FIELDS:  # below zero, money is negative_money (test_negative_money)
        error = rejected(make_event(event_type, **{field: low - 1}, **overrides), event_type)
        assert (error.reason, error.field) == (reason, f"$.{field}")
        assert f">= {low}" in error.detail


def test_item_bounds_name_the_item() -> None:
    items = [{"product_id": "p", "quantity": m.MAX_QUANTITY + 1}]
    error = rejected(make_event("order_placed", items=items), "order_placed")
    assert (error.reason, error.field) == (Reason.INVALID_QUANTITY, "$.items[0].quantity")
    items = [{"product_id": "p", "unit_price_minor": 10**400}]
    error = rejected(make_event("order_placed", items=items), "order_placed")
    assert (error.reason, error.field) == (Reason.INVALID_VALUE, "$.items[0].unit_price_minor")


def test_integers_beyond_4300_digits() -> None:
    """msgspec does not parse them; the reason still follows the field."""
    cases = [
        ("page_view", "event_time", Reason.INVALID_TIME),
        ("order_placed", "total_minor", Reason.INVALID_VALUE),
        ("add_to_cart", "quantity", Reason.INVALID_QUANTITY),
    ]
    for event_type, field, reason in cases:
        placeholder = f'"{field}":7'.encode()
        raw = dumps(make_event(event_type, **{field: 7}))
        raw = raw.replace(placeholder, placeholder[:-1] + b"1" + b"0" * 5000)
        error = rejected(raw, event_type)
        assert (error.reason, error.field) == (reason, f"$.{field}")


def test_converted_money_is_bounded_too() -> None:
    """A rate above 1 lifts an amount within the bound over it (1.10 USD per EUR here)."""
    at_bound = m.MAX_MONEY_MINOR * 10 // 11  # 1.1 x this is still within
    decode(make_event("order_refunded", currency="EUR", refund_minor=at_bound), "order_refunded")
    error = rejected(
        make_event("order_refunded", currency="EUR", refund_minor=m.MAX_MONEY_MINOR),
        "order_refunded",
    )
    assert (error.reason, error.field) == (Reason.INVALID_VALUE, "$.refund_minor")
    assert "USD" in error.detail and str(m.MAX_MONEY_MINOR) in error.detail
    items = [{"product_id": "p", "unit_price_minor": m.MAX_MONEY_MINOR}]
    error = rejected(make_event("order_placed", currency="EUR", items=items), "order_placed")
    assert (error.reason, error.field) == (Reason.INVALID_VALUE, "$.items[0].unit_price_minor")


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        (MAX_EPOCH_MS, True),
        ("9999-12-31T23:59:59.999Z", True),
        ("9999-12-31T23:59:59.999+23:59", True),
        (MAX_EPOCH_MS + 1, False),
        (10**19, False),
        (10**400, False),
        (-(10**400), False),
        ("9999-12-31T23:59:59.999-00:01", False),  # 10000-01-01 in UTC
        ("0001-01-01T00:00:00+23:59", False),
        (MIN_EPOCH_MS - 1, False),
        (MIN_EPOCH_MS, True),
        (0, False),
    ],
)
def test_event_time_bounds(value: Any, ok: bool) -> None:
    """From 2000-01-01 to 9999-12-31T23:59:59.999Z; judged against a clock at the far end."""
    for field, event_type in (("event_time", "page_view"), ("opened_at", "ticket_resolved")):
        event = make_event(event_type, **{field: value})
        if ok:
            DECODER.decode(dumps(event), family(event_type), now_ms=MAX_EPOCH_MS)
        else:
            with pytest.raises(InvalidEvent) as info:
                DECODER.decode(dumps(event), family(event_type), now_ms=MAX_EPOCH_MS)
            assert (info.value.reason, info.value.field) == (Reason.INVALID_TIME, f"$.{field}")
            assert len(info.value.detail) < 100  # a 400-digit time is not quoted whole


def test_far_future_time_is_future_not_a_crash() -> None:
    error = rejected(make_event("page_view", event_time=MAX_EPOCH_MS))
    assert (error.reason, error.field) == (Reason.FUTURE_TIME, "$.event_time")
    assert f"{(MAX_EPOCH_MS - NOW_MS) // 1000} s in the future" in error.detail


# --- nesting depth --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "depth"),
    [
        (b"{}", 1),
        (b"1", 0),
        (b'{"a": [1, {"b": []}]}', 4),
        (b'{"a": "[[[{{{"}', 1),
        (b'{"a": "\\"[[[", "b": ["\\\\", ["x"]]}', 3),  # escaped quote and backslash
        (b"[" * 40 + b"]" * 40, 40),
        (b'{"a": "]]]"}' + b"[[", 2),
    ],
)
def test_nesting_depth(raw: bytes, depth: int) -> None:
    assert nesting_depth(raw) == depth


def nested(levels: int, *, opener: bytes = b"[", closer: bytes = b"]") -> Any:
    """A value nested ``levels`` deep, as raw JSON text."""
    return RawJson(opener * levels + b"1" + closer * levels)


class RawJson(bytes):
    """JSON text to splice into an event as is."""


def with_raw(event: dict[str, Any]) -> bytes:
    """``dumps``, with RawJson values spliced in as they are."""
    spliced = {k: (f"@{k}@" if isinstance(v, RawJson) else v) for k, v in event.items()}
    raw = dumps(spliced)
    for key, value in event.items():
        if isinstance(value, RawJson):
            raw = raw.replace(f'"@{key}@"'.encode(), bytes(value))
    return raw


@pytest.mark.parametrize(("opener", "closer"), [(b"[", b"]"), (b'{"a":', b"}")])
def test_depth_limit(opener: bytes, closer: bytes) -> None:
    """The event object is level 1: an unknown field may nest 31 more levels, not 32."""
    fine = make_event("page_view", extra=nested(MAX_DEPTH - 1, opener=opener, closer=closer))
    decode(with_raw(fine))
    for levels in (MAX_DEPTH, 1000, 30_000):
        deep = make_event("page_view", extra=nested(levels, opener=opener, closer=closer))
        raw = with_raw(deep)
        if len(raw) > DECODER.max_message_bytes:
            continue
        error = rejected(raw)
        assert (error.reason, error.field) == (Reason.TOO_DEEP, None)
        assert f"nest {levels + 1} deep (limit {MAX_DEPTH})" in error.detail


@pytest.mark.parametrize("raw", [b"[" * 30_000 + b"]" * 30_000, b" \n[" * 20_000])
def test_a_deep_array_is_not_an_object_first(raw: bytes) -> None:
    """msgspec rejects a message that is no object at its first byte, without recursing."""
    error = rejected(raw)
    assert (error.reason, error.field) == (Reason.NOT_OBJECT, None)


def test_depth_limit_holds_for_known_fields_and_ignores_strings() -> None:
    error = rejected(with_raw(make_event("page_view", page_path=nested(40))))
    assert error.reason == Reason.TOO_DEEP
    decode(make_event("page_view", page_path="[" * 1000))  # inside a string: text, not nesting


def test_recursion_error_is_a_backstop(monkeypatch: pytest.MonkeyPatch) -> None:
    """Were the depth check ever bypassed, msgspec's RecursionError is still a dead letter."""
    monkeypatch.setattr(parse, "MAX_DEPTH", 10**6)
    error = rejected(with_raw(make_event("page_view", extra=nested(5000))))
    assert error.reason == Reason.TOO_DEEP


# --- the poison messages that crashed the worker before these checks ----------------------------


def test_poison_event_time_10_to_the_400() -> None:
    error = rejected(make_event("page_view", event_time=10**400))
    assert (error.reason, error.field) == (Reason.INVALID_TIME, "$.event_time")


def test_poison_session_index_10_to_the_400() -> None:
    error = rejected(make_event("session_start", session_index=10**400), "session_start")
    assert (error.reason, error.field) == (Reason.INVALID_VALUE, "$.session_index")


def test_poison_unknown_field_nested_1000_deep() -> None:
    raw = with_raw(make_event("page_view", extra=nested(1000)))
    assert len(raw) < 2500
    assert rejected(raw).reason == Reason.TOO_DEEP


def test_poison_10_mb_message() -> None:
    error = rejected(make_event("page_view", padding="x" * 10_000_000))
    assert error.reason == Reason.TOO_LARGE
