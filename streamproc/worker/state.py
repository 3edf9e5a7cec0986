"""The worker's changelogged state: a Faust table of bytes, written a partition at a time.

The pipeline writes the keys of one partition with that partition's number: the value goes into
the table's store and, in record batches (``changelog.ChangelogWriter``), to that changelog
partition, without the current event Faust's ``table[key] = value`` needs to pick the partition.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, cast

import faust
from aiokafka.errors import KafkaError

from streamproc.kpi.batch import key_partition
from streamproc.worker.changelog import ChangelogWriter, Record
from streamproc.worker.contracts import Lease

logger = logging.getLogger(__name__)

# Sends the message of a failed delivery again: the future of the new send.
Resend = Callable[[], Awaitable["asyncio.Future[Any]"]]


class Deliveries:
    """Futures of the messages a worker sends (state changelog, dead letters) until delivered.

    Faust's commit is meant to flush the producer first, but its buffer's ``flush()`` gives up
    after 0.1 s without a message sent, and then commits offsets whose state changes may still be
    unsent: a SIGKILL at that moment loses them. Each batch waits for its messages before it is
    acked (so before its offsets can be committed): Promise 1 does not rest on that flush.

    The batch processor and the ticks both wait here: a waiter does not take the futures away
    from the other, so neither acks before its own messages are delivered.

    A send the broker refuses (a Kafka error: seen from a broker just restarted empty, answering
    ``UnknownError`` to the first writes to a topic it has just created) is sent again, when it
    came with a way to (``resend``: dead letters), with backoff, up to ``RESENDS`` times; then its
    error is raised to every waiter. (The changelog's writer sends its batches again itself, in
    order.)
    """

    RESENDS = 8
    FIRST_DELAY_S = 0.2
    MAX_DELAY_S = 5.0

    def __init__(self) -> None:
        self.pending: list[asyncio.Future[Any]] = []

    def add(self, future: asyncio.Future[Any], resend: Resend | None = None) -> asyncio.Future[Any]:
        """Track a send; the future of its delivery (resends included), for ``wait``."""
        if resend is not None:
            future = asyncio.ensure_future(self._deliver(future, resend))
        self.pending.append(future)
        return future

    def sent(self) -> list[asyncio.Future[Any]]:
        """The messages sent so far, to ``wait`` for later; the delivered ones are let go here
        (a failed one stays in what this returns, so its error is raised to that waiter)."""
        sent = list(self.pending)
        self.pending = [future for future in sent if not future.done()]
        return sent

    async def wait(self, sent: list[asyncio.Future[Any]] | None = None) -> None:
        """Until every message sent so far (or in ``sent``) is on the broker, or raise its
        error."""
        pending = list(self.pending) if sent is None else sent
        try:
            if pending:
                await asyncio.gather(*pending)
        finally:
            if sent is None:
                self.pending = [future for future in self.pending if not future.done()]

    async def _deliver(self, future: asyncio.Future[Any], resend: Resend) -> Any:
        delay = self.FIRST_DELAY_S
        for attempt in range(self.RESENDS + 1):
            try:
                result = await future
            except KafkaError as exc:
                if attempt == self.RESENDS:
                    raise
                log = logger.warning if attempt == 0 else logger.debug
                log("A send was refused (%s: %s): sending it again", type(exc).__name__, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.MAX_DELAY_S)
                future = await resend()
                continue
            if attempt:
                logger.warning("A refused send was delivered after %d resends", attempt)
            return result
        raise AssertionError("unreachable")


class StateTable(faust.Table[str, bytes]):
    """Faust's table, handing the futures of its changelog sends to ``deliveries``."""

    deliveries: Deliveries | None = None

    def send_changelog(self, *args: Any, **kwargs: Any) -> Any:
        future = super().send_changelog(*args, **kwargs)
        if self.deliveries is not None:
            self.deliveries.add(future)
        return future


class TableManager(faust.tables.TableManager):
    """Faust's table manager without the second its start sleeps first. That sleep waits for
    tables that modules define while the app starts (autodiscovery); the worker's one table is
    defined before the app starts, and the second delayed every start and restart."""

    async def on_start(self) -> None:
        if not self.should_stop:
            await self._update_channels()
            await self.recovery.start()


