"""What the simulator yields: one Kafka message to send, with its timing and what it is."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from streamproc.events.models import Family


class Kind(enum.StrEnum):
    """Why a record looks the way it does (a valid event on time, a delayed one, or junk)."""

    EVENT = "event"
    DUPLICATE = "duplicate"
    OUT_OF_ORDER = "out_of_order"
    LATE = "late"
    TOO_LATE = "too_late"
    MALFORMED = "malformed"


@dataclass(frozen=True, slots=True)
class SimRecord:
    """One message for an input topic.

    Attributes:
        family: the topic family it is sent to.
        key: the Kafka key (``routing.key_for`` of the event; for junk, of what it claims to be).
        value: exactly the message value: event JSON, or arbitrary bytes for malformed records.
        timestamp_ms: the Kafka record timestamp: the event's ``event_time``; for malformed
            records the arrival time (their event time is missing, broken or deliberately in
            the future, and brokers may reject far-future timestamps).
        arrival_ms: when it is sent: event time + injected delay. Records come in
            non-decreasing arrival order.
        kind: event, duplicate, out_of_order, late, too_late or malformed.
        event_type: the ``event_type`` of a valid event (also of a duplicate); None for junk.
        expected_reason: for malformed records, the ``Reason`` code the decoder must give.
    """

    family: Family
    key: str | None
    value: bytes
    timestamp_ms: int
    arrival_ms: int
    kind: Kind
    event_type: str | None = None
    expected_reason: str | None = None
