"""The offset range of a time range on every partition: the records stamped within it.

Kafka answers "offset for time T" (ListOffsets with a timestamp) with the earliest offset whose
record timestamp is at or after T. Its time index holds the running maximum of the timestamps,
so the answer is the first offset where that maximum reaches T, which is the same offset as the
first record whose own timestamp reaches T; records after it may be older (late events), records
before it are all older. ``offset(T1)`` and ``offset(T2)`` (the high watermark where no record
reaches T) are where the range is looked for (below).

Not every broker gets this right: Tansu ignores the record timestamps (it answers offset 0 with
its own clock). So a broker's answer is verified against the records around it: the record at
the answer must be at or after T and the ``LOOKBACK`` records before it older than T (a complete
proof when the look-back reaches the partition's first offset). Partitions whose answer fails are
scanned: their record timestamps are read from the start (values are never decoded) until both
boundaries are found. End offsets come from fetch responses, never from ListOffsets LATEST.

Those two offsets are where the search starts, not the range: one record stamped weeks late (a
producer's clock, a retried send, a message re-published) is the first "at or after T2" and
would end its partition's range in the middle of the range's data. So the range runs from the
first to just after the last record stamped *within* ``[T1, T2)`` (``InRange``): the records from
``offset(T1)`` on are read until the first one stamped within the range, and the records from
``offset(T2)`` on until ``TAIL`` in a row are stamped at or after T2 (or the partition ends),
keeping the last one stamped within. What that bound can miss: a record stamped within the range
that follows more than ``TAIL`` records in a row stamped after it. Records stamped outside the
range that lie between are read too; their events go wherever their event time puts them.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from streamproc.backfill.plan import TopicPart

logger = logging.getLogger(__name__)

LOOKBACK = 1000  # records before a broker's answer that must be older than the time
TAIL = 1000  # records in a row stamped at or after T2 that end the search for more within


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


class InRange:
    """Scans one partition forward from an offset for records stamped within ``[since, until)``:
    the first and the last of them, until ``tail`` records in a row are stamped at or after
    ``until`` (or, ``first_only``, until the first is found)."""

    def __init__(self, since_ms: int, until_ms: int, *, tail: int, first_only: bool) -> None:
        self.since_ms, self.until_ms, self.tail, self.first_only = (
            since_ms,
            until_ms,
            tail,
            first_only,
        )
        self.first: int | None = None
        self.last: int | None = None
        self.streak = 0  # records in a row stamped at or after until_ms
        self.read = 0
        self.done = False

    def feed(self, records: Iterable[tuple[int, int]]) -> bool:
        """Read records in offset order; True once the scan is done (later ones are ignored)."""
        for offset, timestamp in records:
            if self.done:
                break
            self.read += 1
            if timestamp >= self.until_ms:
                self.streak += 1
                self.done = self.streak >= self.tail
            elif timestamp >= self.since_ms:
                self.streak = 0
                if self.first is None:
                    self.first = offset
                self.last = offset
                self.done = self.first_only
        return self.done


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
    tail: int = TAIL,
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
    at_since = {tp: _given(found[tp][0]) for tp in parts}
    at_until = {tp: _given(found[tp][1]) for tp in parts}
    starts, ends = await _by_content(index, at_since, at_until, high, times, tail=tail)
    methods["extended"] = sum(1 for tp in parts if ends[tp] > at_until[tp])
    return Ranges(starts, ends, high, methods)


async def _by_content(
    index: TimeIndex,
    at_since: Mapping[TopicPart, int],
    at_until: Mapping[TopicPart, int],
    high: Mapping[TopicPart, int],
    times: tuple[int, int],
    *,
    tail: int,
) -> tuple[dict[TopicPart, int], dict[TopicPart, int]]:
    """From the first offsets stamped at or after T1 and T2 to the first and just after the last
    offset stamped within ``[T1, T2)`` (module docstring); an empty range where none is."""
    firsts = await _in_range(
        index, {tp: (o, high[tp]) for tp, o in at_since.items()}, times, tail, True
    )
    lasts = await _in_range(
        index, {tp: (o, high[tp]) for tp, o in at_until.items()}, times, tail, False
    )
    starts, ends = {}, {}
    for tp, until in at_until.items():
        first, last = firsts[tp].first, lasts[tp].last
        ends[tp] = until if last is None else last + 1
        starts[tp] = ends[tp] if first is None else first
        if ends[tp] > until:
            logger.info(
                "%s[%d]: records stamped within the range follow offset %d, the first stamped at "
                "or after its end: the range ends at %d (%d records read past it)",
                *tp, until, ends[tp], lasts[tp].read,
            )  # fmt: skip
    return starts, ends


async def _in_range(
    index: TimeIndex,
    ranges: Mapping[TopicPart, tuple[int, int]],
    times: tuple[int, int],
    tail: int,
    first_only: bool,
) -> dict[TopicPart, InRange]:
    scans = {tp: InRange(*times, tail=tail, first_only=first_only) for tp in ranges}
    return await _read(index, ranges, scans)


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


class _Scan(Protocol):
    def feed(self, records: Iterable[tuple[int, int]]) -> bool:
        """Read records in offset order; True once the partition needs no more."""
        ...


ScanT = TypeVar("ScanT", bound=_Scan)


async def _read(
    index: TimeIndex, ranges: Mapping[TopicPart, tuple[int, int]], scans: dict[TopicPart, ScanT]
) -> dict[TopicPart, ScanT]:
    """Feed every partition's timestamps in ``[start, stop)`` to its scan, until it is done."""
    async for tp, records in index.timestamps(ranges):
        if scans[tp].feed(records):
            index.skip(tp)
    return scans


