"""The Faust worker: one agent per input topic plus a tick agent, over one changelogged state table.
The only module (with ``cli``, which starts it) that imports faust.

Agents take batches with ``take_events`` (acked only after the batch is processed, so committed
offsets never pass an unprocessed event) and keep ``concurrency=1`` (faust #606). Table writes
need a current event of the partition they belong to: the pipeline hands each batch's last event
per partition back as the anchor of its writes (``Stream._set_current_event``, a private API of
the pinned faust version). Ticks, one per owned partition every second on an internal topic that
is co-partitioned with the input, let the watermark advance and sessions close without events.
Faust's own web server is off: ``/metrics`` is served from a thread by ``metrics.serve``.
Table recovery reads the changelog up to the fetch high watermark (``_Consumer``), not up
to ListOffsets LATEST, which some brokers answer short.

Crash safety does not rest on Faust's own ordering: a batch is acked only once the changelog
and dead-letter messages it sent are delivered (``_Deliveries``), and the consumer keeps the
stream partitions paused through Faust's post-recovery seek, which would otherwise drop what
was fetched meanwhile (``_Consumer.perform_seek``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from functools import partial
from types import MappingProxyType
from typing import Any, NoReturn, TypeVar, cast

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

from streamproc.broker import OffsetReader
from streamproc.config import Settings
from streamproc.deadletter import DeadLetter
from streamproc.errors import TopicsChanged
from streamproc.events.parse import EventDecoder
from streamproc.ingest import BatchDecoder, Message
from streamproc.metrics import WorkerMetrics
from streamproc.pipeline import BatchCounts, Pipeline
from streamproc.store import TRANSIENT, KpiStore

T = TypeVar("T")

logger = logging.getLogger(__name__)


def faust_broker_url(bootstrap_servers: str) -> str:
    """``a:9092,b:9092`` -> ``kafka://a:9092;kafka://b:9092``."""
    hosts = [host.strip() for host in bootstrap_servers.split(",") if host.strip()]
    return ";".join(f"kafka://{host}" for host in hosts)


def _message(event: Any) -> Message:
    msg = event.message
    timestamp = msg.timestamp
    return Message(
        topic=msg.topic,
        partition=msg.partition,
        offset=msg.offset,
        timestamp_ms=round(timestamp * 1000) if timestamp else None,
        key=msg.key,
        value=msg.value,
    )


class _Deliveries:
    """Futures of the messages a worker sends (state changelog, dead letters) until delivered.

    Faust's commit is meant to flush the producer first, but its buffer's ``flush()`` gives up
    after 0.1 s without a message sent, and then commits offsets whose state changes may still be
    unsent: a SIGKILL at that moment loses them. Each batch waits for its messages before it is
    acked (so before its offsets can be committed): Promise 1 does not rest on that flush.
    """

    def __init__(self) -> None:
        self.pending: list[Awaitable[Any]] = []

    def add(self, future: Awaitable[Any]) -> None:
        self.pending.append(future)

    async def wait(self) -> None:
        """Until every message sent so far is on the broker (or raise its error)."""
        pending, self.pending = self.pending, []
        if pending:
            await asyncio.gather(*pending)


class _Table(faust.Table[str, bytes]):
    """Faust's table, handing the futures of its changelog sends to ``deliveries``."""

    deliveries: _Deliveries | None = None

    def send_changelog(self, *args: Any, **kwargs: Any) -> Any:
        future = super().send_changelog(*args, **kwargs)
        if self.deliveries is not None:
            self.deliveries.add(future)
        return future


class TableState:
    """The pipeline's StateTable over a Faust table of bytes."""

    def __init__(self, table: _Table) -> None:
        self.table = table

    def get(self, key: str) -> bytes | None:
        value = self.table.get(key)
        return bytes(value) if value is not None else None

    def scan(self) -> Iterable[str]:
        return list(self.table.keys())

    def write(self, writes: list[tuple[str, bytes | None]], anchor: object) -> None:
        stream, event = cast(tuple[Any, Any], anchor)
        previous = stream.current_event  # the stream's own task reads it too: put it back
        stream._set_current_event(event)  # the changelog partition is the event's partition
        try:
            for key, value in writes:
                if value is not None:
                    self.table[key] = value
                elif key in self.table:
                    del self.table[key]
        finally:
            stream._set_current_event(previous)


