"""The dead-letter record format.

A dead letter keeps the rejected message's original key and value bytes untouched; why and where it
came from travel in Kafka headers, so the message can be inspected or re-driven as it was:

    streamproc.reason      reason code (``missing_field``, ``not_json``, ``too_late`` ...)
    streamproc.detail      human-readable explanation
    streamproc.field       JSON path of the offending field, when there is one
    streamproc.topic       source topic
    streamproc.partition   source partition
    streamproc.offset      source offset
    streamproc.timestamp   source record timestamp (epoch ms)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

PREFIX = "streamproc."


@dataclass(frozen=True, slots=True)
class DeadLetter:
    reason: str
    detail: str
    field: str | None
    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None

    @property
    def source(self) -> str:
        """Source coordinates in the log form ``topic[partition]@offset``."""
        return f"{self.topic}[{self.partition}]@{self.offset}"

    def headers(self) -> list[tuple[str, bytes]]:
        pairs = [
            ("reason", self.reason),
            ("detail", self.detail),
            ("topic", self.topic),
            ("partition", str(self.partition)),
            ("offset", str(self.offset)),
        ]
        if self.field is not None:
            pairs.append(("field", self.field))
        if self.timestamp_ms is not None:
            pairs.append(("timestamp", str(self.timestamp_ms)))
        return [(PREFIX + name, value.encode()) for name, value in pairs]

    @classmethod
    def from_headers(cls, headers: Iterable[tuple[str, bytes]]) -> DeadLetter:
        """Read a dead letter's headers back (for tools and tests)."""
        values = {
            name.removeprefix(PREFIX): value.decode()
            for name, value in headers
            if name.startswith(PREFIX)
        }
        timestamp = values.get("timestamp")
        return cls(
            reason=values["reason"],
            detail=values["detail"],
            field=values.get("field"),
            topic=values["topic"],
            partition=int(values["partition"]),
            offset=int(values["offset"]),
            timestamp_ms=int(timestamp) if timestamp is not None else None,
        )
