"""Replay throughput: events/s of the real pipeline (broker + Faust worker(s) + Redis) on a file.

    python bench/replay.py [--events 1000000] [--workers 1] [--partitions 4] [--keep-file]

Generates a simulator file (5 stores, 1 % duplicates, 2 % out of order, 0.5 % malformed), then
times the two phases of a replay separately, as ``streamproc replay`` runs them: producing the
file to fresh topics, and processing (worker start-up included) until every partition has read
to its end and every window, session and cart is decided. It also samples the workers' peak RSS.
Uses the running dev stack (``streamproc dev up``) or starts a temporary one.

For a baseline in the same run, ``--baseline`` first times a plain aiokafka consumer reading the
same topics without any processing. The machine is shared and noisy: quote ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import harness
import psutil
from aiokafka import AIOKafkaConsumer

from streamproc import devstack, replay
from streamproc.config import TOPIC_FIELDS, load_settings
from streamproc.store import KpiStore


async def consume_all(bootstrap: str, topics: list[str], total: int) -> float:
    consumer = AIOKafkaConsumer(
        *topics, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    started, seen = time.monotonic(), 0
    try:
        while seen < total:
            for batch in (await consumer.getmany(timeout_ms=1000, max_records=5000)).values():
                seen += len(batch)
    finally:
        await consumer.stop()
    return time.monotonic() - started


async def run(args: argparse.Namespace, bootstrap: str, redis_url: str, path: Path) -> None:
    settings = load_settings(env_file=None, partitions=args.partitions)
    run_settings = replay.replay_settings(settings)
    env = run_settings.env(*TOPIC_FIELDS) | {
        "STREAMPROC_BOOTSTRAP_SERVERS": bootstrap,
        "STREAMPROC_REDIS_URL": redis_url,
        "STREAMPROC_PARTITIONS": str(args.partitions),
        "STREAMPROC_LOG_LEVEL": "warning",
        **harness.CHECKOUT_FROM_PATH,
    }
    store = KpiStore.for_settings(run_settings, redis_url)
    try:
        started = time.monotonic()
        with path.open("rb") as lines:
            sent, _, ends = await replay.produce(
                lines, run_settings, kafka=bootstrap, on_sent=lambda n: None
            )
        produced_s = time.monotonic() - started
        print(f"produced {sent:,} messages in {produced_s:.1f} s ({sent / produced_s:,.0f}/s)")
        if args.baseline:
            seconds = await consume_all(bootstrap, list(run_settings.input_topics), sent)
            print(
                f"baseline: plain aiokafka consumer read them in {seconds:.1f} s "
                f"({sent / seconds:,.0f}/s)"
            )
        await store.set_end_offsets(ends)
        partitions = len({p for _, p in ends})
        logs = Path(tempfile.mkdtemp(prefix="bench-replay-"))
        peak_rss = 0
        started = time.monotonic()
        with replay.Workers(env, args.workers, logs) as workers:

            def check() -> None:
                nonlocal peak_rss
                workers.check()
                rss = sum(psutil.Process(p.pid).memory_info().rss for p, _ in workers.procs)
                peak_rss = max(peak_rss, rss)

            await replay.wait_until_done(
                store, partitions, timeout_s=3600, on_progress=lambda *_: None, check=check
            )
        seconds = time.monotonic() - started
        print(
            f"processed {sent:,} messages with {args.workers} worker(s), {partitions} partitions, "
            f"in {seconds:.1f} s: {sent / seconds:,.0f} events/s (start-up included); "
            f"peak RSS {peak_rss / 2**20:,.0f} MiB; logs {logs}"
        )
    finally:
        await store.drop()
        await store.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--baseline", action="store_true")
    parser.add_argument("--file", type=Path, help="Reuse (or create) this events file.")
    args = parser.parse_args()
    path = args.file or Path(tempfile.gettempdir()) / f"bench-replay-{args.events}.jsonl"
    if not path.exists():
        started = time.monotonic()
        harness.generate(path, args.events)
        print(f"generated {path} in {time.monotonic() - started:.1f} s")
    stack = devstack.DevStack(Path(tempfile.mkdtemp(prefix="bench-stack-")))
    info = stack.up()
    try:
        asyncio.run(run(args, info.bootstrap_servers, info.redis_url, path))
    finally:
        stack.down()


if __name__ == "__main__":
    main()
