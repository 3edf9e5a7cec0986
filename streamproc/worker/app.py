"""The worker's Faust app: the input topics, the state table, the batch processor and the ticks.

Faust runs the consumer group (partitions of the input and of the state changelog assigned
together), recovers the state table from its changelog, and commits offsets. The input reaches
the pipeline a fetched batch at a time (``consumer.py``); its state goes to the table a partition
at a time (``state.py``). Faust's own web server is off: ``/metrics`` is served from a thread by
``metrics.serve``.

Crash safety does not rest on Faust's own ordering: a batch is acked only once the changelog and
dead-letter messages it sent are delivered (``state.Deliveries``); a changelog partition gets its
writes one record batch at a time, so it always holds a prefix of them (``changelog.py``); and
the consumer keeps the input partitions paused through Faust's post-recovery seek, which would
otherwise drop what was fetched meanwhile (``Consumer.perform_seek``). A worker writes state only
while its group membership is known to hold (``membership.py``): one that stalled past its
session does not write over the partitions' new owner when it wakes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import Any, cast

import faust
from faust.types import TP

from streamproc.config import Settings
from streamproc.connection import KafkaConnection
from streamproc.deadletter import DeadLetter
from streamproc.events.parse import EventDecoder
from streamproc.ingest import BatchDecoder, Message
from streamproc.metrics import WorkerMetrics
from streamproc.store import KpiStore
from streamproc.worker.consumer import Consumer
from streamproc.worker.contracts import Lease
from streamproc.worker.membership import Membership
from streamproc.worker.pipeline import Pipeline
from streamproc.worker.state import Deliveries, StateTable, TableManager, TableState
from streamproc.worker.tasks import Holding, watch_topics, wire_batches, wire_ticks

logger = logging.getLogger(__name__)

STATE_TABLE = "state"
QUEUED_BATCHES = 16  # fetched batches waiting for the processor; then fetching waits
# aiokafka keeps one open batch per partition and makes a send wait while that batch is full and
# in flight: with its 16 KiB default, dead letters (up to dead_letter_max_bytes each) and state
# records went out a round trip per 16 KiB. A batch stays below the request (and the broker's
# message) limit of 1 MiB.
PRODUCER_BATCH_BYTES = 512 * 1024
_RAW: dict[str, Any] = {
    "key_type": bytes,
    "value_type": bytes,
    "key_serializer": "raw",
    "value_serializer": "raw",
}


def faust_broker_url(bootstrap_servers: str) -> str:
    """``a:9092,b:9092`` -> ``kafka://a:9092;kafka://b:9092``."""
    hosts = [host.strip() for host in bootstrap_servers.split(",") if host.strip()]
    return ";".join(f"kafka://{host}" for host in hosts)


