"""One worker's processing: runs of input slices (or ticks) through the partition engines.

Framework-free: the worker's tasks (``tasks.py``) hand in messages and provide the state table,
the dead-letter sink and the consumer's high watermarks through small protocols. Per run (one
partition's consecutive slices, ``align.py``), under one lock (the engines and the table are
shared by the run processor and the ticks):

    decode -> dead-letter bad input -> store labels -> too late? -> engine (duplicate?)
    -> publish to Redis (absolute values, idempotent adds) -> write the state table

Redis is written before the table, so a crash in between re-processes the batch into the same
values; the table's per-record offset markers make the re-processing change nothing else.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Sequence

from streamproc.config import Settings
from streamproc.deadletter import DeadLetter
from streamproc.errors import BrokerError
from streamproc.events.parse import Reason
from streamproc.ingest import BatchDecoder, Message
from streamproc.kpi.batch import FAMILY_INDEX, EngineSettings, Item, Outcome
from streamproc.kpi.contrib import NEVER
from streamproc.kpi.engine import PartitionEngine
from streamproc.store import PartitionStatus, PipelineStore
from streamproc.worker.contracts import (
    DeadLetterSink,
    Highwater,
    Lease,
    Owned,
    ReadFrom,
    StateTable,
)
from streamproc.worker.positions import InputPositions
from streamproc.worker.runs import (
    BatchCounts,
    Done,
    Letters,
    Part,
    Piece,
    cut,
    event_error,
    make_letter,
)

logger = logging.getLogger(__name__)


def engine_settings(settings: Settings) -> EngineSettings:
    return EngineSettings(
        session_timeout_ms=settings.session_timeout_seconds * 1000,
        abandonment_timeout_ms=settings.abandonment_timeout_seconds * 1000,
        allowed_lateness_ms=settings.allowed_lateness_seconds * 1000,
        max_lateness_ms=settings.max_lateness_seconds * 1000,
        idle_timeout_ms=settings.idle_timeout_seconds * 1000,
        order_retention_ms=settings.order_retention_seconds * 1000,
        ticket_retention_ms=settings.ticket_retention_seconds * 1000,
    )


class Pipeline:
    """The engines of the partitions this worker owns, and how batches reach them."""

    def __init__(
        self,
        settings: Settings,
        *,
        store: PipelineStore,
        table: StateTable,
        decoders: dict[str, BatchDecoder],
        dead_letter: DeadLetterSink,
        highwater: Highwater,
        read_from: ReadFrom,
        owned: Owned,
        lease: Lease,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``lease`` is confirmed before every write of state (``membership.py``)."""
        self.settings = settings
        self.store = store
        self.table = table
        self.decoders = decoders
        self.dead_letter = dead_letter
        self.owned = owned
        self.lease = lease
        self.clock = clock
        self.engine_settings = engine_settings(settings)
        self.topics = [settings.topics_by_family[f] for f in FAMILY_INDEX]  # by topic index
        self.topic_index = {name: FAMILY_INDEX[f] for f, name in settings.topics_by_family.items()}
        self.positions = InputPositions(
            self.topics, highwater=highwater, read_from=read_from, owned=owned
        )
        self.engines: dict[int, PartitionEngine] = {}
        self.finished: set[int] = set()
        self.lock = asyncio.Lock()

    # --- partitions -------------------------------------------------------------------------

    def engine(self, partition: int) -> PartitionEngine:
        engine = self.engines.get(partition)
        if engine is None:
            wall_ms = int(self.clock() * 1000)
            engine = PartitionEngine(partition, self.engine_settings, self.table, wall_ms=wall_ms)
            self.engines[partition] = engine
            logger.info(
                "partition %d: state loaded, watermark %d", partition, engine.meta.watermark
            )
        return engine

    def forget(self, partitions: Iterable[int]) -> None:
        """Partitions moved to another worker: their state is rebuilt if they come back, and
        what was read of them counts for nothing (Faust re-delivers from the committed offset)."""
        gone = set(partitions)
        for partition in gone:
            self.engines.pop(partition, None)
            self.finished.discard(partition)
        self.positions.forget(gone)

    async def refresh_ends(self) -> None:
        self.positions.set_ends(await self.store.input_ends())

    def backlogged(self, topic: str, partition: int) -> bool:
        """Whether a topic partition has input the pipeline has not processed yet."""
        return self.positions.state(topic, partition) == "backlog"

    def lag(self, topic: str, partition: int) -> int | None:
        return self.positions.lag(topic, partition)

    def check_ends(self) -> None:
        judged = {
            (topic, partition): to + 1
            for partition, engine in self.engines.items()
            for topic, to in zip(self.topics, engine.meta.read_to, strict=True)
        }
        self.positions.check_ends(judged)

    # --- batches ----------------------------------------------------------------------------

    async def on_batch(self, topic: str, messages: list[Message]) -> BatchCounts:
        """A batch of one input topic (of one or several partitions)."""
        return (await self.on_slices([(topic, messages)]))[0]

    async def on_slices(self, slices: Sequence[tuple[str, list[Message]]]) -> list[BatchCounts]:
        """Slices of the input (``align.Aligner``'s run), what each did. Each partition's events
        are judged slice by slice in the order given, then absorbed, published and stored at
        once: a record that several slices touch is re-evaluated and written once.

        The dead letters of bad input are sent last, once every partition's state is written:
        slices retried after a Redis error (or processed again after a crash) send them again
        only if they were cut short after sending them. Those of events judged too late (or that
        failed) are delivered before the state that records the verdict (``_settle``): events
        judged before a restart are skipped when read again.
        """
        wall_ms = int(self.clock() * 1000)
        generation = self.lease.generation()
        async with self.lock:
            if not self.positions.ends_loaded:
                await self.refresh_ends()
            positions, decoders = self.positions, self.decoders
            run = cut(
                slices,
                owned=self.owned(),
                decode=lambda topic, messages: decoders[topic].decode(
                    messages, now_ms=wall_ms, ends=positions.ends.get(topic)
                ),
            )
            counts, letters, runs = run.counts, run.letters, run.pieces
            labels = await self.store.labels(run.stores, cap=self.settings.max_stores)
            for partition, pieces in sorted(runs.items()):
                part = Part(partition, labels, wall_ms, generation)
                try:
                    done = await self._run(part, pieces)
                except BaseException as exc:
                    self.forget([partition])  # memory may be ahead of the table: rebuild it
                    if not event_error(exc):
                        raise
                    done = await self._one_by_one(part, pieces, exc)
                for index, part_counts in done.counts.items():
                    counts[index].add(part_counts)
            for topic, last in run.read:  # also partitions whose messages were all bad
                self.positions.read(topic, last)
            for index, message, letter in letters:
                await self.dead_letter(message, letter)
                counts[index].dead_letter(letter.reason)
        return counts

    async def _run(self, part: Part, pieces: list[Piece]) -> Done:
        """One partition's events of a run: judged (slice by slice), absorbed but for duplicates,
        published, stored; the dead letters of its events judged too late are delivered before
        the state is (``_settle``)."""
        done = Done()
        engine = self.engine(part.partition)
        for piece in pieces:  # events read again, or a topic created again under kept state?
            judged_to = engine.meta.read_to[self.topic_index[piece.topic]]
            if piece.events[0].message.offset <= judged_to:
                await self.positions.check_judged(piece.topic, part.partition, judged_to)
        judged, too_late = self._judge(engine, part, pieces, done)
        progress = self.positions.progress(part.partition, part.wall_ms)
        on_time = [item for _, items in judged for item in items]
        outcome = engine.apply(on_time, progress, self.table)
        done.of(pieces[-1]).evicted += outcome.evicted
        self._count_duplicates(judged, outcome.duplicates, done)
        await self._settle(engine, outcome, part, too_late)
        for index, _, letter in too_late:
            done.counts[index].dead_letter(letter.reason)
        if done.again:
            logger.info(
                "partition %d: %d events read again were judged before a restart or rebalance: "
                "skipped",
                part.partition,
                done.again,
            )
        return done

    def _judge(
        self, engine: PartitionEngine, part: Part, pieces: list[Piece], done: Done
    ) -> tuple[list[tuple[Piece, list[Item]]], Letters]:
        """Each piece's events on time, and the dead letters of those too late."""
        judged: list[tuple[Piece, list[Item]]] = []
        too_late: Letters = []
        labels, limit = part.labels, self.settings.max_lateness_seconds
        for piece in pieces:
            index = self.topic_index[piece.topic]
            items = [
                Item(d.event, index, d.message.offset, labels[d.event.store_id])
                for d in piece.events
            ]
            # While its events are being read, this topic has a backlog (them): only once they
            # are absorbed may it count as read to its end.
            verdicts = engine.read(
                items, self.positions.progress(part.partition, part.wall_ms), wall_ms=part.wall_ms
            )
            done.of(piece).late += verdicts.late
            done.again += verdicts.again
            last = piece.events[-1].message.offset
            self.positions.processed_up_to(piece.topic, part.partition, last)
            if verdicts.too_late:
                by_offset = {d.message.offset: d.message for d in piece.events}
                detail = f"event_time is more than {limit} s behind the watermark"
                for item in verdicts.too_late:
                    message = by_offset[item.offset]
                    letter = make_letter(message, Reason.TOO_LATE, detail)
                    too_late.append((piece.index, message, letter))
            judged.append((piece, verdicts.on_time))
        return judged, too_late

    def _count_duplicates(
        self, judged: list[tuple[Piece, list[Item]]], duplicates: list[Item], done: Done
    ) -> None:
        """``done`` counts each duplicate in the slice it came in."""
        for item in duplicates:
            for piece, items in judged:
                if items and items[0].topic == item.topic and item.offset <= items[-1].offset:
                    done.of(piece).duplicates += 1
                    break

    async def _one_by_one(self, part: Part, pieces: list[Piece], error: BaseException) -> Done:
        """A partition's run raised (not a Redis outage): its events are processed one at a
        time, so the one that fails is found. It gets ``max_event_failures`` tries in all; then
        it becomes a ``processing_error`` dead letter and the partition moves on. A partition
        that fails without any event (the error is not an event's) stops the worker."""
        logger.warning(
            "partition %d: a batch of %d events failed (%s: %s); processing them one at a time",
            part.partition,
            sum(len(piece.events) for piece in pieces),
            type(error).__name__,
            error,
        )
        done = Done()
        for piece in pieces:
            for decoded in piece.events:
                for _ in range(self.settings.max_event_failures):
                    try:
                        one = await self._run(part, [Piece(piece.index, piece.topic, [decoded])])
                    except BaseException as exc:
                        self.forget([part.partition])
                        if not event_error(exc):
                            raise
                        error = exc
                    else:
                        done.add(one)
                        break
                else:
                    await self._probe(part)  # raises when the partition fails without this event
                    message = decoded.message
                    logger.error(
                        "%s[%d]@%d: processing failed %d times (%s: %s); the event goes to the "
                        "dead-letter topic as %s and the partition moves on",
                        piece.topic,
                        part.partition,
                        message.offset,
                        self.settings.max_event_failures,
                        type(error).__name__,
                        error,
                        Reason.PROCESSING_ERROR,
                        exc_info=error,
                    )
                    detail = f"{type(error).__name__}: {error}"[:1024]
                    letter = make_letter(message, Reason.PROCESSING_ERROR, detail, field=None)
                    # delivered before the next event's state marks this one as judged
                    await self._deliver([(message, letter)])
                    done.of(piece).dead_letter(letter.reason)
        return done

    async def _probe(self, part: Part) -> None:
        """The partition's own work without any new event: raises when that fails too."""
        engine = self.engine(part.partition)
        try:
            outcome = engine.apply(
                [], self.positions.progress(part.partition, part.wall_ms), self.table
            )
            await self._settle(engine, outcome, part)
        except BaseException:
            self.forget([part.partition])
            raise

    async def on_tick(self, partition: int) -> Outcome | None:
        """No event needed: the watermark moves with the wall clock (idle) or known ends."""
        if partition not in self.owned():
            return None  # a tick for a partition another worker owns
        wall_ms = int(self.clock() * 1000)
        part = Part(partition, {}, wall_ms, self.lease.generation())
        async with self.lock:
            if not self.positions.ends_loaded:
                await self.refresh_ends()
            engine = self.engine(partition)
            try:
                outcome = engine.apply([], self.positions.progress(partition, wall_ms), self.table)
                await self._settle(engine, outcome, part)
            except BaseException:
                self.forget([partition])  # memory may be ahead of the table: rebuild it
                raise
        return outcome

    async def _deliver(self, letters: list[tuple[Message, DeadLetter]]) -> None:
        """Send dead letters and wait until they are delivered. A failure is the broker's doing,
        never the events': it is raised as ``BrokerError`` (the worker stops; a restart reads
        the run again), not taken for an event that fails."""
        try:
            sent = [await self.dead_letter(message, letter) for message, letter in letters]
            await asyncio.gather(*(delivery for delivery in sent if delivery is not None))
        except Exception as exc:
            raise BrokerError(f"a dead letter was not delivered: {exc!r}") from exc

    async def _settle(
        self,
        engine: PartitionEngine,
        outcome: Outcome,
        part: Part,
        letters: Letters | None = None,
    ) -> None:
        """Publish the outcome, then store it, each once the lease of the run's generation is
        confirmed (a worker that stalled past its group session may have lost the partition:
        its writes would land over the new owner's). The outcome's dead letters (events judged
        too late) are delivered in between, before the meta that records them as judged (a
        restart skips those events, ``PartitionEngine.read``)."""
        what = f"partition {outcome.partition}'s state"
        await self.lease.confirm(what, part.generation)
        if outcome.watermark >= NEVER and outcome.partition not in self.finished:
            self.finished.add(outcome.partition)
            logger.info(
                "partition %d: input read to its end, every value is final", outcome.partition
            )
        meta = engine.meta
        status = PartitionStatus(
            outcome.partition,
            outcome.watermark,
            list(meta.max_ts),
            part.wall_ms,
            accepted=meta.accepted,
            duplicates=meta.duplicates,
        )
        await self.store.publish(
            outcome.partition,
            cells=outcome.cells,
            presence=outcome.presence,
            open_tickets=outcome.open_tickets,
            status=status,
        )
        if letters:
            await self._deliver([(message, letter) for _, message, letter in letters])
        await self.lease.confirm(what, part.generation)
        await self.table.write(outcome.writes, outcome.partition)
