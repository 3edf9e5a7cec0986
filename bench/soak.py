"""Memory under a steady load: the ``--soak RATE`` mode of ``bench/throughput.py``.

    python bench/throughput.py --soak 3000 [--speed 20] [--duration 1800] [--drain 120]
                               [--linger-ms 100] [--json OUT.json]

One worker reads simulator traffic sent at a steady RATE events/s for ``--duration`` seconds,
with its event time running ``--speed`` times as fast as the wall clock: a replay of the recent
past at a fixed pace. What a worker holds is bounded in event time, not in wall time: a session's
record lives until it has been inactive for the session timeout plus the allowed lateness, an
order's for ``STREAMPROC_ORDER_RETENTION_SECONDS``, a ticket's for
``STREAMPROC_TICKET_RETENTION_SECONDS``. At the wall clock's pace a 30-minute run ends before
even the sessions have settled; sped up, the state reaches its steady state early in the run,
and a leak shows as RSS that keeps growing after it.

The traffic is live-shaped (``harness.live_records``: nearly every event touches another session
than the one before it) at RATE / SPEED events per second of event time once its sessions have
built up: at the defaults 150 events/s (about 900 new sessions a minute of event time), 10 hours
of event time in 30 minutes. The records go as the simulator made them (values,
keys, Kafka timestamps), as ``streamproc replay`` sends a file: the worker judges them by their
own time, which ends well before the present. They are made while they are sent (no file).

The worker's settings are the environment's (``STREAMPROC_*``), printed at the start. The
retentions of orders and tickets are 7 days by default: to see them settle within a run, set
them to their least, an hour (``STREAMPROC_ORDER_RETENTION_SECONDS=3600
STREAMPROC_TICKET_RETENTION_SECONDS=3600``).

The records go in record batches of ``--linger-ms`` (100 by default): at a few thousand events
a second, batches of 20 ms (the freshness mode's) hold one to three records each, 1,600 batches a
second across the 32 topic partitions, and the embedded broker took 0.6-0.9 of a core for them,
more than the worker; the worker then fell behind in bursts, and its RSS followed its backlog.

Every ``SAMPLE_S`` seconds the worker's RSS, what it has counted and what was sent are noted, and
printed once a minute. At the end: RSS over the second half of the run (min, max, spread around
its mean, least-squares slope), whether the worker kept up, and where the CPU went.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import harness
from freshness import Outgoing, Sender

from streamproc import devstack, replay
from streamproc.config import Settings

SAMPLE_S = 10.0
# The simulated clock starts this many times the run's span of event time before now: the
# simulator's rate of events per second of its time varies around the one asked for, and the
# traffic must never reach the present (an event far enough ahead of the wall clock is refused).
HEADROOM = 2
# The settings that bound what a worker holds, in event time.
SHOWN = (
    "session_timeout_seconds",
    "abandonment_timeout_seconds",
    "max_lateness_seconds",
    "order_retention_seconds",
    "ticket_retention_seconds",
)


@dataclass
class Sample:
    t: float  # seconds since sending began
    rss: int  # the worker's, bytes
    counted: float | None  # messages the worker has counted (None: its /metrics did not answer)
    sent: int
    event_ms: int  # the Kafka timestamp of the last record sent


@dataclass
class Clock:
    """The Kafka timestamp of the last record taken from ``records`` (event time, mostly)."""

    first_ms: int | None = None
    last_ms: int = 0

    def watch(self, records: Iterator[Outgoing]) -> Iterator[Outgoing]:
        for record in records:
            self.last_ms = record[3]
            if self.first_ms is None:
                self.first_ms = self.last_ms
            yield record


def simulator_rate(wanted: float) -> float:
    """The rate to ask ``harness.live_records`` for to get ``wanted`` events per second of event
    time once its sessions have built up (10-15 minutes in): it makes about twice what it is
    asked for then. Measured on a run of it, in proportion."""
    made, first = 0, None
    for record in harness.live_records(wanted):
        first = record.arrival_ms if first is None else first
        if record.arrival_ms - first >= 15 * 60_000:
            break
        if record.arrival_ms - first >= 10 * 60_000:
            made += 1
    return wanted * wanted / (made / 300)


def traffic(settings: Settings, rate: float, speed: float, duration_s: float) -> Iterator[Outgoing]:
    """Live-shaped simulator records at ``rate / speed`` events per second of event time, its
    clock starting ``HEADROOM`` spans of the run's event time before now. The simulator's rate
    is calibrated here, before sending starts (a few seconds)."""
    span = timedelta(seconds=duration_s * speed * HEADROOM + harness.WARM_SIM_S)
    start = datetime.now(UTC).replace(microsecond=0) - span
    topics = settings.topics_by_family
    records = harness.live_records(simulator_rate(rate / speed), start)
    return (
        (
            topics[r.family],
            r.key.encode() if r.key is not None else None,
            r.value,
            r.timestamp_ms,
        )
        for r in records
    )


def _settings_line(settings: Settings) -> str:
    return ", ".join(f"{name} {getattr(settings, name):,}" for name in SHOWN)


async def run(args: argparse.Namespace, info: devstack.StackInfo) -> dict[str, Any]:
    settings = await harness.fresh_run(info, args.partitions, "bench-soak")
    count = round(args.soak * args.duration)
    print(
        f"soak: {count:,} events at {args.soak:,.0f}/s for {args.duration:g} s, event time "
        f"{args.speed:g}x the wall clock's pace ({args.soak / args.speed:,.0f} events per second "
        f"of it); worker settings: {_settings_line(settings)}",
        flush=True,
    )
    logs = Path(tempfile.mkdtemp(prefix="bench-soak-"))
    with replay.Workers(harness.worker_env(settings, info), 0, logs) as workers:
        (metrics_url,) = harness.start_workers(workers, 1)
        probe = harness.stack_probe(info, worker=[workers.procs[0][0].pid], bench=[os.getpid()])
        figures = await _measure(args, info, settings, workers, probe, metrics_url, count)
    figures["logs"] = str(logs)
    report(figures)
    return {"soak": figures}


async def _measure(
    args: argparse.Namespace,
    info: devstack.StackInfo,
    settings: Settings,
    workers: replay.Workers,
    probe: harness.Probe,
    metrics_url: str,
    count: int,
) -> dict[str, Any]:
    began = time.monotonic()
    while harness.counted(metrics_url) is None:  # the worker is up (and idle: nothing sent yet)
        workers.check()
        if time.monotonic() - began > 120:
            raise TimeoutError("the worker's /metrics did not answer within 120 s")
        await asyncio.sleep(0.2)
    idle_rss = probe.snap().rss["worker"]
    clock = Clock()
    records = clock.watch(traffic(settings, args.soak, args.speed, args.duration))
    sender = Sender(args.soak, args.linger_ms / 1000)
    samples: list[Sample] = []
    first = probe.snap()
    t0 = time.time() + 0.05
    sampler = asyncio.create_task(_sample(probe, metrics_url, sender, clock, samples, t0, workers))
    sending = await sender.run(records, count, info.bootstrap_servers, t0)
    end = probe.snap()
    drained = await _drain(metrics_url, sending["sent"], args.drain)
    sampler.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await sampler  # raises what stopped it (the worker exited)
    behind = [s.sent - s.counted for s in samples if s.counted is not None]
    return {
        "rate": args.soak,
        "speed": args.speed,
        "duration_s": args.duration,
        "linger_ms": args.linger_ms,
        "settings": {name: getattr(settings, name) for name in SHOWN},
        "event_time": {
            "first": _iso(clock.first_ms),
            "last": _iso(clock.last_ms),
            "hours": ((clock.last_ms - (clock.first_ms or 0)) / 3.6e6) if clock.first_ms else 0,
        },
        "sending": sending,
        "cores": harness.cpu_shares(first, end),
        "idle_rss_mib": idle_rss / 2**20,
        "worker_rss": harness.rss_figures([(s.t, s.rss) for s in samples]),
        "max_behind": max(behind, default=0.0),
        "samples": [(round(s.t, 1), s.rss, s.counted, s.sent, s.event_ms) for s in samples],
        **drained,
    }


def _iso(ms: int | None) -> str | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC).isoformat()


async def _sample(
    probe: harness.Probe,
    metrics_url: str,
    sender: Sender,
    clock: Clock,
    out: list[Sample],
    t0: float,
    workers: replay.Workers,
) -> None:
    await asyncio.sleep(max(0.0, t0 - time.time()))
    while True:
        workers.check()
        counted = await asyncio.to_thread(harness.counted, metrics_url)
        sample = Sample(
            time.time() - t0, probe.snap().rss["worker"], counted, sender.sent, clock.last_ms
        )
        out.append(sample)
        if len(out) % round(60 / SAMPLE_S) == 1 and len(out) > 1:  # once a minute
            done = "-" if counted is None else f"{counted:,.0f}"
            print(
                f"  {sample.t / 60:5.1f} min: sent {sample.sent:,}, counted {done}, event time "
                f"{_iso(sample.event_ms)}, worker RSS {sample.rss / 2**20:,.0f} MiB",
                flush=True,
            )
        await asyncio.sleep(max(0.0, t0 + len(out) * SAMPLE_S - time.time()))


async def _drain(metrics_url: str, sent: float, drain_s: float) -> dict[str, Any]:
    """Wait (up to ``drain_s``) until the worker has counted every message sent."""
    began = time.monotonic()
    counted = await asyncio.to_thread(harness.counted, metrics_url) or 0.0
    behind_at_end = sent - counted
    while counted < sent and time.monotonic() - began < drain_s:
        await asyncio.sleep(0.5)
        now = await asyncio.to_thread(harness.counted, metrics_url)
        counted = counted if now is None else now
    return {
        "behind_at_end": behind_at_end,
        "counted_after_drain": counted,
        "drain_s": time.monotonic() - began,
    }


def report(f: dict[str, Any]) -> None:
    sending, rss, when = f["sending"], f["worker_rss"], f["event_time"]
    print(
        f"soak at {f['rate']:,.0f} events/s for {f['duration_s']:g} s, 1 worker: sent "
        f"{sending['sent']:,} events in {sending['seconds']:.1f} s (sender at most "
        f"{sending['max_behind_s']:.2f} s behind schedule), {when['hours']:.1f} h of event time "
        f"({when['first']} to {when['last']})"
    )
    print(
        f"  kept up: at most {f['max_behind']:,.0f} messages sent and not yet counted at a sample;"
        f" {f['behind_at_end']:,.0f} when sending ended; {f['counted_after_drain']:,.0f} counted "
        f"after {f['drain_s']:.0f} s"
    )
    if rss["second_half_spread"] is not None:
        print(
            f"  worker RSS: {f['idle_rss_mib']:,.0f} MiB idle before the traffic; second half of "
            f"the run {rss['second_half_min_mib']:,.0f}-{rss['second_half_max_mib']:,.0f} MiB "
            f"(±{100 * rss['second_half_spread']:.1f} % around its mean, slope "
            f"{rss['second_half_mib_per_10_min']:+.1f} MiB per 10 minutes; every "
            f"{SAMPLE_S:g} s in the JSON)"
        )
    shares = ", ".join(f"{k} {v:.2f}" for k, v in f["cores"].items())
    print(f"  CPU while sending, in cores: {shares}")
