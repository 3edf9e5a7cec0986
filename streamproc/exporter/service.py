"""The exporter's state: refreshes from Redis into an immutable snapshot, which the server reads.

A refresh re-reads only the minutes whose ``changed`` score moved since the previous one (less a
margin for clock skew between workers and the exporter), applies them to the trailing sums and
swaps in a new snapshot; a failed refresh leaves the last snapshot in place, and the next one
re-reads everything. So does one every ``RESYNC_SECONDS``, so nothing missed can stay wrong.

Served data is *stale* once the last successful refresh is older than ``stale_s``: the exporter
is then not ready (``/readyz``), though still alive (``/healthz``) and still serving the snapshot.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from streamproc.config import Settings
from streamproc.errors import ConfigError, StoreError, StreamprocError
from streamproc.events.parse import minor_unit_exponent
from streamproc.exporter.names import Exposition, families
from streamproc.exporter.trailing import (
    MinuteCells,
    Position,
    Trailing,
    lowest_watermark,
    trailing_end,
)
from streamproc.kpi import counters as c
from streamproc.kpi.aligned import VisitorKey, Window, rows, ticket_rows
from streamproc.kpi.contrib import NEVER
from streamproc.kpi.epoch import rfc3339, window_label
from streamproc.kpi.report import Row
from streamproc.kpi.selection import ReportQuery
from streamproc.metrics import ExporterMetrics
from streamproc.reporting import aligned_report
from streamproc.store import ReportStore

logger = logging.getLogger(__name__)

RESYNC_SECONDS = 600.0
READ_CHUNK = 60  # minutes per read
# Workers stamp `changed` with their own wall clock: re-read a margin before the last refresh so
# a worker clock up to this far behind the exporter's loses nothing.
CLOCK_MARGIN_MS = 60_000


@dataclass(frozen=True)
class ExporterConfig:
    sizes_ms: tuple[int, ...]
    currency: str
    allowed_lateness_ms: int
    stale_s: float = 60.0  # /readyz: 503 once the last successful refresh is older than this

    @classmethod
    def from_settings(cls, settings: Settings) -> ExporterConfig:
        return cls(
            sizes_ms=tuple(s * 1000 for s in settings.window_seconds),
            currency=settings.reporting_currency,
            allowed_lateness_ms=settings.allowed_lateness_seconds * 1000,
            stale_s=float(settings.exporter_stale_seconds),
        )

    @property
    def money(self) -> int:
        """Minor units per major unit of the reporting currency."""
        return int(10 ** minor_unit_exponent(self.currency))


@dataclass(frozen=True)
class Snapshot:
    """One refresh's results; replaced whole, never changed."""

    exposition: Exposition = field(default_factory=Exposition)
    positions: tuple[Position, ...] = ()

    @property
    def refreshed_ms(self) -> int | None:
        """Wall clock of the refresh that made it; None for the empty start snapshot."""
        return self.exposition.refreshed_ms


