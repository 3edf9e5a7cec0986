"""The input's fetched records made into ``Message``s in one pass, in the consumer's thread.

aiokafka makes a ``ConsumerRecord`` (a dataclass of eleven fields) of every fetched record through
three Python frames (a generator, its ``__next__`` and ``_consumer_record``), and the worker then
made a ``Message`` of each: 1.7 µs a record against 0.6 µs for the loop below (measured on one
partition's fetch of 2,000 records). Here the fetcher's results for the input topics read their
records straight into ``Message``s; every other topic (the changelog's, the ticks') keeps aiokafka's
records.

How: the fetcher keeps each partition's fetched records in ``Fetcher._records`` (a ``FetchResult``
holding a ``PartitionRecords``); ``Results`` replaces that mapping and swaps the
``PartitionRecords`` of an input partition for a ``Messages`` as it is stored. ``Messages`` keeps
aiokafka's rules: records before the fetch offset or before the end of a batch already passed are
skipped, control batches are passed over (and read committed, which only exactly-once asks for,
left to aiokafka), a batch whose CRC does not hold raises
``CorruptRecordException`` where aiokafka would (in ``getall``), and ``next_fetch_offset`` (what the
consumer's position moves to) is the offset after the last record handed out, or the end of the
fetch once they all are. Relies on aiokafka 0.14's private names (pinned exactly).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from operator import length_hint
from typing import Any

from aiokafka.consumer import fetcher as aiokafka_fetcher
from aiokafka.errors import CorruptRecordException

from streamproc.ingest import Message


class Messages:
    """A ``PartitionRecords`` whose records are ``Message``s, all made at the first read."""

    __slots__ = ("_end", "_left", "_messages", "_start", "_stock")

    def __init__(self, stock: aiokafka_fetcher.PartitionRecords) -> None:
        self._stock = stock
        self._messages: list[Message] = []
        self._left: Iterator[Message] | None = None
        self._start: int = stock.next_fetch_offset
        self._end: int = self._start

    def __iter__(self) -> Iterator[Message]:
        if self._left is None:
            self._left = iter(self._read())
        return self._left

    def __next__(self) -> Message:
        return next(self.__iter__())

    @property
    def next_fetch_offset(self) -> int:
        if self._left is None:
            return self._start
        left = length_hint(self._left)
        if not left:
            return self._end
        done = len(self._messages) - left
        return self._messages[done - 1].offset + 1 if done else self._start

    def _read(self) -> list[Message]:
        stock = self._stock
        topic, partition = stock._tp.topic, stock._tp.partition
        messages, floor = self._messages, self._start
        append = messages.append
        if stock._isolation_level != aiokafka_fetcher.READ_UNCOMMITTED:
            # read committed (never the worker's): aborted transactions are aiokafka's business
            for r in stock:
                append(Message(topic, partition, r.offset, r.timestamp, r.key, r.value))
            self._end = stock.next_fetch_offset
            return messages
        records = stock._records
        while records.has_next():
            batch = records.next_batch()
            if stock._check_crcs and not batch.validate_crc():
                raise CorruptRecordException(f"Invalid CRC - {stock._tp}")
            if not batch.is_control_batch:
                for record in batch:
                    offset = record.offset
                    if offset >= floor:  # below: a compressed set's records before the fetch
                        append(
                            Message(
                                topic, partition, offset, record.timestamp, record.key, record.value
                            )
                        )
                        floor = offset + 1
            floor = batch.next_offset
        self._end = floor
        self._stock = None  # its buffer can go
        return messages


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
