"""Kafka plumbing outside the worker: topic set-up and fast producing (aiokafka).

The Faust worker has its own consumer and producer; this module serves ``produce``, ``simulate``,
``replay`` and the tests.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from streamproc import connection
from streamproc.connection import KafkaConnection
from streamproc.deadletter import DeadLetter
from streamproc.errors import BrokerError, ConfigError
from streamproc.events.models import Family

logger = logging.getLogger(__name__)

_TOPIC_ALREADY_EXISTS = 36


async def started(
    client: Any, kafka: KafkaConnection | str, stop: Callable[[], Awaitable[None]] | None = None
) -> None:
    """Start an aiokafka client; on failure ``stop`` it and raise ``BrokerRefused`` when the
    broker refuses the security settings (``connection.check``: aiokafka reports that as any
    connection error, a SCRAM user the broker does not know even as a KeyError), else
    ``BrokerError``."""
    try:
        await client.start()
    except (KafkaError, KeyError) as exc:
        if stop is not None:
            await stop()
        await connection.check(kafka)
        raise BrokerError(f"cannot connect to Kafka {kafka}: {exc!r}") from exc


def _admin(kafka: KafkaConnection | str) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(**KafkaConnection.of(kafka).client_options())


async def ensure_topics(
    kafka: KafkaConnection | str,
    topics: Mapping[str, int],
    *,
    replication_factor: int = 1,
    co_partitioned: Iterable[str] = (),
    configs: Mapping[str, Mapping[str, str]] | None = None,
) -> dict[str, int]:
    """Create missing topics (with ``configs[name]``, if given) and return the partition count
    of each.

    Existing topics are kept as they are, but the ``co_partitioned`` topics must all have the
    same partition count (docs/events.md, "Topics and keys": the four input topics are
    co-partitioned).
    """
    admin = _admin(kafka)
    configs = configs or {}
    try:
        await started(admin, kafka)  # closed below
        # Create before describing: some brokers auto-create a described topic with defaults.
        response = await admin.create_topics(
            [
                NewTopic(name, count, replication_factor, topic_configs=dict(configs.get(name, {})))
                for name, count in topics.items()
            ]
        )
        for name, code, message in response.topic_errors:
            if code not in (0, _TOPIC_ALREADY_EXISTS):
                raise BrokerError(f"could not create topic {name}: error {code} {message}")
            if code == 0:
                logger.info("created topic %s with %d partitions", name, topics[name])
        described = await admin.describe_topics(list(topics))
    except KafkaError as exc:
        raise BrokerError(f"broker {kafka}: {exc}") from exc
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


async def ensure_state_topics(
    kafka: KafkaConnection | str,
    topics: Mapping[str, Mapping[str, str]],
    *,
    partitions: int,
    replication_factor: int = 1,
    recreate: bool = False,
) -> None:
    """Create a worker's own topics (name -> configs) with the input's partition count.

    A state changelog with another count was not made by streamproc (a broker auto-creates the
    topics clients ask for, with its own default): Faust refuses to write to it, so nothing in it
    can be used. It is an error, unless ``recreate``: then such topics are deleted and created
    again.
    """
    wanted = dict.fromkeys(topics, partitions)
    counts = await ensure_topics(
        kafka, wanted, replication_factor=replication_factor, configs=topics
    )
    wrong = {name: count for name, count in counts.items() if count != partitions}
    if not wrong:
        return
    listing = ", ".join(f"{name} has {count}" for name, count in sorted(wrong.items()))
    if not recreate:
        raise ConfigError(
            f"the worker's own topics must have the input's {partitions} partitions, but "
            f"{listing} (created by a broker that auto-creates topics, not by streamproc; what "
            "was written to them cannot be used). Delete and recreate them with: "
            "streamproc worker --recreate-state-topics"
        )
    logger.warning("deleting %s to create them again with %d partitions", listing, partitions)
    await delete_topics(kafka, wrong)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30.0
    while True:  # a deleted topic may take a moment to go
        counts = await ensure_topics(
            kafka, wanted, replication_factor=replication_factor, configs=topics
        )
        if all(counts[name] == partitions for name in wrong):
            return
        if loop.time() > deadline:
            raise BrokerError(f"could not recreate {', '.join(sorted(wrong))} within 30 s")
        await asyncio.sleep(0.5)


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
    partition: Callable[[Routed], int] | None = None,
) -> None:
    """Send every record to its family's topic, keyed and time-stamped as given; to the partition
    ``partition`` gives it, else to the producer's choice (by key; any partition without one)."""
    if isinstance(records, AsyncIterable):
        async for record in records:
            await _send(record, producer, topics, on_sent, partition)
    else:
        for record in records:
            await _send(record, producer, topics, on_sent, partition)


async def _send(
    record: Routed,
    producer: Producer,
    topics: Mapping[Family, str],
    on_sent: Callable[[Routed], None] | None,
    partition: Callable[[Routed], int] | None,
) -> None:
    key = record.key.encode() if record.key is not None else None
    await producer.send(
        topics[record.family],
        key=key,
        value=record.value,
        timestamp_ms=record.timestamp_ms,
        partition=partition(record) if partition is not None else None,
    )
    if on_sent is not None:
        on_sent(record)


