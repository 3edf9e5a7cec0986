"""``streamproc demo``: embedded stack + live simulator + worker + exporter, with a live view."""

from __future__ import annotations

import signal
import time
from types import FrameType
from typing import Annotated

import typer
from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from streamproc import demo, metrics
from streamproc.cli.common import app, err, out, settings
from streamproc.config import Settings, parse_duration_seconds

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
    table = Table("KPI (all stores)", *(f"last {w}" for w in windows), title="shop KPIs")
    for label, name, labels, kind in _KPIS:
        values = [
            page.overall(name, window=w, store_id="all", **labels) if page else None
            for w in windows
        ]
        table.add_row(label, *(_shown(v, kind, loaded.reporting_currency) for v in values))
    return table


class _Counters:
    """Worker counters between two scrapes, for totals and rates."""

    def __init__(self) -> None:
        self.events: dict[str, float] = {}
        self.at = time.monotonic()

    def view(
        self,
        loaded: Settings,
        running: demo.Demo,
        page: metrics.Scrape | None,
        kpis: metrics.Scrape | None,
    ) -> Group:
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
        exporter = running.exporter_url
        return Group(
            kpi_table(loaded, kpis),
            table,
            Text(f"dead letters by reason: {shown or 'none yet'}"),
            Text(f"KPI metrics: {exporter}/metrics   report: {exporter}/api/kpis"),
            Text(f"worker metrics: {running.worker_metrics_url}{state}"),
            Text(f"logs: {running.dir / 'logs'}   (Ctrl-C stops everything)", style="dim"),
        )


def _scrape(url: str) -> metrics.Scrape | None:
    try:
        return metrics.scrape(url)
    except OSError:
        return None  # still starting


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # SIGTERM stops the demo like Ctrl-C: children and stack included


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
    signal.signal(signal.SIGTERM, _interrupt)
    err.print(
        "starting the embedded broker and Redis, a worker, the exporter and the simulator ..."
    )
    with demo.running(loaded, options) as running:
        counters = _Counters()
        try:
            with Live(console=out, refresh_per_second=2, transient=False) as live:
                while stop_at is None or time.monotonic() < stop_at:
                    running.check()
                    page = _scrape(running.worker_metrics_url)
                    kpis = _scrape(f"{running.exporter_url}/metrics")
                    live.update(counters.view(loaded, running, page, kpis))
                    time.sleep(1.0)
        except KeyboardInterrupt:
            pass
        err.print("stopping ...")
    err.print("demo stopped; everything it started is down")
