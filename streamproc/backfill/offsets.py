"""The offset range of a time range on every partition, with Kafka's semantics on any broker.

Kafka answers "offset for time T" (ListOffsets with a timestamp) with the earliest offset whose
record timestamp is at or after T. Its time index holds the running maximum of the timestamps,
so the answer is the first offset where that maximum reaches T, which is the same offset as the
first record whose own timestamp reaches T; records after it may be older (late events), records
before it are all older. A range [T1, T2) of a partition is therefore the offsets
``[offset(T1), offset(T2))``, and a partition with no record at or after T ends at its high
watermark.

Not every broker gets this right: Tansu ignores the record timestamps (it answers offset 0 with
its own clock). So a broker's answer is verified against the records around it: the record at
the answer must be at or after T and the ``LOOKBACK`` records before it older than T (a complete
proof when the look-back reaches the partition's first offset). Partitions whose answer fails are
scanned: their record timestamps are read from the start (values are never decoded) until both
boundaries are found. End offsets come from fetch responses, never from ListOffsets LATEST.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from streamproc.backfill.plan import TopicPart

logger = logging.getLogger(__name__)

LOOKBACK = 1000  # records before a broker's answer that must be older than the time


class TimeIndex(Protocol):
    """What the lookup needs from Kafka (``broker.OffsetReader``; a list in unit tests)."""

    async def beginnings(self, partitions: Iterable[TopicPart]) -> dict[TopicPart, int]: ...
    async def highwaters(self, partitions: Iterable[TopicPart]) -> dict[TopicPart, int]: ...
    async def offsets_for_time(
        self, partitions: Iterable[TopicPart], timestamp_ms: int
    ) -> dict[TopicPart, int | None]: ...
    def timestamps(
        self, ranges: Mapping[TopicPart, tuple[int, int]]
    ) -> AsyncIterator[tuple[TopicPart, list[tuple[int, int]]]]: ...
    def skip(self, partition: TopicPart) -> None: ...


@dataclass(frozen=True)
class Ranges:
    """``[starts, ends)`` of every partition, and how many boundaries each method found."""

    starts: dict[TopicPart, int]
    ends: dict[TopicPart, int]
    highwaters: dict[TopicPart, int]
    methods: dict[str, int]


class FirstAtOrAfter:
    """Scans one partition's (offset, timestamp) pairs for the first offset at or after each
    of several times (ascending)."""

    def __init__(self, times: Sequence[int]) -> None:
        self.times = tuple(times)
        self.found: list[int | None] = [None] * len(self.times)
        self._next = 0  # the earliest time not found yet

    @property
    def done(self) -> bool:
        return self._next >= len(self.times)

    def feed(self, records: Iterable[tuple[int, int]]) -> bool:
        """Read records in offset order; True once every time is found."""
        times, found = self.times, self.found
        for offset, timestamp in records:
            while self._next < len(times) and timestamp >= times[self._next]:
                found[self._next] = offset
                self._next += 1
            if self._next >= len(times):
                return True
        return False

    def result(self, end: int) -> list[int]:
        """The offsets found; ``end`` (the high watermark) for a time no record reaches."""
        return [end if offset is None else offset for offset in self.found]


def answer_holds(
    answer: int, records: Iterable[tuple[int, int]], timestamp_ms: int, *, end: int
) -> bool:
    """Whether the records read around a broker's answer agree with it: every record before it
    is older than the time, and the record at it (unless it is the end) is not."""
    at_or_after = None
    for offset, timestamp in records:
        if offset < answer and timestamp >= timestamp_ms:
            return False
        if offset >= answer and at_or_after is None:
            at_or_after = (offset, timestamp)
    if answer >= end:
        return True
    return at_or_after is not None and at_or_after[0] == answer and at_or_after[1] >= timestamp_ms


async def find_ranges(
    index: TimeIndex,
    partitions: Iterable[TopicPart],
    *,
    since_ms: int,
    until_ms: int,
    use_broker: bool = True,
) -> Ranges:
    """The offsets of ``[since_ms, until_ms)`` on every partition (see the module docstring)."""
    parts = sorted(partitions)
    first = await index.beginnings(parts)
    high = await index.highwaters(parts)
    times = (since_ms, until_ms)
    found: dict[TopicPart, list[int | None]] = {tp: [None, None] for tp in parts}
    methods = {"broker": 0, "scan": 0}
    if use_broker:
        for i, timestamp in enumerate(times):
            for tp, offset in (await _verified(index, parts, timestamp, first, high)).items():
                found[tp][i] = offset
                methods["broker"] += 1
    todo = [tp for tp in parts if None in found[tp]]
    if todo:
        scanned = await _scan(index, {tp: (first[tp], high[tp]) for tp in todo}, times)
        for tp in todo:
            for i, offset in enumerate(scanned[tp].result(high[tp])):
                if found[tp][i] is None:
                    found[tp][i] = offset
                    methods["scan"] += 1
        logger.info("scanned the timestamps of %d partitions", len(todo))
    starts = {tp: _given(found[tp][0]) for tp in parts}
    ends = {tp: _given(found[tp][1]) for tp in parts}
    return Ranges(starts, ends, high, methods)


def _given(offset: int | None) -> int:
    if offset is None:
        raise AssertionError("every boundary is found by the broker or the scan")
    return offset


async def _verified(
    index: TimeIndex,
    parts: list[TopicPart],
    timestamp_ms: int,
    first: Mapping[TopicPart, int],
    high: Mapping[TopicPart, int],
) -> dict[TopicPart, int]:
    """The broker's answers for one time that the records around them confirm."""
    answers = await index.offsets_for_time(parts, timestamp_ms)
    claimed: dict[TopicPart, int] = {}
    for tp in parts:
        answer = answers.get(tp)
        offset = high[tp] if answer is None else answer
        if first[tp] <= offset <= high[tp]:
            claimed[tp] = offset
        else:
            logger.info(
                "%s[%d]: broker's offset %s for %d is out of range", *tp, offset, timestamp_ms
            )
    windows = {
        tp: (max(first[tp], o - LOOKBACK), min(o + 1, high[tp])) for tp, o in claimed.items()
    }
    seen: dict[TopicPart, list[tuple[int, int]]] = {tp: [] for tp in claimed}
    async for tp, records in index.timestamps(windows):
        seen[tp].extend(records)
    confirmed = {
        tp: offset
        for tp, offset in claimed.items()
        if answer_holds(offset, seen[tp], timestamp_ms, end=high[tp])
    }
    for tp in claimed.keys() - confirmed.keys():
        logger.info("%s[%d]: broker's offset for %d contradicts the records", *tp, timestamp_ms)
    return confirmed


async def _scan(
    index: TimeIndex, ranges: Mapping[TopicPart, tuple[int, int]], times: Sequence[int]
) -> dict[TopicPart, FirstAtOrAfter]:
    finders = {tp: FirstAtOrAfter(times) for tp in ranges}
    async for tp, records in index.timestamps(ranges):
        if finders[tp].feed(records):
            index.skip(tp)
    return finders
