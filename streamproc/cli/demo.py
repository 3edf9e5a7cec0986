"""``streamproc demo``: embedded stack + live simulator + worker + exporter, with a live view."""

from __future__ import annotations

import faulthandler
import io
import os
import signal
import threading
import time
from collections import deque
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from streamproc import demo, metrics
from streamproc.cli.common import app, err, out, settings
from streamproc.config import Settings
from streamproc.times import parse_duration_seconds

# The main KPIs of the live view: (label, metric, extra labels, format).
_KPIS: tuple[tuple[str, str, dict[str, str], str], ...] = (
    ("sessions", "shop_sessions", {}, "count"),
    ("unique visitors", "shop_unique_visitors", {}, "count"),
    ("orders", "shop_orders", {}, "count"),
    ("revenue", "shop_revenue", {}, "money"),
    ("conversion rate", "shop_conversion_ratio", {}, "percent"),
    ("cart abandonment", "shop_cart_abandonment_ratio", {}, "percent"),
    ("average order value", "shop_average_order_value", {}, "money"),
    ("revenue per visitor", "shop_revenue_per_visitor", {}, "money"),
    ("tickets opened", "shop_tickets_opened", {}, "count"),
    ("first response p90", "shop_first_response_seconds", {"quantile": "0.9"}, "seconds"),
)


def _shown(value: float | None, kind: str, currency: str) -> str:
    if value is None or value != value:  # no sample yet, or NaN (nothing to divide by)
        return "-"
    if kind == "percent":
        return f"{value:.1%}"
    if kind == "money":
        return f"{value:,.2f} {currency}"
    if kind == "seconds":
        return f"{value / 60:,.1f} min" if value >= 60 else f"{value:,.0f} s"
    return f"{value:,.0f}"


def kpi_table(loaded: Settings, page: metrics.Scrape | None) -> Table:
    """Trailing-window KPIs for all stores, from the exporter's /metrics."""
    windows = [w for w in ("5m", "1h") if w in loaded.windows] or loaded.windows[:2]
    table = Table("KPI (all stores)", title="shop KPIs")
    for w in windows:
        table.add_column(f"last {w}", justify="right")
    for label, name, labels, kind in _KPIS:
        values = [
            page.overall(name, window=w, store_id="all", **labels) if page else None
            for w in windows
        ]
        table.add_row(label, *(_shown(v, kind, loaded.reporting_currency) for v in values))
    return table


class _Counters:
    """Worker counters over the last few scrapes, for totals and steady rates (a second between
    two scrapes is shorter than a sparse topic's gaps: its rate would flicker to 0)."""

    def __init__(self, span_s: float = 10.0) -> None:
        self.span_s = span_s
        self.seen: deque[tuple[float, dict[str, float]]] = deque()  # (when, events per topic)

    def view(
        self,
        loaded: Settings,
        running: demo.Demo,
        page: metrics.Scrape | None,
        kpis: metrics.Scrape | None,
    ) -> Group:
        now = time.monotonic()
        table = Table("topic", title="pipeline")
        for heading in (f"events/s (last {self.span_s:g} s)", "events", "dead letters"):
            table.add_column(heading, justify="right")
        events = page.by("streamproc_events_total", "topic") if page else {}
        letters = page.by("streamproc_dead_letters_total", "topic") if page else {}
        reasons = page.by("streamproc_dead_letters_total", "reason") if page else {}
        self.seen.append((now, events))
        while now - self.seen[0][0] > self.span_s:
            self.seen.popleft()
        then, before = self.seen[0]
        for topic in loaded.input_topics:
            count = events.get(topic, 0.0)
            per_second = demo.rate(before.get(topic, count), count, now - then)
            table.add_row(
                topic, f"{per_second:,.1f}", f"{count:,.0f}", f"{letters.get(topic, 0.0):,.0f}"
            )
        shown = ", ".join(f"{r} {n:,.0f}" for r, n in sorted(reasons.items()) if n)
        state = "" if page else " (worker starting)"
        exporter = running.exporter_url
        return Group(
            kpi_table(loaded, kpis),
            table,
            Text(f"dead letters by reason: {shown or 'none yet'}"),
            Text(f"KPI metrics: {exporter}/metrics   report: {exporter}/api/kpis"),
            Text(f"worker metrics: {running.worker_metrics_url}{state}"),
            Text(
                f"logs: {_shown_path(running.dir / 'logs')}   (Ctrl-C stops everything)",
                style="dim",
            ),
        )


