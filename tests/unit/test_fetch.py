"""The input's fetched records as ``Message``s (worker/fetch.py) against aiokafka's own reading of
the same bytes: the same records, and the consumer's position moved the same way."""

from __future__ import annotations

import gc
import struct
import tracemalloc
from typing import Any

import pytest
from aiokafka.consumer.fetcher import READ_UNCOMMITTED, FetchResult, PartitionRecords
from aiokafka.consumer.subscription_state import Assignment
from aiokafka.errors import CorruptRecordException
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.record.util import calc_crc32c
from aiokafka.structs import TopicPartition

from streamproc.ingest import Message
from streamproc.worker.fetch import Messages, Results

TP = TopicPartition("shop.clickstream", 3)
_CONTROL = 0x20  # a record batch's attributes: a control batch (a transaction's marker)


def batch(base: int, offsets: list[int], *, control: bool = False) -> bytes:
    """A record batch as the broker sends it: records at ``offsets`` (from ``base`` on)."""
    builder = DefaultRecordBatchBuilder(2, 0, 0, -1, -1, -1, 2**20)
    for offset in offsets:
        n = offset - base
        builder.append(
            n,
            timestamp=1_700_000_000_000 + n,
            key=b"k%d" % offset,
            value=b"v%d" % offset,
            headers=[],
        )
    raw = builder.build()
    struct.pack_into(">q", raw, 0, base)  # the broker's base offset (outside the CRC)
    if control:
        attributes = struct.unpack_from(">h", raw, 21)[0] | _CONTROL
        struct.pack_into(">h", raw, 21, attributes)
        struct.pack_into(">I", raw, 17, calc_crc32c(bytes(raw[21:])))
    return bytes(raw)


# Two records before the fetch offset, a transaction marker, offsets compacted away (10, 11).
FETCH = (
    batch(0, [0, 1, 2, 3, 4])
    + batch(5, [5], control=True)
    + batch(6, [6, 7, 8, 9])
    + batch(12, [12, 13, 14])
)


def result(raw: bytes, fetch_offset: int, *, faster: bool) -> tuple[FetchResult, Assignment]:
    assignment = Assignment([TP])
    assignment.state_value(TP).seek(fetch_offset)
    records = PartitionRecords(
        TP, MemoryRecords(raw), None, fetch_offset, None, None, True, READ_UNCOMMITTED
    )
    fetched = FetchResult(TP, assignment=assignment, partition_records=records, backoff=0)
    if faster:
        store = Results(lambda topic: topic == TP.topic)
        store[TP] = fetched
    return fetched, assignment


def drained(fetched: FetchResult, assignment: Assignment, most: int | None) -> list[Any]:
    """What ``Fetcher.fetched_records`` takes from a partition's result, call by call, with the
    consumer's position after each call."""
    calls = []
    while fetched.has_more():
        records = fetched.getall(most)
        rows = [
            (r.offset, r.timestamp_ms if isinstance(r, Message) else r.timestamp, r.key, r.value)
            for r in records
        ]
        calls.append((rows, assignment.state_value(TP).position))
    return calls


@pytest.mark.parametrize("most", [None, 1, 3, 5, 7, 100])
@pytest.mark.parametrize("fetch_offset", [0, 2, 5, 10, 13])
async def test_records_and_positions_are_aiokafkas(most: int | None, fetch_offset: int) -> None:
    stock = drained(*result(FETCH, fetch_offset, faster=False), most)
    fetched, assignment = result(FETCH, fetch_offset, faster=True)
    assert isinstance(fetched._partition_records, Messages)
    faster = drained(fetched, assignment, most)
    assert [row for rows, _ in faster for row in rows] == [row for rows, _ in stock for row in rows]
    # aiokafka's position stops after the last record a call took, and reaches the fetch's end
    # one call later when a call took the last record exactly; here it may reach it at once.
    assert faster[-1][1] == stock[-1][1] == 15
    takes = [len(rows) for rows, _ in faster if rows]
    assert takes == [len(rows) for rows, _ in stock if rows]
    for (rows, position), (_, position_before) in zip(faster, stock, strict=False):
        if rows and rows[-1][0] != 14:
            assert position == rows[-1][0] + 1 == position_before


async def test_other_topics_keep_aiokafkas_records() -> None:
    fetched, _ = result(FETCH, 0, faster=False)
    records = fetched._partition_records
    store = Results(lambda topic: topic == "shop.cart")
    store[TP] = fetched
    assert store[TP]._partition_records is records


async def test_a_batch_whose_crc_fails_raises_where_aiokafka_does() -> None:
    raw = bytearray(FETCH)
    raw[-1] ^= 0xFF  # the last batch's last byte
    fetched, _ = result(bytes(raw), 0, faster=True)
    with pytest.raises(CorruptRecordException, match="Invalid CRC"):
        fetched.getall(None)


async def test_a_fetch_is_freed_without_the_garbage_collector() -> None:
    """A cycle around a fetch (aiokafka's own reading holds its ``PartitionRecords``; a reading
    that refers back to its records) would keep the fetch's buffer, up to 1 MiB a partition,
    until the collector gets to it: at a worker's collector thresholds, hundreds of MiB."""
    big = b"".join(batch(base, list(range(base, base + 100))) for base in range(0, 5000, 100))
    gc.collect()
    gc.disable()
    tracemalloc.start()
    try:
        for read in (0, 3, None):  # not read, read in part, read through
            before = tracemalloc.get_traced_memory()[0]
            fetched, _ = result(bytes(bytearray(big)), 0, faster=True)  # a buffer of its own
            assert tracemalloc.get_traced_memory()[0] - before > len(big) // 2
            if read != 0:
                fetched.getall(read)
            del fetched
            assert tracemalloc.get_traced_memory()[0] - before < len(big) // 10
    finally:
        tracemalloc.stop()
        gc.enable()
