"""Memory per open session, and recovery: one worker before and after it holds N open sessions,
then SIGKILLed and started again.

    python bench/sessions_rss.py [--sessions 100000] [--events-per-session 3] [--no-recovery]
                                 [--static] [--py-spy DIR]

Starts one worker on fresh topics (the running dev stack, or a temporary one), waits until it is
idle and measures its RSS; then sends N sessions of a few events each (session_start, page_view,
product_view, ...), all within the last 10 minutes of event time so that none can close (the
session timeout is 30 minutes), waits until the worker has counted every event, and measures the
RSS again. Prints the difference per session. The Faust table store is ``memory://``, so the
state table is in the worker's heap and part of the figure.

Recovery (unless ``--no-recovery``): once the RSS is read and Faust has committed, the worker is
SIGKILLed while it holds the N sessions, one more event (a session_start of a new session) is
sent, and a new worker is started. Printed: the time from that start until the new worker has
counted the event (group join, state restored from the changelog, the event processed), and the
RSS of the restored worker. ``--static`` gives both workers the same
``STREAMPROC_GROUP_INSTANCE_ID`` (static membership: the restarted worker takes the dead one's
place without waiting for its session timeout); ``--py-spy DIR`` records the restarted worker
from its start (collapsed stacks, for ``flamegraph.pl`` or ``speedscope``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import harness
import psutil
from aiokafka import AIOKafkaProducer

from streamproc import devstack, metrics
from streamproc.store import KpiStore

KINDS = ("session_start", "page_view", "product_view", "page_view", "page_ping")


def session_events(
    n: int, per_session: int, now_ms: int, *, prefix: str = ""
) -> list[tuple[str, bytes]]:
    events = []
    for s in range(n):
        sid = f"{prefix}s{s:07d}"
        start = now_ms - 600_000 + (s * 997) % 540_000
        for k in range(per_session):
            kind = KINDS[k % len(KINDS)]
            event = {
                "event_id": f"{sid}-{k}",
                "event_type": kind,
                "event_time": start + k * 1000,
                "store_id": f"store-{s % 5 + 1:02d}",
                "visitor_id": f"v{s:07d}",
                "session_id": sid,
                "device_type": ("desktop", "mobile", "tablet")[s % 3],
            }
            if kind == "session_start":
                event |= {"channel_group": "organic_search", "session_index": 1 + s % 3}
            elif kind == "page_view":
                event |= {"page_type": "product", "page_path": f"/p/{s % 500}"}
            elif kind == "product_view":
                event |= {"product_id": f"p-{s % 500}", "price_minor": 1999, "currency": "USD"}
            else:
                event |= {"engagement_ms": 15000}
            events.append((sid, json.dumps(event, separators=(",", ":")).encode()))
    return events


async def send(bootstrap: str, topic: str, events: list[tuple[str, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20)
    await producer.start()
    try:
        pending = []
        for key, value in events:
            pending.append(await producer.send(topic, value, key=key.encode()))
            if len(pending) >= 10_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


def rss_settled(proc: psutil.Process, seconds: float = 5.0) -> int:
    """RSS once it stops moving (max of the last readings)."""
    readings = []
    for _ in range(int(seconds / 0.5)):
        readings.append(proc.memory_info().rss)
        time.sleep(0.5)
    return max(readings[-4:])


def wait_for_events(url: str, total: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if metrics.scrape(url).total("streamproc_events_total") >= total:
                return
        except OSError:
            pass
        time.sleep(1)
    raise SystemExit(f"the worker did not count {total} events in {timeout_s:g} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=100_000)
    parser.add_argument("--events-per-session", type=int, default=3)
    parser.add_argument(
        "--no-recovery", dest="recovery", action="store_false", help="RSS only: no kill, no restart"
    )
    parser.add_argument("--static", action="store_true", help="static group membership")
    parser.add_argument("--py-spy", type=Path, help="profile the restarted worker into this dir")
    args = parser.parse_args()

    stack = devstack.DevStack(Path(tempfile.mkdtemp(prefix="bench-stack-")))
    info = stack.up()
    ns = f"bench-{uuid.uuid4().hex[:8]}"
    port = 19_000 + os.getpid() % 1000
    env = {
        **os.environ,
        **harness.CHECKOUT_FROM_PATH,
        "STREAMPROC_BOOTSTRAP_SERVERS": info.bootstrap_servers,
        "STREAMPROC_REDIS_URL": info.redis_url,
        "STREAMPROC_NAMESPACE": ns,
        **{
            f"STREAMPROC_TOPIC_{t.upper()}": f"{ns}.{t}"
            for t in ("clickstream", "cart", "orders", "tickets", "dlq")
        },
        "STREAMPROC_WORKER_PORT": str(port),
        "STREAMPROC_LOG_LEVEL": "info",  # at warning Faust sets the root logger to DEBUG
    }
    if args.static:
        env["STREAMPROC_GROUP_INSTANCE_ID"] = f"{ns}-worker"
    logs = Path(tempfile.mkdtemp(prefix="bench-rss-"))
    worker = start_worker(env, logs / "worker.log")
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        wait_for_events(url, 0, 60)
        time.sleep(10)  # group joined, partitions assigned, tables recovered
        proc = psutil.Process(worker.pid)
        empty = rss_settled(proc)
        events = session_events(args.sessions, args.events_per_session, int(time.time() * 1000))
        started = time.monotonic()
        asyncio.run(send(info.bootstrap_servers, f"{ns}.clickstream", events))
        wait_for_events(url, len(events), 1800)
        seconds = time.monotonic() - started
        loaded = rss_settled(proc)
        per_session = (loaded - empty) / args.sessions
        print(
            f"{args.sessions:,} open sessions ({len(events):,} events, {seconds:.0f} s): "
            f"RSS {empty / 2**20:,.0f} MiB empty -> {loaded / 2**20:,.0f} MiB; "
            f"{per_session:,.0f} bytes per open session"
        )
        if args.recovery:
            time.sleep(5)  # past Faust's commit interval: the restart re-reads nothing
            worker.kill()
            worker.wait()
            marker = session_events(1, 1, int(time.time() * 1000), prefix="after-kill-")
            asyncio.run(send(info.bootstrap_servers, f"{ns}.clickstream", marker))
            started = time.monotonic()
            worker = start_worker(env, logs / "restarted.log")
            profiler = None
            if args.py_spy:
                _, profiler = harness.py_spy(args.py_spy, worker.pid, name="restart", rate=200)
            wait_for_events(url, 1, 600)
            seconds = time.monotonic() - started
            if profiler is not None:
                profiler.send_signal(signal.SIGINT)
                profiler.wait(60)
            restored = rss_settled(psutil.Process(worker.pid))
            print(
                f"recovery: SIGKILLed holding {args.sessions:,} open sessions; the restarted "
                f"worker counted a new event {seconds:.1f} s after its start; "
                f"RSS {restored / 2**20:,.0f} MiB"
            )
        print(f"logs: {logs}")
    finally:
        worker.terminate()
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
        # the dev stack may reuse a shared Redis: leave none of this run's keys behind
        print(f"dropped {asyncio.run(drop(info.redis_url, ns)):,} keys of {ns}")
        stack.down()


async def drop(redis_url: str, namespace: str) -> int:
    store = KpiStore.connect(redis_url, namespace)
    try:
        return await store.drop()
    finally:
        await store.aclose()


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "streamproc", "worker"],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


if __name__ == "__main__":
    main()
