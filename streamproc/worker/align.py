"""The order in which a worker processes what it fetched: each partition's topics in step.

A fetch brings up to a megabyte of one topic partition at once, and the topics of a partition
arrive at their own pace. Whether an event is too late depends on how far its partition's other
topics have been read (the watermark waits for a topic with a backlog, see docs/semantics.md): a
topic processed far ahead of the others saw a watermark that had not moved yet, and events the
same input makes too late in a steadier run were taken. So, as Kafka Streams does with its
partition groups, the records of a partition are processed in event time (their Kafka
timestamps) across its topics: a minute at a time, the topic with the earliest record first; a
topic that has a backlog but nothing fetched yet is waited for (``wait_s`` at most, so a stuck
topic cannot stop the others). Consecutive slices of one partition are handed out together as a
run (``next_run``): the worker judges their events slice by slice, in this order, and absorbs
and stores them once.

Framework-free: batches come in as ``Fetched`` (the consumer's ``Batch``), slices go out.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from streamproc.kpi.epoch import MINUTE_MS, minute_of


class Fetched(Protocol):
    """What the consumer fetched for one topic partition (``consumer.Batch``)."""

    @property
    def tp(self) -> Any: ...  # .topic, .partition
    @property
    def records(self) -> list[Any]: ...  # .offset, .timestamp_ms, in offset order
    @property
    def generation(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Slice:
    """Records of one topic partition to process now, and the offsets they cover."""

    tp: Any
    records: list[Any]
    first: int  # acks cover first..last, gaps between slices included
    last: int


Backlogged = Callable[[str, int], bool]  # (topic, partition) -> unread input on the broker


class Aligner:
    """Per-partition buffers of fetched records, handed out as slices in event-time order.

    Args:
        topics: the input topics (every partition has each).
        backlogged: whether a topic partition has input on the broker that was not processed.
        wait_s: how long a partition waits for a backlogged topic with nothing fetched.
    """

    def __init__(
        self,
        topics: Sequence[str],
        backlogged: Backlogged,
        *,
        wait_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.topics = tuple(topics)
        self.backlogged = backlogged
        self.wait_s = wait_s
        self.clock = clock
        self.pending: dict[Any, deque[list[Any]]] = {}  # tp -> fetched record lists
        self.generation: int | None = None
        self.records = 0  # buffered records, all partitions
        self._since: dict[int, float] = {}  # partition -> when it began waiting
        self._acked_to: dict[Any, int] = {}  # tp -> the offset after the last slice
        self._turn = 0  # round-robin start over the partitions

    def add(self, batch: Fetched) -> None:
        """Buffer a fetched batch; one of another generation than the buffered ones (a
        rebalance came between) replaces them all: their partitions are read again."""
        if batch.generation != self.generation:
            self.clear()
            self.generation = batch.generation
        if batch.records:
            self.pending.setdefault(batch.tp, deque()).append(batch.records)
            self.records += len(batch.records)

    def clear(self) -> None:
        self.pending.clear()
        self._since.clear()
        self._acked_to.clear()
        self.records = 0

    def next_slice(self) -> Slice | None:
        """The next slice to process, or None while every buffered partition waits."""
        partitions = sorted({tp.partition for tp in self.pending})
        if not partitions:
            return None
        self._turn += 1
        start = self._turn % len(partitions)
        for partition in partitions[start:] + partitions[:start]:
            found = self._slice(partition)
            if found is not None:
                return found
        return None

    def next_run(self, max_records: int) -> list[Slice]:
        """The next slice and those of its partition that follow it, in order, while they hold
        fewer than ``max_records`` records together (the last may go beyond); empty while every
        buffered partition waits."""
        first = self.next_slice()
        if first is None:
            return []
        run, size = [first], len(first.records)
        while size < max_records and (piece := self._slice(first.tp.partition)) is not None:
            run.append(piece)
            size += len(piece.records)
        return run

    def wait_left(self) -> float:
        """Seconds until a waiting partition gives up waiting (0: one may run now)."""
        if not self._since:
            return self.wait_s
        return max(0.0, min(self._since.values()) + self.wait_s - self.clock())

    def _slice(self, partition: int) -> Slice | None:
        heads = {
            tp: _timestamp(records[0][0])
            for tp, records in self.pending.items()
            if tp.partition == partition and records
        }
        if not heads:
            return None
        fetched = {tp.topic for tp in heads}
        missing = [t for t in self.topics if t not in fetched and self.backlogged(t, partition)]
        if missing:
            since = self._since.setdefault(partition, self.clock())
            if self.clock() - since < self.wait_s:
                return None
        self._since.pop(partition, None)
        tp = min(heads, key=lambda key: (heads[key], key.topic))
        until = minute_of(heads[tp]) + MINUTE_MS  # the end of the head's minute
        return self._take(tp, until)

    def _take(self, tp: Any, until: int) -> Slice:
        """The records of ``tp`` from its head on, in offset order, while before ``until``."""
        queue = self.pending[tp]
        taken: list[Any] = []
        while queue:
            records = queue[0]
            cut = _first_at(records, until, 0 if taken else 1)  # the head is always taken
            taken.extend(records[:cut])
            if cut < len(records):
                queue[0] = records[cut:]
                break
            queue.popleft()
        if not queue:
            del self.pending[tp]
        self.records -= len(taken)
        first = self._acked_to.get(tp, taken[0].offset)
        self._acked_to[tp] = taken[-1].offset + 1
        return Slice(tp, taken, min(first, taken[0].offset), taken[-1].offset)


def _first_at(records: list[Any], until: int, start: int) -> int:
    """The index of the first record from ``start`` on whose timestamp is ``until`` or later
    (``_timestamp``: none or a negative one is 0, and ``until`` is past 0); else the length.
    A plain loop: every record fetched passes here, and the generator with a call per record
    it replaces took 100 ns a record against 27 (timeit, 3,000 records)."""
    for index in range(start, len(records)):
        timestamp = records[index].timestamp_ms
        if timestamp is not None and timestamp >= until:
            return index
    return len(records)


def _timestamp(record: Any) -> int:
    timestamp = record.timestamp_ms
    return int(timestamp) if timestamp is not None and timestamp >= 0 else 0