class _Consumer(faust_aiokafka.Consumer):
    """Faust's consumer with end offsets from a fetch response, and the committed offsets it was
    placed at.

    Table recovery reads each changelog partition up to ``highwaters()``; Faust asks ListOffsets
    LATEST, which Tansu answers with the last batch's base offset + 1. Trusting it stops recovery
    short of the last batch's other records, and a partition that moves between workers (or a
    restarted worker) loses its newest state. Only recovery and standby reads call this.

    ``placed_at`` keeps what ``seek_to_committed`` (Faust's seek after every assignment) found:
    where this worker's reading of each partition starts.
    """

    placed_at: Mapping[TP, int] = MappingProxyType({})
    _held: frozenset[TP] = frozenset()
    guarded: frozenset[str] = frozenset()  # the input topics: acked only once processed

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._released: set[Any] = set()

    def release(self, messages: Iterable[Any]) -> None:
        """These messages are processed (their state and dead letters delivered): their acks may
        count. Faust acks a ``take_events`` batch in a ``finally``, so also when its processing
        was cancelled (a shutdown, a crash elsewhere in the app) or raised; without this guard
        the stop's commit moved past events that were never processed (seen: a worker stopped
        while Redis was down committed 551 events it had not counted)."""
        self._released.update(messages)

    def ack(self, message: Any) -> bool:
        if message.topic in self.guarded:
            if message not in self._released:
                return False  # never processed: its offset must not be committed
            self._released.discard(message)
        return bool(super().ack(message))

    async def perform_seek(self) -> None:
        """Faust's recovery resumes the stream partitions, awaits this seek, then resumes its
        flow control, which empties the stream queues. What was fetched during the seek was
        dropped unprocessed and fetching went on after it: a run of events never processed
        (seen after restarts with a backlog). The stream partitions stay paused from here until
        the flow is resumed, and the seek puts them back where reading must start."""
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
        if self.app.in_recovery:  # the flow resumed to read changelogs: streams wait for it
            return
        held, self._held = self._held, frozenset()
        if held:
            self.resume_partitions(held & self.assignment())

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        self._held = frozenset()  # a new rebalance: its recovery pauses and resumes them
        await super().on_partitions_revoked(revoked)

    async def seek_to_committed(self) -> Mapping[TP, int]:
        committed = await super().seek_to_committed()
        # aiokafka does not seek for 0 or None (nothing committed): reading starts at the
        # beginning; a partition no longer assigned is dropped with the old mapping
        self.placed_at = {tp: offset for tp, offset in committed.items() if offset}
        return committed

    async def highwaters(self, *partitions: TP) -> dict[TP, int]:
        if not partitions:
            return {}
        listed = await super().highwaters(*partitions)
        bootstrap = ",".join(f"{url.host}:{url.port or 9092}" for url in self.transport.url)
        async with OffsetReader(bootstrap) as reader:
            ends = await reader.highwaters((tp.topic, tp.partition) for tp in partitions)
        return {tp: max(listed.get(tp) or 0, ends[(tp.topic, tp.partition)]) for tp in partitions}


def never_auto_create_topics() -> None:
    """The Kafka clients of this process (Faust's consumer and producer) stop asking the broker
    to create the topics their metadata requests name.

    aiokafka always asks (``allow_auto_topic_creation``), and Tansu and Kafka's default create
    such a topic with the broker's default partition count. After a broker lost its topics, the
    worker's own clients recreated its state changelog that way, with another partition count
    than the input's: state restored into the wrong partitions, or every batch refused. The
    worker creates every topic it needs explicitly (``streamproc worker`` before Faust starts,
    Faust its internal ones through the admin API), so a missing topic stays missing and the
    worker notices (``_watch_topics``).
    """
    import aiokafka.client
    from aiokafka.protocol.metadata import MetadataRequest

    aiokafka.client.MetadataRequest = partial(MetadataRequest, allow_auto_topic_creation=False)


