"""One worker's processing: runs of input slices (or ticks) through the partition engines.

Framework-free: the worker's tasks (``tasks.py``) hand in messages and provide the state table,
the dead-letter sink and the consumer's high watermarks through small protocols. Per run (one
partition's consecutive slices, ``align.py``), under one lock (the engines and the table are
shared by the run processor and the ticks):

    decode -> dead-letter bad input -> store labels -> too late? -> duplicate? -> engine
    -> publish to Redis (absolute values, idempotent adds) -> write the state table

Redis is written before the table, so a crash in between re-processes the batch into the same
values; the table's per-record offset markers make the re-processing change nothing else.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from streamproc.config import Settings
from streamproc.deadletter import DeadLetter
from streamproc.errors import StreamprocError, TopicsChanged
from streamproc.events.parse import Reason
from streamproc.ingest import BatchDecoder, Decoded, Message
from streamproc.kpi.contrib import NEVER
from streamproc.kpi.engine import (
    FAMILY_INDEX,
    EngineSettings,
    Item,
    PartitionEngine,
    Plan,
    Progress,
)
from streamproc.store import STORE_ERRORS, PartitionStatus, PipelineStore

logger = logging.getLogger(__name__)


class StateTable(Protocol):
    """The changelogged state (a Faust table): reads anywhere, writes with a partition's event."""

    def get(self, key: str) -> bytes | None: ...
    def scan(self) -> Iterable[str]: ...
    async def write(self, writes: list[tuple[str, bytes | None]], partition: int) -> None:
        """Store the writes in order, to the changelog partition ``partition``."""
        ...


DeadLetterSink = Callable[[Message, DeadLetter], Awaitable[None]]
Highwater = Callable[[str, int], int | None]  # (topic, partition) -> next offset, or None
# (topic, partition) -> the offset the consumer was placed at when it was assigned the partition
# (the group's committed offset; None: from the beginning). Everything before it was absorbed by
# an earlier owner, whose state this worker recovered: it is read, though never delivered here.
ReadFrom = Callable[[str, int], int | None]
Owned = Callable[[], set[int]]  # the input partitions this worker is assigned


@dataclass
class BatchCounts:
    """What one batch did, for the worker's metrics."""

    topic: str
    valid: dict[str, int] = field(default_factory=dict)  # event_type -> count
    dead_letters: dict[str, int] = field(default_factory=dict)  # reason -> count
    duplicates: int = 0
    late: int = 0  # accepted events that amended an already closed window
    evicted: int = 0

    def dead_letter(self, reason: str, n: int = 1) -> None:
        self.dead_letters[reason] = self.dead_letters.get(reason, 0) + n

    def add(self, other: BatchCounts) -> None:
        """Add what one partition's part of the slice did."""
        for reason, n in other.dead_letters.items():
            self.dead_letter(reason, n)
        self.duplicates += other.duplicates
        self.late += other.late
        self.evicted += other.evicted


