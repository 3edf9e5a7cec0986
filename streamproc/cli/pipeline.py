"""``streamproc worker`` and ``streamproc produce``."""

from __future__ import annotations

import asyncio
import gc
import importlib.metadata
import logging
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from streamproc import logs
from streamproc.cli.common import (
    app,
    endpoints,
    ensure_topics,
    first_few,
    kafka_of,
    log,
    progress,
    settings,
    summary,
)

if TYPE_CHECKING:
    import faust


@app.command("worker")
def worker_command(
    recreate_state_topics: Annotated[
        bool,
        typer.Option(
            "--recreate-state-topics",
            help="Delete and recreate the worker's state changelog and ticks topics when their "
            "partition count differs from the input's (a broker auto-created them).",
        ),
    ] = False,
) -> None:
    """Run a worker: compute the KPIs of the input partitions it is assigned, serve /metrics."""
    from prometheus_client import CollectorRegistry

    from streamproc import broker, metrics
    from streamproc.events.parse import decoder_from_settings
    from streamproc.store import KpiStore
    from streamproc.worker import app as worker_app

    loaded = settings()
    where = endpoints(loaded)
    kafka = where.kafka
    worker_app.never_auto_create_topics()
    tune_gc(loaded.gc_gen0_threshold)
    use_event_loop(loaded.event_loop)
    partitions = asyncio.run(ensure_topics(loaded, kafka))
    state = broker.ensure_state_topics(
        kafka,
        worker_app.state_topics(loaded),
        partitions=partitions,
        replication_factor=loaded.replication_factor,
        recreate=recreate_state_topics,
    )
    asyncio.run(state)
    store = KpiStore.for_settings(loaded, where.redis_url)
    registry = CollectorRegistry()
    worker_metrics = metrics.WorkerMetrics.create(
        registry, topics=loaded.topics_by_family, dlq_reasons=metrics.all_reasons()
    )
    server = metrics.serve(registry, bind=loaded.bind, port=loaded.worker_port)
    log.info("worker metrics on http://%s:%d/metrics", loaded.bind, server.port)
    # Faust makes a data directory at start and writes nothing to it (the state table is in
    # memory): a scratch one, removed when the worker stops, not one left in the current directory.
    with tempfile.TemporaryDirectory(prefix="streamproc-worker-") as datadir:
        faust_app = worker_app.create_app(
            loaded,
            kafka=kafka,
            partitions=partitions,
            decoder=decoder_from_settings(loaded),
            store=store,
            metrics=worker_metrics,
            datadir=Path(datadir),
        )
        _run_worker(faust_app, loglevel=loaded.log_level)


def _run_worker(faust_app: faust.App, *, loglevel: str) -> None:
    """Run Faust's worker, with our log rate limit on the handlers it sets up."""
    worker_class()(
        faust_app, loglevel=loglevel, redirect_stdouts=False, quiet=True
    ).execute_from_commandline()


def use_event_loop(name: str) -> None:
    """Make the loops this process creates from now on (the worker's, and its consumer
    thread's) uvloop's, or leave asyncio's (``STREAMPROC_EVENT_LOOP``)."""
    if name != "uvloop":
        return
    try:
        import uvloop
    except ImportError:
        log.warning("uvloop is not installed: the worker runs on asyncio's own event loop")
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    log.info("event loop: uvloop %s", importlib.metadata.version("uvloop"))


def tune_gc(gen0_threshold: int) -> None:
    """Collect the youngest generation after ``gen0_threshold`` new container objects (the older
    generations' thresholds stay). A worker makes and frees objects at a high rate, nearly all
    freed by reference counting: at Python's 700, collections took ~20 % of its CPU (measured
    with bench/throughput.py: 234 -> 187 µs of CPU per event at 50,000)."""
    _, *older = gc.get_threshold()
    gc.set_threshold(gen0_threshold, *older)


def worker_class() -> type[faust.worker.Worker]:
    """Faust's worker with our logging: rate-limited, and no terminal spinner.

    At a level of WARNING or above, Faust's spinner sets the root logger to DEBUG (to spin on
    every record) and adds a handler for it: every ``log.debug`` of aiokafka and Faust then
    builds a record on the hot path (one per message sent; 6 % of a worker's time, profiled).
    """
    import faust.worker

    class Worker(faust.worker.Worker):
        def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
            self.spinner = None
            super().on_setup_root_logger(logger, level)
            # mode's setup_logging has just replaced the root handlers (and their filters).
            logs.install(logger)

    return Worker


@app.command("produce")
def produce_command(
    path: Annotated[
        Path,
        typer.Argument(
            exists=True, dir_okay=False, readable=True, help="Events file, one JSON per line."
        ),
    ],
) -> None:
    """Publish an events file to the input topics, keyed and time-stamped per the contract."""
    from streamproc import broker
    from streamproc.eventfile import Unroutable, in_time_order, routable

    loaded = settings()
    kafka = kafka_of(loaded)
    unroutable: list[Unroutable] = []
    stamped: list[int] = []  # lines whose event_time does not parse
    size = path.stat().st_size

    async def run(lines: Iterable[bytes], on_line: Callable[[int], None]) -> broker.ProduceStats:
        await ensure_topics(loaded, kafka)

        async with broker.Producer(kafka) as producer:
            await broker.publish(
                in_time_order(routable(lines, unroutable), stamped),
                producer,
                loaded.topics_by_family,
                on_sent=lambda r: on_line(len(r.value)),
            )
        return producer.stats

    started = time.monotonic()
    with path.open("rb") as lines, progress() as bar:
        task = bar.add_task(path.name, total=size, events=0, rate=0.0)
        count = 0

        def on_line(nbytes: int) -> None:
            nonlocal count
            count += 1
            if count % 2000 == 0:
                rate = count / max(time.monotonic() - started, 1e-9)
                bar.update(task, completed=lines.tell(), events=count, rate=rate)

        stats = asyncio.run(run(lines, on_line))
        rate = count / max(time.monotonic() - started, 1e-9)
        bar.update(task, completed=size, events=count, rate=rate)
    elapsed = time.monotonic() - started
    extra = ""
    if unroutable:
        shown = ", ".join(f"line {u.line_no} ({u.why})" for u in unroutable[:5])
        extra = f"; skipped {len(unroutable):,} unroutable lines: {shown}"
    if stamped:
        extra += (
            f"; {len(stamped):,} messages without a valid event_time (dead letters to be) got "
            f"the timestamp of the message before them, or the file's first "
            f"(lines {first_few(stamped[:5], len(stamped))})"
        )
    summary(f"produced {path.name}", stats.sent, elapsed, extra)