def state_topics(settings: Settings) -> dict[str, dict[str, str]]:
    """The worker's own topics (its state table's changelog, its ticks) with their configs, as
    Faust names them. ``streamproc worker`` creates them before Faust starts, with the input's
    partition count: a broker auto-creates a topic a client asks for with its own default."""
    app_id = _app_id(settings)
    return {
        f"{app_id}-{STATE_TABLE}-changelog": {"cleanup.policy": "compact"},
        f"{app_id}-ticks": {},
    }


STATE_TABLE = "state"


def _app_id(settings: Settings) -> str:
    return f"{settings.namespace}-worker"


def create_app(
    settings: Settings,
    *,
    bootstrap_servers: str,
    partitions: int,
    decoder: EventDecoder,
    store: KpiStore,
    metrics: WorkerMetrics,
    clock: Callable[[], float] = time.time,
) -> faust.App:
    """Build the worker app: topics, the state table, agents and timers."""
    app = faust.App(
        _app_id(settings),
        broker=faust_broker_url(bootstrap_servers),
        store="memory://",
        autodiscover=False,
        processing_guarantee="at_least_once",
        topic_partitions=partitions,
        topic_replication_factor=settings.replication_factor,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=settings.group_session_timeout_seconds,
        broker_heartbeat_interval=settings.group_heartbeat_interval_seconds,
        broker_rebalance_timeout=settings.group_rebalance_timeout_seconds,
        web_enabled=False,
        worker_redirect_stdouts=False,
        table_standby_replicas=0,
        Table=_Table,
    )
    guarded = type("_GuardedConsumer", (_Consumer,), {"guarded": frozenset(settings.input_topics)})
    app.transport.Consumer = guarded  # type: ignore[misc]  # instance attribute, not class
    never_auto_create_topics()
    # bytes values use faust's raw serializer (the engine encodes records itself); str keys JSON
    table = cast(
        _Table, app.Table(STATE_TABLE, key_type=str, value_type=bytes, partitions=partitions)
    )
    deliveries = table.deliveries = _Deliveries()
    raw: dict[str, Any] = {
        "key_type": bytes,
        "value_type": bytes,
        "key_serializer": "raw",
        "value_serializer": "raw",
    }
    dlq = app.topic(settings.topic_dlq, **raw)

    async def dead_letter(message: Message, letter: DeadLetter) -> None:
        # cut to what the producer (and the broker) accepts: a 10 MB message is still rejected
        key, value, headers = letter.record(
            message.key, message.value, max_bytes=settings.dead_letter_max_bytes
        )
        deliveries.add(await dlq.send(key=key, value=value, headers=headers))

    def highwater(topic: str, partition: int) -> int | None:
        try:
            value = app.consumer.highwater(TP(topic, partition))
        except (AssertionError, KeyError, AttributeError):
            return None
        return int(value) if value is not None else None

    def read_from(topic: str, partition: int) -> int | None:
        return cast(_Consumer, app.consumer).placed_at.get(TP(topic, partition))

    def owned() -> set[int]:
        return {
            tp.partition
            for tp in app.consumer.assignment()
            if tp.topic == settings.topic_clickstream
        }

    hold = _Holding(metrics)
    pipeline = Pipeline(
        settings,
        store=store,
        table=TableState(table),
        decoders={
            name: BatchDecoder(decoder, family)
            for family, name in settings.topics_by_family.items()
        },
        dead_letter=dead_letter,
        highwater=highwater,
        read_from=read_from,
        owned=owned,
        clock=clock,
    )
    for name in settings.input_topics:
        app.agent(app.topic(name, **raw), name=f"consume-{name}", concurrency=1)(
            _consumer(settings, pipeline, name, metrics, deliveries, hold)
        )
    ticks = app.topic(f"{_app_id(settings)}-ticks", partitions=partitions, internal=True, **raw)
    _wire_ticks(app, ticks, pipeline, metrics, owned, deliveries, hold)
    _watch_topics(
        app, pipeline, dict.fromkeys((*settings.input_topics, *state_topics(settings)), partitions)
    )

    async def revoked(sender: Any, revoked: set[TP], **kwargs: Any) -> None:
        gone = {tp.partition for tp in revoked if tp.topic == settings.topic_clickstream}
        pipeline.forget(gone)
        for partition in gone:  # another worker reports them now: no frozen series here
            for gauge in (metrics.watermark, metrics.event_lag):
                with contextlib.suppress(KeyError):
                    gauge.remove(str(partition))

    app.on_partitions_revoked.connect(revoked)  # type: ignore[arg-type]

    app.pipeline = pipeline  # type: ignore[attr-defined]  # for tests and tools
    return app