def _cancel_requested() -> bool:
    """Whether this task was asked to stop. On Python 3.11 a cancel can get lost inside redis-py
    (``asyncio.wait_for`` swallows it when the awaited write completes at the same moment), or
    turn into a ConnectionError; the refresh loop checks, so that it stops all the same."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _by_minute(
    minutes: Iterable[int], cells: dict[c.CellKey, c.Counters]
) -> dict[int, MinuteCells]:
    found: dict[int, MinuteCells] = {m: {} for m in minutes}
    for (minute, store), counters in cells.items():
        found.setdefault(minute, {})[store] = counters
    return found


class Exporter:
    """Reads what the workers published and keeps the KPI snapshot up to date."""

    def __init__(
        self, store: ReportStore, config: ExporterConfig, *, now: Callable[[], float] = time.time
    ) -> None:
        self.store = store
        self.config = config
        self.now = now
        self.snapshot = Snapshot()
        self.errors = 0
        self.last_error: str | None = None  # of the latest refresh; None once one succeeds
        self.last_failure: tuple[int, str] | None = None  # (wall ms, error), kept after recovery
        self.running = False
        self._refreshing_since: float | None = None  # wall clock; None between refreshes
        self._trailing = Trailing(config.sizes_ms)
        self._since_ms: float | None = None  # None: read every minute next time
        self._full_at_ms = 0.0
        self._latest_minute: int | None = None
        self._visitors: dict[VisitorKey, int] = {}

    def exposition(self) -> Exposition:
        return self.snapshot.exposition

    async def refresh(self) -> Snapshot:
        """Read what changed, recompute the trailing windows and swap in a new snapshot."""
        started_ms = self.now() * 1000
        statuses = await self.store.statuses()  # before the cells: a status never runs ahead
        positions = tuple(Position.of(p, s) for p, s in sorted(statuses.items()))
        full = self._since_ms is None or started_ms - self._full_at_ms >= RESYNC_SECONDS * 1000
        minutes = await self.store.minutes(0 if full else self._since_ms or 0)
        if full or self._latest_minute is None:
            self._latest_minute = max(minutes, default=None)
        elif minutes:
            self._latest_minute = max(self._latest_minute, minutes[-1])
        end = trailing_end(
            positions,
            allowed_lateness_ms=self.config.allowed_lateness_ms,
            latest_minute=self._latest_minute,
        )
        windows: list[Window] = []
        if end is not None:
            reload = full or self._trailing.needs_reload(end)
            if reload and not full:
                minutes = await self.store.minutes(0)
            wanted = [m for m in minutes if m >= end - self._trailing.horizon_ms]
            cells = _by_minute(wanted, await self._cells(wanted))
            self._commit(end, cells, reload=reload)  # no await in there: all or nothing
            windows = self._trailing.windows()
        self._since_ms = started_ms - CLOCK_MARGIN_MS
        if full:
            self._full_at_ms = started_ms
        counts = await self._visitor_counts(windows)
        open_tickets = await self.store.open_tickets()
        self.snapshot = self._snapshot(positions, windows, counts, open_tickets, end)
        return self.snapshot

    async def _cells(self, minutes: list[int]) -> dict[c.CellKey, c.Counters]:
        """Cells of the minutes, an hour at a time: decoding a day of partials takes seconds of
        CPU, and scrapes are served in between."""
        found: dict[c.CellKey, c.Counters] = {}
        for start in range(0, len(minutes), READ_CHUNK):
            found |= await self.store.cells(minutes[start : start + READ_CHUNK])
        return found

    def _commit(self, end: int, cells: dict[int, MinuteCells], *, reload: bool) -> None:
        if reload:
            self._trailing.reset(end, cells)
            self._visitors = {}
            return
        # Visitor counts of every re-read minute are counted again, not only of minutes whose
        # cells changed: a worker's batch may add visitors without changing a cell.
        touched = self._trailing.update(cells) | set(cells)
        self._trailing.move(end)
        if touched:
            self._visitors = {
                key: n for key, n in self._visitors.items() if touched.isdisjoint(key[0])
            }

    async def _visitor_counts(self, windows: list[Window]) -> dict[VisitorKey, int]:
        """Distinct visitors of every window; unchanged unions are not counted again."""
        keys = {key for window in windows for key in window.visitor_keys()}
        known = {key: n for key, n in self._visitors.items() if key in keys}
        missing = [key for key in keys if key not in known]
        found = await self.store.visitor_counts(missing) if missing else {}
        self._visitors = known | found
        return self._visitors

    def _snapshot(
        self,
        positions: tuple[Position, ...],
        windows: list[Window],
        counts: dict[VisitorKey, int],
        open_tickets: dict[tuple[str, str, str], int],
        end: int | None,
    ) -> Snapshot:
        mark = lowest_watermark(positions)
        found = rows(windows, lambda key: counts.get(key, 0), watermark=-1, money=self.config.money)
        found += ticket_rows(open_tickets, at_ms=0, watermark=-1)  # at and final: not exposed
        latest = max((p.latest_ms for p in positions), default=-1)
        exposition = Exposition(
            families=tuple(families(found, currency=self.config.currency)),
            partitions=len(positions),
            latest_event_ms=latest if latest >= 0 else None,
            watermark_ms=mark,
            window_end_ms=end,
            refreshed_ms=round(self.now() * 1000),
        )
        return Snapshot(exposition, positions)

    async def run(self, metrics: ExporterMetrics, *, interval_s: float) -> None:
        """Refresh every ``interval_s`` until cancelled. A failed or slow refresh is counted and
        logged once per kind of error (until one succeeds); the last snapshot stays served."""
        logged: set[str] = set()
        timeout_s = max(120.0, 10 * interval_s)  # a full re-read of a big day takes a while
        self.running = True
        try:
            while True:
                started = time.monotonic()
                self._refreshing_since = self.now()
                try:
                    async with asyncio.timeout(timeout_s):
                        await self.refresh()
                except ConfigError:
                    raise  # Redis refused the password or its certificate: no retry helps
                except Exception as exc:  # Redis down or frozen (TimeoutError) included
                    if _cancel_requested():
                        raise asyncio.CancelledError from exc  # an error our cancel caused
                    # redis-py's name for a store's error (ConnectionError, ...), as before
                    kind = exc.kind if isinstance(exc, StoreError) else type(exc).__name__
                    outage = isinstance(exc, TimeoutError) or (
                        isinstance(exc, StreamprocError) and exc.retriable
                    )
                    metrics.refresh_errors.labels(kind).inc()
                    self.errors += 1
                    self.last_error = f"{kind}: {exc}" if str(exc) else kind
                    self.last_failure = (round(self.now() * 1000), self.last_error)
                    # Redis may come back having lost or rolled back data (restart without
                    # persistence, failover), which a read of what changed cannot see.
                    self._since_ms = None  # so the next refresh re-reads everything
                    if kind not in logged:
                        logged.add(kind)
                        logger.warning(
                            "refresh failed (%s); serving the last snapshot, retrying every %g s",
                            self.last_error,
                            interval_s,
                            exc_info=not outage,  # a traceback only for the unexpected
                        )
                else:
                    if logged:
                        logger.info("refresh works again")
                        logged.clear()
                    self.last_error = None
                finally:
                    self._refreshing_since = None
                    metrics.refresh_seconds.observe(time.monotonic() - started)
                if _cancel_requested():
                    raise asyncio.CancelledError
                await asyncio.sleep(max(0.0, interval_s - (time.monotonic() - started)))
        finally:
            self.running = False

    async def report(self, query: ReportQuery) -> list[Row]:
        """``/api/kpis``: the rows of ``reporting.aligned_report`` that ``query`` selects."""
        return await aligned_report(
            self.store,
            sizes_ms=self.config.sizes_ms,
            reporting_currency=self.config.currency,
            query=query,
        )

    def age_s(self) -> float | None:
        """Seconds since the last successful refresh; None before the first one."""
        refreshed_ms = self.snapshot.refreshed_ms
        if refreshed_ms is None:
            return None
        return max(0.0, self.now() - refreshed_ms / 1000)  # a clock stepped back: fresh

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """``/readyz``: ready while the last successful refresh is at most ``stale_s`` old.

        The body says why not: ``status`` is ``starting`` before the first success, ``stale``
        after; with the age, the latest refresh's error and how long a refresh has been waiting.
        """
        age = self.age_s()
        limit = self.config.stale_s
        ready = age is not None and age <= limit
        refreshed_ms = self.snapshot.refreshed_ms
        body: dict[str, Any] = {
            "status": "ready" if ready else "starting" if age is None else "stale",
            "refreshed_at": None if refreshed_ms is None else rfc3339(refreshed_ms),
            "refresh_age_seconds": None if age is None else round(age, 3),
            "stale_after_seconds": limit,
        }
        if not ready:
            because = (
                "no successful refresh yet"
                if age is None
                else f"last successful refresh {age:.1f} s ago, more than {limit:g} s"
            )
            if self.last_error is not None:
                because += f"; last error: {self.last_error}"
            body["reason"] = because
            body["last_error"] = self.last_error
            since = self._refreshing_since
            body["refreshing_for_seconds"] = (
                None if since is None else round(max(0.0, self.now() - since), 3)
            )
        return ready, body

    def status(self) -> dict[str, Any]:
        """``/api/status``: what the last snapshot knows, and the refresh loop's health."""

        def when(ms: int | None) -> str | None:
            return rfc3339(ms) if ms is not None and 0 <= ms < NEVER else None

        snap = self.snapshot
        expo = snap.exposition
        ready, readiness = self.readiness()
        return {
            "refreshed_at": when(snap.refreshed_ms),
            "refresh_age_seconds": readiness["refresh_age_seconds"],
            "ready": ready,
            "stale": readiness["status"] == "stale",
            "stale_after_seconds": self.config.stale_s,
            "refresh_errors": self.errors,
            "last_error": self.last_error,
            "last_failure": None
            if self.last_failure is None
            else {"at": when(self.last_failure[0]), "error": self.last_failure[1]},
            "windows": [window_label(s) for s in self.config.sizes_ms],
            "trailing_end": when(expo.window_end_ms),
            "watermark": when(expo.watermark_ms),
            "latest_event_time": when(expo.latest_event_ms),
            "final": bool(snap.positions) and all(p.ended for p in snap.positions),
            "series": expo.series,
            "partitions": [
                {
                    "partition": p.partition,
                    "watermark": "final" if p.ended else when(p.watermark),
                    "latest_event_time": when(p.latest_ms),
                    "published_at": when(p.at_ms or None),
                }
                for p in snap.positions
            ],
        }
