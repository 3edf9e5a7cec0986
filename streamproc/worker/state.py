"""The worker's changelogged state: a Faust table of bytes, written a partition at a time.

The pipeline writes the keys of one partition with that partition's number: the value goes into
the table's store and to the changelog partition directly (``Table.send_changelog``), without the
current event Faust's ``table[key] = value`` needs to pick the partition.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import faust


class Deliveries:
    """Futures of the messages a worker sends (state changelog, dead letters) until delivered.

    Faust's commit is meant to flush the producer first, but its buffer's ``flush()`` gives up
    after 0.1 s without a message sent, and then commits offsets whose state changes may still be
    unsent: a SIGKILL at that moment loses them. Each batch waits for its messages before it is
    acked (so before its offsets can be committed): Promise 1 does not rest on that flush.

    The batch processor and the ticks both wait here: a waiter does not take the futures away
    from the other, so neither acks before its own messages are delivered.
    """

    def __init__(self) -> None:
        self.pending: list[asyncio.Future[Any]] = []

    def add(self, future: asyncio.Future[Any]) -> None:
        self.pending.append(future)

    async def wait(self) -> None:
        """Until every message sent so far is on the broker (or raise its error)."""
        pending = list(self.pending)
        try:
            if pending:
                await asyncio.gather(*pending)
        finally:
            self.pending = [future for future in self.pending if not future.done()]


class StateTable(faust.Table[str, bytes]):
    """Faust's table, handing the futures of its changelog sends to ``deliveries``."""

    deliveries: Deliveries | None = None

    def send_changelog(self, *args: Any, **kwargs: Any) -> Any:
        future = super().send_changelog(*args, **kwargs)
        if self.deliveries is not None:
            self.deliveries.add(future)
        return future


class TableState:
    """The pipeline's StateTable over a Faust table of bytes (memory store).

    A plan's writes go to the store, and to the changelog partition as record batches sent
    straight through Faust's aiokafka producer: Faust's own path (``Table.send_changelog``, a
    buffered message each) cost ~125 µs of CPU a record. The batches' futures join
    ``deliveries``; aiokafka keeps one batch of a partition in flight at a time, so the
    changelog holds the writes in order.
    """

    def __init__(self, table: StateTable) -> None:
        self.table = table

    @property
    def store(self) -> Any:
        """The table's memory store: a dict-like without the table's write hooks."""
        return self.table.data

    def get(self, key: str) -> bytes | None:
        value = self.store.get(key)
        return bytes(value) if value is not None else None

    def scan(self) -> Iterable[str]:
        return list(self.store.keys())

    async def write(self, writes: list[tuple[str, bytes | None]], partition: int) -> None:
        """Store the writes in order, and send them to changelog partition ``partition``."""
        store, table = self.store, self.table
        topic = table.changelog_topic
        producer = table.app.producer._ensure_producer()  # type: ignore[attr-defined]
        batch = producer.create_batch()
        for key, value in writes:
            if value is not None:
                store[key] = value
            elif key in store:
                del store[key]
            else:
                continue  # nothing to delete
            raw_key = topic.prepare_key(key, table.key_serializer)[0]
            if batch.append(key=raw_key, value=value, timestamp=None) is None:  # full
                await self._send(producer, batch, partition)
                batch = producer.create_batch()
                batch.append(key=raw_key, value=value, timestamp=None)
        if batch.record_count():
            await self._send(producer, batch, partition)

    async def _send(self, producer: Any, batch: Any, partition: int) -> None:
        future = await producer.send_batch(
            batch, self.table.changelog_topic.get_topic_name(), partition=partition
        )
        if self.table.deliveries is not None:
            self.table.deliveries.add(future)
