"""Events files: lines routed to their topic family, key and Kafka timestamp."""

from __future__ import annotations

import base64
import json

from helpers import T0_MS, dumps, make_event

from streamproc.eventfile import FileRecord, Unroutable, read_records
from streamproc.events.models import Family


def test_plain_lines_are_sent_byte_for_byte() -> None:
    line = dumps(make_event("order_placed", session_id=None))
    [record] = read_records([line + b"\n"])
    assert record == FileRecord(Family.ORDERS, "o-1", line, T0_MS + 250, 1)


def test_raw_wrappers_carry_payload_key_and_timestamp() -> None:
    text = json.dumps({"__raw__": "not json", "__family__": "cart", "__key__": "s-9"})
    b64 = json.dumps(
        {
            "__raw_b64__": base64.b64encode(b"\xff\xfe").decode(),
            "__family__": "tickets",
            "__timestamp__": T0_MS,
        }
    )
    first, second = read_records([text.encode(), b"", b"   \n", b64.encode()])
    assert first == FileRecord(Family.CART, "s-9", b"not json", None, 1)
    assert second == FileRecord(Family.TICKETS, None, b"\xff\xfe", T0_MS, 4)


def test_unroutable_lines_are_reported_with_their_line_numbers() -> None:
    lines = [
        b"not json",
        b"[1, 2]",
        dumps(make_event("page_view", event_type="page_zoom")),
        json.dumps({"__raw__": "x", "__family__": "payments"}).encode(),
        json.dumps({"__raw_b64__": "!!", "__family__": "cart"}).encode(),
    ]
    records = list(read_records(lines))
    assert all(isinstance(r, Unroutable) for r in records)
    assert [r.line_no for r in records] == [1, 2, 3, 4, 5]
    assert "page_zoom" in records[2].why  # type: ignore[union-attr]


def test_unparseable_event_time_leaves_the_timestamp_to_the_producer() -> None:
    [record] = read_records([dumps(make_event("page_view", event_time="soon"))])
    assert isinstance(record, FileRecord) and record.timestamp_ms is None