def faust_credentials(kafka: KafkaConnection) -> faust.types.auth.CredentialsT | None:
    """The security settings as Faust's ``broker_credentials`` (its consumer, producer and
    admin client all take them): None for PLAINTEXT."""
    context = kafka.ssl_context()
    if kafka.sasl:
        return faust.SASLCredentials(
            username=kafka.username,
            password=kafka.password,
            ssl_context=context,  # SASL_SSL with a context, else SASL_PLAINTEXT
            mechanism=kafka.mechanism,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None


def never_auto_create_topics() -> None:
    """The Kafka clients of this process (Faust's consumer and producer) stop asking the broker
    to create the topics their metadata requests name. Process-wide (it patches aiokafka): the
    ``streamproc worker`` command calls it, a library user or a test that builds an app does not.

    aiokafka always asks (``allow_auto_topic_creation``), and Tansu and Kafka's default create
    such a topic with the broker's default partition count. After a broker lost its topics, the
    worker's own clients recreated its state changelog that way, with another partition count
    than the input's: state restored into the wrong partitions, or every batch refused. The
    worker creates every topic it needs explicitly (``streamproc worker`` before Faust starts,
    Faust its internal ones through the admin API), so a missing topic stays missing and the
    worker notices (``tasks.watch_topics``).
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


def _app_id(settings: Settings) -> str:
    return f"{settings.namespace}-worker"


def _partitions(settings: Settings, tps: Iterable[TP]) -> set[int]:
    """The input partitions among ``tps`` (the input topics are co-partitioned: one stands for
    all)."""
    return {tp.partition for tp in tps if tp.topic == settings.topic_clickstream}


def create_app(
    settings: Settings,
    *,
    kafka: KafkaConnection | str,
    partitions: int,
    decoder: EventDecoder,
    store: KpiStore,
    metrics: WorkerMetrics,
    datadir: Path,
    clock: Callable[[], float] = time.time,
) -> faust.App:
    """Build the worker app: topics, the state table, the batch processor, ticks and timers.

    ``datadir`` is the directory Faust makes at start for table stores kept on disk. Ours is in
    memory (and on its changelog), so nothing is written there; Faust's default would be
    ``<app id>-data`` in the current directory.
    """
    connection = KafkaConnection.of(kafka)
    app = _faust_app(settings, kafka=connection, partitions=partitions, datadir=datadir)
    batches = app.FlowControlQueue(maxsize=QUEUED_BATCHES, clear_on_resume=True)
    membership = Membership(
        session_timeout_s=settings.group_session_timeout_seconds,
        rebalance_timeout_s=settings.group_rebalance_timeout_seconds,
        heartbeat_interval_s=settings.group_heartbeat_interval_seconds,
        generation=lambda: app.consumer_generation_id,
    )
    consumer = type(
        "AppConsumer",
        (Consumer,),
        {
            "kafka": connection,
            "batched": frozenset(settings.input_topics),
            "batches": batches,
            "membership": membership,
            "fetch_max_wait_ms": settings.batch_max_wait_ms,
        },
    )
    app.transport.Consumer = consumer  # type: ignore[misc]  # instance attribute, not class
    for name in settings.input_topics:  # subscribed; the consumer hands them to the processor
        app.topics.add(app.topic(name, **_RAW))
    # bytes values use faust's raw serializer (the engine encodes records itself); str keys JSON
    table = cast(
        StateTable, app.Table(STATE_TABLE, key_type=str, value_type=bytes, partitions=partitions)
    )
    deliveries = table.deliveries = Deliveries()
    state = TableState(table, batch_bytes=PRODUCER_BATCH_BYTES, lease=membership)
    pipeline = _pipeline(app, settings, state, decoder, store, clock, membership)
    hold = Holding(metrics)
    wire_batches(app, batches, pipeline, metrics, deliveries, hold)
    ticks = app.topic(f"{_app_id(settings)}-ticks", partitions=partitions, internal=True, **_RAW)
    wire_ticks(app, ticks, pipeline, metrics, deliveries, hold)
    watched = (*settings.input_topics, *state_topics(settings))
    watch_topics(app, pipeline, dict.fromkeys(watched, partitions))

    async def revoked(sender: Any, revoked: set[TP], **kwargs: Any) -> None:
        gone = _partitions(settings, revoked)
        pipeline.forget(gone)
        # their state reaches the changelog before another worker can recover it from there
        await state.changelog.drain(gone)
        if fenced := state.changelog.take_fenced():
            # writes dropped on their way to the changelog: the memory is ahead of it, so the
            # state of these partitions is read from the changelog again, whole
            recovery = app.tables.recovery  # type: ignore[attr-defined]  # untyped
            changelog = table.changelog_topic.get_topic_name()
            for partition in fenced:
                recovery.revoke(TP(changelog, partition))
            pipeline.forget(fenced)
            logger.warning(
                "state writes of partitions %s were dropped (this worker may have lost them "
                "while it stalled): %d keys forgotten, read from the changelog again if they "
                "come back",
                sorted(fenced),
                state.forget(fenced),
            )
        for partition in gone:  # another worker reports them now: no frozen series here
            for gauge in (metrics.watermark, metrics.event_lag):
                with contextlib.suppress(KeyError):
                    gauge.remove(str(partition))
            for topic in settings.input_topics:
                with contextlib.suppress(KeyError):
                    metrics.consumer_lag.remove(topic, str(partition))

    async def assigned(sender: Any, assigned: set[TP], **kwargs: Any) -> None:
        metrics.rebalances.inc()
        kept = _partitions(settings, assigned)
        # Only a partition whose changelog position Faust's recovery forgot is read whole when
        # it comes back; a rebalance overtaken by the next one leaves the positions as they were.
        recovery = app.tables.recovery  # type: ignore[attr-defined]  # TableManager's, untyped
        changelog = table.changelog_topic.get_topic_name()
        kept |= {tp.partition for tp in recovery.active_offsets if tp.topic == changelog}
        if dropped := state.keep_only(kept):
            logger.info("state of partitions moved to other workers dropped: %d keys", dropped)

    app.on_partitions_revoked.connect(revoked)  # type: ignore[arg-type]
    app.on_partitions_assigned.connect(assigned)  # type: ignore[arg-type]
    return app


def _faust_app(
    settings: Settings, *, kafka: KafkaConnection, partitions: int, datadir: Path
) -> faust.App:
    return faust.App(
        _app_id(settings),
        datadir=datadir,
        broker=faust_broker_url(kafka.servers),
        broker_credentials=faust_credentials(kafka),
        store="memory://",
        autodiscover=False,
        processing_guarantee="at_least_once",
        topic_partitions=partitions,
        topic_replication_factor=settings.replication_factor,
        consumer_auto_offset_reset="earliest",
        broker_max_poll_records=settings.batch_max_events,
        producer_max_batch_size=PRODUCER_BATCH_BYTES,
        broker_session_timeout=settings.group_session_timeout_seconds,
        broker_heartbeat_interval=settings.group_heartbeat_interval_seconds,
        broker_rebalance_timeout=settings.group_rebalance_timeout_seconds,
        consumer_group_instance_id=settings.group_instance_id,
        web_enabled=False,
        worker_redirect_stdouts=False,
        table_standby_replicas=0,
        Table=StateTable,
        TableManager=TableManager,
    )


def _pipeline(
    app: faust.App,
    settings: Settings,
    state: TableState,
    decoder: EventDecoder,
    store: KpiStore,
    clock: Callable[[], float],
    lease: Lease,
) -> Pipeline:
    deliveries = state.table.deliveries
    assert deliveries is not None
    dlq = app.topic(settings.topic_dlq, **_RAW)

    async def dead_letter(message: Message, letter: DeadLetter) -> asyncio.Future[Any]:
        # cut to what the producer (and the broker) accepts: a 10 MB message is still rejected
        key, value, headers = letter.record(
            message.key, message.value, max_bytes=settings.dead_letter_max_bytes
        )

        async def send() -> asyncio.Future[Any]:
            return asyncio.ensure_future(await dlq.send(key=key, value=value, headers=headers))

        return deliveries.add(await send(), send)

    def highwater(topic: str, partition: int) -> int | None:
        try:
            value = app.consumer.highwater(TP(topic, partition))
        except (AssertionError, KeyError, AttributeError):
            return None
        return int(value) if value is not None else None

    def read_from(topic: str, partition: int) -> int | None:
        return cast(Consumer, app.consumer).placed_at.get(TP(topic, partition))

    def owned() -> set[int]:
        return _partitions(settings, app.consumer.assignment())

    return Pipeline(
        settings,
        store=store,
        table=state,
        decoders={
            name: BatchDecoder(decoder, family)
            for family, name in settings.topics_by_family.items()
        },
        dead_letter=dead_letter,
        highwater=highwater,
        read_from=read_from,
        owned=owned,
        lease=lease,
        clock=clock,
    )
