"""Backfill throughput: a >= 1 M-event, multi-day simulator file, produced to fresh topics, then
backfilled whole with 1 and with 2 worker processes.

    .venv/bin/python bench/backfill.py [--events 1000000] [--days 3] [--workers 1,2]

Uses the broker and Redis of STREAMPROC_BOOTSTRAP_SERVERS / STREAMPROC_REDIS_URL when set, else
starts a temporary embedded stack. Prints one line per run and a JSON summary at the end. The
events/s figure is the backfill's own "processing" rate (events of the range over the time from
its workers' start to the last partition read to its end); "wall" includes the offset lookup,
the report and the OpenMetrics file.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from streamproc import broker
from streamproc.devstack import DevStack
from streamproc.eventfile import Unroutable, routable
from streamproc.events.models import Family
from streamproc.simulate import Anomalies, SimConfig, simulate, write_jsonl
from streamproc.store import KpiStore

RECORDS_PER_SESSION = 10.5  # measured on the simulator's defaults (anomalies included)


def generate(path: Path, *, events: int, days: int) -> tuple[datetime, datetime, int]:
    """The file, and its time range (ending a day ago, on a midnight)."""
    end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)
    start = end - timedelta(days=days)
    rate = events / (RECORDS_PER_SESSION * days * 1440) * 1.05
    config = SimConfig(
        start=start,
        duration_seconds=days * 86400,
        seed=7,
        sessions_per_minute=rate,
        stores=5,
        currencies={"store-02": "EUR"},
        anomalies=Anomalies(
            duplicate_share=0.01, out_of_order_share=0.02, late_share=0.005, malformed_share=0.005
        ),
    )
    with path.open("wb") as out:
        write_jsonl(simulate(config), out)
    with path.open("rb") as lines:
        count = sum(1 for _ in lines)
    return start, end, count


async def produce(path: Path, bootstrap: str, topics: dict[Family, str], partitions: int) -> int:
    await broker.ensure_topics(
        bootstrap, dict.fromkeys(topics.values(), partitions), co_partitioned=topics.values()
    )
    unroutable: list[Unroutable] = []
    async with broker.Producer(bootstrap) as producer:
        with path.open("rb") as lines:
            await broker.publish(routable(lines, unroutable), producer, topics)
        return producer.stats.total


def backfill(
    env: dict[str, str], *, name: str, since: datetime, until: datetime, workers: int, out: Path
) -> dict[str, object]:
    command = [
        sys.executable, "-m", "streamproc", "backfill", "--name", name,
        "--since", since.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "--until", until.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "--workers", str(workers), "--timeout", "3h",
        "--report", str(out / f"{name}.json"), "--openmetrics", str(out / f"{name}.om"),
    ]  # fmt: skip
    started = time.monotonic()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    wall = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"backfill failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    text = " ".join(done.stdout.split())
    found = re.search(r"events ([\d,]+):", text)
    if found is None:
        raise SystemExit(f"no summary in the backfill's output:\n{done.stdout[-3000:]}")
    events = int(found[1].replace(",", ""))
    rate = re.search(r"processing ([\d,]+) events/s", text)
    return {
        "workers": workers,
        "events": events,
        "events_per_s": int(rate[1].replace(",", "")) if rate else None,
        "wall_s": round(wall, 1),
        "wall_events_per_s": round(events / wall),
    }


async def drop(redis_url: str, namespace: str) -> None:
    """Delete a run's Redis namespace (``KpiStore.drop``: unlinks in batches of a thousand)."""
    store = KpiStore.connect(redis_url, namespace)
    try:
        await store.drop()
    finally:
        await store.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--workers", default="1,2")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-backfill-"))
    stack = None
    bootstrap = os.environ.get("STREAMPROC_BOOTSTRAP_SERVERS")
    redis_url = os.environ.get("STREAMPROC_REDIS_URL", "redis://127.0.0.1:6379/0")
    if bootstrap is None:
        stack = DevStack(work / "stack", redis_url=redis_url)
        info = stack.up()
        bootstrap, redis_url = info.bootstrap_servers, info.redis_url
    try:
        ns = f"bench{int(time.time())}"
        topics = {family: f"{ns}.{family.value}" for family in Family}
        path = work / "events.jsonl"
        t0 = time.monotonic()
        start, end, lines = generate(path, events=args.events, days=args.days)
        size_mb = path.stat().st_size / 1e6
        took = time.monotonic() - t0
        span = f"{start:%Y-%m-%d} to {end:%Y-%m-%d} ({args.days} days)"
        print(f"file: {lines:,} lines, {size_mb:,.0f} MB, {span}, made in {took:.0f} s", flush=True)
        t0 = time.monotonic()
        sent = asyncio.run(produce(path, bootstrap, topics, args.partitions))
        took = time.monotonic() - t0
        print(f"produced {sent:,} messages, {args.partitions} partitions, {took:.0f} s", flush=True)
        env = {
            **os.environ,
            "STREAMPROC_BOOTSTRAP_SERVERS": bootstrap,
            "STREAMPROC_REDIS_URL": redis_url,
            "STREAMPROC_NAMESPACE": ns,
            "STREAMPROC_FX_RATES": "EUR=1.08",
            "STREAMPROC_LOG_LEVEL": "warning",
            "COLUMNS": "200",
            **{f"STREAMPROC_TOPIC_{f.value.upper()}": t for f, t in topics.items()},
        }
        results = []
        for workers in (int(w) for w in args.workers.split(",")):
            name = f"{ns}-w{workers}"
            try:
                result = backfill(env, name=name, since=start, until=end, workers=workers, out=work)
            finally:
                asyncio.run(drop(redis_url, name))
            print(json.dumps(result), flush=True)
            results.append(result)
        summary = {
            "lines": lines,
            "file_mb": round(size_mb),
            "days": args.days,
            "partitions": args.partitions,
            "runs": results,
        }
        print(json.dumps(summary, indent=1))
    finally:
        if stack is not None:
            stack.down()


if __name__ == "__main__":
    main()
