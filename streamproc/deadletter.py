"""The dead-letter record format.

A dead letter keeps the rejected message's original key and value bytes; why and where it came
from travel in Kafka headers, so the message can be inspected or re-driven as it was:

    streamproc.reason               reason code (``missing_field``, ``not_json``, ``too_late`` ...)
    streamproc.detail               human-readable explanation, at most 1 KiB
    streamproc.field                JSON path of the offending field, when there is one
    streamproc.topic                source topic
    streamproc.partition            source partition
    streamproc.offset               source offset
    streamproc.timestamp            source record timestamp (epoch ms)

Only a message that would not fit the dead-letter topic is cut (``DeadLetter.record``, setting
``dead_letter_max_bytes``): its key and value together are cut to the limit, the value first and
a key longer than half the limit too. Such a dead letter also carries

    streamproc.truncated            ``true``
    streamproc.original_key_size    bytes of the original key (0 when it had none)
    streamproc.original_value_size  bytes of the original value (0 when it had none)
    streamproc.original_sha256      SHA-256 of the original value (hex), to match it elsewhere
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

PREFIX = "streamproc."
# A detail can quote a field's value (up to a message's size): headers stay small.
DETAIL_MAX_BYTES = 1024
_ELLIPSIS = "…"


def clip(text: str, max_bytes: int = DETAIL_MAX_BYTES) -> str:
    """``text`` cut to at most ``max_bytes`` of UTF-8, ending in an ellipsis when it was cut."""
    data = text.encode("utf-8", "backslashreplace")
    if len(data) <= max_bytes:
        return text
    keep = max_bytes - len(_ELLIPSIS.encode())
    return data[:keep].decode("utf-8", "ignore") + _ELLIPSIS


class Truncation(NamedTuple):
    """What a cut dead letter says of the original message."""

    key_size: int
    value_size: int
    sha256: str  # of the original value

    def headers(self) -> list[tuple[str, bytes]]:
        pairs = [
            ("truncated", "true"),
            ("original_key_size", str(self.key_size)),
            ("original_value_size", str(self.value_size)),
            ("original_sha256", self.sha256),
        ]
        return [(PREFIX + name, value.encode()) for name, value in pairs]


class Record(NamedTuple):
    """A record to produce: key, value and headers."""

    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


def fit(key: bytes | None, value: bytes | None, *, max_bytes: int) -> Record:
    """The key and value to send, cut to ``max_bytes`` together, and the headers saying so.

    Unchanged (and no headers) when they fit. Otherwise the value is cut first; a key longer than
    half the limit is cut too, to what the value leaves, but not below half the limit.
    """
    key_size = len(key) if key is not None else 0
    value_size = len(value) if value is not None else 0
    if key_size + value_size <= max_bytes:
        return Record(key, value, [])
    key_keep = min(key_size, max(max_bytes // 2, max_bytes - value_size))
    value_keep = max_bytes - key_keep
    truncation = Truncation(key_size, value_size, hashlib.sha256(value or b"").hexdigest())
    return Record(
        key[:key_keep] if key is not None else None,
        value[:value_keep] if value is not None else None,
        truncation.headers(),
    )


@dataclass(frozen=True, slots=True)
class DeadLetter:
    reason: str
    detail: str
    field: str | None
    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None
    truncation: Truncation | None = None  # set when read back from a cut dead letter

    @property
    def source(self) -> str:
        """Source coordinates in the log form ``topic[partition]@offset``."""
        return f"{self.topic}[{self.partition}]@{self.offset}"

    def headers(self) -> list[tuple[str, bytes]]:
        pairs = [
            ("reason", self.reason),
            ("detail", clip(self.detail)),
            ("topic", self.topic),
            ("partition", str(self.partition)),
            ("offset", str(self.offset)),
        ]
        if self.field is not None:
            pairs.append(("field", clip(self.field)))
        if self.timestamp_ms is not None:
            pairs.append(("timestamp", str(self.timestamp_ms)))
        headers = [
            (PREFIX + name, value.encode("utf-8", "backslashreplace")) for name, value in pairs
        ]
        if self.truncation is not None:
            headers += self.truncation.headers()
        return headers

    def record(self, key: bytes | None, value: bytes | None, *, max_bytes: int) -> Record:
        """The dead-letter record of a message with this letter's headers, cut to fit
        ``max_bytes`` (key and value; the headers add at most about 3 KiB)."""
        fitted = fit(key, value, max_bytes=max_bytes)
        return fitted._replace(headers=self.headers() + fitted.headers)

    @classmethod
    def from_headers(cls, headers: Iterable[tuple[str, bytes]]) -> DeadLetter:
        """Read a dead letter's headers back (for tools and tests)."""
        values = {
            name.removeprefix(PREFIX): value.decode("utf-8", "replace")
            for name, value in headers
            if name.startswith(PREFIX)
        }
        timestamp = values.get("timestamp")
        truncation = None
        if values.get("truncated") == "true":
            truncation = Truncation(
                int(values["original_key_size"]),
                int(values["original_value_size"]),
                values["original_sha256"],
            )
        return cls(
            reason=values["reason"],
            detail=values["detail"],
            field=values.get("field"),
            topic=values["topic"],
            partition=int(values["partition"]),
            offset=int(values["offset"]),
            timestamp_ms=int(timestamp) if timestamp is not None else None,
            truncation=truncation,
        )