class _Holding:
    """The one retry path of the worker's Redis calls (batches, ticks, timers).

    A transient Redis error holds the work: it is retried with backoff until Redis answers, while
    the batch stays unacked, so no offset past it is committed (the consumer stops fetching once
    its buffers are full). One line is logged when an outage starts and one when it ends. Any
    other error stops the worker: see ``__call__``.
    """

    MAX_DELAY_S = 5.0

    def __init__(self, metrics: WorkerMetrics) -> None:
        self.metrics = metrics
        self.since: float | None = None  # when the current outage began (monotonic)

    async def __call__(self, work: Callable[[], Awaitable[T]], what: str) -> T:
        """``work()`` once it succeeds.

        An exception must not leave an agent: ``take_events`` acks a batch even when its
        processing raised, and a crashed agent is restarted past it. Exiting at once keeps the
        batch's offsets uncommitted, so it is processed again after the restart. (An error one
        event causes is handled by the pipeline: that event becomes a dead letter.)
        """
        delay = 0.2
        while True:
            try:
                result = await work()
            except TRANSIENT as exc:
                self.metrics.redis_retries.inc()
                if self.since is None:
                    self.since = time.monotonic()
                    logger.warning(
                        "Redis is unavailable (%s: %s): %s is held, nothing is committed, "
                        "retrying until it answers",
                        type(exc).__name__,
                        exc,
                        what,
                    )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.MAX_DELAY_S)
                continue
            except TopicsChanged as exc:
                _exit(TopicsChanged.EXIT_CODE, "%s", exc)
            except Exception:
                logger.exception("%s: unexpected error; stopping so the work is done again", what)
                _exit(70, "stopped by an unexpected error")
            if self.since is not None:
                logger.warning(
                    "Redis answers again after %.1f s; processing resumes",
                    time.monotonic() - self.since,
                )
                self.since = None
            return result


def _exit(code: int, message: str, *args: object) -> NoReturn:
    """Stop the worker now, without Faust's shutdown: that would commit the offsets acked so far,
    which is right, but also wait on a broker or Redis that may be gone. Nothing is lost: a batch
    is acked only once it is processed and its messages are delivered."""
    logger.error(message, *args)
    logging.shutdown()
    os._exit(code)


def _consumer(
    settings: Settings,
    pipeline: Pipeline,
    topic: str,
    metrics: WorkerMetrics,
    deliveries: _Deliveries,
    hold: _Holding,
) -> Callable[[Any], Any]:
    within = settings.batch_max_wait_ms / 1000

    async def consume(stream: Any) -> None:
        consumer = cast(_Consumer, stream.app.consumer)
        async for events in stream.take_events(settings.batch_max_events, within=within):
            started = time.perf_counter()
            anchors: dict[int, object] = {e.message.partition: (stream, e) for e in events}
            messages = [_message(e) for e in events]
            counts = await hold(partial(pipeline.on_batch, topic, messages, anchors), topic)
            await hold(deliveries.wait, topic)
            consumer.release(e.message for e in events)  # now take_events may ack them
            _count(metrics, counts, len(events), time.perf_counter() - started)

    consume.__name__ = f"consume_{topic.replace('.', '_')}"
    return consume


def _count(metrics: WorkerMetrics, counts: BatchCounts, size: int, seconds: float) -> None:
    topic = counts.topic
    for event_type, n in counts.valid.items():
        metrics.events.labels(topic, event_type).inc(n)
    for reason, n in counts.dead_letters.items():
        metrics.dead_letters.labels(topic, reason).inc(n)
    metrics.duplicates.labels(topic).inc(counts.duplicates)
    metrics.late.labels(topic).inc(counts.late)
    metrics.evicted.inc(counts.evicted)
    metrics.batch_events.labels(topic).observe(size)
    metrics.batch_seconds.labels(topic).observe(seconds)


