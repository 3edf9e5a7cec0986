"""The first step of every batch: decode messages, split valid events from dead letters.

Pure: the Faust agent hands in the messages of a batch and sends the dead letters it gets back.
No message can stop a partition: one that breaks the decoder (a bug) becomes a dead letter too,
with reason ``processing_error``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import msgspec

from streamproc.deadletter import DeadLetter, clip
from streamproc.errors import InvalidEvent
from streamproc.events.models import Event, Family
from streamproc.events.parse import EventDecoder, Reason

logger = logging.getLogger(__name__)


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
    events: list[Decoded] = field(default_factory=list)
    dead_letters: list[tuple[Message, DeadLetter]] = field(default_factory=list)


class BatchDecoder:
    """Decodes the messages of one topic family; logs the first rejection of each reason, and
    the first unexpected error of each type with its traceback."""

    def __init__(self, decoder: EventDecoder, family: Family) -> None:
        self._decoder = decoder
        self._family = family
        self._logged: set[str] = set()
        self._logged_errors: set[type[Exception]] = set()

    def decode(self, messages: list[Message], *, now_ms: int) -> DecodedBatch:
        """Decode a batch. An event is "in the future" relative to when it was produced: its
        record timestamp, capped at ``now_ms`` (the wall clock), so a replay of old topics
        judges old events by their own time."""
        batch = DecodedBatch()
        decode = self._decoder.decode
        family = self._family
        for message in messages:
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
            batch.events.append(Decoded(event, message))
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
