"""The ``streamproc`` command: sub-commands, logging set-up and settings loading; no logic."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from streamproc import __version__
from streamproc.config import Settings, describe_settings, load_settings
from streamproc.errors import StreamprocError

app = typer.Typer(
    name="streamproc",
    help="Real-time e-commerce KPIs from Kafka event streams.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
err = Console(stderr=True)
out = Console()


LOG_FORMAT = "[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s"


def configure_logging(level: str) -> None:
    """Rich output on a terminal; plain lines (the format Faust's worker logs use) otherwise."""
    if err.is_terminal:
        handler: logging.Handler = RichHandler(console=err, show_path=False)
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)


def settings() -> Settings:
    loaded = load_settings()
    configure_logging(loaded.log_level)
    return loaded


@app.command("settings")
def settings_command(
    markdown: Annotated[bool, typer.Option("--markdown", help="Print a Markdown table.")] = False,
) -> None:
    """List every setting: environment variable, default and meaning."""
    rows = describe_settings()
    if markdown:
        lines = ["| variable | default | meaning |", "|---|---|---|"]
        lines += [f"| `{name}` | `{default}` | {text} |" for name, default, text in rows]
        out.print("\n".join(lines), markup=False, highlight=False, soft_wrap=True)
        return
    table = Table("variable", "default", "meaning")
    for row in rows:
        table.add_row(*row)
    out.print(table)


DEFAULT_BOOTSTRAP = "127.0.0.1:9092"


def bootstrap_servers(loaded: Settings) -> str:
    return loaded.bootstrap_servers or DEFAULT_BOOTSTRAP


@app.command("worker")
def worker_command() -> None:
    """Run a worker: consume the input topics, dead-letter bad input, serve /metrics."""
    import faust.worker
    from prometheus_client import CollectorRegistry

    from streamproc import app as worker_app
    from streamproc import metrics
    from streamproc.events.parse import decoder_from_settings

    loaded = settings()
    servers = bootstrap_servers(loaded)
    asyncio.run(_ensure_topics(loaded, servers))
    registry = CollectorRegistry()
    worker_metrics = metrics.WorkerMetrics.create(
        registry, topics=loaded.topics_by_family, dlq_reasons=metrics.all_reasons()
    )
    server = metrics.serve(registry, bind=loaded.bind, port=loaded.worker_port)
    logging.getLogger("streamproc.worker").info(
        "metrics on http://%s:%d/metrics", loaded.bind, server.port
    )
    faust_app = worker_app.create_app(
        loaded,
        bootstrap_servers=servers,
        decoder=decoder_from_settings(loaded),
        metrics=worker_metrics,
    )
    faust.worker.Worker(
        faust_app, loglevel=loaded.log_level, redirect_stdouts=False, quiet=True
    ).execute_from_commandline()


def _input_topics(loaded: Settings) -> dict[str, int]:
    topics = {name: loaded.partitions for name in loaded.input_topics}
    topics[loaded.topic_dlq] = loaded.partitions
    return topics


async def _ensure_topics(loaded: Settings, servers: str) -> None:
    from streamproc import broker

    await broker.ensure_topics(
        servers,
        _input_topics(loaded),
        replication_factor=loaded.replication_factor,
        co_partitioned=loaded.input_topics,
    )


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[events]:>10,} events"),
        TextColumn("{task.fields[rate]:>8,.0f}/s"),
        TimeRemainingColumn(),
        console=err,
    )


def _summary(title: str, sent: Mapping[str, int], elapsed: float, extra: str = "") -> None:
    out.print(f"[bold]{title}[/]")
    table = Table(show_footer=True)
    total = sum(sent.values())
    table.add_column("topic", footer="total")
    table.add_column("messages", justify="right", footer=f"{total:,}")
    for topic, count in sorted(sent.items()):
        table.add_row(topic, f"{count:,}")
    out.print(table)
    rate = total / elapsed if elapsed > 0 else 0.0
    out.print(f"{total:,} messages in {elapsed:.1f} s ({rate:,.0f}/s){extra}")


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
    from streamproc.eventfile import FileRecord, Unroutable, read_records

    loaded = settings()
    servers = bootstrap_servers(loaded)
    unroutable: list[Unroutable] = []
    size = path.stat().st_size

    async def run(lines: Iterable[bytes], on_line: Callable[[int], None]) -> broker.ProduceStats:
        await _ensure_topics(loaded, servers)

        def routed() -> Iterator[FileRecord]:
            for record in read_records(lines):
                if isinstance(record, Unroutable):
                    unroutable.append(record)
                else:
                    yield record

        async with broker.Producer(servers) as producer:
            await broker.publish(
                routed(), producer, loaded.topics_by_family, on_sent=lambda r: on_line(len(r.value))
            )
        return producer.stats

    started = time.monotonic()
    with path.open("rb") as lines, _progress() as progress:
        task = progress.add_task(path.name, total=size, events=0, rate=0.0)
        count = 0

        def on_line(nbytes: int) -> None:
            nonlocal count
            count += 1
            if count % 2000 == 0:
                rate = count / max(time.monotonic() - started, 1e-9)
                progress.update(task, completed=lines.tell(), events=count, rate=rate)

        stats = asyncio.run(run(lines, on_line))
        rate = count / max(time.monotonic() - started, 1e-9)
        progress.update(task, completed=size, events=count, rate=rate)
    elapsed = time.monotonic() - started
    extra = ""
    if unroutable:
        shown = ", ".join(f"line {u.line_no} ({u.why})" for u in unroutable[:5])
        extra = f"; skipped {len(unroutable):,} unroutable lines: {shown}"
    _summary(f"produced {path.name}", stats.sent, elapsed, extra)


@app.command("version")
def version_command() -> None:
    """Print the version."""
    out.print(__version__)


def main() -> None:
    try:
        app()
    except StreamprocError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False)
        sys.exit(2)
