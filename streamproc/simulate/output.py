"""Records to an events file (JSONL), and what a run contained (:class:`SimStats`)."""

from __future__ import annotations

import base64
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import IO, Any

import msgspec

from streamproc.events.parse import parse_event_time
from streamproc.events.routing import (
    RAW_FAMILY,
    RAW_KEY,
    RAW_PAYLOAD,
    RAW_PAYLOAD_B64,
    RAW_TIMESTAMP,
    family_of,
    key_for,
)
from streamproc.simulate.record import Kind, SimRecord
from streamproc.simulate.shopping import CART_ID_PREFIX


class _CartRef(msgspec.Struct):
    event_id: str
    cart_id: str


_decode_cart_ref = msgspec.json.Decoder(_CartRef).decode
_decode_any = msgspec.json.Decoder().decode
_encode = msgspec.json.encode


@dataclass
class SimStats:
    """What a stream of records held. Feed it with :meth:`add` (``write_jsonl`` does).

    Attributes:
        records: all records; ``bytes``: total size of their values.
        kinds: records per kind (event, duplicate, out_of_order, late, too_late, malformed).
        families: records per topic family (what each topic receives, junk included).
        event_types: distinct valid events per ``event_type`` (duplicates not counted again,
            delayed ones counted).
        reasons: malformed records per expected decoder reason.
        carts: carts created (first ``add_to_cart`` of a ``cart_id``).
        first_arrival_ms, last_arrival_ms: the span of arrival times seen.
    """

    records: int = 0
    bytes: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    families: Counter[str] = field(default_factory=Counter)
    event_types: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    carts: int = 0
    first_arrival_ms: int | None = None
    last_arrival_ms: int | None = None

    def add(self, record: SimRecord) -> None:
        """Count one record (memory stays constant: fine for unbounded runs)."""
        self.records += 1
        self.bytes += len(record.value)
        self.kinds[record.kind] += 1
        self.families[record.family] += 1
        if record.kind is Kind.MALFORMED:
            self.reasons[record.expected_reason or "?"] += 1
        elif record.kind is not Kind.DUPLICATE and record.event_type is not None:
            self.event_types[record.event_type] += 1
            if record.event_type == "add_to_cart":
                ref = _decode_cart_ref(record.value)
                self.carts += ref.cart_id == CART_ID_PREFIX + ref.event_id
        if self.first_arrival_ms is None:
            self.first_arrival_ms = record.arrival_ms
        self.last_arrival_ms = record.arrival_ms

    @property
    def sessions(self) -> int:
        return self.event_types["session_start"]

    @property
    def checkouts(self) -> int:
        return self.event_types["checkout_started"]

    @property
    def orders(self) -> int:
        return self.event_types["order_placed"]

    @property
    def tickets(self) -> int:
        return self.event_types["ticket_opened"]


def write_jsonl(records: Iterable[SimRecord], out: IO[bytes]) -> SimStats:
    """Write one line per record, in order, to an events file; return what was written.

    A line is the message value itself when reading it back gives the same topic, key and
    timestamp (``events/routing.py`` rules); anything else (not JSON, not an object, an
    unknown or foreign ``event_type``, a broken time) is written as a raw-message wrapper.
    """
    stats = SimStats()
    for record in records:
        stats.add(record)
        if record.kind is Kind.MALFORMED and not _reads_back(record):
            out.write(raw_line(record))
        else:
            out.write(record.value)
            out.write(b"\n")
    return stats


def raw_line(record: SimRecord) -> bytes:
    """The raw-message wrapper line of a record (base64 when the payload is not UTF-8)."""
    wrapper: dict[str, Any] = {RAW_FAMILY: record.family.value}
    try:
        wrapper[RAW_PAYLOAD] = record.value.decode()
    except UnicodeDecodeError:
        wrapper[RAW_PAYLOAD_B64] = base64.b64encode(record.value).decode()
    if record.key is not None:
        wrapper[RAW_KEY] = record.key
    wrapper[RAW_TIMESTAMP] = record.timestamp_ms
    return _encode(wrapper) + b"\n"


def _reads_back(record: SimRecord) -> bool:
    """Whether the value, as a plain line, routes to the record's family, key and timestamp."""
    try:
        obj = _decode_any(record.value)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return False
    if not isinstance(obj, dict) or family_of(obj) is not record.family:
        return False
    try:
        timestamp = int(parse_event_time(obj.get("event_time")))
    except (TypeError, ValueError):
        return False
    return key_for(obj, record.family) == record.key and timestamp == record.timestamp_ms
