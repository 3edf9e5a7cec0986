"""What ``bench/throughput.py`` and ``bench/freshness.py`` share: a private embedded stack, worker
processes with known metrics ports, CPU/RSS sampling, Redis command counts, changelog volume.

Not a benchmark itself. Wall times are ``time.time()`` (comparable across processes).
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

import psutil
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, TopicPartition

from streamproc import broker, devstack, metrics, replay
from streamproc.config import TOPIC_FIELDS, Settings, load_settings
from streamproc.simulate import SimConfig, simulate
from streamproc.simulate.config import Anomalies
from streamproc.simulate.output import write_jsonl
from streamproc.simulate.record import SimRecord

# The worker counts each message it reads once, as a valid event or as a dead letter.
COUNTED = ("streamproc_events_total", "streamproc_dead_letters_total")


# The traffic's currencies besides the reporting one, at the rates the benchmarks decode it with.
FX_RATES = {"EUR": Decimal("1.08"), "GBP": Decimal("1.27")}


def write_traffic(out: IO[bytes], events: int) -> None:
    """An events file of ``events`` simulator records, the benchmarks' traffic: 5 stores, 1 %
    duplicates, 2 % out of order, 0.5 % malformed. At 2,000 sessions/minute the simulator
    writes ~16 k events per minute; it is asked for half as much again."""
    config = SimConfig(
        start=datetime(2026, 11, 2, 8, tzinfo=UTC),
        duration_seconds=timedelta(minutes=max(events / 16_000 * 1.5, 10)).total_seconds(),
        sessions_per_minute=2000,
        stores=5,
        seed=7,
        anomalies=Anomalies(duplicate_share=0.01, out_of_order_share=0.02, malformed_share=0.005),
    )
    write_jsonl(itertools.islice(simulate(config), events), out)


# Live traffic (bench/freshness.py) starts after this much simulated time: sessions build up.
WARM_SIM_S = 120


LIVE_START = datetime(2026, 11, 2, 8, tzinfo=UTC)


def live_records(rate: float, start: datetime = LIVE_START) -> Iterator[SimRecord]:
    """Simulator records shaped as live traffic of ``rate`` events/s: ``rate * 12`` new sessions a
    minute (about twice ``rate`` events/s once they have built up: ``bench/freshness.py`` maps
    them onto its rate, ``bench/soak.py`` asks for half), from the end of the first
    ``WARM_SIM_S`` of simulated time after ``start`` on; endless. Nearly every event touches a
    different session than the event before it on its partition."""
    config = SimConfig(
        start=start,
        duration_seconds=None,
        sessions_per_minute=rate * 60 / 5,
        diurnal_amplitude=0.0,
        stores=5,
        seed=11,
        anomalies=Anomalies(duplicate_share=0.01, out_of_order_share=0.02, malformed_share=0.005),
    )
    begin = int(start.timestamp() * 1000) + WARM_SIM_S * 1000
    return (record for record in simulate(config) if record.arrival_ms >= begin)


# The rate whose live traffic the benchmarks read as a backlog (``--traffic live``).
LIVE_RATE = 20_000


def write_live_traffic(out: IO[bytes], events: int, rate: float) -> None:
    """An events file of ``events`` of ``live_records(rate)``."""
    write_jsonl(itertools.islice(live_records(rate), events), out)


def generate(path: Path, events: int, *, live_rate: float | None = None) -> None:
    """``write_traffic`` to a file; with ``live_rate``, ``live_records`` at that rate instead."""
    with path.open("wb") as out:
        if live_rate is None:
            write_traffic(out, events)
        else:
            write_live_traffic(out, events, live_rate)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def private_stack(state_dir: Path) -> Iterator[devstack.StackInfo]:
    """A temporary broker and a Redis of our own (never a shared one: command counts are exact)."""
    redis = "redis-server" if shutil.which("redis-server") else "valkey"
    stack = devstack.DevStack(state_dir, redis=redis, keep_port=False)
    info = stack.up()
    try:
        yield info
    finally:
        stack.down()


def run_settings(base: Settings, namespace: str, input_from: Settings | None = None) -> Settings:
    """``base`` with a fresh namespace (group, Redis keys, dead-letter topic) and the input topics
    of ``input_from`` (default: topics named after the namespace, as a replay makes them)."""
    run = replay.replay_settings(base, namespace)
    if input_from is None:
        return run
    inputs = ("topic_clickstream", "topic_cart", "topic_orders", "topic_tickets")
    return run.model_copy(update={name: getattr(input_from, name) for name in inputs})


# Workers start as ``python -m streamproc``, which imports the package of the current directory
# before any on PYTHONPATH: run from a checkout's root, a comparison of two checkouts through
# PYTHONPATH ran the same code twice. Without the current directory, PYTHONPATH (else the
# installed package) decides.
CHECKOUT_FROM_PATH = {"PYTHONSAFEPATH": "1"}


async def fresh_run(info: devstack.StackInfo, partitions: int, prefix: str) -> Settings:
    """Settings of a new namespace (``prefix`` and a random part) whose input and dead-letter
    topics are created on ``info``'s broker, co-partitioned, ``partitions`` each."""
    base = load_settings(env_file=None, partitions=partitions)
    settings = run_settings(base, f"{prefix}-{uuid.uuid4().hex[:8]}")
    topics = {name: partitions for name in (*settings.input_topics, settings.topic_dlq)}
    await broker.ensure_topics(info.bootstrap_servers, topics, co_partitioned=settings.input_topics)
    return settings