class Producer:
    """An aiokafka producer tuned for throughput, with bounded in-flight sends.

    ``send`` does not wait for delivery; ``flush`` (and leaving the ``async with``) does, and
    raises the first delivery error.
    """

    def __init__(self, kafka: KafkaConnection | str, *, max_in_flight: int = 20_000) -> None:
        self.kafka = KafkaConnection.of(kafka)
        self._producer = AIOKafkaProducer(
            **self.kafka.client_options(),
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
        await started(self._producer, self.kafka, self._producer.stop)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        try:
            if exc_info[0] is None:
                await self.flush()
        finally:
            await self._producer.stop()

    async def send(
        self,
        topic: str,
        *,
        key: bytes | None,
        value: bytes,
        timestamp_ms: int | None,
        partition: int | None = None,
    ) -> None:
        future = await self._producer.send(
            topic, value=value, key=key, timestamp_ms=timestamp_ms, partition=partition
        )
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


# --- offsets and timestamps (backfill) -----------------------------------------------------------

TopicPart = tuple[str, int]


async def partition_counts(kafka: KafkaConnection | str, topics: Iterable[str]) -> dict[str, int]:
    """Partition count of each topic that exists (missing topics are left out, not created)."""
    wanted = list(topics)
    admin = _admin(kafka)
    try:
        await started(admin, kafka)  # closed below
        existing = set(await admin.list_topics())
        present = [name for name in wanted if name in existing]
        described = await admin.describe_topics(present) if present else []
    except KafkaError as exc:
        raise BrokerError(f"broker {kafka}: {exc}") from exc
    finally:
        await admin.close()
    return {item["topic"]: len(item["partitions"]) for item in described}


async def delete_topics(kafka: KafkaConnection | str, names: Iterable[str]) -> list[str]:
    """Delete the given topics that exist; returns the deleted names."""
    admin = _admin(kafka)
    try:
        await started(admin, kafka)  # closed below
        existing = set(await admin.list_topics())
        doomed = [name for name in names if name in existing]
        if doomed:
            await admin.delete_topics(doomed)
    except KafkaError as exc:
        raise BrokerError(f"broker {kafka}: {exc}") from exc
    finally:
        await admin.close()
    return doomed


class OffsetReader:
    """Offsets, record timestamps and a group's committed positions, read with a plain consumer.

    ``group`` is only needed for ``commit`` and ``committed``; the consumer never joins it.
    End offsets come from fetch responses (the high watermark), not from ListOffsets LATEST:
    some brokers (Tansu) answer LATEST with the last batch's base offset + 1.
    """

    def __init__(
        self, kafka: KafkaConnection | str, *, group: str | None = None, stall_s: float = 30.0
    ) -> None:
        self.kafka = KafkaConnection.of(kafka)
        self.stall_s = stall_s
        self._skipped: set[TopicPart] = set()
        self._consumer = AIOKafkaConsumer(
            **self.kafka.client_options(),
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_bytes=64 * 1024 * 1024,
            max_partition_fetch_bytes=8 * 1024 * 1024,
            # A fetch at a partition's end (``highwaters``) is answered after this wait: with
            # aiokafka's 500 ms, every recovery of the worker's state began half a second late.
            fetch_max_wait_ms=20,
        )

    async def __aenter__(self) -> OffsetReader:
        await started(self._consumer, self.kafka, self._consumer.stop)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._consumer.stop()

    def _assign(self, partitions: Iterable[TopicPart]) -> list[TopicPartition]:
        tps = [TopicPartition(topic, partition) for topic, partition in partitions]
        if tps:  # aiokafka 0.14: after assign([]) a consumer that has fetched never stops
            self._consumer.assign(tps)
        return tps

    async def beginnings(self, partitions: Iterable[TopicPart]) -> dict[TopicPart, int]:
        """The first offset still in each partition (ListOffsets EARLIEST)."""
        tps = self._assign(partitions)
        try:
            found = await self._consumer.beginning_offsets(tps)
        except KafkaError as exc:
            raise BrokerError(f"cannot list offsets: {exc}") from exc
        return {(tp.topic, tp.partition): int(offset) for tp, offset in found.items()}

    async def highwaters(self, partitions: Iterable[TopicPart]) -> dict[TopicPart, int]:
        """The end (the next offset to be written) of each partition, from fetch responses."""
        tps = self._assign(partitions)
        consumer = self._consumer
        try:
            latest = await consumer.end_offsets(tps)  # at or below the end: fetch from there
        except KafkaError as exc:
            raise BrokerError(f"cannot list offsets: {exc}") from exc
        for tp in tps:
            consumer.seek(tp, latest[tp])
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.stall_s
        while any(consumer.highwater(tp) is None for tp in tps):
            if loop.time() > deadline:
                raise BrokerError(f"no fetch response from {self.kafka}")
            await consumer.getmany(timeout_ms=200, max_records=1)
        return {(tp.topic, tp.partition): int(consumer.highwater(tp)) for tp in tps}

    async def offsets_for_time(
        self, partitions: Iterable[TopicPart], timestamp_ms: int
    ) -> dict[TopicPart, int | None]:
        """The broker's answer to ListOffsets by timestamp (None: no record at or after it)."""
        tps = self._assign(partitions)
        try:
            found = await self._consumer.offsets_for_times(dict.fromkeys(tps, timestamp_ms))
        except KafkaError as exc:
            raise BrokerError(f"cannot look up offsets by time: {exc}") from exc
        return {
            (tp.topic, tp.partition): (int(hit.offset) if hit is not None else None)
            for tp, hit in found.items()
        }

    async def timestamps(
        self, ranges: Mapping[TopicPart, tuple[int, int]]
    ) -> AsyncIterator[tuple[TopicPart, list[tuple[int, int]]]]:
        """(offset, record timestamp) of the records in each ``[start, stop)``, in offset order,
        batch by batch; values are never decoded. ``skip(partition)`` stops reading one."""
        async for key, records in self._records(ranges):
            yield key, [(record.offset, record.timestamp) for record in records]

    def skip(self, partition: TopicPart) -> None:
        """Stop reading one partition in ``timestamps`` (its answer is known)."""
        self._skipped.add(partition)

    async def _records(
        self, ranges: Mapping[TopicPart, tuple[int, int]]
    ) -> AsyncIterator[tuple[TopicPart, list[Any]]]:
        todo = {key: span for key, span in ranges.items() if span[0] < span[1]}
        self._skipped = set()
        if not todo:
            return
        tps = self._assign(todo)
        consumer = self._consumer
        for tp in tps:
            consumer.seek(tp, todo[(tp.topic, tp.partition)][0])
        active = set(tps)
        loop = asyncio.get_running_loop()
        last_data = loop.time()
        while active:
            got = await consumer.getmany(*active, timeout_ms=500, max_records=50_000)
            if got:
                last_data = loop.time()
            elif loop.time() - last_data > self.stall_s:
                raise BrokerError(f"no records from {self.kafka} in {self.stall_s} s")
            for tp, records in got.items():
                key = (tp.topic, tp.partition)
                stop = todo[key][1]
                yield key, [record for record in records if record.offset < stop]
            for tp in list(active):
                key = (tp.topic, tp.partition)
                if key in self._skipped or await consumer.position(tp) >= todo[key][1]:
                    active.discard(tp)
                    consumer.pause(tp)

    async def commit(self, offsets: Mapping[TopicPart, int]) -> None:
        """Commit these positions for the group (it must have no active members)."""
        tps = self._assign(offsets)
        try:
            await self._consumer.commit({tp: offsets[(tp.topic, tp.partition)] for tp in tps})
        except KafkaError as exc:
            raise BrokerError(f"cannot commit offsets: {exc}") from exc

    async def committed(self, partitions: Iterable[TopicPart]) -> dict[TopicPart, int | None]:
        """The group's committed position of each partition (None: never committed)."""
        found: dict[TopicPart, int | None] = {}
        try:
            for topic, partition in partitions:
                offset = await self._consumer.committed(TopicPartition(topic, partition))
                found[(topic, partition)] = int(offset) if offset is not None else None
        except KafkaError as exc:
            raise BrokerError(f"cannot read committed offsets: {exc}") from exc
        return found

    async def dead_letters(self, topic: str) -> list[DeadLetter]:
        """Every dead letter in a dead-letter topic (none when the topic does not exist)."""
        counts = await partition_counts(self.kafka, [topic])
        parts = [(topic, p) for p in range(counts.get(topic, 0))]
        if not parts:
            return []
        starts = await self.beginnings(parts)
        ends = await self.highwaters(parts)
        found: list[DeadLetter] = []
        async for _, records in self._records({k: (starts[k], ends[k]) for k in parts}):
            found.extend(DeadLetter.from_headers(record.headers) for record in records)
        return found


async def seal(kafka: KafkaConnection | str, topic: str, *, key: bytes) -> int:
    """Append a tombstone for ``key`` to every partition of ``topic``, each in a batch of its own;
    returns the partitions sealed (0 when the topic does not exist).

    Brokers that answer ListOffsets LATEST with the last batch's base offset + 1 (Tansu) then give
    the true end of each partition, so a reader that trusts LATEST (Faust's table recovery)
    reads everything before the tombstone.
    """
    counts = await partition_counts(kafka, [topic])
    producer = AIOKafkaProducer(
        **KafkaConnection.of(kafka).client_options(), acks="all", linger_ms=0
    )
    await started(producer, kafka, producer.stop)
    try:
        for partition in range(counts.get(topic, 0)):
            await producer.send_and_wait(topic, None, key=key, partition=partition)
    except KafkaError as exc:
        raise BrokerError(f"cannot write to {topic}: {exc}") from exc
    finally:
        await producer.stop()
    return counts.get(topic, 0)
