"""The input's fetched records made into ``Message``s in the consumer's thread, a record batch
at a time.

aiokafka makes a ``ConsumerRecord`` (a dataclass of eleven fields) of every fetched record through
three Python frames (a generator, its ``__next__`` and ``_consumer_record``), and the worker then
made a ``Message`` of each: 1.6-2.2 µs a record against 0.5-0.6 µs for the loop below (one
partition's fetch of 2,000 records). Here the fetcher's results for the input topics read their
records straight into ``Message``s; every other topic (the changelog's, the ticks') keeps
aiokafka's records.

How: the fetcher keeps each partition's fetched records in ``Fetcher._records`` (a ``FetchResult``
holding a ``PartitionRecords``); ``Results`` replaces that mapping and swaps the
``PartitionRecords`` of an input partition for a ``Messages`` as it is stored. ``Messages`` keeps
aiokafka's rules: records before the fetch offset or before the end of a batch already passed are
skipped, control batches are passed over (read committed, which only exactly-once asks for, is
left to aiokafka), a batch whose CRC does not hold raises ``CorruptRecordException`` where
aiokafka would (in ``getall``), and ``next_fetch_offset`` (what the consumer's position moves to)
is the offset after the last record handed out, or the end of the last batch read through.
Relies on aiokafka 0.14's private names (pinned exactly).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from operator import length_hint
from typing import Any

from aiokafka.consumer import fetcher as aiokafka_fetcher
from aiokafka.errors import CorruptRecordException

from streamproc.ingest import Message


class _Position:
    """Where the reading of a fetch stands: past the batches read through (``floor``), and the
    batch being read (``batch``, with what is ``left`` of it)."""

    __slots__ = ("batch", "floor", "left")

    def __init__(self, floor: int) -> None:
        self.floor = floor
        self.batch: list[Message] = []
        self.left: Iterator[Message] = iter(self.batch)


class Messages:
    """A ``PartitionRecords`` whose records are ``Message``s, made a record batch at a time as
    they are read (a whole fetch, up to the fetch size of 1 MiB a partition, made at once would
    hold its objects until the last is read). Its reading holds no reference back to it: a
    cycle would keep each fetch's buffer until the garbage collector got to it."""

    __slots__ = ("_position", "_read")

    def __init__(self, stock: aiokafka_fetcher.PartitionRecords) -> None:
        self._position = _Position(stock.next_fetch_offset)
        if stock._isolation_level == aiokafka_fetcher.READ_UNCOMMITTED:
            self._read = _messages(stock, self._position)
            # aiokafka's own reading, never started, holds the PartitionRecords (and the fetch's
            # buffer) in a cycle that only the garbage collector would break
            stock._records_iterator = None
        else:  # read committed (never the worker's): aborted transactions are aiokafka's business
            self._read = _converted(stock, self._position)

    def __iter__(self) -> Iterator[Message]:
        return self._read

    def __next__(self) -> Message:
        return next(self._read)

    @property
    def next_fetch_offset(self) -> int:
        position = self._position
        taken = len(position.batch) - length_hint(position.left)
        return position.batch[taken - 1].offset + 1 if taken else position.floor


def _messages(stock: aiokafka_fetcher.PartitionRecords, position: _Position) -> Iterator[Message]:
    topic, partition = stock._tp.topic, stock._tp.partition
    records, floor = stock._records, position.floor
    while records.has_next():
        batch = records.next_batch()
        if stock._check_crcs and not batch.validate_crc():
            raise CorruptRecordException(f"Invalid CRC - {stock._tp}")
        if not batch.is_control_batch:
            position.batch = messages = []
            for record in batch:
                offset = record.offset
                if offset >= floor:  # below: a compressed set's records before the fetch
                    key, value = record.key, record.value
                    messages.append(Message(topic, partition, offset, record.timestamp, key, value))
                    floor = offset + 1
            position.left = iter(messages)
            yield from position.left
        position.floor = floor = batch.next_offset
        position.batch = []


def _converted(stock: aiokafka_fetcher.PartitionRecords, position: _Position) -> Iterator[Message]:
    """aiokafka's own reading, its records made into ``Message``s one at a time."""
    topic, partition = stock._tp.topic, stock._tp.partition
    for r in stock:
        position.floor = r.offset + 1
        yield Message(topic, partition, r.offset, r.timestamp, r.key, r.value)
    position.floor = stock.next_fetch_offset


class Results(OrderedDict[Any, Any]):
    """``Fetcher._records`` storing the input partitions' fetches as ``Messages``; ``batched``
    tells whether a topic is an input topic (asked at each fetch stored)."""

    def __init__(self, batched: Callable[[str], bool], *args: Any) -> None:
        super().__init__(*args)
        self._batched = batched

    def __setitem__(self, tp: Any, result: Any) -> None:
        if type(result) is aiokafka_fetcher.FetchResult and self._batched(tp.topic):
            result._partition_records = Messages(result._partition_records)
        super().__setitem__(tp, result)


def install(fetcher: aiokafka_fetcher.Fetcher, batched: Callable[[str], bool]) -> None:
    """Make ``fetcher`` store the records of the topics ``batched`` accepts as ``Message``s."""
    fetcher._records = Results(batched, fetcher._records)