def worker_env(settings: Settings, info: devstack.StackInfo) -> dict[str, str]:
    where = {"bootstrap_servers": info.bootstrap_servers, "redis_url": info.redis_url}
    env = settings.model_copy(update=where).env(*TOPIC_FIELDS, *where, "partitions")
    env["STREAMPROC_LOG_LEVEL"] = os.environ.get("BENCH_WORKER_LOG_LEVEL", "info")
    return {**env, **CHECKOUT_FROM_PATH}


def start_workers(workers: replay.Workers, count: int) -> list[str]:
    """Start ``count`` workers, each on its own free metrics port; returns their /metrics URLs.

    ``replay.Workers`` runs them on port 0 (any), which a bench cannot find without INFO logs.
    """
    base, urls = dict(workers.env), []
    for number in range(count):
        port = free_port()
        workers.env = {**base, "STREAMPROC_WORKER_PORT": str(port)}
        workers.start(number)
        urls.append(f"http://127.0.0.1:{port}/metrics")
    workers.env = base
    return urls


def counted(url: str) -> float | None:
    """Messages a worker has counted (valid events + dead letters); None while it cannot say. An
    event judged too late is a valid event and a dead letter (``too_late``): counted once."""
    try:
        page = metrics.scrape(url, timeout=2.0)
    except OSError:
        return None
    twice = page.total("streamproc_dead_letters_total", reason="too_late")
    return sum(page.total(name) for name in COUNTED) - twice


def batch_messages(url: str) -> tuple[float, float]:
    """(messages, batches) a worker has processed, per topic summed: a run that holds messages of
    two topics counts as two batches (``streamproc_batch_events``)."""
    page = metrics.scrape(url, timeout=2.0)
    return page.total("streamproc_batch_events_sum"), page.total("streamproc_batch_events_count")


# --- CPU and memory ----------------------------------------------------------------------


@dataclass(frozen=True)
class Snap:
    """CPU seconds (user + system) of named process groups and of the whole machine, at ``t``."""

    t: float
    cpu: Mapping[str, float]
    rss: Mapping[str, int]
    machine_busy: float  # all CPUs, seconds not idle since boot


