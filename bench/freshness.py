"""Freshness under live load: the ``--freshness RATE`` mode of ``bench/throughput.py``.

One worker and the exporter run on fresh topics. Simulator traffic (the throughput run's mix) is
sent at RATE events/s for ``--duration`` seconds with event times of now (what is due every
``--linger-ms``, default 20, in one record batch per topic partition), and every 0.1 s
a marker ``session_start`` of store ``bench-fresh`` (its own session, event time = its send time)
goes to partition 0 of the clickstream topic. ``/api/kpis?kpi=sessions&store_id=bench-fresh&
window=1m`` is polled every 0.1 s; a marker is visible once its minute's session count reaches its
rank among the markers of that minute (one partition: the worker reads them in order).

Live traffic: the simulator runs 2 minutes of simulated time first (sessions build up), then the
records of the next RATE x duration arrivals are due one every 1/RATE s. Each record's event time
(and Kafka timestamp) is mapped through the same arrival-index -> wall-clock map, so delays
injected by the simulator (duplicates, out-of-order events) keep their order and sign, and a
duplicate keeps its original's event time; the simulated clock runs a little faster or slower than
the wall clock so that the rate is exact.

Resolution: a marker's delay is from the send call to the response of the first poll that shows it
(an upper bound); the poll before it had not seen it when it started, so the true delay lies in
an interval of one poll period plus one request (``resolution_s`` in the JSON: its mean width).
``/api/kpis`` computes from Redis per request: the exporter's refresh interval (1 s here) only
affects ``/metrics``. "Kept up": when sending ended, the worker had counted (its ``/metrics``) all
but less than 2 s of traffic; its committed-offset lag (commits trail processing by up to
Faust's commit interval) is reported then and after the drain.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import itertools
import os
import re
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import harness
import msgspec
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

from streamproc import broker, children, devstack, replay
from streamproc.config import Settings

STORE = "bench-fresh"
EVERY_S = 0.1  # markers and polls
_EVENT_TIME = re.compile(rb'"event_time":"([^"]*)"')


@dataclass(slots=True)
class Marker:
    number: int
    sent_at: float
    minute_ms: int
    rank: int  # among the markers of its minute, from 1
    measured: bool
    acked_at: float | None = None
    seen_at: float | None = None
    not_seen_at: float | None = None  # start of the last poll that did not show it


@dataclass
class Traffic:
    """Records to send at a fixed rate; event times are relative to the start (wall ms)."""

    rate: float
    topics: list[str] = field(default_factory=list)
    keys: list[bytes | None] = field(default_factory=list)
    heads: list[bytes] = field(default_factory=list)  # the value, or what precedes its time
    tails: list[bytes | None] = field(default_factory=list)  # what follows it (None: no time)
    event_ms: list[int] = field(default_factory=list)  # event time in the value, from the start
    stamp_ms: list[int] = field(default_factory=list)  # Kafka timestamp, from the start

    def outgoing(self, t0_ms: int) -> Iterator[Outgoing]:
        """The records, their times from ``t0_ms`` on."""
        for i, head in enumerate(self.heads):
            tail = self.tails[i]
            value = head if tail is None else head + _iso(t0_ms + self.event_ms[i]) + tail
            yield self.topics[i], self.keys[i], value, t0_ms + self.stamp_ms[i]


def _iso(ms: int) -> bytes:
    return (
        time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"
    ).encode()


def _warp(arrivals: list[int], rate: float) -> Any:
    """Simulated ms -> wall ms from the start, such that arrival i maps to i / rate s."""
    n, step = len(arrivals), 1000 / rate
    per_record = max((arrivals[-1] - arrivals[0]) / max(n - 1, 1), 1e-6)

    def wall(t: int) -> int:
        if t <= arrivals[0]:
            return round((t - arrivals[0]) / per_record * step)
        if t >= arrivals[-1]:
            return round((n - 1 + (t - arrivals[-1]) / per_record) * step)
        j = bisect.bisect_right(arrivals, t) - 1
        a, b = arrivals[j], arrivals[j + 1]
        return round((j + ((t - a) / (b - a) if b > a else 0.0)) * step)

    return wall


def live_traffic(settings: Settings, rate: float, duration_s: float) -> Traffic:
    wanted = round(rate * duration_s)
    kept = list(itertools.islice(harness.live_records(rate), wanted))
    wall = _warp([r.arrival_ms for r in kept], rate)
    topics = settings.topics_by_family
    traffic = Traffic(rate)
    for record in kept:
        traffic.topics.append(topics[record.family])
        traffic.keys.append(record.key.encode() if record.key is not None else None)
        traffic.stamp_ms.append(wall(record.timestamp_ms))
        head, tail, event_ms = record.value, None, 0
        if (found := _EVENT_TIME.search(record.value)) is not None:
            with contextlib.suppress(ValueError):
                moment = datetime.fromisoformat(found.group(1).decode())
                if moment.tzinfo is not None:
                    event_ms = wall(round(moment.timestamp() * 1000))
                    head, tail = record.value[: found.start(1)], record.value[found.end(1) :]
        traffic.heads.append(head)
        traffic.tails.append(tail)
        traffic.event_ms.append(event_ms)
    return traffic


Outgoing = tuple[str, bytes | None, bytes, int]  # topic, key, value, Kafka timestamp (ms)


@dataclass
class Sender:
    """Sends records at a fixed rate, record i at t0 + i / rate (it can fall behind).

    What is due every ``linger_s`` (a producer's ``linger.ms``) goes as one record batch per topic
    partition, built here (to the partition ``producer.send`` would pick). The sender shares the
    machine's two cores with the worker and the broker: a ``send`` per record took 0.4 of a core
    at 20 k events/s (and fell seconds behind its schedule), and the broker's CPU goes by the
    batches it takes (at 5 ms, 8 partitions x 4 topics x 200 batches/s, 0.61 of a core against
    0.47-0.50 at 20 ms): loads a shop's producers and brokers put on other machines."""

    rate: float
    linger_s: float
    sent: int = 0  # so far
    max_behind_s: float = 0.0

    async def run(
        self, records: Iterator[Outgoing], count: int, bootstrap: str, t0: float
    ) -> dict[str, float]:
        """Send ``count`` of ``records`` from ``t0`` on; returns how it went."""
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
        await producer.start()
        partitions: dict[str, list[int]] = {}
        partitioner = DefaultPartitioner()
        sends: list[asyncio.Future[Any]] = []
        try:
            while self.sent < count:
                now = time.time()
                due = max(self.sent, min(int((now - t0) * self.rate) + 1, count))
                self.max_behind_s = max(self.max_behind_s, now - (t0 + self.sent / self.rate))
                batches: dict[tuple[str, int], Any] = {}
                for topic, key, value, stamp in itertools.islice(records, due - self.sent):
                    every = partitions.get(topic)
                    if every is None:
                        every = partitions[topic] = sorted(await producer.partitions_for(topic))
                    where = (topic, partitioner(key, every, every))
                    batch = batches.get(where)
                    if batch is None:
                        batch = batches[where] = producer.create_batch()
                    if batch.append(key=key, value=value, timestamp=stamp) is None:  # full
                        sends.append(await producer.send_batch(batch, topic, partition=where[1]))
                        batch = batches[where] = producer.create_batch()
                        batch.append(key=key, value=value, timestamp=stamp)
                for (topic, partition), batch in batches.items():
                    sends.append(await producer.send_batch(batch, topic, partition=partition))
                self.sent = due
                sends = [future for future in sends if not future.done() or future.exception()]
                await asyncio.sleep(self.linger_s)
            await asyncio.gather(*sends)
        finally:
            await producer.stop()
        return {"sent": self.sent, "seconds": time.time() - t0, "max_behind_s": self.max_behind_s}


@dataclass
class Markers:
    topic: str
    run: str
    markers: list[Marker] = field(default_factory=list)
    measured: bool = False
    stopped: bool = False

    async def send(self, bootstrap: str) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
        await producer.start()
        try:
            while not self.stopped:
                await self._one(producer)
                await asyncio.sleep(EVERY_S)
            await producer.flush()
        finally:
            await producer.stop()

    async def _one(self, producer: AIOKafkaProducer) -> None:
        number = len(self.markers)
        now = time.time()
        ms = round(now * 1000)
        minute = ms // 60_000 * 60_000
        rank = 1 + sum(1 for m in self.markers[-700:] if m.minute_ms == minute)
        marker = Marker(number, now, minute, rank, self.measured)
        self.markers.append(marker)
        session = f"s-{self.run}-{number}"
        value = msgspec.json.encode(
            {
                "event_id": f"{self.run}-{number}",
                "event_type": "session_start",
                "event_time": _iso(ms).decode(),
                "store_id": STORE,
                "visitor_id": f"v-{self.run}-{number}",
                "session_id": session,
                "device_type": "desktop",
                "channel_group": "direct",
            }
        )
        future = await producer.send(
            self.topic, value, key=session.encode(), partition=0, timestamp_ms=ms
        )
        future.add_done_callback(lambda _: setattr(marker, "acked_at", time.time()))


async def poll(url: str, markers: Markers, until: asyncio.Event) -> list[float]:
    """Mark markers visible until ``until`` is set; returns each request's duration."""
    params = {"kpi": "sessions", "store_id": STORE, "window": "1m"}
    durations: list[float] = []
    first_unseen = 0
    async with aiohttp.ClientSession() as session:
        while not until.is_set():
            began = time.time()
            async with session.get(url, params=params) as response:
                rows = await response.json() if response.status == 200 else []
            answered = time.time()
            durations.append(answered - began)
            counts: dict[int, float] = {}
            for row in rows:
                if row["dimension"] is None:
                    start = datetime.fromisoformat(row["start"])
                    counts[round(start.timestamp() * 1000)] = row["value"]
            pending = markers.markers[first_unseen:]
            for number, marker in enumerate(pending):
                if counts.get(marker.minute_ms, 0) < marker.rank:
                    for later in pending[number:]:  # read in order: none after it shows either
                        later.not_seen_at = began
                    break
                marker.seen_at = answered
                first_unseen += 1
            await asyncio.sleep(max(0.0, EVERY_S - (time.time() - began)))
    return durations


async def committed_lag(bootstrap: str, settings: Settings) -> int:
    parts = [(t, p) for t in settings.input_topics for p in range(settings.partitions)]
    async with broker.OffsetReader(bootstrap, group=f"{settings.namespace}-worker") as reader:
        ends = await reader.highwaters(parts)
        done = await reader.committed(parts)
    return sum(end - (done[key] or 0) for key, end in ends.items())


async def run(args: argparse.Namespace, info: devstack.StackInfo) -> dict[str, Any]:
    settings = await harness.fresh_run(info, args.partitions, "bench-fresh")
    began = time.monotonic()
    traffic = live_traffic(settings, args.freshness, args.duration)
    print(
        f"prepared {len(traffic.heads):,} events ({args.freshness:,.0f}/s for "
        f"{args.duration:g} s) in {time.monotonic() - began:.1f} s",
        flush=True,
    )
    logs = Path(tempfile.mkdtemp(prefix="bench-freshness-"))
    env = harness.worker_env(settings, info)
    port = harness.free_port()
    exporter_env = {
        **env,
        "STREAMPROC_EXPORTER_PORT": str(port),
        "STREAMPROC_EXPORTER_REFRESH_SECONDS": "1",
        "PYTHONUNBUFFERED": "1",
    }
    exporter = children.spawn(
        [sys.executable, "-m", "streamproc", "exporter"],
        env={**os.environ, **exporter_env},
        log=logs / "exporter.log",
        append=True,
    )
    try:
        with replay.Workers(env, 0, logs) as workers:
            (metrics_url,) = harness.start_workers(workers, 1)
            probe = harness.stack_probe(
                info,
                worker=[workers.procs[0][0].pid],
                exporter=[exporter.proc.pid],
                bench=[os.getpid()],
            )
            figures = await _measure(
                args,
                info,
                settings,
                traffic,
                workers,
                probe,
                urls=(f"http://127.0.0.1:{port}", metrics_url),
            )
    finally:
        children.stop([exporter], timeout=30.0)
    figures["logs"] = str(logs)
    report(figures)
    return {"freshness": figures}


async def _measure(
    args: argparse.Namespace,
    info: devstack.StackInfo,
    settings: Settings,
    traffic: Traffic,
    workers: replay.Workers,
    probe: harness.Probe,
    *,
    urls: tuple[str, str],
) -> dict[str, Any]:
    """Warm up until a marker shows, then send the traffic; figures of both and of the drain."""
    spawned = time.time()
    exporter_url, metrics_url = urls
    markers = Markers(settings.topic_clickstream, uuid.uuid4().hex[:8])
    done = asyncio.Event()
    await _until_answers(f"{exporter_url}/healthz", workers)
    poller = asyncio.create_task(poll(f"{exporter_url}/api/kpis", markers, done))
    marking = asyncio.create_task(markers.send(info.bootstrap_servers))
    while not any(m.seen_at for m in markers.markers):  # warm-up: worker joined, reads
        workers.check()
        if time.time() - spawned > 180:
            raise TimeoutError("no marker visible within 180 s of starting the worker")
        await asyncio.sleep(0.05)
    ready = time.time()
    markers.measured = True
    first = probe.snap()
    rss: list[tuple[float, int]] = []  # (seconds into the run, worker RSS)
    sampler = asyncio.create_task(_sample_rss(probe, rss, every_s=5.0))
    t0 = time.time() + 0.05
    sender = Sender(traffic.rate, args.linger_ms / 1000)
    records = traffic.outgoing(round(t0 * 1000))
    sending = await sender.run(records, len(traffic.heads), info.bootstrap_servers, t0)
    markers.stopped = True
    sampler.cancel()
    end = probe.snap()
    counted = harness.counted(metrics_url) or 0.0
    await marking
    behind = sending["sent"] + len(markers.markers) - counted
    return {
        "rate": traffic.rate,
        "duration_s": args.duration,
        "linger_ms": args.linger_ms,
        "startup_s": ready - spawned,
        "sending": sending,
        "cores": harness.cpu_shares(first, end),
        "worker_rss_mib_at_end": end.rss["worker"] / 2**20,
        "worker_rss": harness.rss_figures(rss),
        "behind_at_end": behind,
        "kept_up": behind < 2 * traffic.rate,
        **await _drain(args, info, settings, markers, done, poller),
    }


async def _sample_rss(
    probe: harness.Probe, out: list[tuple[float, int]], *, every_s: float
) -> None:
    started = time.monotonic()
    while True:
        out.append((time.monotonic() - started, probe.snap().rss["worker"]))
        await asyncio.sleep(every_s)


async def _until_answers(url: str, workers: replay.Workers) -> None:
    deadline = time.monotonic() + 60
    async with aiohttp.ClientSession() as session:
        while True:
            workers.check()
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not answer within 60 s")
            await asyncio.sleep(0.2)


async def _drain(
    args: argparse.Namespace,
    info: devstack.StackInfo,
    settings: Settings,
    markers: Markers,
    done: asyncio.Event,
    poller: asyncio.Task[list[float]],
) -> dict[str, Any]:
    lag_at_end = await committed_lag(info.bootstrap_servers, settings)
    began = time.monotonic()
    for _ in range(max(1, round(args.drain / 0.2))):
        if all(m.seen_at is not None for m in markers.markers):
            break
        await asyncio.sleep(0.2)
    drained = time.monotonic() - began
    done.set()
    durations = await poller
    lag_after = await committed_lag(info.bootstrap_servers, settings)
    measured = [m for m in markers.markers if m.measured]
    seen = [m for m in measured if m.seen_at is not None]
    delays = [m.seen_at - m.sent_at for m in seen if m.seen_at is not None]
    widths = [
        m.seen_at - max(m.not_seen_at or 0.0, m.sent_at) for m in seen if m.seen_at is not None
    ]
    acks = [m.acked_at - m.sent_at for m in measured if m.acked_at is not None]
    return {
        "markers": len(measured),
        "visible": len(seen),
        "delay_p50_s": harness.percentile(delays, 50) if delays else None,
        "delay_p99_s": harness.percentile(delays, 99) if delays else None,
        "delay_max_s": max(delays) if delays else None,
        "delays_s": [round(d, 3) for d in delays],
        "resolution_s": sum(widths) / len(widths) if widths else None,
        "marker_ack_p50_s": harness.percentile(acks, 50) if acks else None,
        "poll_request_p50_s": harness.percentile(durations, 50) if durations else None,
        "committed_lag_at_end": lag_at_end,
        "committed_lag_after_drain": lag_after,
        "drain_s": drained,
    }


def report(f: dict[str, Any]) -> None:
    def s(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f} s"

    sending = f["sending"]
    print(
        f"freshness at {f['rate']:,.0f} events/s for {f['duration_s']:g} s (batches of "
        f"{f['linger_ms']:g} ms), 1 worker: sent "
        f"{sending['sent']:,} events in {sending['seconds']:.1f} s (sender at most "
        f"{sending['max_behind_s']:.2f} s behind schedule); start-up {f['startup_s']:.1f} s"
    )
    print(
        f"  markers: {f['visible']} of {f['markers']} visible; delay p50 {s(f['delay_p50_s'])}, "
        f"p99 {s(f['delay_p99_s'])}, max {s(f['delay_max_s'])} (resolution ~{s(f['resolution_s'])}"
        f", /api/kpis request p50 {s(f['poll_request_p50_s'])})"
    )
    print(
        f"  kept up: {'yes' if f['kept_up'] else 'NO'} ({f['behind_at_end']:,.0f} messages not "
        f"yet counted when sending ended); committed-offset lag then {f['committed_lag_at_end']:,}"
        f", after {f['drain_s']:.0f} s of drain {f['committed_lag_after_drain']:,}"
    )
    rss = f["worker_rss"]
    if rss["second_half_spread"] is not None:
        print(
            f"  worker RSS, second half of the run: {rss['second_half_min_mib']:,.0f}-"
            f"{rss['second_half_max_mib']:,.0f} MiB (±{100 * rss['second_half_spread']:.1f} % "
            f"around its mean; every 5 s in the JSON)"
        )
    shares = ", ".join(f"{k} {v:.2f}" for k, v in f["cores"].items())
    print(f"  CPU while sending, in cores: {shares}")