class TableState:
    """The pipeline's StateTable over a Faust table of bytes (memory store).

    A plan's writes go to the store, and to the changelog partition through a
    ``ChangelogWriter``: record batches sent straight through Faust's aiokafka producer (Faust's
    own path, ``Table.send_changelog``, a buffered message each, cost ~125 µs of CPU a record),
    one batch of a partition at a time, so the changelog always holds a prefix of the writes.
    Each write's delivery joins ``deliveries``.
    """

    def __init__(self, table: StateTable, *, batch_bytes: int, lease: Lease) -> None:
        """``lease`` is confirmed before each record batch is sent. (The batches of revoked
        partitions are sent, or dropped, before a rebalance goes on: ``ChangelogWriter.drain``.
        So a batch goes in the generation it was written in.)"""
        self.table = table
        self.lease = lease
        self.changelog = ChangelogWriter(self._send, batch_bytes=batch_bytes)

    @functools.cached_property
    def store(self) -> dict[str, bytes]:
        """The dict of the table's memory store (``faust.stores.memory.Store.data``), without
        the table's write hooks. Not the store itself: its mapping layers cost 2 % of a
        worker's CPU with live traffic (and ``get`` of a missing key, every new session's, a
        ``KeyError`` raised and caught inside). Looked up once: the table makes its store once
        and the store its dict once (faust 0.15: ``Collection.data``, ``Store.__init__``);
        through the attributes at every ``get`` it was 1 % of a worker's CPU."""
        return cast(dict[str, bytes], self.table.data.data)

    def get(self, key: str) -> bytes | None:
        value = self.store.get(key)
        return bytes(value) if value is not None else None

    def scan(self) -> Iterable[str]:
        return list(self.store.keys())

    def forget(self, partitions: set[int]) -> int:
        """Drop the state of ``partitions`` from memory (writes of a batch whose changelog
        records were dropped, ``Fenced``: memory may be ahead of the changelog); how many keys
        went. Faust reads their changelog whole when they are assigned again."""
        return self._drop(lambda partition: partition in partitions)

    def keep_only(self, partitions: set[int]) -> int:
        """Forget the state of other partitions than ``partitions`` (they moved to another
        worker); how many keys went. Faust's recovery forgets where it was in the changelog of a
        partition that is revoked, and reads it whole when the partition comes back; kept here,
        their keys held memory for nothing, and one whose tombstone was compacted away meanwhile
        would have come back from the dead. (Faust's memory store forgets only keys it
        recovered itself, and those not before the next recovery.)"""
        return self._drop(lambda partition: partition not in partitions)

    def _drop(self, gone_from: Callable[[int], bool]) -> int:
        store: Any = self.table.data  # faust.stores.memory.Store
        data, recovered = store.data, store._key_partition
        gone = [key for key in data if gone_from(key_partition(key))]
        for key in gone:
            del data[key]
            recovered.pop(key, None)
        return len(gone)

    async def write(self, writes: list[tuple[str, bytes | None]], partition: int) -> None:
        """Store the writes in order, and queue them for changelog partition ``partition``."""
        store, table, changelog_key = self.store, self.table, self.changelog_key
        records: list[Record] = []
        for key, value in writes:
            if value is not None:
                store[key] = value
            elif key in store:
                del store[key]
            else:
                continue  # nothing to delete
            records.append((changelog_key(key), value))
        done = self.changelog.write(partition, records)
        if table.deliveries is not None:
            table.deliveries.add(done)

    def changelog_key(self, key: str) -> bytes:
        """A state key as the changelog holds it: the table's key serializer's bytes (JSON),
        which recovery decodes. Faust's own path (``prepare_key``: schema, registry, codec) was
        3 % of a worker's CPU; a key of printable ASCII without quote or backslash, as the
        engine's nearly always are, is its JSON string as it stands."""
        if key.isascii() and key.isprintable() and '"' not in key and "\\" not in key:
            return b'"%s"' % key.encode()
        table = self.table
        return cast(bytes, table.changelog_topic.prepare_key(key, table.key_serializer)[0])

    async def _send(self, partition: int, records: list[Record]) -> asyncio.Future[Any]:
        """One record batch to changelog partition ``partition``: its delivery."""
        lease = self.lease
        await lease.confirm(f"a state write to changelog partition {partition}", lease.generation())
        table = self.table
        producer = table.app.producer._ensure_producer()  # type: ignore[attr-defined]
        batch = producer.create_batch()
        for key, value in records:
            if batch.append(key=key, value=value, timestamp=None) is None:
                raise AssertionError("a changelog batch overflowed its size bound")
        name = table.changelog_topic.get_topic_name()
        delivery: asyncio.Future[Any] = await producer.send_batch(batch, name, partition=partition)
        return delivery