@dataclass
class Probe:
    """Samples named process groups; a process that exited keeps its last reading."""

    groups: dict[str, list[psutil.Process]] = field(default_factory=dict)
    _last: dict[int, float] = field(default_factory=dict)

    def watch(self, name: str, *pids: int) -> None:
        procs = []
        for pid in pids:
            with contextlib.suppress(psutil.NoSuchProcess):
                procs.append(psutil.Process(pid))
        self.groups.setdefault(name, []).extend(procs)

    def snap(self) -> Snap:
        cpu: dict[str, float] = {}
        rss: dict[str, int] = {}
        for name, procs in self.groups.items():
            cpu[name], rss[name] = 0.0, 0
            for proc in procs:
                try:
                    with proc.oneshot():
                        times = proc.cpu_times()
                        used = times.user + times.system + times.children_user
                        used += times.children_system
                        rss[name] += proc.memory_info().rss
                    self._last[proc.pid] = used
                except (psutil.NoSuchProcess, psutil.ZombieProcess):
                    used = self._last.get(proc.pid, 0.0)
                cpu[name] += used
        total = psutil.cpu_times()
        busy = sum(total) - total.idle - getattr(total, "iowait", 0.0)
        return Snap(time.time(), cpu, rss, busy)


def stack_probe(info: devstack.StackInfo, **groups: Iterable[int]) -> Probe:
    """A probe of the named process groups, then of the stack's broker and Redis (if its own)."""
    probe = Probe()
    for name, pids in groups.items():
        probe.watch(name, *pids)
    probe.watch("broker", info.broker_pid)
    if info.redis_pid is not None:
        probe.watch("redis", info.redis_pid)
    return probe


def cpu_shares(first: Snap, last: Snap) -> dict[str, float]:
    """Cores used by each group between two snaps, plus ``others``: the machine's busy time not
    spent by any watched group (the lead's work, the OS), and ``machine`` (of psutil.cpu_count)."""
    span = max(last.t - first.t, 1e-9)
    shares = {name: (last.cpu[name] - first.cpu.get(name, 0.0)) / span for name in last.cpu}
    machine = (last.machine_busy - first.machine_busy) / span
    shares["others"] = max(0.0, machine - sum(shares.values()))
    shares["machine"] = machine
    return shares


# --- Redis ---------------------------------------------------------------------------------


class RedisCalls:
    """``INFO commandstats`` of the private Redis: commands executed, by name, INFO excluded.

    Commands run inside Lua scripts (``EVALSHA``) count too, each on its own line, as Redis
    counts them; ``usec`` is the server time they took.
    """

    def __init__(self, url: str) -> None:
        self.client = aioredis.Redis.from_url(url)

    async def read(self) -> dict[str, tuple[int, int]]:
        stats = await self.client.info("commandstats")
        return {
            name.removeprefix("cmdstat_"): (int(v["calls"]), int(v["usec"]))
            for name, v in stats.items()
            if name != "cmdstat_info"
        }

    async def aclose(self) -> None:
        await self.client.aclose()


def calls_between(
    first: Mapping[str, tuple[int, int]], last: Mapping[str, tuple[int, int]]
) -> dict[str, tuple[int, int]]:
    delta = {}
    for name, (calls, usec) in last.items():
        was = first.get(name, (0, 0))
        if calls - was[0]:
            delta[name] = (calls - was[0], usec - was[1])
    return dict(sorted(delta.items(), key=lambda item: -item[1][0]))


# --- changelog ---------------------------------------------------------------------------


async def topic_volume(bootstrap: str, topic: str) -> dict[str, int]:
    """Messages written to a topic (sum of high watermarks) and the key + value + header bytes of
    the records still in it (a scan from the beginning; compaction, if the broker ran it, would
    make the scan see fewer records than the watermarks say)."""
    counts = await broker.partition_counts(bootstrap, [topic])
    parts = [(topic, p) for p in range(counts.get(topic, 0))]
    if not parts:
        return {"messages": 0, "scanned": 0, "bytes": 0, "partitions": 0}
    async with broker.OffsetReader(bootstrap) as reader:
        ends = await reader.highwaters(parts)
    scanned, size = await _scan(bootstrap, ends)
    return {
        "messages": sum(ends.values()),
        "scanned": scanned,
        "bytes": size,
        "partitions": len(parts),
    }


