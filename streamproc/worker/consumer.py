"""Faust's consumer, handing the input over a fetched batch at a time.

Faust delivers a message at a time: for every message its drain loop awaits the conductor's
callback against the flow-control event (two tasks a message), then a stream iterates it; that
hand-off cost more than all of the KPI work. Here the records ``getmany`` fetched for one input
partition go to a queue as one ``Batch``, and the worker acks the batch's offset range once it is
processed (``ack_range``): Faust's commit then moves past it. The other topics (the ticks) keep
Faust's per-message path. The queue belongs to Faust's flow control, so a rebalance drops what
was queued, as it drops what the streams buffered; a batch fetched in an earlier consumer
generation is not processed (``tasks.py``).

Two more corrections of Faust's behaviour live here: the end offsets table recovery reads to, and
the seek after a recovery (see the methods).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, cast

from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP
from faust.types.tuples import ack_lock
from mode.utils.futures import notify

from streamproc.broker import OffsetReader
from streamproc.connection import KafkaConnection
from streamproc.ingest import Message
from streamproc.worker import fetch, recovery
from streamproc.worker.membership import Membership

# How long a stopping worker waits for the batch in hand (it may be held by a Redis outage: its
# offsets then stay uncommitted and it is processed again after the restart).
STOP_WAIT_S = 10.0


@dataclass(frozen=True, slots=True)
class Batch:
    """The records of one input partition from one fetch, in offset order."""

    tp: TP
    records: list[Message]
    generation: int  # the consumer group generation they were fetched in


class Consumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer with batch hand-off, true end offsets and a safe seek.

    ``batched``: the topics handed over in batches (the input topics); ``batches``: the queue
    they go to (an ``app.FlowControlQueue``); ``kafka``: the connection of the worker's own
    offset reads; ``membership``: the lease its heartbeats renew; all set by
    ``app.create_app``. ``busy`` is True while the worker processes a batch, and ``acking`` holds
    the processed batches whose messages are not delivered yet: a rebalance waits for both
    (``wait_empty``), as Faust waits for the messages its streams hold, so no state write of this
    worker reaches a changelog partition after its next owner has read it.

    ``placed_at`` keeps what ``seek_to_committed`` (Faust's seek after every assignment) found:
    where this worker's reading of each partition starts.
    """

    batched: frozenset[str] = frozenset()
    batches: Any = None
    membership: Membership | None = None
    kafka: KafkaConnection = KafkaConnection("127.0.0.1:9092")
    fetch_max_wait_ms = 1500  # Faust's fixed value
    HELD_WAIT_S = 0.05  # longest wait for fetched records while the input is held (1 s: Faust's)

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    placed_at: Mapping[TP, int] = MappingProxyType({})
    _held: frozenset[TP] = frozenset()
    _reseek: frozenset[TP] = frozenset()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.busy = False
        self.acking: set[asyncio.Future[None]] = set()  # processed batches awaiting delivery

    # --- the hand-off ---------------------------------------------------------------------

    async def _drain_messages(self, fetcher: Any) -> None:
        """Faust's fetch loop (``Consumer._drain_messages``), a partition's records at a time."""
        consumer_stopped = self._stopped.is_set
        fetcher_stopped = fetcher._stopped.is_set
        try:
            while not (consumer_stopped() or fetcher_stopped()):
                self.diag.set_flag(CONSUMER_FETCHING)
                records, active = await self._next_records()
                generation = self.app.consumer_generation_id
                if self._reseek:
                    records = await self._seek_again(records or {})
                await self.sleep(0)
                if records and not self.should_stop:
                    await self._dispatch(records, active, generation)
                self.diag.unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            self.diag.unset_flag(CONSUMER_FETCHING)

    async def _next_records(self) -> tuple[Mapping[TP, list[Any]] | None, set[TP] | None]:
        """Faust's wait for fetched records (up to a second), shorter while the input is held
        for the seek after a recovery: a fetch waits only for the partitions that are not paused
        when it begins (and with none, Faust sleeps a second), so the input, once resumed, was
        fetched up to a second late."""
        if not self._held:
            return await self._wait_next_records(1.0)
        if not self._get_active_partitions():
            await asyncio.sleep(self.HELD_WAIT_S)
            return None, None
        return await self._wait_next_records(self.HELD_WAIT_S)

    async def _dispatch(
        self, records: Mapping[TP, list[Any]], active: set[TP] | None, generation: int
    ) -> None:
        if not self.flow_active:  # as Faust's getmany: fetched while stopped, read again later
            try:
                await self.perform_seek()
            except Exception as exc:
                self.log.warning("exception performing seek when flow not active %r", exc)
            return
        for tp, fetched in records.items():
            if not self.flow_active or self.app.consumer_generation_id != generation:
                return  # a rebalance began: the rest is read again after it
            if active is not None and tp not in active and tp not in self._buffered_partitions:
                continue
            self.app.monitor.track_tp_end_offset(tp, self.highwater(tp))
            fresh = await self._unread(tp, fetched)
            if not fresh:
                continue
            if tp.topic in self.batched:
                await self.wait_first(
                    self.batches.put(Batch(tp, fresh, generation)), self.suspend_flow.wait()
                )
            else:
                await self.wait_first(self._deliver(tp, fresh), self.suspend_flow.wait())
            self._read_offset[tp] = fresh[-1].offset
            commit_every = self._commit_every
            if commit_every is not None and self._n_acked >= commit_every:
                self._n_acked = 0
                await self.commit()

    async def _deliver(self, tp: TP, records: list[Any]) -> None:
        """The other topics: a changelog partition's records while it is recovered go to the
        table at once (``recovery.py``); the rest (the ticks) take Faust's per-message path.
        Faust races every message against a flow suspension (two tasks a message); here a fetched
        batch races once. A suspension (a rebalance) drops the rest of the batch, as Faust drops
        each message after it."""
        tables = cast(Any, self.app.tables)  # the TableManager; its type has no .recovery
        if self._is_changelog_tp(tp) and recovery.take(tables.recovery, tp, records):
            return
        callback = self.callback
        for record in records:
            await callback(self._to_message(tp, record))

    async def _unread(self, tp: TP, fetched: list[Any]) -> list[Any]:
        """The records at or after the read offset, as Faust delivers them; a jump over offsets
        (compaction, transaction markers) is recorded as a gap, so commits can pass it."""
        read = self._read_offset[tp]
        if read is None or not fetched or fetched[0].offset >= read:
            fresh = fetched  # (in offset order: nearly always all of it, and no pass over it)
        else:
            fresh = [r for r in fetched if r.offset >= read]
        if (
            fresh
            and read
            and fresh[0].offset - read > 1
            and self.app.topics.acks_enabled_for(tp.topic)
        ):
            await self._add_gap(tp, read + 1, fresh[0].offset)
        return fresh

    def ack_range(self, tp: TP, first: int, last: int) -> None:
        """Offsets ``first`` to ``last`` of ``tp`` are processed: the next commit may pass them
        (Faust's ``ack``, for a run of offsets at once)."""
        with ack_lock:
            committed = self._committed_offset[tp]
            start = first if committed is None else max(first, committed)
            index = self._acked_index[tp]
            new = [offset for offset in range(start, last + 1) if offset not in index]
            if new:
                index.update(new)
                self._acked[tp].extend(new)
                self._n_acked += len(new)
            notify(self._waiting_for_ack)

    async def wait_empty(self) -> None:
        """Faust's wait for in-flight messages, and for the batch in hand: a rebalance must not
        finish while its state is being written. A stopping worker waits at most STOP_WAIT_S."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STOP_WAIT_S if self.app.should_stop else None
        while (self.busy or self.acking) and not self.should_stop:
            if deadline is not None and loop.time() > deadline:
                self.log.warning("stopping with a batch in hand: it is processed again later")
                break
            await asyncio.sleep(0.02)
        await super().wait_empty()

    # --- recovery ---------------------------------------------------------------------------

    async def perform_seek(self) -> None:
        """Faust's recovery resumes the stream partitions, awaits this seek, then resumes its
        flow control, which empties the queues. What was fetched during the seek was dropped
        unprocessed and fetching went on after it: a run of events never processed (seen after
        restarts with a backlog). The input partitions stay paused from here until the flow is
        resumed, and the seek puts them back where reading must start; once they are resumed,
        they are put there again (``_seek_again``)."""
        held: set[TP] = set()
        if self.flow_active:  # else a rebalance paused everything; its recovery resumes them
            held = {tp for tp in self.assignment() if not self._is_changelog_tp(tp)}
            self.pause_partitions(held)
            self._held = frozenset(held)
        await super().perform_seek()
        for tp in held - set(self.placed_at):
            # Nothing committed: aiokafka leaves the position where its prefetch got to, past
            # records that may have been dropped with the queues. Reading starts at the
            # beginning (a position before the log start resets to it: auto_offset_reset).
            await self.seek(tp, 0)

    def resume_flow(self) -> None:
        super().resume_flow()  # after Faust's flow control emptied the queues
        if self.app.in_recovery:  # the flow resumed to read changelogs: the input waits for it
            return
        held, self._held = self._held, frozenset()
        if held:
            self.resume_partitions(held & self.assignment())
            self._reseek = held

    async def _seek_again(self, records: Mapping[TP, list[Any]]) -> Mapping[TP, list[Any]]:
        """Put the partitions held during the seek back where their reading starts, before any
        more of their records are handed over; the records of theirs in hand go (read again).

        Pausing a partition leaves it out of the partitions Faust's fetch asks for, and Faust
        drops the records of a fetch that was out when the pause came: aiokafka's position is
        already past them. When that fetch came back after the seek, nothing read them again:
        with the rest of the partition in it, it never delivered another record (partitions
        stalled for good after a rebalance under load); with more after it, the jump would have
        counted as a gap (compaction) that commits may pass. Nothing of a held partition was
        processed since the seek, so its start is still what the seek found."""
        tps, self._reseek = self._reseek & self.assignment(), frozenset()
        for tp in tps:
            await self.seek(tp, self.placed_at.get(tp, 0))
        return {tp: fetched for tp, fetched in records.items() if tp not in tps}

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        self._held = self._reseek = frozenset()  # a new rebalance: its recovery seeks anew
        await super().on_partitions_revoked(revoked)

    async def seek_to_committed(self) -> Mapping[TP, int]:
        committed = await super().seek_to_committed()
        # aiokafka does not seek for 0 or None (nothing committed): reading starts at the
        # beginning; a partition no longer assigned is dropped with the old mapping
        self.placed_at = {tp: offset for tp, offset in committed.items() if offset}
        return committed

    async def highwaters(self, *partitions: TP) -> dict[TP, int]:
        """End offsets from a fetch response. Table recovery reads each changelog partition up
        to these; Faust asks ListOffsets LATEST, which Tansu answers wrongly both ways: with the
        last batch's base offset + 1 (recovery stopped short of the last batch's other records,
        and a partition that moved between workers lost its newest state), and, after a produce
        to a topic it did not know (a worker's retried send to a restarted broker), with offsets
        no fetch returns (recovery waited for them for ever). Only recovery and standby reads
        call this."""
        if not partitions:
            return {}
        async with OffsetReader(self.kafka) as reader:
            ends = await reader.highwaters((tp.topic, tp.partition) for tp in partitions)
        return {tp: ends[(tp.topic, tp.partition)] for tp in partitions}


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """Faust's consumer thread, with the consumer's ``fetch_max_wait_ms`` (Faust fixes 1.5 s:
    how long a fetch may wait for data; the broker answers at once when it has some), its
    group coordinator's heartbeats renewing the worker's ``Membership``, and the input's records
    fetched as ``Message``s (``fetch.py``)."""

    async def on_start(self) -> None:
        await super().on_start()
        consumer = cast(Consumer, self.consumer)
        if self._consumer is not None:
            fetch.install(self._consumer._fetcher, lambda topic: topic in consumer.batched)
            if consumer.membership is not None:
                consumer.membership.watch(self._consumer._coordinator)

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        wait_ms = cast(Consumer, self.consumer).fetch_max_wait_ms
        consumer._fetch_max_wait_ms = wait_ms  # read by its start()
        return consumer
