"""The state changelog, sent so that at every moment it holds a prefix of the state's writes.

Recovery rebuilds a partition's state from its changelog, and the engine trusts that state to be
one it had: its meta record (watermark, what was judged, ``PartitionEngine.read``) is written
after the records it covers, and a record is deleted only once a watermark that allows it is
stored. A record batch the broker refuses while the next one is taken breaks that: until the
refused one is sent again, the changelog holds a meta without the records before it, and a
worker killed then loses those records' events (they were judged, so they are skipped).

So each partition's changelog gets one record batch at a time: the next goes to the producer
only once the one before is delivered, and a refused batch is sent again, unchanged, before
anything after it. The broker appends a batch whole, so a batch may carry several writes, and of
a key written more than once in it only the last value: what the changelog holds after that
batch is the state after its last write (Kafka Streams' record cache does the same over a commit
interval; here the interval is the time one batch takes). Writes queue while a batch is on its
way, so the slower the broker, the more each batch coalesces.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiokafka.errors import KafkaError

from streamproc.errors import BrokerError, Fenced

logger = logging.getLogger(__name__)

Record = tuple[bytes, bytes | None]  # key and value (None deletes the key), as sent
# Sends one record batch to a changelog partition: the future of its delivery.
Send = Callable[[int, list[Record]], Awaitable["asyncio.Future[Any]"]]

# Kafka's record batch format (v2): a batch header, and per record at most: its length, the
# attributes, offset and timestamp deltas, key and value lengths (varints) and a header count.
_BATCH_HEADER = 61
_RECORD_OVERHEAD = 5 + 1 + 5 + 10 + 5 + 5 + 1


def record_size(key: bytes, value: bytes | None) -> int:
    """An upper bound of the bytes a record takes in a record batch."""
    return len(key) + (len(value) if value is not None else 0) + _RECORD_OVERHEAD


@dataclass
class _Lane:
    """One changelog partition: the writes waiting, and the task that sends them in order."""

    queue: deque[tuple[list[Record], asyncio.Future[None]]] = field(default_factory=deque)
    at: int = 0  # records of the first queued write already sent (a write larger than a batch)
    task: asyncio.Task[None] | None = None
    error: BaseException | None = None  # a batch never delivered: nothing after it may go


class ChangelogWriter:
    """Writes to changelog partitions, one record batch of a partition on its way at a time.

    ``write`` returns at once, with a future that is done when the write is on the broker, and
    every write queued before it too. A batch the broker refuses (a Kafka error) is sent again
    with backoff up to ``RESENDS`` times; then its writes, and all those of the partition after
    it, fail with its error, and the partition takes no more (the worker stops: its restart
    recovers a changelog that is a prefix of the writes).
    """

    RESENDS = 8
    FIRST_DELAY_S = 0.2
    MAX_DELAY_S = 5.0

    def __init__(self, send: Send, *, batch_bytes: int) -> None:
        self.send = send
        self.limit = batch_bytes - _BATCH_HEADER
        self.lanes: dict[int, _Lane] = {}
        self.fenced: set[int] = set()  # partitions whose queued writes were dropped (Fenced)

    def write(self, partition: int, records: list[Record]) -> asyncio.Future[None]:
        """Queue a write's records, in order, for changelog partition ``partition``."""
        lane = self.lanes.setdefault(partition, _Lane())
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if lane.error is not None:
            done.set_exception(lane.error)
            return done
        lane.queue.append((records, done))
        if lane.task is None or lane.task.done():  # (done: cancelled before it began)
            lane.task = asyncio.ensure_future(self._run(partition, lane))
        return done

    async def drain(self, partitions: Iterable[int]) -> None:
        """Until what was written to ``partitions`` is delivered (or failed); then they are
        forgotten (partitions another worker takes over: their writes must not come later),
        unless a batch of theirs failed (then they take nothing more). A drain that is
        cancelled leaves the sends going."""
        lanes = [(p, lane) for p in partitions if (lane := self.lanes.get(p)) is not None]
        tasks = [lane.task for _, lane in lanes if lane.task is not None]
        if tasks:
            await asyncio.wait(tasks)
        for partition, lane in lanes:
            if self.lanes.get(partition) is lane and lane.task is None and lane.error is None:
                del self.lanes[partition]

    def take_fenced(self) -> set[int]:
        """The partitions whose writes were dropped since the last call (``Fenced``)."""
        fenced, self.fenced = self.fenced, set()
        return fenced

    async def _run(self, partition: int, lane: _Lane) -> None:
        completes: list[asyncio.Future[None]] = []
        try:
            while lane.queue:
                records, completes = self._take(lane)
                await self._deliver(partition, records)
                for done in completes:
                    if not done.done():
                        done.set_result(None)
                completes = []
        except BaseException as exc:
            # Cancelled (a shutdown): what was queued is not sent, so nothing after it may go
            # either; its waiters get an error they stop on, not a cancellation. Fenced (the
            # partition may have moved to another worker): what was queued is dropped with it,
            # and the lane takes the writes of a later assignment.
            error = (
                exc
                if isinstance(exc, Exception)
                else BrokerError(f"the changelog writer of partition {partition} was stopped")
            )
            if isinstance(exc, Fenced):
                self.fenced.add(partition)
            else:
                lane.error = error
            waiting = completes + [done for _, done in lane.queue]
            lane.queue.clear()
            for done in waiting:
                if not done.done():
                    done.set_exception(error)
            if not isinstance(exc, Exception):
                raise
        finally:
            lane.task = None

    def _take(self, lane: _Lane) -> tuple[list[Record], list[asyncio.Future[None]]]:
        """The next batch: the queued writes that fit, in order, each key once with its last
        value; and the futures of the writes it completes. A write larger than a batch on its
        own is cut in order (as a crash can cut it: the engine's writes allow that)."""
        merged: dict[bytes, bytes | None] = {}
        size, completes = 0, []
        while lane.queue:
            records, done = lane.queue[0]
            rest = records[lane.at :] if lane.at else records
            need = sum(record_size(key, value) for key, value in rest)
            if size + need <= self.limit:
                merged.update(rest)
                size += need
                lane.queue.popleft()
                lane.at = 0
                completes.append(done)
                continue
            if not merged:  # larger than a batch: as much of it as fits
                for key, value in rest:
                    one = record_size(key, value)
                    if merged and size + one > self.limit:
                        break
                    merged[key] = value
                    size += one
                    lane.at += 1
                if lane.at == len(records):  # one record, larger than a batch on its own
                    lane.queue.popleft()
                    lane.at = 0
                    completes.append(done)
            break
        return list(merged.items()), completes

    async def _deliver(self, partition: int, records: list[Record]) -> None:
        delay = self.FIRST_DELAY_S
        for attempt in range(self.RESENDS + 1):
            try:
                await (await self.send(partition, records))
            except KafkaError as exc:
                if attempt == self.RESENDS:
                    raise
                log = logger.warning if attempt == 0 else logger.debug
                log(
                    "changelog partition %d refused a batch of %d records (%s: %s): sending it "
                    "again before anything after it",
                    partition,
                    len(records),
                    type(exc).__name__,
                    exc,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.MAX_DELAY_S)
                continue
            if attempt:
                logger.warning(
                    "changelog partition %d: a refused batch was delivered after %d resends",
                    partition,
                    attempt,
                )
            return
