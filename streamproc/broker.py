"""Kafka plumbing outside the worker: topic set-up and fast producing (aiokafka).

The Faust worker has its own consumer and producer; this module serves ``produce``, ``simulate``,
``replay`` and the tests.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import AsyncIterable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from streamproc.errors import ConfigError, StreamprocError
from streamproc.events.models import Family

logger = logging.getLogger(__name__)

_TOPIC_ALREADY_EXISTS = 36


class BrokerError(StreamprocError):
    """The broker refused a request or could not be reached."""

    retriable = True


async def ensure_topics(
    bootstrap_servers: str,
    topics: Mapping[str, int],
    *,
    replication_factor: int = 1,
    co_partitioned: Iterable[str] = (),
) -> dict[str, int]:
    """Create missing topics and return the partition count of each.

    Existing topics are kept as they are, but the ``co_partitioned`` topics must all have the
    same partition count (events.md: all four input topics are co-partitioned).
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    try:
        await admin.start()
        # Create before describing: some brokers auto-create a described topic with defaults.
        response = await admin.create_topics(
            [NewTopic(name, count, replication_factor) for name, count in topics.items()]
        )
        for name, code, message in response.topic_errors:
            if code not in (0, _TOPIC_ALREADY_EXISTS):
                raise BrokerError(f"could not create topic {name}: error {code} {message}")
            if code == 0:
                logger.info("created topic %s with %d partitions", name, topics[name])
        described = await admin.describe_topics(list(topics))
    except KafkaError as exc:
        raise BrokerError(f"broker {bootstrap_servers}: {exc}") from exc
    finally:
        await admin.close()
    counts = {item["topic"]: len(item["partitions"]) for item in described}
    grouped = {name: counts[name] for name in co_partitioned}
    if len(set(grouped.values())) > 1:
        listing = ", ".join(f"{name}={count}" for name, count in grouped.items())
        raise ConfigError(
            f"input topics must have the same partition count (co-partitioning): {listing}"
        )
    return counts


@dataclass
class ProduceStats:
    """What a producer run sent, by topic."""

    sent: Counter[str] = field(default_factory=Counter)
    skipped: int = 0

    @property
    def total(self) -> int:
        return sum(self.sent.values())


class Routed(Protocol):
    """A message with its topic family, key and timestamp (events-file lines, simulator records)."""

    @property
    def family(self) -> Family: ...
    @property
    def key(self) -> str | None: ...
    @property
    def value(self) -> bytes: ...
    @property
    def timestamp_ms(self) -> int | None: ...


async def publish(
    records: AsyncIterable[Routed] | Iterable[Routed],
    producer: Producer,
    topics: Mapping[Family, str],
    *,
    on_sent: Callable[[Routed], None] | None = None,
) -> None:
    """Send every record to its family's topic, keyed and time-stamped as given."""
    if isinstance(records, AsyncIterable):
        async for record in records:
            await _send(record, producer, topics, on_sent)
    else:
        for record in records:
            await _send(record, producer, topics, on_sent)


async def _send(
    record: Routed,
    producer: Producer,
    topics: Mapping[Family, str],
    on_sent: Callable[[Routed], None] | None,
) -> None:
    key = record.key.encode() if record.key is not None else None
    await producer.send(
        topics[record.family], key=key, value=record.value, timestamp_ms=record.timestamp_ms
    )
    if on_sent is not None:
        on_sent(record)


class Producer:
    """An aiokafka producer tuned for throughput, with bounded in-flight sends.

    ``send`` does not wait for delivery; ``flush`` (and leaving the ``async with``) does, and
    raises the first delivery error.
    """

    def __init__(self, bootstrap_servers: str, *, max_in_flight: int = 20_000) -> None:
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap_servers,
            acks="all",
            linger_ms=5,
            max_batch_size=256 * 1024,
            compression_type=None,
            enable_idempotence=False,
        )
        self._pending: list[asyncio.Future[Any]] = []
        self._max_in_flight = max_in_flight
        self.stats = ProduceStats()
        self.last_offsets: dict[tuple[str, int], int] = {}  # acknowledged, per partition

    async def __aenter__(self) -> Producer:
        try:
            await self._producer.start()
        except KafkaError as exc:
            await self._producer.stop()
            raise BrokerError(f"cannot connect to Kafka: {exc}") from exc
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        try:
            if exc_info[0] is None:
                await self.flush()
        finally:
            await self._producer.stop()

    async def send(
        self, topic: str, *, key: bytes | None, value: bytes, timestamp_ms: int | None
    ) -> None:
        future = await self._producer.send(topic, value=value, key=key, timestamp_ms=timestamp_ms)
        self._pending.append(future)
        self.stats.sent[topic] += 1
        if len(self._pending) >= self._max_in_flight:
            await self.flush()

    async def flush(self) -> None:
        pending, self._pending = self._pending, []
        if pending:
            try:
                delivered = await asyncio.gather(*pending)
            except KafkaError as exc:
                raise BrokerError(f"delivery failed: {exc}") from exc
            last = self.last_offsets
            for meta in delivered:
                key = (meta.topic, meta.partition)
                if meta.offset > last.get(key, -1):
                    last[key] = meta.offset