Letters = list[tuple[int, Message, DeadLetter]]  # (slice index, message, letter)


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
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.store = store
        self.table = table
        self.decoders = decoders
        self.dead_letter = dead_letter
        self.highwater = highwater
        self.read_from = read_from
        self.owned = owned
        self.clock = clock
        self.engine_settings = engine_settings(settings)
        self.topics = [settings.topics_by_family[f] for f in FAMILY_INDEX]  # by topic index
        self.topic_index = {name: FAMILY_INDEX[f] for f, name in settings.topics_by_family.items()}
        self.engines: dict[int, PartitionEngine] = {}
        self.processed: dict[tuple[str, int], int] = {}  # (topic, partition) -> last offset
        self.ends: dict[tuple[str, int], int] = {}
        self.finished: set[int] = set()
        self.ends_loaded = False  # a replay's or backfill's known ends hold the watermark back
        self.ends_expected = False  # a replay still producing: every partition has more to come
        self.shrunk: dict[tuple[str, int], int] = {}  # partitions seen ending before what was read
        # the offset after the last message read of each partition, kept when a partition moves
        # (offsets never go back on a broker that keeps its data)
        self.read_max: dict[tuple[str, int], int] = {}
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
        for key in [k for k in self.processed if k[1] in gone]:
            del self.processed[key]

    async def refresh_ends(self) -> None:
        ends = await self.store.input_ends()
        self.ends_expected = ends is None
        self.ends = ends or {}
        self.ends_loaded = not self.ends_expected  # else read again with every batch and tick

    def progress(self, partition: int, wall_ms: int) -> Progress:
        backlog, ended = set(), set()
        for index, topic in enumerate(self.topics):
            state = self._state(topic, partition)
            if state == "ended":
                ended.add(index)
            elif state == "backlog":
                backlog.add(index)
        return Progress(frozenset(backlog), frozenset(ended), wall_ms)

    def backlogged(self, topic: str, partition: int) -> bool:
        """Whether a topic partition has input the pipeline has not processed yet."""
        return self._state(topic, partition) == "backlog"

    def lag(self, topic: str, partition: int) -> int | None:
        """Records of a topic partition not processed yet (as far as the last fetch saw it);
        None before the first fetch response."""
        high = self.highwater(topic, partition)
        return None if high is None else max(0, high - self._done(topic, partition))

    def _done(self, topic: str, partition: int) -> int:
        """The next offset to process."""
        return max(
            self.processed.get((topic, partition), -1) + 1,
            self.read_from(topic, partition) or 0,
        )

    def _state(self, topic: str, partition: int) -> str:
        """``ended`` (read to its known end), ``backlog`` (unread input) or ``read``."""
        if self.ends_expected:
            return "backlog"
        done = self._done(topic, partition)
        end = self.ends.get((topic, partition))
        if end is not None and done >= end:
            return "ended"
        high = self.highwater(topic, partition)
        # No fetch response yet (None): the consumer may be slow to start; taking the partition
        # for idle would move the watermark to the wall clock past its backlog.
        if high is None or high > done or end is not None:
            return "backlog"
        return "read"

    def check_ends(self) -> None:
        """Raise TopicsChanged when an owned partition ends before what was read of it, in
        several checks in a row (one odd fetch response is not taken for it): the broker lost
        its data (a memory-only broker restarted) or the topic was created again. Its new
        offsets would be taken for ones already absorbed (records skip offsets at or below
        their markers)."""
        read = {partition for _, partition in self.read_max}
        for partition in sorted(self.owned() | read):  # owned() is empty during a rebalance
            for topic in self.topics:
                done = max(
                    self.read_max.get((topic, partition), 0),
                    self.read_from(topic, partition) or 0,
                )
                self._check_end(topic, partition, self.highwater(topic, partition), done)

    def _check_end(self, topic: str, partition: int, high: int | None, done: int) -> None:
        key = (topic, partition)
        if high is None or high >= done:
            self.shrunk.pop(key, None)
            return
        self.shrunk[key] = seen = self.shrunk.get(key, 0) + 1
        if seen >= 3:
            raise TopicsChanged(
                f"{topic}[{partition}] ends at offset {high}, but this worker has read it up to "
                f"offset {done}: the broker lost the topic's data (a memory-only broker "
                "restarted?) or the topic was deleted and created again. Stopping: this worker's "
                "state no longer matches the topics. A restarted worker creates what is missing "
                "and reads on from the group's committed offsets (from the beginning on a broker "
                "that lost them); what the lost records counted stays in the KPIs."
            )

    # --- batches ----------------------------------------------------------------------------

    async def on_batch(self, topic: str, messages: list[Message]) -> BatchCounts:
        """A batch of one input topic (of one or several partitions)."""
        return (await self.on_slices([(topic, messages)]))[0]

    async def on_slices(self, slices: Sequence[tuple[str, list[Message]]]) -> list[BatchCounts]:
        """Slices of the input (``align.Aligner``'s run), what each did. Each partition's events
        are judged slice by slice in the order given, then absorbed, published and stored at
        once: a record that several slices touch is re-evaluated and written once.

        Dead letters are sent last, once every partition's state is written: slices retried
        after a Redis error (or processed again after a crash) send them again only if they were
        cut short after sending them.
        """
        counts = [BatchCounts(topic) for topic, _ in slices]
        letters: Letters = []
        wall_ms = int(self.clock() * 1000)
        async with self.lock:
            if not self.ends_loaded:
                await self.refresh_ends()
            # Events fetched before a rebalance took their partition away: its new owner reads
            # them again from the committed offset. Writing them here would put state into a
            # changelog partition that another worker owns.
            owned = self.owned()
            runs: dict[int, list[_Piece]] = defaultdict(list)
            read: list[tuple[str, list[Message]]] = []
            for index, (topic, messages) in enumerate(slices):
                mine = [m for m in messages if m.partition in owned]
                read.append((topic, mine))
                batch = self.decoders[topic].decode(self._before_end(topic, mine), now_ms=wall_ms)
                letters += [(index, message, letter) for message, letter in batch.dead_letters]
                by_partition: dict[int, list[Decoded]] = defaultdict(list)
                valid = counts[index].valid
                for decoded in batch.events:
                    by_partition[decoded.message.partition].append(decoded)
                    valid[decoded.event.event_type] = valid.get(decoded.event.event_type, 0) + 1
                for partition, group in by_partition.items():
                    runs[partition].append(_Piece(index, topic, group))
            labels = await self.store.labels(
                (d.event.store_id for pieces in runs.values() for p in pieces for d in p.events),
                cap=self.settings.max_stores,
            )
            for partition, pieces in sorted(runs.items()):
                part = _Part(partition, labels, wall_ms)
                try:
                    done = await self._run(part, pieces)
                except BaseException as exc:
                    self.forget([partition])  # memory may be ahead of the table: rebuild it
                    if not _event_error(exc):
                        raise
                    done = await self._one_by_one(part, pieces, exc)
                for index, part_counts in done.counts.items():
                    counts[index].add(part_counts)
                letters += done.letters
            for topic, messages in read:  # also partitions whose messages were all bad
                for message in messages:
                    key = (topic, message.partition)
                    self.processed[key] = max(self.processed.get(key, -1), message.offset)
                    self.read_max[key] = max(self.read_max.get(key, 0), message.offset + 1)
            for index, message, letter in letters:
                await self.dead_letter(message, letter)
                counts[index].dead_letter(letter.reason)
        return counts

    def _before_end(self, topic: str, messages: list[Message]) -> list[Message]:
        """The messages before their partition's known end. A backfill's input is a live topic
        that keeps growing past the end it was given: what lies beyond counts nowhere."""
        if not self.ends:
            return messages
        return [
            m
            for m in messages
            if (end := self.ends.get((topic, m.partition))) is None or m.offset < end
        ]

    async def _run(self, part: _Part, pieces: list[_Piece]) -> _Done:
        """One partition's events of a run: judged (slice by slice), deduplicated, absorbed,
        published, stored. Its dead letters (too late) are returned, to be sent after the whole
        run."""
        done = _Done()
        engine = self.engine(part.partition)
        judged: list[tuple[_Piece, Item, Message]] = []
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
                items, self.progress(part.partition, part.wall_ms), wall_ms=part.wall_ms
            )
            done.of(piece).late += verdicts.late
            key = (piece.topic, part.partition)
            last = piece.events[-1].message.offset
            self.processed[key] = max(self.processed.get(key, -1), last)
            by_item = {id(item): d.message for item, d in zip(items, piece.events, strict=True)}
            for item in verdicts.too_late:
                message = by_item[id(item)]
                detail = f"event_time is more than {limit} s behind the watermark"
                done.letters.append(
                    (piece.index, message, _letter(message, Reason.TOO_LATE, detail))
                )
            judged += [(piece, item, by_item[id(item)]) for item in verdicts.on_time]
        progress = self.progress(part.partition, part.wall_ms)
        first = await self.store.first_occurrences(
            [item.event.event_id for _, item, _ in judged],
            [f"{m.topic}:{m.partition}:{m.offset}" for _, _, m in judged],
            horizon_s=self.settings.dedup_horizon_seconds,
        )
        accepted = []
        for (piece, item, _), ok in zip(judged, first, strict=True):
            if ok:
                accepted.append(item)
            else:
                done.of(piece).duplicates += 1
        plan = engine.apply(accepted, progress, self.table)
        done.of(pieces[-1]).evicted += plan.evicted
        await self._settle(engine, plan, part.wall_ms)
        return done

    async def _one_by_one(self, part: _Part, pieces: list[_Piece], error: BaseException) -> _Done:
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
        done = _Done()
        for piece in pieces:
            for decoded in piece.events:
                for _ in range(self.settings.max_event_failures):
                    try:
                        one = await self._run(part, [_Piece(piece.index, piece.topic, [decoded])])
                    except BaseException as exc:
                        self.forget([part.partition])
                        if not _event_error(exc):
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
                    letter = _letter(message, Reason.PROCESSING_ERROR, detail, field=None)
                    done.letters.append((piece.index, message, letter))
        return done

    async def _probe(self, part: _Part) -> None:
        """The partition's own work without any new event: raises when that fails too."""
        engine = self.engine(part.partition)
        try:
            plan = engine.apply([], self.progress(part.partition, part.wall_ms), self.table)
            await self._settle(engine, plan, part.wall_ms)
        except BaseException:
            self.forget([part.partition])
            raise

    async def on_tick(self, partition: int) -> Plan | None:
        """No event needed: the watermark moves with the wall clock (idle) or known ends."""
        if partition not in self.owned():
            return None  # a tick for a partition another worker owns
        wall_ms = int(self.clock() * 1000)
        async with self.lock:
            if not self.ends_loaded:
                await self.refresh_ends()
            engine = self.engine(partition)
            try:
                plan = engine.apply([], self.progress(partition, wall_ms), self.table)
                await self._settle(engine, plan, wall_ms)
            except BaseException:
                self.forget([partition])  # memory may be ahead of the table: rebuild it
                raise
        return plan

    async def _settle(self, engine: PartitionEngine, plan: Plan, wall_ms: int) -> None:
        if plan.watermark >= NEVER and plan.partition not in self.finished:
            self.finished.add(plan.partition)
            logger.info("partition %d: input read to its end, every value is final", plan.partition)
        status = PartitionStatus(plan.partition, plan.watermark, list(engine.meta.max_ts), wall_ms)
        await self.store.publish(
            plan.partition,
            cells=plan.cells,
            presence=plan.presence,
            open_tickets=plan.open_tickets,
            status=status,
        )
        await self.table.write(plan.writes, plan.partition)


