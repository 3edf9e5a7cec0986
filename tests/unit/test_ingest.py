"""The batch decoding step: valid events keep their coordinates, bad ones become dead letters."""

from __future__ import annotations

import logging

import pytest
from helpers import T0_MS, dumps, make_event

from streamproc.deadletter import DETAIL_MAX_BYTES, DeadLetter
from streamproc.events.models import Event, Family
from streamproc.events.parse import EventDecoder
from streamproc.ingest import BatchDecoder, Message

DAY_MS = 86_400_000


def message(value: bytes | None, *, offset: int, timestamp_ms: int | None) -> Message:
    return Message("shop.clickstream", 2, offset, timestamp_ms, b"s-1", value)


def test_valid_and_bad_messages_are_split_in_order() -> None:
    decoder = BatchDecoder(EventDecoder(), Family.CLICKSTREAM)
    batch = decoder.decode(
        [
            message(dumps(make_event("page_view")), offset=10, timestamp_ms=T0_MS),
            message(b"nope", offset=11, timestamp_ms=T0_MS),
            message(None, offset=12, timestamp_ms=T0_MS),
            message(dumps(make_event("page_ping")), offset=13, timestamp_ms=T0_MS),
        ],
        now_ms=T0_MS + DAY_MS,
    )
    assert [d.message.offset for d in batch.events] == [10, 13]
    letters = [(m.offset, letter.reason) for m, letter in batch.dead_letters]
    assert letters == [(11, "not_json"), (12, "not_json")]
    letter = batch.dead_letters[0][1]
    assert (letter.topic, letter.partition, letter.offset, letter.source) == (
        "shop.clickstream",
        2,
        11,
        "shop.clickstream[2]@11",
    )


def test_a_batch_is_grouped_by_partition_with_its_types_stores_and_last_offsets() -> None:
    """What the pipeline needs of a batch comes from the decoding pass: the valid events of each
    partition in order (a partition whose messages were all bad has none), the count of each
    event type, the store ids, and how far each partition was read, bad messages included."""
    decoder = BatchDecoder(EventDecoder(), Family.CLICKSTREAM)

    def at(partition: int, offset: int, value: bytes) -> Message:
        return Message("shop.clickstream", partition, offset, T0_MS, b"s-1", value)

    view, ping = make_event("page_view"), make_event("page_ping", store_id="eu")
    batch = decoder.decode(
        [
            at(0, 5, dumps(view)),
            at(1, 7, dumps(ping)),
            at(0, 6, dumps(ping)),
            at(3, 2, b"nope"),
            at(1, 8, b"nope"),
        ],
        now_ms=T0_MS + DAY_MS,
    )
    offsets = {p: [d.message.offset for d in events] for p, events in batch.parts.items()}
    assert offsets == {0: [5, 6], 1: [7]}
    assert {kind.__name__: n for kind, n in batch.kinds.items()} == {"PageView": 1, "PagePing": 2}
    assert batch.stores == {view["store_id"], "eu"}
    assert batch.last == {0: 6, 1: 8, 3: 2}
    assert [m.offset for m, _ in batch.dead_letters] == [2, 8]


def test_messages_from_a_partitions_end_on_are_read_but_count_nowhere() -> None:
    """A backfill's input keeps growing past the end it was given: what lies beyond is neither
    an event nor a dead letter, and was read all the same."""
    decoder = BatchDecoder(EventDecoder(), Family.CLICKSTREAM)
    view = dumps(make_event("page_view"))
    batch = decoder.decode(
        [
            message(view, offset=9, timestamp_ms=T0_MS),
            message(view, offset=10, timestamp_ms=T0_MS),
            message(b"nope", offset=11, timestamp_ms=T0_MS),
        ],
        now_ms=T0_MS + DAY_MS,
        ends={2: 10, 5: 0},
    )
    assert [d.message.offset for d in batch.events] == [9]
    assert batch.dead_letters == []
    assert batch.last == {2: 11}
    beyond = decoder.decode(
        [message(view, offset=10, timestamp_ms=T0_MS)], now_ms=T0_MS, ends={2: 10}
    )
    assert (beyond.parts, beyond.dead_letters, beyond.last) == ({}, [], {2: 10})


