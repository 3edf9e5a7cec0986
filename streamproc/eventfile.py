"""Events files (JSONL): one event object per line, routed to its topic family and Kafka key.

Lines are sent byte-for-byte as they are in the file. A line may also be a raw-message wrapper
(see ``events/routing.py``) whose payload is sent instead, so a file can hold messages that are
not valid events. Lines that name no known ``event_type`` cannot be routed and are skipped.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import msgspec

from streamproc.events.models import Family
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

_decode_json = msgspec.json.Decoder().decode


@dataclass(frozen=True, slots=True)
class FileRecord:
    """One message to send: its topic family, key, value and Kafka timestamp."""

    family: Family
    key: str | None
    value: bytes
    timestamp_ms: int | None
    line_no: int


@dataclass(frozen=True, slots=True)
class Unroutable:
    """A line with no topic: not JSON, or no known ``event_type``."""

    line_no: int
    why: str


def _event_time_ms(value: Any) -> int | None:
    try:
        return int(parse_event_time(value))
    except (TypeError, ValueError):
        return None


def _raw_record(obj: dict[str, Any], line_no: int) -> FileRecord | Unroutable:
    try:
        family = Family(str(obj.get(RAW_FAMILY)))
    except ValueError:
        return Unroutable(line_no, f"raw message with unknown {RAW_FAMILY} {obj.get(RAW_FAMILY)!r}")
    if RAW_PAYLOAD_B64 in obj:
        try:
            value = base64.b64decode(str(obj[RAW_PAYLOAD_B64]), validate=True)
        except binascii.Error:
            return Unroutable(line_no, f"{RAW_PAYLOAD_B64} is not base64")
    else:
        value = str(obj[RAW_PAYLOAD]).encode()
    key = obj.get(RAW_KEY)
    timestamp = obj.get(RAW_TIMESTAMP)
    return FileRecord(
        family,
        key if isinstance(key, str) else None,
        value,
        timestamp if type(timestamp) is int else None,
        line_no,
    )


def parse_line(line: bytes, line_no: int) -> FileRecord | Unroutable | None:
    """Route one line; None for a blank line."""
    line = line.rstrip(b"\r\n")
    if not line.strip():
        return None
    try:
        obj = _decode_json(line)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return Unroutable(line_no, "not JSON")
    if not isinstance(obj, dict):
        return Unroutable(line_no, "not a JSON object")
    if RAW_PAYLOAD in obj or RAW_PAYLOAD_B64 in obj:
        return _raw_record(obj, line_no)
    family = family_of(obj)
    if family is None:
        return Unroutable(line_no, f"unknown event_type {obj.get('event_type')!r}")
    timestamp = _event_time_ms(obj.get("event_time"))
    return FileRecord(family, key_for(obj, family), line, timestamp, line_no)


def read_records(lines: Iterable[bytes]) -> Iterator[FileRecord | Unroutable]:
    """Route every line of an events file, in file order."""
    for line_no, line in enumerate(lines, start=1):
        record = parse_line(line, line_no)
        if record is not None:
            yield record


def routable(lines: Iterable[bytes], unroutable: list[Unroutable]) -> Iterator[FileRecord]:
    """The records of an events file that have a topic; the others are appended to
    ``unroutable``."""
    for record in read_records(lines):
        if isinstance(record, Unroutable):
            unroutable.append(record)
        else:
            yield record


def in_time_order(records: Iterable[FileRecord], filled: list[int]) -> Iterator[FileRecord]:
    """The records, each with a timestamp: one without (its ``event_time`` does not parse, so it
    will be dead-lettered) gets the timestamp of the record before it, or the file's first one.

    Left to the producer, it would be stamped with the wall clock, weeks after the data around it,
    and a backfill looking its range up by timestamp would take it for the end of its partition.
    The line numbers of the records stamped here are appended to ``filled``. Records before the
    first timestamp wait for it (at most ``_MAX_WAITING``; then, and in a file without any, they
    keep none).
    """
    waiting: list[FileRecord] = []
    last: int | None = None
    for record in records:
        if record.timestamp_ms is not None:
            last = record.timestamp_ms
            for early in waiting:
                filled.append(early.line_no)
                yield dataclasses.replace(early, timestamp_ms=last)
            waiting.clear()
        elif last is not None:
            filled.append(record.line_no)
            record = dataclasses.replace(record, timestamp_ms=last)
        elif len(waiting) < _MAX_WAITING:
            waiting.append(record)
            continue
        else:  # too many to hold: these go unstamped, in file order
            yield from waiting
            waiting.clear()
        yield record
    yield from waiting


_MAX_WAITING = 100_000
