"""``streamproc demo``: embedded stack + live simulator + worker, with a live terminal view."""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from streamproc import demo, metrics
from streamproc.cli.common import app, err, out, settings
from streamproc.config import Settings, parse_duration_seconds


class _Counters:
    """Worker counters between two scrapes, for totals and rates."""

    def __init__(self) -> None:
        self.events: dict[str, float] = {}
        self.at = time.monotonic()

    def view(self, loaded: Settings, running: demo.Demo, page: metrics.Scrape | None) -> Group:
        now = time.monotonic()
        table = Table("topic", "events/s", "events", "dead letters", title="pipeline")
        events = page.by("streamproc_events_total", "topic") if page else {}
        letters = page.by("streamproc_dead_letters_total", "topic") if page else {}
        reasons = page.by("streamproc_dead_letters_total", "reason") if page else {}
        for topic in loaded.input_topics:
            count = events.get(topic, 0.0)
            per_second = demo.rate(self.events.get(topic, count), count, now - self.at)
            table.add_row(
                topic, f"{per_second:,.1f}", f"{count:,.0f}", f"{letters.get(topic, 0.0):,.0f}"
            )
        self.events, self.at = events, now
        shown = ", ".join(f"{r} {n:,.0f}" for r, n in sorted(reasons.items()) if n)
        state = "" if page else " (worker starting)"
        return Group(
            table,
            Text(f"dead letters by reason: {shown or 'none yet'}"),
            Text(f"worker metrics: {running.worker_metrics_url}{state}"),
            Text(f"logs: {running.dir / 'logs'}   (Ctrl-C stops everything)", style="dim"),
        )


@app.command("demo")
def demo_command(
    rate: Annotated[float, typer.Option(help="New sessions per minute.")] = 120.0,
    duration: Annotated[
        str | None, typer.Option(help="Stop after this long (e.g. 5m). Default: until Ctrl-C.")
    ] = None,
    malformed: Annotated[float, typer.Option(help="Share of malformed messages.")] = 0.005,
    duplicates: Annotated[float, typer.Option(help="Share of duplicate messages.")] = 0.005,
) -> None:
    """Run the whole pipeline locally: embedded broker and Redis, simulator, worker."""
    loaded = settings()
    options = demo.DemoOptions(
        sessions_per_minute=rate, malformed_share=malformed, duplicate_share=duplicates
    )
    stop_at = time.monotonic() + parse_duration_seconds(duration) if duration else None
    err.print("starting the embedded broker and Redis, a worker and the simulator ...")
    with demo.running(loaded, options) as running:
        counters = _Counters()
        try:
            with Live(console=out, refresh_per_second=2, transient=False) as live:
                while stop_at is None or time.monotonic() < stop_at:
                    running.check()
                    try:
                        page: metrics.Scrape | None = metrics.scrape(running.worker_metrics_url)
                    except OSError:
                        page = None  # the worker is still starting
                    live.update(counters.view(loaded, running, page))
                    time.sleep(1.0)
        except KeyboardInterrupt:
            pass
        err.print("stopping ...")
    err.print("demo stopped; everything it started is down")