async def _scan(bootstrap: str, ends: Mapping[tuple[str, int], int]) -> tuple[int, int]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=8 * 1024 * 1024,
    )
    await consumer.start()
    try:
        todo = {TopicPartition(t, p): end for (t, p), end in ends.items() if end > 0}
        if not todo:
            return 0, 0
        consumer.assign(list(todo))
        await consumer.seek_to_beginning(*todo)
        records = size = 0
        deadline = time.monotonic() + 120
        while todo and time.monotonic() < deadline:
            got = await consumer.getmany(*todo, timeout_ms=500, max_records=50_000)
            for batch in got.values():
                for record in batch:
                    records += 1
                    size += max(record.serialized_key_size, 0)
                    size += max(record.serialized_value_size, 0)
                    size += sum(len(k) + len(v) for k, v in record.headers)
            for tp in list(todo):
                if await consumer.position(tp) >= todo[tp]:
                    del todo[tp]
        return records, size
    finally:
        await consumer.stop()


_PROFILED = ("streamproc/", "faust/", "aiokafka/", "redis/")
_ROOTS = ("streamproc/cli/", "streamproc/__main__", "faust/agents/agent.py")  # on every stack


def py_spy(
    directory: Path, pid: int, *, name: str = "worker", rate: int = 100
) -> tuple[Path, subprocess.Popen[bytes]]:
    """Record process ``pid`` with py-spy (collapsed stacks) into ``directory/name-pid.txt``
    until it exits or is sent SIGINT; the file and the profiler."""
    directory.mkdir(parents=True, exist_ok=True)
    spy = Path(sys.executable).with_name("py-spy")
    out = directory / f"{name}-{pid}.txt"
    argv = [str(spy), "record", "--pid", str(pid), "--format", "raw", "--rate", str(rate)]
    return out, subprocess.Popen(
        [*argv, "--nonblocking", "--output", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=(directory / f"py-spy-{pid}.log").open("wb"),
    )


def py_spy_top(path: Path, count: int = 12) -> dict[str, list[tuple[float, str]]]:
    """The frames of a ``py-spy record --format raw`` file with the largest shares of samples:
    ``self`` (the frame was running) and ``inclusive`` (on the stack; streamproc, faust,
    aiokafka and redis functions below the agent only, any line)."""
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in path.read_text(encoding="utf-8").splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        frames, samples = stack.split(";"), int(n)
        total += samples
        leaf = frames[-1] or "(no Python frame)"
        own[leaf] = own.get(leaf, 0) + samples
        functions = {re.sub(r":\d+\)$", ")", frame) for frame in frames}  # any line of it
        for function in functions:
            if any(lib in function for lib in _PROFILED) and not any(r in function for r in _ROOTS):
                inclusive[function] = inclusive.get(function, 0) + samples

    def top(found: dict[str, int]) -> list[tuple[float, str]]:
        best = sorted(found.items(), key=lambda item: -item[1])[:count]
        return [(n / max(total, 1), frame) for frame, n in best]

    return {"self": top(own), "inclusive": top(inclusive)}


def rss_figures(samples: list[tuple[float, int]]) -> dict[str, Any]:
    """A worker's RSS over a run (seconds into it, bytes), and how it moved over the second half
    (once the sessions and windows of a steady state have built up): its spread around that
    half's mean, and its least-squares slope (a leak shows as a slope the spread can hide)."""
    late = [(t, rss / 2**20) for t, rss in samples if t >= samples[-1][0] / 2] if samples else []
    mibs = [mib for _, mib in late]
    mean = sum(mibs) / len(mibs) if mibs else 0.0
    slope = None
    if len(late) >= 2:
        mean_t = sum(t for t, _ in late) / len(late)
        spread_t = sum((t - mean_t) ** 2 for t, _ in late)
        slope = sum((t - mean_t) * (mib - mean) for t, mib in late) / spread_t if spread_t else 0.0
    return {
        "samples_mib": [(round(t, 1), round(rss / 2**20, 1)) for t, rss in samples],
        "second_half_min_mib": min(mibs) if mibs else None,
        "second_half_max_mib": max(mibs) if mibs else None,
        "second_half_spread": (max(mibs) - min(mibs)) / 2 / mean if mibs else None,
        "second_half_mib_per_10_min": slope * 600 if slope is not None else None,
    }


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]
