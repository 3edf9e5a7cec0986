"""Events files: lines routed to their topic family, key and Kafka timestamp."""

from __future__ import annotations

import base64
import json

from helpers import T0_MS, dumps, make_event

from streamproc.eventfile import FileRecord, Unroutable, in_time_order, read_records, routable
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


def test_unparseable_event_time_leaves_the_line_without_a_timestamp() -> None:
    [record] = read_records([dumps(make_event("page_view", event_time="soon"))])
    assert isinstance(record, FileRecord) and record.timestamp_ms is None


def test_a_line_without_a_timestamp_takes_the_one_before_it_or_the_first() -> None:
    """produce stamps it so (not with the wall clock): a backfill looks ranges up by timestamp."""
    times = ["soon", T0_MS + 5_000, "later", "never", T0_MS + 1_000, "again"]
    lines = [
        dumps(make_event("page_view", event_id=f"e{i}", event_time=t)) for i, t in enumerate(times)
    ]
    filled: list[int] = []
    records = list(in_time_order(routable(lines, []), filled))
    assert [r.line_no for r in records] == [1, 2, 3, 4, 5, 6]  # file order
    assert [r.timestamp_ms - T0_MS for r in records] == [5_000, 5_000, 5_000, 5_000, 1_000, 1_000]
    assert filled == [1, 3, 4, 6]


def test_a_file_without_any_valid_time_keeps_none() -> None:
    lines = [dumps(make_event("page_view", event_id=f"e{i}", event_time="soon")) for i in range(3)]
    filled: list[int] = []
    records = list(in_time_order(routable(lines, []), filled))
    assert [r.timestamp_ms for r in records] == [None, None, None] and filled == []
