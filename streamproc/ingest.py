"""The first step of every batch: decode messages, split valid events from dead letters.

Pure: the Faust agent hands in the messages of a batch and sends the dead letters it gets back.
No message can stop a partition: one that breaks the decoder (a bug) becomes a dead letter too,
with reason ``processing_error``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

import msgspec

from streamproc.deadletter import DeadLetter, clip
from streamproc.errors import InvalidEvent
from streamproc.events.models import Event, Family
from streamproc.events.parse import EventDecoder, Reason

logger = logging.getLogger(__name__)

_NO_END = 2**63  # past any Kafka offset


# Messages, decoded events and items (engine.py) are msgspec structs: one of each is made per
# event, and a frozen dataclass took ~1.1 µs to build against ~0.1 µs.
class Message(msgspec.Struct, frozen=True):
    """A consumed Kafka message, reduced to what the processor needs."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None
    key: bytes | None
    value: bytes | None


class Decoded(msgspec.Struct, frozen=True):
    """A valid event with the coordinates of the message it came from."""

    event: Event
    message: Message


@dataclass(slots=True)
class DecodedBatch:
    """A batch's valid events by partition (each partition's in message order), with what the
    pipeline needs of them all: how many of each event type, and their store ids. Made in the
    decoding pass: a run's events are many, and every further pass over them costs."""

    parts: dict[int, list[Decoded]] = field(default_factory=dict)
    dead_letters: list[tuple[Message, DeadLetter]] = field(default_factory=list)
    last: dict[int, int] = field(default_factory=dict)  # partition -> offset of its last message
    kinds: dict[type[Event], int] = field(default_factory=dict)
    stores: set[str] = field(default_factory=set)

    @property
    def events(self) -> list[Decoded]:
        """The valid events, a partition's after another's."""
        return [decoded for part in self.parts.values() for decoded in part]


class BatchDecoder:
    """Decodes the messages of one topic family; logs the first rejection of each reason, and
    the first unexpected error of each type with its traceback."""

    def __init__(self, decoder: EventDecoder, family: Family) -> None:
        self._decoder = decoder
        self._family = family
        self._logged: set[str] = set()
        self._logged_errors: set[type[Exception]] = set()

    def decode(
        self, messages: list[Message], *, now_ms: int, ends: Mapping[int, int] | None = None
    ) -> DecodedBatch:
        """Decode a batch, each partition's messages in offset order. An event is "in the
        future" relative to when it was produced: its record timestamp, capped at ``now_ms``
        (the wall clock), so a replay of old topics judges old events by their own time.

        ``ends``: the offset where each partition's input ends (a replay's or a backfill's). Its
        topics are live and keep growing past the end it was given: the messages from there on
        count nowhere. They are read (``DecodedBatch.last``), neither decoded nor dead letters.
        """
        batch = DecodedBatch()
        decode = self._decoder.decode
        family = self._family
        parts, kinds, stores = batch.parts, batch.kinds, batch.stores
        part: list[Decoded] = []
        partition, end = None, _NO_END
        for message in messages:
            if message.partition != partition:  # a batch is mostly one partition's
                partition = message.partition
                part = parts.setdefault(partition, [])
                end = ends.get(partition, _NO_END) if ends else _NO_END
            if message.offset >= end:
                continue
            produced = message.timestamp_ms
            try:
                if message.value is None:
                    raise InvalidEvent(Reason.NOT_JSON, "empty message (no value)")
                event = decode(
                    message.value,
                    family,
                    now_ms=produced if produced is not None and produced < now_ms else now_ms,
                )
            except InvalidEvent as exc:
                batch.dead_letters.append((message, self._dead_letter(message, exc)))
                continue
            except MemoryError:  # the process's state, not the message's (at most 64 KiB)
                raise
            except Exception as exc:  # a bug: the message must not stop the partition
                batch.dead_letters.append((message, self._processing_error(message, exc)))
                continue
            part.append(Decoded(event, message))
            kind = type(event)
            kinds[kind] = kinds.get(kind, 0) + 1
            stores.add(event.store_id)
        if len(parts) > 1:  # every partition of the batch has its entry, empty or not
            batch.last = {message.partition: message.offset for message in messages}
        elif messages:
            batch.last = {messages[-1].partition: messages[-1].offset}
        for empty in [p for p, events in parts.items() if not events]:
            del parts[empty]
        return batch

    def _processing_error(self, message: Message, exc: Exception) -> DeadLetter:
        kind = type(exc)
        try:
            text = str(exc)
        except Exception:  # an exception that cannot say what it is still makes a dead letter
            text = "(no message)"
        letter = _letter(message, Reason.PROCESSING_ERROR, f"{kind.__name__}: {text}", None)
        if kind not in self._logged_errors:
            self._logged_errors.add(kind)
            logger.error(
                "dead letter %s: %s while decoding it, a bug in streamproc (further %s errors "
                "become dead letters with reason %s, not logged)",
                letter.source,
                kind.__name__,
                kind.__name__,
                Reason.PROCESSING_ERROR,
                exc_info=exc,
            )
        return letter

    def _dead_letter(self, message: Message, exc: InvalidEvent) -> DeadLetter:
        letter = _letter(message, exc.reason, exc.detail, exc.field)
        if exc.reason not in self._logged:
            self._logged.add(exc.reason)
            logger.warning(
                "dead letter %s: %s: %s (further %s rejections are counted, not logged)",
                letter.source,
                exc.reason,
                letter.detail,
                exc.reason,
            )
        return letter


def _letter(message: Message, reason: str, detail: str, field: str | None) -> DeadLetter:
    return DeadLetter(
        reason=reason,
        detail=clip(detail),  # it can quote a field's value, up to a message's size
        field=field,
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        timestamp_ms=message.timestamp_ms,
    )
