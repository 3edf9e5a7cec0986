"""``streamproc simulate``: synthetic shop traffic to Kafka (live or as fast as possible) or to a
JSONL events file."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import Progress

from streamproc.cli.common import app, ensure_topics, kafka_of, out, progress, settings
from streamproc.errors import ConfigError
from streamproc.simulate import Anomalies, SimConfig, SimRecord, SimStats, simulate, write_jsonl
from streamproc.simulate.options import parse_outage, parse_range, parse_start
from streamproc.times import epoch_ms, parse_duration_seconds

RANGE_HELP = "Time range as offsets from --start, e.g. 30m..45m, optionally *FACTOR (30m..45m*4)."


def _config(
    *,
    start: datetime,
    duration: str | None,
    ranges: dict[str, list[str]],
    shares: dict[str, float],
    currencies: list[str],
    **model: Any,
) -> SimConfig:
    """SimConfig from command-line values; ValueError names the bad option."""
    anomalies = Anomalies(
        abandonment_spikes=tuple(parse_range(r, start=start) for r in ranges["abandonment_spike"]),
        conversion_drops=tuple(parse_range(r, start=start) for r in ranges["conversion_drop"]),
        idle_gaps=tuple(parse_range(r, start=start) for r in ranges["idle_gap"]),
        checkout_outages=tuple(parse_outage(r, start=start) for r in ranges["checkout_outage"]),
        duplicate_share=shares["duplicate_share"],
        out_of_order_share=shares["out_of_order_share"],
        late_share=shares["late_share"],
        too_late_share=shares["too_late_share"],
        malformed_share=shares["malformed_share"],
    )
    pairs = [pair.split("=", 1) for pair in currencies]
    if any(len(pair) != 2 for pair in pairs):
        raise ValueError(f"--currency takes STORE=CODE, got {currencies}")
    return SimConfig(
        start=start,
        duration_seconds=parse_duration_seconds(duration) if duration else None,
        currencies={store: code for store, code in pairs},
        anomalies=anomalies,
        **model,
    )


def _counted(records: Iterable[SimRecord], stats: SimStats) -> Iterator[SimRecord]:
    for record in records:
        stats.add(record)
        yield record


class _Display:
    """Progress over simulated time: records, rate and how far the run has got."""

    def __init__(self, bar: Progress, config: SimConfig, *, every: int) -> None:
        self._bar, self._every = bar, every
        self._start_ms = epoch_ms(config.start)
        total = config.duration_seconds * 1000 if config.duration_seconds else None
        self._task = bar.add_task("simulating", total=total, events=0, rate=0.0)
        self._started = time.monotonic()
        self.records = 0
        self._last_ms = self._start_ms

    def tick(self, record: SimRecord) -> None:
        self.records += 1
        self._last_ms = record.arrival_ms
        if self.records % self._every == 0:
            self.refresh()

    def refresh(self) -> None:
        rate = self.records / max(time.monotonic() - self._started, 1e-9)
        done = self._last_ms - self._start_ms
        self._bar.update(self._task, completed=done, events=self.records, rate=rate)


def _shown(records: Iterable[SimRecord], display: _Display) -> Iterator[SimRecord]:
    for record in records:
        display.tick(record)
        yield record


async def _to_kafka(config: SimConfig, *, live: bool, display: _Display, stats: SimStats) -> None:
    from streamproc import broker
    from streamproc.pacing import paced

    loaded = settings()
    kafka = kafka_of(loaded)
    await ensure_topics(loaded, kafka)
    counted = _counted(_shown(simulate(config), display), stats)
    records: Iterable[SimRecord] | AsyncIterator[SimRecord] = paced(counted) if live else counted
    async with broker.Producer(kafka) as producer:
        await broker.publish(records, producer, loaded.topics_by_family)


def _summary(stats: SimStats, elapsed: float, where: str) -> None:
    kinds = ", ".join(f"{kind} {count:,}" for kind, count in sorted(stats.kinds.items()))
    out.print(
        f"{stats.records:,} records to {where} in {elapsed:.1f} s "
        f"({stats.records / max(elapsed, 1e-9):,.0f}/s): {kinds}\n"
        f"sessions {stats.sessions:,}, carts {stats.carts:,}, checkouts {stats.checkouts:,}, "
        f"orders {stats.orders:,}, tickets {stats.tickets:,}",
        highlight=False,
    )


@app.command("simulate")
def simulate_command(
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write a JSONL file instead of Kafka.")
    ] = None,
    start: Annotated[
        str | None,
        typer.Option(
            help="Event time of the start: now, -7d (ago) or RFC 3339. "
            "Default: now to Kafka; to a file, so that the file ends now."
        ),
    ] = None,
    duration: Annotated[
        str | None,
        typer.Option(help="Length, e.g. 15m, 6h, 7d. Default: 1h to a file, unbounded live."),
    ] = None,
    rate: Annotated[float, typer.Option(help="New sessions per minute (daily mean).")] = 60.0,
    stores: Annotated[int, typer.Option(help="Number of stores.")] = 3,
    seed: Annotated[int, typer.Option(help="Same seed and options: the same events.")] = 0,
    live: Annotated[
        bool | None,
        typer.Option(help="Pace to the wall clock. Default: on when sending to Kafka from now."),
    ] = None,
    currency: Annotated[
        list[str], typer.Option(help="A store's currency, e.g. store-02=EUR (repeatable).")
    ] = [],  # noqa: B006 - typer reads the default, it is never mutated
    abandonment_spike: Annotated[list[str], typer.Option(help=RANGE_HELP)] = [],  # noqa: B006
    conversion_drop: Annotated[list[str], typer.Option(help=RANGE_HELP)] = [],  # noqa: B006
    idle_gap: Annotated[list[str], typer.Option(help="No traffic at all in a range.")] = [],  # noqa: B006
    checkout_outage: Annotated[
        list[str],
        typer.Option(
            help="Every payment fails in a range (no orders; sessions and carts go on), in "
            "every store or one: 30m..45m or 30m..45m@store-02."
        ),
    ] = [],  # noqa: B006
    duplicates: Annotated[float, typer.Option(help="Share of duplicate records.")] = 0.0,
    out_of_order: Annotated[float, typer.Option(help="Share 1-90 s late.")] = 0.0,
    late: Annotated[float, typer.Option(help="Share 5-30 min late.")] = 0.0,
    too_late: Annotated[float, typer.Option(help="Share 2-3 h late.")] = 0.0,
    malformed: Annotated[
        float, typer.Option(help="Share of messages breaking the contract.")
    ] = 0.0,
) -> None:
    """Generate realistic shop traffic: sessions, carts, orders, tickets, and anomalies."""
    now = datetime.now(UTC)
    duration = duration or ("1h" if output is not None else None)
    if start is None:
        start = f"-{duration}" if output is not None and duration else "now"
    try:
        config = _config(
            start=parse_start(start, now=now),
            duration=duration,
            ranges={
                "abandonment_spike": abandonment_spike,
                "conversion_drop": conversion_drop,
                "idle_gap": idle_gap,
                "checkout_outage": checkout_outage,
            },
            shares={
                "duplicate_share": duplicates,
                "out_of_order_share": out_of_order,
                "late_share": late,
                "too_late_share": too_late,
                "malformed_share": malformed,
            },
            currencies=currency,
            seed=seed,
            sessions_per_minute=rate,
            stores=stores,
        )
    except ValueError as exc:
        raise ConfigError(f"simulate: {exc}") from exc
    if output is None and config.start > now:
        raise ConfigError("simulate: --start is in the future; brokers reject such timestamps")
    pace = live if live is not None else (output is None and start == "now")
    if output is None and config.duration_seconds is None and not pace:
        raise ConfigError("simulate: an unbounded run to Kafka must be --live (or give --duration)")
    started = time.monotonic()
    with progress() as bar:
        display = _Display(bar, config, every=1 if pace else 5000)
        if output is not None:
            with output.open("wb") as file:
                stats = write_jsonl(_shown(simulate(config), display), file)
        else:
            stats = SimStats()
            try:
                asyncio.run(_to_kafka(config, live=pace, display=display, stats=stats))
            except KeyboardInterrupt:
                out.print("stopped")
        display.refresh()
    _summary(stats, time.monotonic() - started, str(output) if output else "Kafka")
