"""What the worker runs inside Faust: the batch processor, the ticks, and the topic watch.

Every Redis call goes through one retry path (``Holding``); work whose writes were fenced (the
worker may have lost its partitions, ``membership.py``) is dropped unacked; any other error stops
the worker at once (``exit_now``): a batch is acked only once it is processed and its messages
delivered, so a restart processes it again and nothing is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, NoReturn, TypeVar, cast

import faust

from streamproc.errors import ConfigError, Fenced, StoreUnavailable, TopicsChanged
from streamproc.metrics import WorkerMetrics
from streamproc.worker.align import Aligner, Slice
from streamproc.worker.consumer import Consumer
from streamproc.worker.pipeline import Pipeline
from streamproc.worker.runs import BatchCounts
from streamproc.worker.state import Deliveries

T = TypeVar("T")

logger = logging.getLogger(__name__)

# Fetched records a worker buffers (beyond, the queue and then the fetching wait); a partition
# waiting for one of its topics takes more even so.
MAX_BUFFERED = 100_000
# Processed runs whose state may be on its way to the broker at once, acked once delivered: a
# slice used to wait for its delivery before the next began (~11 ms a slice, a third of the time
# of a run of small slices).
MAX_ACKING = 16


class Holding:
    """The one retry path of the worker's Redis calls (batches, ticks, timers).

    A transient Redis error holds the work: it is retried with backoff until Redis answers, while
    the batch stays unacked, so no offset past it is committed (the consumer stops fetching once
    its queue is full). One line is logged when an outage starts and one when it ends. Any other
    error stops the worker: see ``__call__``.
    """

    MAX_DELAY_S = 5.0

    def __init__(self, metrics: WorkerMetrics) -> None:
        self.metrics = metrics
        self.since: float | None = None  # when the current outage began (monotonic)

    async def __call__(self, work: Callable[[], Awaitable[T]], what: str) -> T:
        """``work()`` once it succeeds. Another exception stops the worker: its batch is not
        acked, so it is processed again after the restart. (An error one event causes is
        handled by the pipeline: that event becomes a dead letter.)"""
        delay = 0.2
        while True:
            try:
                result = await work()
            except StoreUnavailable as exc:
                self.metrics.redis_retries.inc()
                if self.since is None:
                    self.since = time.monotonic()
                    logger.warning(
                        "Redis is unavailable (%s: %s): %s is held, nothing is committed, "
                        "retrying until it answers",
                        exc.kind,
                        exc,
                        what,
                    )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.MAX_DELAY_S)
                continue
            except Fenced:
                raise  # the work is dropped: see ``dropped``
            except TopicsChanged as exc:
                exit_now(TopicsChanged.EXIT_CODE, "%s", exc)
            except ConfigError as exc:  # Redis refused the password or its certificate
                exit_now(2, "%s", exc)
            except Exception:
                logger.exception("%s: unexpected error; stopping so the work is done again", what)
                exit_now(70, "stopped by an unexpected error")
            if self.since is not None:
                logger.warning(
                    "Redis answers again after %.1f s; processing resumes",
                    time.monotonic() - self.since,
                )
                self.since = None
            return result


def dropped(metrics: WorkerMetrics, what: str, exc: Fenced) -> None:
    """Work whose writes were fenced: it is not acked, so the partition's owner reads it again."""
    metrics.fenced.inc()
    logger.warning("%s: %s; not acked, the partition's owner processes it", what, exc)


def exit_now(code: int, message: str, *args: object) -> NoReturn:
    """Stop the worker now, without Faust's shutdown: that would commit the offsets acked so far,
    which is right, but also wait on a broker or Redis that may be gone. Nothing is lost: a batch
    is acked only once it is processed and its messages are delivered."""
    logger.error(message, *args)
    logging.shutdown()
    os._exit(code)


def wire_batches(
    app: faust.App,
    batches: Any,
    pipeline: Pipeline,
    metrics: WorkerMetrics,
    deliveries: Deliveries,
    hold: Holding,
) -> None:
    """Process the input the consumer queues (``consumer.Batch``), a run of one partition's
    slices at a time, in the order ``align.Aligner`` gives (each partition's topics in step)."""
    aligner = Aligner(pipeline.topics, pipeline.backlogged)

    async def process(run: list[Slice]) -> None:
        started = time.perf_counter()
        slices = [(piece.tp.topic, piece.records) for piece in run]
        what = f"a batch of partition {run[0].tp.partition}"
        try:
            counts = await hold(partial(pipeline.on_slices, slices), what)
        except Fenced as exc:
            dropped(metrics, what, exc)
            return
        sizes = [len(messages) for _, messages in slices]
        count(metrics, counts, sizes, time.perf_counter() - started)
        # Acked once the state of the run is on the broker; the next runs go on meanwhile.
        consumer = cast(Consumer, app.consumer)
        sent = deliveries.sent()

        async def ack() -> None:
            try:
                await hold(partial(deliveries.wait, sent), what)
            except Fenced as exc:
                dropped(metrics, what, exc)
                return
            for piece in run:
                consumer.ack_range(piece.tp, piece.first, piece.last)

        acking = consumer.acking
        task = asyncio.ensure_future(ack())
        acking.add(task)
        task.add_done_callback(acking.discard)
        while len(acking) > MAX_ACKING:
            await asyncio.wait(acking, return_when=asyncio.FIRST_COMPLETED)

    def take_queued() -> None:
        while aligner.records < MAX_BUFFERED:
            try:
                aligner.add(batches.get_nowait())
            except asyncio.QueueEmpty:
                return

    @app.task
    async def process_batches() -> None:
        while True:
            consumer = cast(Consumer, app.consumer)
            if not consumer.flow_active or aligner.generation not in (
                None,
                app.consumer_generation_id,
            ):
                # A rebalance began (the flow stops as partitions are revoked) or came between:
                # what was fetched before it is read again from the committed offsets.
                aligner.clear()
                if not consumer.flow_active:
                    await asyncio.sleep(0.05)
                    continue
            take_queued()
            run = aligner.next_run(pipeline.settings.run_max_events)
            if not run:  # nothing, or every partition waits for one of its topics
                with contextlib.suppress(TimeoutError):
                    wait = aligner.wait_left() if aligner.records else None
                    aligner.add(await asyncio.wait_for(batches.get(), wait))
                continue
            consumer.busy = True
            try:
                await process(run)
            finally:
                consumer.busy = False


