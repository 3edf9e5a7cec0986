"""The Faust worker: one agent per input topic, batches of events, dead letters. The only module
(with ``cli.py``, which starts it) that imports faust.

Agents take batches with ``take_events`` (acked only after the batch is processed, so offsets never
pass an unprocessed event) and keep ``concurrency=1`` (faust #606). Faust's own web server is off:
``/metrics`` is served from a thread by ``metrics.serve``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import faust

from streamproc.config import Settings
from streamproc.events.parse import EventDecoder
from streamproc.ingest import BatchDecoder, Message
from streamproc.metrics import WorkerMetrics

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


def create_app(
    settings: Settings,
    *,
    bootstrap_servers: str,
    decoder: EventDecoder,
    metrics: WorkerMetrics,
    clock: Callable[[], float] = time.time,
) -> faust.App:
    """Build the worker app: topics, agents and their wiring. Nothing connects until it starts."""
    app = faust.App(
        f"{settings.namespace}-worker",
        broker=faust_broker_url(bootstrap_servers),
        store="memory://",
        autodiscover=False,
        processing_guarantee="at_least_once",
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=settings.group_session_timeout_seconds,
        broker_heartbeat_interval=settings.group_heartbeat_interval_seconds,
        broker_rebalance_timeout=settings.group_rebalance_timeout_seconds,
        web_enabled=False,
        worker_redirect_stdouts=False,
        table_standby_replicas=0,
    )
    dlq = app.topic(
        settings.topic_dlq,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )
    for family, topic_name in settings.topics_by_family.items():
        topic = app.topic(
            topic_name,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
        )
        agent = _make_agent(
            settings, BatchDecoder(decoder, family), topic_name, dlq, metrics, clock
        )
        app.agent(topic, name=f"consume-{family}", concurrency=1)(agent)
    return app


def _make_agent(
    settings: Settings,
    batch_decoder: BatchDecoder,
    topic_name: str,
    dlq: Any,
    metrics: WorkerMetrics,
    clock: Callable[[], float],
) -> Callable[[Any], Any]:
    within = settings.batch_max_wait_ms / 1000

    async def consume(stream: Any) -> None:
        async for events in stream.take_events(settings.batch_max_events, within=within):
            batch = batch_decoder.decode([_message(e) for e in events], now_ms=int(clock() * 1000))
            for message, letter in batch.dead_letters:
                await dlq.send(key=message.key, value=message.value, headers=letter.headers())
                metrics.dead_letters.labels(topic_name, letter.reason).inc()
            for decoded in batch.events:
                metrics.events.labels(topic_name, decoded.event.event_type).inc()

    consume.__name__ = f"consume_{topic_name.replace('.', '_')}"
    return consume
