"""``streamproc replay``: an events file through the real pipeline, to a final KPI report.

The file is read once for the partition of every line (``Routing``: by key, round robin without
one), which gives the end offset of every partition of the fresh topics before anything is sent;
the ends go to Redis and the file is produced while the worker processes run, so they process
what has arrived as it arrives. Until the ends are in Redis (``KpiStore.expect_end_offsets``)
they take every partition for one with more to read. Each partition is done once read to its end,
which moves its watermark past every event: all windows close, all sessions and carts are
decided. The report is then read from what the workers published.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from streamproc import broker, children
from streamproc.config import Settings
from streamproc.connection import KafkaConnection
from streamproc.errors import ReplayError, StoreUnavailable
from streamproc.eventfile import Unroutable, routable
from streamproc.events.models import Family
from streamproc.kpi.contrib import NEVER
from streamproc.kpi.report import Row
from streamproc.offline import partition_of
from streamproc.reporting import aligned_report
from streamproc.store import KpiStore

logger = logging.getLogger(__name__)


def replay_settings(settings: Settings, namespace: str | None = None) -> Settings:
    """``settings`` with a fresh namespace and topics of their own, for one replay; its workers
    get them as ``.env(*TOPIC_FIELDS)``."""
    return settings.with_namespace(namespace or f"replay-{uuid.uuid4().hex[:10]}", topics=True)


class Routing:
    """The partition of each line of a file, the same in every pass over it: by key as the
    producer's default partitioner does, round robin for lines without a key."""

    def __init__(self, topics: Mapping[Family, str], partitions: Mapping[str, int]) -> None:
        self.topics = topics
        self.partitions = partitions
        self._keyless = itertools.count()

    def __call__(self, record: broker.Routed) -> int:
        count = self.partitions[self.topics[record.family]]
        return partition_of(record.key, count, self._keyless)


def planned_ends(
    lines: Iterable[bytes], settings: Settings, partitions: Mapping[str, int]
) -> dict[tuple[str, int], int]:
    """The end offset of every input partition once ``produce`` has sent the file to fresh
    topics: known before anything is sent, so that workers can process while it is."""
    topics = settings.topics_by_family
    ends = {(t, p): 0 for t in settings.input_topics for p in range(partitions[t])}
    routing = Routing(topics, partitions)
    for record in routable(lines, []):
        ends[(topics[record.family], routing(record))] += 1
    return ends


async def create_topics(settings: Settings, *, kafka: KafkaConnection | str) -> dict[str, int]:
    """The input and dead-letter topics (kept when they exist); their partition counts."""
    return await broker.ensure_topics(
        kafka,
        {name: settings.partitions for name in (*settings.input_topics, settings.topic_dlq)},
        replication_factor=settings.replication_factor,
        co_partitioned=settings.input_topics,
    )


async def produce(
    lines: Iterable[bytes],
    settings: Settings,
    *,
    kafka: KafkaConnection | str,
    on_sent: Callable[[int], None],
) -> tuple[int, list[Unroutable], dict[tuple[str, int], int]]:
    """Send the file (each line to the partition ``Routing`` gives it); return (messages,
    unroutable lines, end offset of every partition)."""
    counts = await create_topics(settings, kafka=kafka)
    ends = {(t, p): 0 for t in settings.input_topics for p in range(counts[t])}
    unroutable: list[Unroutable] = []

    async with broker.Producer(kafka) as producer:
        sent = 0

        def count(_: object) -> None:
            nonlocal sent
            sent += 1
            if sent % 2000 == 0:
                on_sent(sent)

        await broker.publish(
            routable(lines, unroutable),
            producer,
            settings.topics_by_family,
            on_sent=count,
            partition=Routing(settings.topics_by_family, counts),
        )
        await producer.flush()
        for (topic, partition), last in producer.last_offsets.items():
            ends[(topic, partition)] = last + 1
    return sent, unroutable, ends


class Workers:
    """Worker processes of one replay; stopped (SIGTERM, then SIGKILL) on exit."""

    STOP_SECONDS = 30.0

    def __init__(
        self,
        env: dict[str, str],
        count: int,
        log_dir: Path,
        *,
        preexec_fn: Callable[[], None] | None = None,
    ) -> None:
        """``preexec_fn`` runs in each worker process before it starts (see ``subprocess``)."""
        self.env = {**os.environ, **env, "STREAMPROC_WORKER_PORT": "0", "PYTHONUNBUFFERED": "1"}
        self.preexec_fn = preexec_fn
        self.count = count
        self.log_dir = log_dir
        self.procs: list[children.Child] = []

    def __enter__(self) -> Workers:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for number in range(self.count):
            self.start(number)
        return self

    def start(self, number: int) -> subprocess.Popen[bytes]:
        child = children.spawn(
            [sys.executable, "-m", "streamproc", "worker"],
            env=self.env,
            log=self.log_dir / f"worker-{number}.log",
            append=True,
            preexec_fn=self.preexec_fn,
        )
        self.procs.append(child)
        return child.proc

    def check(self) -> None:
        """Raise ReplayError when a worker has exited, except by SIGKILL."""
        child = children.exited(self.procs, allowed=(-signal.SIGKILL,))
        if child is not None:
            code = child.proc.returncode
            raise ReplayError(f"a worker exited with status {code}; see {child.log.name}")

    def __exit__(self, *exc_info: object) -> None:
        children.stop(self.procs, timeout=self.STOP_SECONDS)


async def wait_until_done(
    store: KpiStore,
    partitions: int,
    *,
    timeout_s: float,
    on_progress: Callable[[int, int], None],
    check: Callable[[], None],
) -> None:
    """Until every partition reports a watermark past all events (its input is decided). A Redis
    outage meanwhile is waited out, as the workers wait it out."""
    deadline = time.monotonic() + timeout_s
    done, unavailable = 0, False
    while True:
        try:
            statuses = await store.statuses()
        except StoreUnavailable as exc:
            if not unavailable:
                logger.warning("Redis is unavailable (%s); waiting for it", exc)
            unavailable = True
        else:
            unavailable = False
            done = sum(1 for s in statuses.values() if int(s["watermark"]) >= NEVER)
            on_progress(done, partitions)
            if done >= partitions:
                return
        check()
        if time.monotonic() > deadline:
            raise ReplayError(f"only {done} of {partitions} partitions finished in {timeout_s:g} s")
        await asyncio.sleep(0.5)


async def report(store: KpiStore, settings: Settings, sizes_ms: Iterable[int]) -> list[Row]:
    return await aligned_report(
        store,
        sizes_ms=sizes_ms,
        reporting_currency=settings.reporting_currency,
        largest_ms=max(settings.window_seconds) * 1000,
    )