def count(
    metrics: WorkerMetrics, counts: list[BatchCounts], sizes: list[int], seconds: float
) -> None:
    """What a run of slices did (``counts`` and message ``sizes`` by slice) and how long it
    took; its batch metrics are per topic: the messages of each topic in the run."""
    by_topic: dict[str, int] = {}
    for slice_counts, size in zip(counts, sizes, strict=True):
        topic = slice_counts.topic
        for event_type, n in slice_counts.valid.items():
            metrics.events.labels(topic, event_type).inc(n)
        for reason, n in slice_counts.dead_letters.items():
            metrics.dead_letters.labels(topic, reason).inc(n)
        metrics.duplicates.labels(topic).inc(slice_counts.duplicates)
        metrics.late.labels(topic).inc(slice_counts.late)
        metrics.evicted.inc(slice_counts.evicted)
        by_topic[topic] = by_topic.get(topic, 0) + size
    for topic, size in by_topic.items():
        metrics.batch_events.labels(topic).observe(size)
        metrics.batch_seconds.labels(topic).observe(seconds)


def wire_ticks(
    app: faust.App,
    ticks: Any,
    pipeline: Pipeline,
    metrics: WorkerMetrics,
    deliveries: Deliveries,
    hold: Holding,
) -> None:
    """Ticks, one per owned partition a second on an internal topic co-partitioned with the
    input: the watermark advances and sessions close without events."""

    @app.agent(ticks, name="ticks", concurrency=1)
    async def tick(stream: Any) -> None:
        async for event in stream.events():
            partition = event.message.partition
            what = f"tick {partition}"
            try:
                outcome = await hold(partial(pipeline.on_tick, partition), what)
                await hold(deliveries.wait, what)
            except Fenced as exc:
                dropped(metrics, what, exc)
                outcome = None
            await stream.ack(event)  # else the last tick holds up shutdowns and rebalances
            if outcome is not None:
                metrics.evicted.inc(outcome.evicted)

    failing: list[str] = []  # the error ticks last failed with, while they fail

    @app.timer(1.0)
    async def send_ticks() -> None:
        try:
            for partition in sorted(pipeline.owned()):
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
        for partition in pipeline.owned():
            for topic in pipeline.topics:
                if (lag := pipeline.lag(topic, partition)) is not None:
                    metrics.consumer_lag.labels(topic, str(partition)).set(lag)

    @app.timer(1.0)
    async def recovery_progress() -> None:
        recovery = app.tables.recovery  # type: ignore[attr-defined]  # TableManager's, untyped
        remaining = recovery.active_remaining_total() if app.in_recovery else 0
        metrics.recovery_remaining.set(remaining)

    @app.timer(2.0)
    async def refresh_ends() -> None:
        await hold(pipeline.refresh_ends, "reading the input's known ends")


def _retrieved(future: asyncio.Future[Any]) -> None:
    """Mark a future's exception as retrieved (asyncio logs unretrieved ones as errors)."""
    if not future.cancelled():
        future.exception()


def watch_topics(app: faust.App, pipeline: Pipeline, expected: dict[str, int]) -> None:
    """Stop when the topics change under the worker: a partition ends before what was read of it
    (``Pipeline.check_ends``), a topic is gone, or a topic's partition count differs from the
    one it started with (the broker lost its topics and created them again when a client asked,
    as Tansu and Kafka's default do). Going on would take new offsets for absorbed ones, or put
    state into the wrong changelog partitions."""

    missing: dict[str, int] = {}  # topic -> checks in a row that found it gone

    @app.timer(2.0)
    async def check_topics() -> None:
        try:
            pipeline.check_ends()
        except TopicsChanged as exc:
            exit_now(TopicsChanged.EXIT_CODE, "%s", exc)
        for name, count in expected.items():
            found = app.consumer.topic_partitions(name)
            missing[name] = missing.get(name, 0) + 1 if found == 0 else 0
            if missing[name] >= 3:  # a metadata answer without it, three checks in a row
                exit_now(
                    TopicsChanged.EXIT_CODE,
                    "topic %s is gone from the broker (a memory-only broker restarted, or the "
                    "topic was deleted). Stopping: a restarted worker creates the topics again "
                    "(the input's with STREAMPROC_PARTITIONS) and starts from their beginning; "
                    "what the lost topics held is not counted.",
                    name,
                )
            if found and found != count:  # 0: not known, or gone
                exit_now(
                    TopicsChanged.EXIT_CODE,
                    "topic %s now has %d partitions, but had %d when this worker started: it was "
                    "deleted and created again (a broker that lost its data creates the topics "
                    "clients ask for, with its default partition count). Stopping; a restarted "
                    "worker checks the topics again and says what to repair.",
                    name,
                    found,
                    count,
                )