def test_future_is_judged_against_when_the_message_was_produced() -> None:
    """Replaying old topics: an event a day ahead of its own record timestamp is in the future,
    although the wall clock is far later still; an event at its record time is fine."""
    decoder = BatchDecoder(EventDecoder(), Family.CLICKSTREAM)
    ahead = dumps(make_event("page_view", event_time=T0_MS + DAY_MS))
    batch = decoder.decode(
        [
            message(ahead, offset=1, timestamp_ms=T0_MS),
            message(ahead, offset=2, timestamp_ms=T0_MS + DAY_MS),
            message(ahead, offset=3, timestamp_ms=None),  # no timestamp: the wall clock
        ],
        now_ms=T0_MS + 30 * DAY_MS,
    )
    assert [letter.reason for _, letter in batch.dead_letters] == ["future_time"]
    assert [d.message.offset for d in batch.events] == [2, 3]
    # a record time stamped in the future does not lift the limit: the wall clock caps it
    live = decoder.decode([message(ahead, offset=4, timestamp_ms=T0_MS + DAY_MS)], now_ms=T0_MS)
    assert [letter.reason for _, letter in live.dead_letters] == ["future_time"]


class Exploding(EventDecoder):
    """A decoder with a bug: it raises what no message should make it raise."""

    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error = error

    def decode(self, raw: bytes, family: Family, *, now_ms: int) -> Event:
        if raw == b"boom":
            raise self.error
        return super().decode(raw, family, now_ms=now_ms)


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no")


def test_an_unexpected_error_makes_a_dead_letter_not_a_crash(
    caplog: pytest.LogCaptureFixture,
) -> None:
    decoder = BatchDecoder(Exploding(KeyError("x" * 5000)), Family.CLICKSTREAM)
    messages = [
        message(b"boom", offset=1, timestamp_ms=T0_MS),
        message(dumps(make_event("page_view")), offset=2, timestamp_ms=T0_MS),
        message(b"boom", offset=3, timestamp_ms=T0_MS),
    ]
    with caplog.at_level(logging.ERROR, logger="streamproc.ingest"):
        batch = decoder.decode(messages, now_ms=T0_MS + DAY_MS)
    assert [d.message.offset for d in batch.events] == [2]
    letters = [(m.offset, letter.reason) for m, letter in batch.dead_letters]
    assert letters == [(1, "processing_error"), (3, "processing_error")]
    detail = batch.dead_letters[0][1].detail
    assert detail.startswith("KeyError: 'xxx") and len(detail.encode()) <= DETAIL_MAX_BYTES
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1  # once per exception type, with its traceback
    assert errors[0].exc_info is not None and "KeyError" in errors[0].getMessage()


def test_each_exception_type_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    failing = Exploding(ValueError("v"))
    decoder = BatchDecoder(failing, Family.CLICKSTREAM)
    with caplog.at_level(logging.ERROR, logger="streamproc.ingest"):
        for error in (ValueError("v"), Unprintable(), ValueError("w"), Unprintable()):
            failing.error = error
            batch = decoder.decode([message(b"boom", offset=1, timestamp_ms=None)], now_ms=T0_MS)
            assert batch.dead_letters[0][1].reason == "processing_error"
    assert [r.exc_info[0] for r in caplog.records if r.exc_info] == [ValueError, Unprintable]
    assert batch.dead_letters[0][1].detail == "Unprintable: (no message)"


def test_memory_error_is_not_blamed_on_the_message() -> None:
    decoder = BatchDecoder(Exploding(MemoryError()), Family.CLICKSTREAM)
    with pytest.raises(MemoryError):
        decoder.decode([message(b"boom", offset=1, timestamp_ms=None)], now_ms=T0_MS)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (dumps(make_event("page_view", event_time=10**400)), "invalid_time"),
        (dumps(make_event("session_start", session_index=10**400)), "invalid_value"),
        (
            dumps(make_event("page_view"))[:-1] + b',"x":' + b"[" * 1000 + b"]" * 1000 + b"}",
            "too_deep",
        ),
        (dumps(make_event("page_view", padding="x" * 10_000_000)), "too_large"),
    ],
    ids=["event_time_10e400", "session_index_10e400", "nested_1000_deep", "10_MB"],
)
def test_poison_messages_are_dead_letters(value: bytes, reason: str) -> None:
    """Each of these crashed the worker once (and again on every restart)."""
    decoder = BatchDecoder(EventDecoder(), Family.CLICKSTREAM)
    batch = decoder.decode([message(value, offset=7, timestamp_ms=T0_MS)], now_ms=T0_MS + DAY_MS)
    assert [letter.reason for _, letter in batch.dead_letters] == [reason]
    letter = batch.dead_letters[0][1]
    key, cut, headers = letter.record(b"s-1", value, max_bytes=524_288)
    assert len(key or b"") + len(cut or b"") <= 524_288
    assert DeadLetter.from_headers(headers).reason == reason