async def _scan(
    index: TimeIndex, ranges: Mapping[TopicPart, tuple[int, int]], times: Sequence[int]
) -> dict[TopicPart, FirstAtOrAfter]:
    return await _read(index, ranges, {tp: FirstAtOrAfter(times) for tp in ranges})


@dataclass
class Stamps:
    """What looks wrong in one partition's record timestamps within its range: records stamped
    outside ``[T1, T2)``, and records stamped more than the lateness allowance before the record
    before them (a jump back); the first ``SHOWN`` offsets of each."""

    outside: int = 0
    backwards: int = 0
    outside_at: list[int] = field(default_factory=list)
    backwards_at: list[int] = field(default_factory=list)

    SHOWN = 5


class StampAudit:
    """Feeds one partition's (offset, timestamp) pairs, in offset order, into ``Stamps``."""

    def __init__(self, since_ms: int, until_ms: int, lateness_ms: int) -> None:
        self.since_ms, self.until_ms, self.lateness_ms = since_ms, until_ms, lateness_ms
        self.stamps = Stamps()
        self._before: int | None = None  # the previous record's timestamp

    def feed(self, records: Iterable[tuple[int, int]]) -> bool:
        """Read records in offset order; False: every record of the range is audited."""
        found = self.stamps
        for offset, timestamp in records:
            if not self.since_ms <= timestamp < self.until_ms:
                found.outside += 1
                if len(found.outside_at) < Stamps.SHOWN:
                    found.outside_at.append(offset)
            before = self._before
            if before is not None and timestamp < before - self.lateness_ms:
                found.backwards += 1
                if len(found.backwards_at) < Stamps.SHOWN:
                    found.backwards_at.append(offset)
            self._before = timestamp
        return False


async def audit_stamps(
    index: TimeIndex,
    ranges: Mapping[TopicPart, tuple[int, int]],
    *,
    since_ms: int,
    until_ms: int,
    lateness_ms: int,
) -> dict[TopicPart, Stamps]:
    """The record timestamps of every partition's ``[start, end)`` (values are not decoded),
    audited; only partitions with something to say are returned."""
    audits = await _read(
        index, ranges, {tp: StampAudit(since_ms, until_ms, lateness_ms) for tp in ranges}
    )
    return {tp: a.stamps for tp, a in audits.items() if a.stamps.outside or a.stamps.backwards}
