"""Junk messages, one per decoder reason for bad input, made from a real event of the stream.

Each builder takes a copy of a valid event (with its own fresh ``event_id``) and breaks exactly one
thing, so that the decoder must reject it with exactly that reason. Reasons that need a field the
event does not have (money, quantity, score) first turn it into an event type that has one.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import msgspec

from streamproc.events.models import FAMILY_OF_TYPE, Family
from streamproc.events.parse import Reason
from streamproc.events.routing import key_for
from streamproc.simulate.timeline import DAY_MS

# ``too_late`` is a processing decision (the watermark), not a property of the bytes, and
# ``processing_error`` a bug. ``too_deep`` has no builder yet: leaving it out keeps the simulator's
# output as it was (the reasons are drawn by index).
BAD_INPUT_REASONS: tuple[Reason, ...] = tuple(
    r for r in Reason if r not in {Reason.TOO_LATE, Reason.TOO_DEEP, Reason.PROCESSING_ERROR}
)
MAX_MESSAGE_BYTES = 65_536  # the contract's limit (docs/events.md, "Events")
UNKNOWN_CURRENCIES = ("XTS", "XXX")  # ISO codes for "testing" and "no currency": never given rates

Event = dict[str, Any]
Payload = bytes | Event
Builder = Callable[[random.Random, Event, Family, int], tuple[Family, Payload]]

_encode = msgspec.json.encode
_WEB = ("event_id", "event_time", "visitor_id", "session_id")
_REQUIRED: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(("session_start", "page_view", "product_view", "page_ping"), _WEB),
    **dict.fromkeys(
        ("add_to_cart", "remove_from_cart", "checkout_started", "payment_failed"),
        (*_WEB, "cart_id"),
    ),
    "order_placed": ("event_id", "event_time", "order_id", "total_minor", "currency"),
    "order_refunded": ("event_id", "event_time", "order_id", "refund_minor", "currency"),
    "order_cancelled": ("event_id", "event_time", "order_id"),
    **dict.fromkeys(
        ("ticket_opened", "ticket_escalated", "ticket_resolved", "ticket_reopened"),
        ("event_id", "event_time", "ticket_id"),
    ),
    "message_added": ("event_id", "event_time", "ticket_id", "author_type"),
    "survey_response": ("event_id", "event_time", "survey_type", "score"),
}
_ENVELOPE = ("event_id", "event_time", "store_id", "visitor_id", "session_id", "customer_id")
_MONEY_TYPES = {
    "product_view": "price_minor",
    "add_to_cart": "unit_price_minor",
    "order_placed": "total_minor",
    "order_refunded": "refund_minor",
}
_QUANTITY_TYPES = ("add_to_cart", "remove_from_cart", "order_placed")


def corrupt(
    rng: random.Random, event: Event, family: Family, *, arrival_ms: int, event_id: str
) -> tuple[Family, bytes, str | None, Reason]:
    """A junk message derived from ``event``: (family, value, key, expected reason)."""
    reason = BAD_INPUT_REASONS[rng.randrange(len(BAD_INPUT_REASONS))]
    bad = dict(event)
    bad["event_id"] = event_id
    family, payload = _BUILDERS[reason](rng, bad, family, arrival_ms)
    if isinstance(payload, dict):
        return family, _encode(payload), key_for(payload, family), reason
    return family, payload, key_for(bad, family), reason


def _retype(bad: Event, family: Family, wanted: tuple[str, ...]) -> tuple[Family, Event]:
    """``bad`` if its type is wanted, else a minimal valid event of a wanted type (same ids)."""
    if bad["event_type"] in wanted:
        return family, bad
    web = (Family.CLICKSTREAM, Family.CART)
    choices = [t for t in wanted if FAMILY_OF_TYPE[t] is family]
    choices += [t for t in wanted if "session_id" in bad or FAMILY_OF_TYPE[t] not in web]
    event_type = (choices or list(wanted))[0]
    event = {name: bad[name] for name in _ENVELOPE if name in bad}
    event["event_type"] = event_type
    event.update(_fill(event_type, str(bad["event_id"])))
    return FAMILY_OF_TYPE[event_type], event


def _fill(event_type: str, event_id: str) -> Event:
    item = {"product_id": "sku-1", "quantity": 1, "unit_price_minor": 1999}
    return {
        "product_view": {"product_id": "sku-1", "price_minor": 1999, "currency": "USD"},
        "add_to_cart": {"cart_id": f"c-{event_id}", **item, "currency": "USD"},
        "remove_from_cart": {"cart_id": f"c-{event_id}", "product_id": "sku-1", "quantity": 1},
        "order_placed": {
            "order_id": f"o-{event_id}",
            "total_minor": 1999,
            "currency": "USD",
            "items": [item],
        },
        "order_refunded": {"order_id": f"o-{event_id}", "refund_minor": 1999, "currency": "USD"},
        "survey_response": {"survey_type": "csat", "score": 4},
    }[event_type]


def _not_json(rng: random.Random, bad: Event, family: Family, _: int) -> tuple[Family, Payload]:
    text = _encode(bad)
    variant = rng.randrange(4)
    if variant == 0:  # cut off mid-message
        return family, text[: rng.randrange(1, len(text))]
    if variant == 1:  # a form post instead of JSON
        fields = ("event_type", "event_id", "session_id", "ticket_id", "order_id")
        return family, "&".join(f"{k}={bad[k]}" for k in fields if k in bad).encode()
    if variant == 2:  # a Python repr
        return family, text.replace(b'"', b"'")
    # Confluent Avro framing (magic byte, schema id) from a misconfigured producer: not UTF-8.
    return family, b"\x00\x00\x00\x01\x8f" + rng.randbytes(rng.randrange(8, 64))


def _not_object(rng: random.Random, bad: Event, family: Family, _: int) -> tuple[Family, Payload]:
    variant = rng.randrange(4)
    if variant == 0:  # a batch sent as one message
        return family, _encode([bad])
    return family, [b"null", b'"' + str(bad["event_type"]).encode() + b'"', b"42"][variant - 1]


def _too_large(rng: random.Random, bad: Event, family: Family, _: int) -> tuple[Family, Payload]:
    chunk = "<div class='row'><span>lorem ipsum</span></div>"
    bad["page_html"] = chunk * ((MAX_MESSAGE_BYTES + rng.randrange(1, 16_384)) // len(chunk))
    return family, bad


def _missing_field(
    rng: random.Random, bad: Event, family: Family, _: int
) -> tuple[Family, Payload]:
    required = _REQUIRED[bad["event_type"]]
    del bad[required[rng.randrange(len(required))]]
    return family, bad


_WRONG_TYPE_FIELDS = (
    "quantity",
    "total_minor",
    "price_minor",
    "session_index",
    "engagement_ms",
    "score",
    "items",
    "channel_group",
    "store_id",
    "event_id",
    "event_time",
)


def _wrong_type(
    rng: random.Random, bad: Event, family: Family, arrival_ms: int
) -> tuple[Family, Payload]:
    present = [name for name in _WRONG_TYPE_FIELDS if name in bad]
    name = present[rng.randrange(len(present))]
    value = bad[name]
    if name == "event_time":  # a bool or a float: neither text nor integer milliseconds
        bad[name] = True if rng.random() < 0.5 else (arrival_ms + 0.5)
    elif isinstance(value, str):
        bad[name] = rng.randrange(1, 1_000_000)
    elif isinstance(value, int):
        bad[name] = str(value) if rng.random() < 0.5 else value + 0.5
    else:
        bad[name] = {"value": value}
    return family, bad


def _unknown_event_type(
    rng: random.Random, bad: Event, family: Family, _: int
) -> tuple[Family, Payload]:
    names = ("add_to_wishlist", "purchase", "pageview", "screen_view", "video_start")
    bad["event_type"] = names[rng.randrange(len(names))]
    return family, bad


def _wrong_topic(rng: random.Random, bad: Event, family: Family, _: int) -> tuple[Family, Payload]:
    others = [name for name, of in FAMILY_OF_TYPE.items() if of is not family]
    bad["event_type"] = others[rng.randrange(len(others))]
    return family, bad


def _invalid_time(
    rng: random.Random, bad: Event, family: Family, arrival_ms: int
) -> tuple[Family, Payload]:
    moment = datetime.fromtimestamp(arrival_ms / 1000, tz=UTC)
    choices: tuple[object, ...] = (
        moment.replace(tzinfo=None).isoformat(timespec="seconds"),  # no offset
        arrival_ms // 1000,  # epoch seconds
        "yesterday",
        moment.strftime("%d/%m/%Y %H:%M"),
        "2026-02-30T10:00:00Z",
    )
    bad["event_time"] = choices[rng.randrange(len(choices))]
    return family, bad


def _future_time(
    rng: random.Random, bad: Event, family: Family, arrival_ms: int
) -> tuple[Family, Payload]:
    # A clock a day or more ahead: far beyond any tolerance (the default is 5 minutes).
    ahead_ms = arrival_ms + DAY_MS + rng.randrange(DAY_MS)
    if isinstance(bad["event_time"], int):
        bad["event_time"] = ahead_ms
    else:
        moment = datetime.fromtimestamp(ahead_ms / 1000, tz=UTC)
        bad["event_time"] = moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return family, bad


def _negative_money(
    rng: random.Random, bad: Event, family: Family, _: int
) -> tuple[Family, Payload]:
    family, bad = _retype(bad, family, tuple(_MONEY_TYPES))
    bad[_MONEY_TYPES[bad["event_type"]]] = -rng.randrange(1, 100_000)
    return family, bad


def _invalid_quantity(
    rng: random.Random, bad: Event, family: Family, _: int
) -> tuple[Family, Payload]:
    family, bad = _retype(bad, family, _QUANTITY_TYPES)
    quantity = (0, -1, -2)[rng.randrange(3)]
    if bad["event_type"] == "order_placed":
        bad["items"] = [dict(bad["items"][0], quantity=quantity), *bad["items"][1:]]
    else:
        bad["quantity"] = quantity
    return family, bad


def _score_out_of_range(
    rng: random.Random, bad: Event, family: Family, _: int
) -> tuple[Family, Payload]:
    family, bad = _retype(bad, family, ("survey_response",))
    scores = (11, 12, -1, 100) if bad["survey_type"] == "nps" else (0, 6, 7, 10, -1)
    bad["score"] = scores[rng.randrange(len(scores))]
    return family, bad


def _unknown_currency(
    rng: random.Random, bad: Event, family: Family, _: int
) -> tuple[Family, Payload]:
    family, bad = _retype(bad, family, tuple(_MONEY_TYPES))
    bad["currency"] = UNKNOWN_CURRENCIES[rng.randrange(len(UNKNOWN_CURRENCIES))]
    return family, bad


_LIMITS = (
    ("event_id", 128),
    ("store_id", 64),
    ("session_id", 256),
    ("page_path", 2048),
    ("category", 2048),
    ("error_code", 2048),
)


def _too_long(rng: random.Random, bad: Event, family: Family, _: int) -> tuple[Family, Payload]:
    present = [(name, limit) for name, limit in _LIMITS if isinstance(bad.get(name), str)]
    name, limit = present[rng.randrange(len(present))]
    text = str(bad[name]) or "x"
    bad[name] = (text * (limit // len(text) + 2))[: limit + rng.randrange(1, 200)]
    return family, bad


def _invalid_value(
    rng: random.Random, bad: Event, family: Family, _: int
) -> tuple[Family, Payload]:
    choices: list[tuple[str, object]] = [("event_id", ""), ("store_id", "")]
    if "session_index" in bad:
        choices.append(("session_index", 0))
    if "engagement_ms" in bad:
        choices.append(("engagement_ms", -rng.randrange(1, 5000)))
    if "customer_order_index" in bad:
        choices.append(("customer_order_index", 0))
    name, value = choices[rng.randrange(len(choices))]
    bad[name] = value
    return family, bad


_BUILDERS: dict[Reason, Builder] = {
    Reason.NOT_JSON: _not_json,
    Reason.NOT_OBJECT: _not_object,
    Reason.TOO_LARGE: _too_large,
    Reason.MISSING_FIELD: _missing_field,
    Reason.WRONG_TYPE: _wrong_type,
    Reason.UNKNOWN_EVENT_TYPE: _unknown_event_type,
    Reason.WRONG_TOPIC: _wrong_topic,
    Reason.INVALID_TIME: _invalid_time,
    Reason.FUTURE_TIME: _future_time,
    Reason.NEGATIVE_MONEY: _negative_money,
    Reason.INVALID_QUANTITY: _invalid_quantity,
    Reason.SCORE_OUT_OF_RANGE: _score_out_of_range,
    Reason.UNKNOWN_CURRENCY: _unknown_currency,
    Reason.TOO_LONG: _too_long,
    Reason.INVALID_VALUE: _invalid_value,
}
