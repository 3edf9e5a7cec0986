"""``streamproc backfill --since T1 --until T2``: KPI history of a time range of the live topics."""

from __future__ import annotations

import asyncio
import json
import logging
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

from streamproc.backfill import Backfill, PartitionProgress, Plan, Request, Summary, parse_time
from streamproc.backfill.offsets import Stamps
from streamproc.backfill.openmetrics import OpenMetricsText, exposition
from streamproc.backfill.promtool import create_blocks, next_steps
from streamproc.cli.common import app, endpoints, err, first_few, out, settings
from streamproc.config import Settings
from streamproc.errors import ConfigError
from streamproc.kpi.epoch import rfc3339
from streamproc.kpi.report import Row
from streamproc.times import parse_duration_seconds


@app.command("backfill")
def backfill_command(
    since: Annotated[
        str | None, typer.Option(help="Start (inclusive): RFC 3339, a date, or ago like 7d.")
    ] = None,
    until: Annotated[str | None, typer.Option(help="End (exclusive), same forms.")] = None,
    name: Annotated[
        str | None,
        typer.Option(help="Name (= namespace) of the backfill. Default: from times and topics."),
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue an interrupted backfill of this name.")
    ] = False,
    topic: Annotated[
        list[str] | None,
        typer.Option(help="Read only this input topic (name or clickstream/cart/orders/tickets)."),
    ] = None,
    window: Annotated[
        list[str] | None, typer.Option(help="Window sizes to report (default: STREAMPROC_WINDOWS).")
    ] = None,
    store: Annotated[
        list[str] | None, typer.Option(help="Only rows of this store_id (repeatable; 'all').")
    ] = None,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes sharing partitions.")] = 1,
    report: Annotated[
        Path | None, typer.Option(help="KPI report JSON. Default: NAME.report.json.")
    ] = None,
    openmetrics: Annotated[
        Path | None, typer.Option(help="OpenMetrics file for promtool. Default: NAME.om.")
    ] = None,
    prometheus_data_dir: Annotated[
        Path | None,
        typer.Option(help="Run promtool: write TSDB blocks here, then say how to load them."),
    ] = None,
    offset_lookup: Annotated[
        str, typer.Option(help="auto: the broker's answers, verified (else scan); scan: always.")
    ] = "auto",
    timeout: Annotated[str, typer.Option(help="Give up (resumable) after this long.")] = "12h",
) -> None:
    """Recompute the KPIs of a time range from the input topics, beside the live pipeline."""
    loaded = settings()
    logging.getLogger("aiokafka").setLevel(logging.WARNING)  # its consumer's INFO is noise here
    if offset_lookup not in ("auto", "scan"):
        raise ConfigError(f"--offset-lookup must be auto or scan, got {offset_lookup!r}")
    now = datetime.now(UTC)
    request = Request(
        since=parse_time(since, now=now) if since else None,
        until=parse_time(until, now=now) if until else None,
        name=name,
        read=_topics(loaded, topic) if topic else None,
        resume=resume,
        use_broker=offset_lookup == "auto",
    )
    where = endpoints(loaded)
    job = _Job(
        backfill=Backfill(loaded, kafka=where.kafka, redis_url=where.redis_url),
        request=request,
        workers=workers,
        sizes_ms=[parse_duration_seconds(w) * 1000 for w in (window or loaded.windows)],
        stores=tuple(store or ()),
        timeout_s=parse_duration_seconds(timeout),
        log_dir=Path(tempfile.mkdtemp(prefix="streamproc-backfill-logs-")),
    )
    try:
        outcome = asyncio.run(_backfill(job))
    finally:
        if any(job.log_dir.iterdir()):
            out.print(f"worker logs in {job.log_dir}", highlight=False)
        else:
            job.log_dir.rmdir()  # no worker ran (every partition was already read to its end)
    _outputs(outcome, loaded, report=report, openmetrics=openmetrics, blocks=prometheus_data_dir)


def _outputs(
    outcome: _Outcome,
    loaded: Settings,
    *,
    report: Path | None,
    openmetrics: Path | None,
    blocks: Path | None,
) -> None:
    """Write the report and the OpenMetrics file, print the summary, run promtool if asked."""
    plan = outcome.plan
    report = report or Path(f"{plan.name}.report.json")
    openmetrics = openmetrics or Path(f"{plan.name}.om")
    report.write_text(json.dumps(outcome.rows, indent=1) + "\n")
    expo = exposition(
        outcome.rows,
        currency=loaded.reporting_currency,
        since_ms=plan.since_ms,
        until_ms=plan.until_ms,
    )
    openmetrics.write_text(expo.text)
    _print_summary(outcome, expo, report=report, openmetrics=openmetrics)
    if blocks is None:
        return
    if expo.first_s is None or expo.last_s is None:
        out.print("no window lies wholly inside the range: nothing for promtool to write")
        return
    written = create_blocks(openmetrics, blocks)
    steps = next_steps(written, first_s=expo.first_s, last_s=expo.last_s, now_s=time.time())
    out.print("\n".join(steps), highlight=False)


def _topics(loaded: Settings, chosen: list[str]) -> tuple[str, ...]:
    """Input topic names from names or family names; ConfigError for anything else."""
    families = {family.value: name for family, name in loaded.topics_by_family.items()}
    found = []
    for item in chosen:
        name = families.get(item, item)
        if name not in loaded.input_topics:
            known = ", ".join([*families, *loaded.input_topics])
            raise ConfigError(f"--topic {item!r} is not an input topic ({known})")
        found.append(name)
    return tuple(found)


