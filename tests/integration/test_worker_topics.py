"""The worker's own topics (state changelog, ticks) have the input's partition count: created so
before Faust starts, and a wrong one, as a broker's auto-creation leaves it, is refused with the
command that repairs it."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from helpers import dumps, make_event
from procs import StreamprocProcess, settings_env

from streamproc import broker
from streamproc.devstack import StackInfo
from streamproc.store import KpiStore

pytestmark = pytest.mark.integration


def test_a_changelog_with_another_partition_count_is_refused_then_recreated(
    stack: StackInfo, namespace: str, tmp_path: Path
) -> None:
    servers = stack.bootstrap_servers
    env = settings_env(namespace, bootstrap=servers, redis_url=stack.redis_url, worker_port=0)
    changelog, ticks = f"{namespace}-worker-state-changelog", f"{namespace}-worker-ticks"
    # what a broker's auto-creation leaves behind when a client asks for a missing topic
    asyncio.run(broker.ensure_topics(servers, {changelog: 3}))

    refused = subprocess.run(
        [sys.executable, "-m", "streamproc", "worker"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2, refused.stdout + refused.stderr
    message = " ".join(refused.stderr.split())
    assert f"{changelog} has 3" in message, message
    assert "streamproc worker --recreate-state-topics" in message
    assert "Traceback" not in refused.stderr

    log = tmp_path / "worker.log"
    with StreamprocProcess(["worker", "--recreate-state-topics"], env, log) as worker:
        worker.wait_for_log("worker metrics on", timeout=60)
        counts = asyncio.run(broker.partition_counts(servers, [changelog, ticks]))
        assert counts == {changelog: 4, ticks: 4}
        assert f"deleting {changelog} has 3" in worker.log


def test_an_input_topic_created_again_under_kept_state_stops_the_worker(
    stack: StackInfo, namespace: str, tmp_path: Path
) -> None:
    """The worker's state (its changelog) judged ten clicks of a partition; the clickstream topic
    is then deleted and created again, and three new clicks go to that partition. A restarted
    worker must not skip them as events it judged before (they are new): it stops, exit 75,
    naming the repair, and counts none of them."""
    servers = stack.bootstrap_servers
    env = settings_env(namespace, bootstrap=servers, redis_url=stack.redis_url, worker_port=0)
    topic = f"{namespace}.clickstream"

    async def clicks(first: int, count: int) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=servers, acks="all")
        await producer.start()
        try:
            for n in range(first, first + count):
                event = make_event("page_view", event_id=f"click-{n}", session_id="s1")
                await producer.send_and_wait(topic, dumps(event), key=b"s1")
        finally:
            await producer.stop()

    async def accepted() -> int:
        store = KpiStore.connect(stack.redis_url, namespace)
        try:
            return (await store.judged())[0]
        finally:
            await store.aclose()

    asyncio.run(broker.ensure_topics(servers, {topic: 4}))
    asyncio.run(clicks(0, 10))
    first = tmp_path / "first"
    first.mkdir()
    with StreamprocProcess(["worker"], env, first / "worker.log", cwd=first) as worker:
        worker.wait_for_log("worker metrics on", timeout=60)
        deadline = time.monotonic() + 60
        while asyncio.run(accepted()) < 10:
            assert time.monotonic() < deadline, worker.log[-3000:]
            time.sleep(0.2)
        time.sleep(3)  # its state on the changelog (delivered within milliseconds)
    # Faust's data directory (empty: the state is in memory) is not left where it ran
    assert sorted(p.name for p in first.iterdir()) == ["worker.log"]
    asyncio.run(broker.delete_topics(servers, [topic]))
    asyncio.run(broker.ensure_topics(servers, {topic: 4}))
    asyncio.run(clicks(100, 3))

    with StreamprocProcess(["worker"], env, tmp_path / "second.log") as worker:
        assert worker.proc is not None
        worker.proc.wait(timeout=90)
        message = " ".join(worker.log.split())
        assert worker.proc.returncode == 75, message[-3000:]
    assert "judged its events up to offset 9" in message, message[-3000:]
    assert "judged before a restart or rebalance: skipped" not in message
    assert "STREAMPROC_NAMESPACE" in message
    assert asyncio.run(accepted()) == 10  # none of the new clicks taken
