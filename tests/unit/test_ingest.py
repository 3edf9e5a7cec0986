"""The batch decoding step: valid events keep their coordinates, bad ones become dead letters."""

from __future__ import annotations

from helpers import T0_MS, dumps, make_event

from streamproc.events.models import Family
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