@dataclass(frozen=True)
class _Part:
    """Where one partition's part of a run goes."""

    partition: int
    labels: dict[str, str]
    wall_ms: int


@dataclass(frozen=True)
class _Piece:
    """One slice's valid events of one partition."""

    index: int  # of the slice in its run
    topic: str
    events: list[Decoded]


@dataclass
class _Done:
    """What one partition's part of a run did (by slice), merged into the run's once it
    succeeded."""

    counts: dict[int, BatchCounts] = field(default_factory=dict)
    letters: Letters = field(default_factory=list)

    def of(self, piece: _Piece) -> BatchCounts:
        return self.counts.setdefault(piece.index, BatchCounts(piece.topic))

    def add(self, other: _Done) -> None:
        for index, counts in other.counts.items():
            self.counts.setdefault(index, BatchCounts(counts.topic)).add(counts)
        self.letters += other.letters


def _event_error(exc: BaseException) -> bool:
    """Whether an error may be the event's doing: not a Redis error (an outage holds the batch,
    any other Redis error stops the worker), not one of ours about the topics, not a
    cancellation or exit."""
    return isinstance(exc, Exception) and not isinstance(exc, (*STORE_ERRORS, StreamprocError))


def _letter(
    message: Message, reason: str, detail: str, *, field: str | None = "$.event_time"
) -> DeadLetter:
    return DeadLetter(
        reason=reason,
        detail=detail,
        field=field,
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        timestamp_ms=message.timestamp_ms,
    )