def _shown_path(path: Path) -> str:
    """``path`` relative to the working directory when it lies under it (as the user typed it)."""
    return os.path.relpath(path) if path.is_relative_to(Path.cwd()) else str(path)


def save_svg(view: Group, path: Path) -> None:
    """The live view as a picture: an SVG of the terminal, as rich renders it."""
    console = Console(record=True, width=96, file=io.StringIO(), force_terminal=True)
    console.print(view)
    path.write_text(console.export_svg(title="streamproc demo"))


def _scrape(url: str) -> metrics.Scrape | None:
    try:
        return metrics.scrape(url)
    except OSError:
        return None  # still starting


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # SIGTERM stops the demo like Ctrl-C: children and stack included


def _stop_on_signals() -> threading.Event:
    """From here on, Ctrl-C and SIGTERM set the returned event instead of raising wherever the
    main thread happens to be: the live view's loop checks it every second and leaves by its own
    way out (the view closed, the SVG saved, every child and the stack stopped). A demo once did
    not stop within 150 s of a Ctrl-C that landed while the view was running."""
    stop = threading.Event()

    def asked(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, asked)
    signal.signal(signal.SIGTERM, asked)
    return stop


@app.command("demo")
def demo_command(
    rate: Annotated[float, typer.Option(help="New sessions per minute.")] = 120.0,
    duration: Annotated[
        str | None, typer.Option(help="Stop after this long (e.g. 5m). Default: until Ctrl-C.")
    ] = None,
    malformed: Annotated[float, typer.Option(help="Share of malformed messages.")] = 0.005,
    duplicates: Annotated[float, typer.Option(help="Share of duplicate messages.")] = 0.005,
    history: Annotated[
        str, typer.Option(help="Simulated traffic from this long ago, sent at once (0s: none).")
    ] = "45m",
    svg: Annotated[
        Path | None,
        typer.Option(help="When the demo stops, save its last live view to this file as SVG."),
    ] = None,
) -> None:
    """Run the whole pipeline locally: embedded broker and Redis, simulator, worker, exporter."""
    loaded = settings()
    options = demo.DemoOptions(
        sessions_per_minute=rate,
        malformed_share=malformed,
        duplicate_share=duplicates,
        history_seconds=parse_duration_seconds(history),
    )
    stop_at = time.monotonic() + parse_duration_seconds(duration) if duration else None
    signal.signal(signal.SIGTERM, _interrupt)  # while starting: stop what has started
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # kill -USR1: where is it stuck?
    err.print(
        "starting the embedded broker and Redis, a worker, the exporter and the simulator ..."
    )
    with demo.running(loaded, options) as running:
        stop = _stop_on_signals()
        counters = _Counters()
        view: Group | None = None
        with Live(console=out, refresh_per_second=2, transient=False) as live:
            while not stop.is_set() and (stop_at is None or time.monotonic() < stop_at):
                running.check()
                page = _scrape(running.worker_metrics_url)
                kpis = _scrape(f"{running.exporter_url}/metrics")
                view = counters.view(loaded, running, page, kpis)
                live.update(view)
                stop.wait(1.0)
        if svg is not None and view is not None:
            save_svg(view, svg)
            err.print(f"saved the last view to {svg}")
        err.print("stopping ...")
    err.print("demo stopped; everything it started is down")
