"""Which lines of an events file become accepted events, and their normalised form.

In arrival (file) order: a line is sent to Kafka as the file tools do (``events/routing.py``), it
is *valid* when the engine's decoder accepts it, *too late* when its time is more than
``allowed_lateness + max_lateness`` behind the highest time accepted so far, and a *duplicate*
when an earlier accepted event of the same owner (``owner``) had its ``event_id``.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from reference.common import Event, ReferenceSettings
from reference.money import to_reporting_minor
from streamproc.errors import InvalidEvent
from streamproc.events.models import FAMILY_OF_TYPE, Family
from streamproc.events.parse import EventDecoder

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# RFC 3339 section 5.6 date-time (t and z may be lower case), written out apart from the engine's
# streamproc/times.py; fromisoformat alone also takes week dates, basic format, no seconds ...
_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?(?:[Zz]|[+-][0-9]{2}:[0-9]{2})"
)
MILLISECOND = timedelta(milliseconds=1)


@dataclass(frozen=True)
class Message:
    """One Kafka message of the file: topic family, value, key and record timestamp."""

    family: Family
    value: bytes
    key: str | None
    timestamp_ms: int | None


def accepted_events(lines: Iterable[bytes], settings: ReferenceSettings) -> list[Event]:
    """The accepted events of an events file, normalised, in arrival order."""
    decoder = EventDecoder(
        reporting_currency=settings.reporting_currency,
        fx_rates=dict(settings.fx_rates),
        max_message_bytes=settings.max_message_bytes,
        max_future_ms=settings.max_future_ms,
    )
    budget_ms = settings.allowed_lateness_ms + settings.max_lateness_ms
    accepted: list[Event] = []
    seen_ids: set[tuple[tuple[str, str], str]] = set()
    highest_ms: int | None = None
    for line in lines:
        message = read_message(line)
        if message is None or not is_valid(decoder, message, settings):
            continue
        event = json.loads(message.value)
        time_ms = event_time_ms(event["event_time"])
        if highest_ms is not None and time_ms < highest_ms - budget_ms:
            continue  # too late
        seen = (owner(event, message.family), event["event_id"])
        if seen in seen_ids:
            continue  # duplicate
        seen_ids.add(seen)
        highest_ms = time_ms if highest_ms is None else max(highest_ms, time_ms)
        accepted.append(normalise(event, message.key, settings))
    return accepted


def owner(event: dict[str, Any], family: Family) -> tuple[str, str]:
    """What an event belongs to, among whose events a repeated ``event_id`` is a duplicate
    (docs/semantics.md, "Accepted events"): its session; without one, its order or ticket; a
    survey without a ticket, its customer, else itself."""
    session = event.get("session_id")
    if family in (Family.CLICKSTREAM, Family.CART) or (family is Family.ORDERS and session):
        return "session", str(session)
    if family is Family.ORDERS:
        return "order", str(event["order_id"])
    if event.get("ticket_id"):
        return "ticket", str(event["ticket_id"])
    return "customer", str(event.get("customer_id") or event["event_id"])


def read_message(line: bytes) -> Message | None:
    """The message a line is sent as; None when it is not sent (blank, not JSON, no topic)."""
    line = line.rstrip(b"\r\n")
    if not line.strip():
        return None
    try:
        obj = json.loads(line)
    except ValueError:
        return None
    if not isinstance(obj, dict):
        return None
    if "__raw__" in obj or "__raw_b64__" in obj:
        return raw_message(obj)
    event_type = obj.get("event_type")
    family = FAMILY_OF_TYPE.get(event_type) if isinstance(event_type, str) else None
    if family is None:
        return None
    try:
        timestamp: int | None = event_time_ms(obj.get("event_time"))
    except (TypeError, ValueError):
        timestamp = None
    return Message(family, line, kafka_key(obj, family), timestamp)


def raw_message(obj: dict[str, Any]) -> Message | None:
    """A raw-message wrapper line: its payload is sent as-is, with its key and timestamp."""
    try:
        family = Family(str(obj.get("__family__")))
        if "__raw_b64__" in obj:
            value = base64.b64decode(str(obj["__raw_b64__"]), validate=True)
        else:
            value = str(obj["__raw__"]).encode()
    except (ValueError, binascii.Error):
        return None
    key = obj.get("__key__")
    timestamp = obj.get("__timestamp__")
    return Message(
        family,
        value,
        key if isinstance(key, str) else None,
        timestamp if type(timestamp) is int else None,
    )


def kafka_key(obj: dict[str, Any], family: Family) -> str | None:
    """The key the events contract prescribes (docs/events.md, "Topics and keys")."""
    names: tuple[str, ...] = ("session_id",)
    if family is Family.TICKETS:
        names = ("ticket_id", "customer_id", "event_id")
    elif family is Family.ORDERS:
        names = ("session_id", "order_id")
    for name in names:
        value = obj.get(name)
        if isinstance(value, str) and value:
            return value
    return None


def is_valid(decoder: EventDecoder, message: Message, settings: ReferenceSettings) -> bool:
    """Whether the engine's decoder accepts the message, judged at its record timestamp."""
    now_ms = message.timestamp_ms
    if now_ms is None:
        now_ms = settings.wall_clock_ms or int(time.time() * 1000)
    try:
        decoder.decode(message.value, message.family, now_ms=now_ms)
    except InvalidEvent:
        return False
    return True


def event_time_ms(value: Any) -> int:
    """An ``event_time``: integer epoch ms, or RFC 3339 with an offset, floored to the ms."""
    if type(value) is int:
        return value
    if not isinstance(value, str):
        raise TypeError(f"not a time: {value!r}")
    if _RFC3339.fullmatch(value) is None:
        raise ValueError(f"not RFC 3339 with an offset: {value!r}")
    return (datetime.fromisoformat(value.upper()) - EPOCH) // MILLISECOND


ENUMS: dict[str, tuple[str, ...]] = {
    "device_type": ("desktop", "mobile", "tablet", "other"),
    "channel_group": tuple(
        "direct organic_search paid_search organic_social paid_social email referral display "
        "affiliate other".split()
    ),
    "channel": ("email", "chat", "phone", "social", "web_form", "other"),
    "priority": ("low", "normal", "high", "urgent", "other"),
    "author_type": ("customer", "agent", "bot", "other"),
    "survey_type": ("csat", "nps", "other"),
}
DEFAULTS: dict[str, dict[str, str]] = {
    "session_start": {"channel_group": "other"},
    "ticket_opened": {"channel": "other", "priority": "other"},
}


def normalise(raw: dict[str, Any], key: str | None, settings: ReferenceSettings) -> Event:
    """A valid event as the KPIs read it (see ``common.Event``)."""
    event = dict(raw)
    event["kafka_key"] = key
    event["event_time"] = event_time_ms(raw["event_time"])
    if event.get("opened_at") is not None:
        event["opened_at"] = event_time_ms(event["opened_at"])
    event.setdefault("store_id", "default")
    for name, value in DEFAULTS.get(event["event_type"], {}).items():
        event.setdefault(name, value)
    for name, values in ENUMS.items():
        if event.get(name) is not None:
            event[name] = event[name].lower() if event[name].lower() in values else "other"
    for name in ("total_minor", "refund_minor"):
        if name in event:
            event[name] = to_reporting_minor(event[name], event["currency"], settings)
    return event