@dataclass(frozen=True)
class _Job:
    backfill: Backfill
    request: Request
    workers: int
    sizes_ms: list[int]
    stores: tuple[str, ...]
    timeout_s: float
    log_dir: Path


@dataclass(frozen=True)
class _Outcome:
    plan: Plan
    rows: list[Row]
    summary: Summary
    elapsed_s: float
    events_per_s: float  # events this run read, per second of processing


async def _backfill(job: _Job) -> _Outcome:
    started = time.monotonic()
    with err.status("looking up offsets" if not job.request.resume else "resuming"):
        plan = await job.backfill.plan(job.request)
    out.print(_describe(plan, resumed=job.request.resume), highlight=False)
    display = _Display()
    with display.bar:
        plan = await job.backfill.run(
            plan,
            workers=job.workers,
            log_dir=job.log_dir,
            timeout_s=job.timeout_s,
            on_progress=display.update,
        )
    rows = await job.backfill.report(plan, sizes_ms=job.sizes_ms, stores=job.stores)
    summary = await job.backfill.summary(plan)
    return _Outcome(plan, rows, summary, time.monotonic() - started, display.rate())


def _describe(plan: Plan, *, resumed: bool) -> str:
    lookup = dict(plan.lookup)
    extended = lookup.pop("extended", 0)
    how = ", ".join(f"{n} by {method}" for method, n in sorted(lookup.items()))
    if extended:
        how += (
            f"; {extended} partitions hold records stamped within the range after one stamped "
            "past its end, and are read to the last of them"
        )
    verb = "resuming" if resumed else "backfill"
    return (
        f"{verb} {plan.name}: {rfc3339(plan.since_ms)} to {rfc3339(plan.until_ms)}, "
        f"{plan.records:,} events on {plan.partitions} partitions of {', '.join(plan.read)} "
        f"(offsets: {how or 'stored'}); resume with --resume --name {plan.name}"
    )


class _Display:
    """One bar per partition: events read, event-time position, rate and time left."""

    def __init__(self) -> None:
        self.bar = Progress(
            TextColumn("[bold]p{task.fields[partition]:<3}"),
            BarColumn(),
            TextColumn("{task.completed:>12,.0f}/{task.total:,.0f} events"),
            TextColumn("{task.fields[event_time]}"),
            TextColumn("{task.fields[rate]:>8,.0f}/s"),
            TimeRemainingColumn(),
            console=err,
        )
        self.tasks: dict[int, TaskID] = {}
        self.before: dict[int, int] = {}  # events read before this run (a resume)
        self.started = time.monotonic()
        self.first: int | None = None
        self.last = 0
        self.last_at = self.started

    def update(self, progress: list[PartitionProgress]) -> None:
        now = time.monotonic()
        total_done = sum(p.done for p in progress)
        if self.first is None:
            self.first, self.started = total_done, now
        self.last, self.last_at = total_done, now
        elapsed = now - self.started
        for p in progress:
            task = self.tasks.get(p.partition)
            if task is None:
                task = self.bar.add_task(
                    "", total=p.total or 1, partition=p.partition, event_time="-", rate=0.0
                )
                self.tasks[p.partition] = task
                self.before[p.partition] = p.done
            moment = rfc3339(p.event_time_ms) if p.event_time_ms else "-"
            done = p.done if p.total else (1 if p.finished else 0)
            read = p.done - self.before[p.partition]
            rate = read / elapsed if elapsed > 0.5 else 0.0
            self.bar.update(task, completed=done, event_time=moment, rate=rate)

    def rate(self) -> float:
        """Events this run read per second, from its first progress report to its last."""
        read, seconds = self.last - (self.first or 0), self.last_at - self.started
        return read / seconds if read and seconds > 0 else 0.0


def _print_summary(
    outcome: _Outcome, expo: OpenMetricsText, *, report: Path, openmetrics: Path
) -> None:
    s, rows = outcome.summary, outcome.rows
    windows = {(row["window"], row["start"]) for row in rows if row["kpi"] != "open_tickets"}
    reasons = ", ".join(f"{reason} {n:,}" for reason, n in sorted(s.dead_letters.items()))
    out.print(
        f"[bold]backfill {outcome.plan.name} done[/]\n"
        f"events {s.events:,}: accepted {s.accepted:,}, duplicates {s.duplicates:,}, "
        f"late (dead-lettered too_late) {s.late:,}, dead-lettered {s.dead_lettered:,}"
        + (f" ({reasons})" if reasons else "")
        + f"\nwindows {len(windows):,}: {len(rows):,} report rows in {report}; "
        f"{expo.series:,} series, {expo.samples:,} samples in {openmetrics}"
        + (f" ({expo.left_out:,} rows of windows crossing the range's ends left out)")
        + f"\nelapsed {outcome.elapsed_s:.1f} s"
        + (f"; processing {outcome.events_per_s:,.0f} events/s" if outcome.events_per_s else ""),
        highlight=False,
    )
    for (topic, partition), found in sorted(s.stamps.items()):
        out.print(f"record timestamps of {topic}[{partition}]: {_stamps(found)}", highlight=False)


def _stamps(found: Stamps) -> str:
    """``12 outside the range (offsets 3, 9, ...); 2 more than STREAMPROC_MAX_LATENESS_SECONDS
    behind the record before (offsets 40, 41)``"""

    said = []
    if found.outside:
        shown = first_few(found.outside_at, found.outside)
        said.append(f"{found.outside:,} outside the range (offsets {shown})")
    if found.backwards:
        said.append(
            f"{found.backwards:,} more than STREAMPROC_MAX_LATENESS_SECONDS behind the record "
            f"before (offsets {first_few(found.backwards_at, found.backwards)})"
        )
    return "; ".join(said)
