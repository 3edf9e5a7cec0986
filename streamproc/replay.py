"""``streamproc replay``: an events file through the real pipeline, to a final KPI report.

The file is produced to fresh topics, the end offset of every partition (from the producer's
acknowledgements) is recorded in Redis, and worker processes run until every partition has read
to its end, which moves its watermark past every event: all windows close, all sessions and carts
are decided. The report is then read from what the workers published.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO

from streamproc import broker
from streamproc.config import Settings
from streamproc.errors import StreamprocError
from streamproc.eventfile import Unroutable, routable
from streamproc.kpi.contrib import NEVER
from streamproc.kpi.report import Row
from streamproc.reporting import aligned_report
from streamproc.store import TRANSIENT, KpiStore

logger = logging.getLogger(__name__)


class ReplayError(StreamprocError):
    """A replay could not finish."""


def replay_settings(settings: Settings, namespace: str | None = None) -> tuple[str, dict[str, str]]:
    """A fresh namespace and topics for one replay, as environment for its workers."""
    ns = namespace or f"replay-{uuid.uuid4().hex[:10]}"
    env = {
        "STREAMPROC_NAMESPACE": ns,
        "STREAMPROC_TOPIC_CLICKSTREAM": f"{ns}.clickstream",
        "STREAMPROC_TOPIC_CART": f"{ns}.cart",
        "STREAMPROC_TOPIC_ORDERS": f"{ns}.orders",
        "STREAMPROC_TOPIC_TICKETS": f"{ns}.tickets",
        "STREAMPROC_TOPIC_DLQ": f"{ns}.dlq",
    }
    return ns, env


async def produce(
    lines: Iterable[bytes], settings: Settings, *, bootstrap: str, on_sent: Callable[[int], None]
) -> tuple[int, list[Unroutable], dict[tuple[str, int], int]]:
    """Send the file; return (messages, unroutable lines, end offset of every partition)."""
    counts = await broker.ensure_topics(
        bootstrap,
        {name: settings.partitions for name in (*settings.input_topics, settings.topic_dlq)},
        replication_factor=settings.replication_factor,
        co_partitioned=settings.input_topics,
    )
    ends = {(t, p): 0 for t in settings.input_topics for p in range(counts[t])}
    unroutable: list[Unroutable] = []

    async with broker.Producer(bootstrap) as producer:
        sent = 0

        def count(_: object) -> None:
            nonlocal sent
            sent += 1
            if sent % 2000 == 0:
                on_sent(sent)

        await broker.publish(
            routable(lines, unroutable), producer, settings.topics_by_family, on_sent=count
        )
        await producer.flush()
        for (topic, partition), last in producer.last_offsets.items():
            ends[(topic, partition)] = last + 1
    return sent, unroutable, ends


class Workers:
    """Worker processes of one replay; stopped (SIGTERM, then SIGKILL) on exit."""

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
        self.procs: list[tuple[subprocess.Popen[bytes], IO[bytes]]] = []

    def __enter__(self) -> Workers:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for number in range(self.count):
            self.start(number)
        return self

    def start(self, number: int) -> subprocess.Popen[bytes]:
        log = (self.log_dir / f"worker-{number}.log").open("ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamproc", "worker"],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=self.preexec_fn,
        )
        self.procs.append((proc, log))
        return proc

    def check(self) -> None:
        for proc, log in self.procs:
            if proc.poll() not in (None, -signal.SIGKILL):
                raise ReplayError(f"a worker exited with status {proc.returncode}; see {log.name}")

    def __exit__(self, *exc_info: object) -> None:
        for proc, _ in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc, log in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            log.close()


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
        except TRANSIENT as exc:
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
        store, sizes_ms=sizes_ms, reporting_currency=settings.reporting_currency
    )