def _wire_ticks(
    app: faust.App,
    ticks: Any,
    pipeline: Pipeline,
    metrics: WorkerMetrics,
    owned: Callable[[], set[int]],
    deliveries: _Deliveries,
    hold: _Holding,
) -> None:
    @app.agent(ticks, name="ticks", concurrency=1)
    async def tick(stream: Any) -> None:
        async for event in stream.events():
            partition = event.message.partition
            tick = partial(pipeline.on_tick, partition, (stream, event))
            plan = await hold(tick, f"tick {partition}")
            await hold(deliveries.wait, f"tick {partition}")
            await stream.ack(event)  # else the last tick holds up shutdowns and rebalances
            if plan is not None:
                metrics.evicted.inc(plan.evicted)

    failing: list[str] = []  # the error ticks last failed with, while they fail

    @app.timer(1.0)
    async def send_ticks() -> None:
        try:
            for partition in sorted(owned()):
                sent = await ticks.send(key=b"", value=b"", partition=partition)
                sent.add_done_callback(_retrieved)  # a lost tick is harmless: the next one comes
        except Exception as exc:  # an exception in a Faust timer stops the worker
            if not failing:
                logger.warning("cannot send ticks (%s: %s); retrying", type(exc).__name__, exc)
            failing[:] = [type(exc).__name__]
        else:
            if failing:
                logger.warning("ticks are sent again")
                failing.clear()
        now = time.time()
        for partition, engine in list(pipeline.engines.items()):
            metrics.watermark.labels(str(partition)).set(max(engine.meta.watermark, 0) / 1000)
            latest = max(engine.meta.max_ts)
            if latest > 0:
                metrics.event_lag.labels(str(partition)).set(now - latest / 1000)

    @app.timer(2.0)
    async def refresh_ends() -> None:
        await hold(pipeline.refresh_ends, "reading the input's known ends")


def _retrieved(future: asyncio.Future[Any]) -> None:
    """Mark a future's exception as retrieved (asyncio logs unretrieved ones as errors)."""
    if not future.cancelled():
        future.exception()


def _watch_topics(app: faust.App, pipeline: Pipeline, expected: dict[str, int]) -> None:
    """Stop when the topics change under the worker: a partition ends before what was read of it
    (``Pipeline.check_ends``), or a topic's partition count differs from the one it started with
    (the broker lost its topics and created them again when a client asked, as Tansu and Kafka's
    default do). Going on would take new offsets for absorbed ones, or put state into the wrong
    changelog partitions."""

    missing: dict[str, int] = {}  # topic -> checks in a row that found it gone

    @app.timer(2.0)
    async def check_topics() -> None:
        try:
            pipeline.check_ends()
        except TopicsChanged as exc:
            _exit(TopicsChanged.EXIT_CODE, "%s", exc)
        for name, count in expected.items():
            found = app.consumer.topic_partitions(name)
            missing[name] = missing.get(name, 0) + 1 if found == 0 else 0
            if missing[name] >= 3:  # a metadata answer without it, three checks in a row
                _exit(
                    TopicsChanged.EXIT_CODE,
                    "topic %s is gone from the broker (a memory-only broker restarted, or the "
                    "topic was deleted). Stopping: a restarted worker creates the topics again "
                    "(the input's with STREAMPROC_PARTITIONS) and starts from their beginning; "
                    "what the lost topics held is not counted.",
                    name,
                )
            if found and found != count:  # 0: not known, or gone
                _exit(
                    TopicsChanged.EXIT_CODE,
                    "topic %s now has %d partitions, but had %d when this worker started: it was "
                    "deleted and created again (a broker that lost its data creates the topics "
                    "clients ask for, with its default partition count). Stopping; a restarted "
                    "worker checks the topics again and says what to repair.",
                    name,
                    found,
                    count,
                )
