"""The refresh without Redis: incremental results equal results from scratch, unchanged visitor
unions are not counted again, the refresh loop stops even when a cancel gets lost, and readiness
follows the age of the last successful refresh (an injected clock)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from typing import Any

import pytest
from memstore import FakeStore
from prometheus_client import CollectorRegistry

from streamproc.errors import StoreUnavailable
from streamproc.exporter import Exporter, ExporterConfig
from streamproc.exporter.service import CLOCK_MARGIN_MS
from streamproc.kpi.epoch import rfc3339
from streamproc.metrics import ExporterMetrics

M = 60_000
T = 1_790_000_040_000
CONFIG = ExporterConfig(sizes_ms=(M, 5 * M), currency="USD", allowed_lateness_ms=120_000)


def exporter(store: FakeStore, clock: list[float], config: ExporterConfig = CONFIG) -> Exporter:
    return Exporter(store, config, now=lambda: clock[0])


async def test_incremental_refreshes_equal_fresh_ones() -> None:
    clock = [T / 1000 + 600]
    store = FakeStore(clock)
    store.put(T, "s1", sessions=2, orders=1)
    store.put(T + M, "s2", sessions=3)
    store.reached(0, T + 2 * M + 5)
    live = exporter(store, clock)
    steps = [
        lambda: store.put(T + 2 * M, "s1", sessions=1),  # the minute in progress
        lambda: store.reached(0, T + 3 * M),  # ...is complete now
        lambda: store.put(T, "s1", sessions=4, orders=1),  # a late event amends a minute
        lambda: store.reached(1, T + M + 30_000),  # a new partition, behind: the end moves back
        lambda: store.reached(1, T + 9 * M),  # both far ahead: the 5m window is empty
        lambda: None,
    ]
    for step in steps:
        step()
        clock[0] += 5
        await live.refresh()
        fresh = exporter(store, clock)
        await fresh.refresh()
        assert live.snapshot.exposition == fresh.snapshot.exposition


async def test_unchanged_visitor_unions_are_not_counted_again() -> None:
    clock = [T / 1000 + 600]
    store = FakeStore(clock)
    store.put(T, "s1", sessions=2, visitor_marks=2)
    store.reached(0, T + M + 5)
    live = exporter(store, clock)
    await live.refresh()
    # (all, s1) x (no dimension + 14): the 1m and 5m windows hold the same minute, one union
    assert store.visitor_calls == [2 * 15]
    clock[0] += 5
    await live.refresh()
    # Stamped within the clock margin: re-read, and its visitors counted again (a batch may
    # add visitors without changing a cell).
    assert store.visitor_calls[1:] == [2 * 15]
    clock[0] += CLOCK_MARGIN_MS / 1000 + 1
    await live.refresh()  # re-reads from a margin before the previous refresh: still the minute
    calls = len(store.visitor_calls)
    clock[0] += 5
    await live.refresh()  # the stamp is older than that now: the union is not counted again
    assert store.visitor_calls[calls:] == []
    store.put(T, "s1", sessions=2, visitor_marks=3)  # somebody else came by
    clock[0] += 5
    await live.refresh()
    assert store.visitor_calls[calls:] == [2 * 15]


class LosesCancels(FakeStore):
    """Turns a cancel into an error, as redis-py can on Python 3.11."""

    async def statuses(self) -> dict[int, dict[str, Any]]:
        try:
            await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            raise ConnectionError("Connection closed by server.") from None
        return {}


async def test_the_refresh_loop_stops_even_when_a_cancel_is_lost() -> None:
    clock = [T / 1000]
    service = exporter(LosesCancels(clock), clock)
    metrics = ExporterMetrics.create(CollectorRegistry(), exposition=service.exposition)
    task = asyncio.create_task(service.run(metrics, interval_s=0.001))
    await asyncio.sleep(0.05)
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=1)
    assert done == {task} and task.cancelled()
    assert service.errors == 0 and not service.running


STALE = dataclasses.replace(CONFIG, stale_s=10.0)


async def test_ready_while_the_last_successful_refresh_is_recent() -> None:
    clock = [T / 1000 + 600]
    store = FakeStore(clock)
    store.put(T, "s1", sessions=2)
    store.reached(0, T + M + 5)
    service = exporter(store, clock, STALE)
    ready, body = service.readiness()
    assert not ready
    assert body == {
        "status": "starting",
        "refreshed_at": None,
        "refresh_age_seconds": None,
        "stale_after_seconds": 10.0,
        "reason": "no successful refresh yet",
        "last_error": None,
        "refreshing_for_seconds": None,
    }
    status = service.status()
    assert (status["ready"], status["stale"], status["refreshed_at"]) == (False, False, None)

    await service.refresh()
    refreshed_at = rfc3339(round(clock[0] * 1000))
    assert service.readiness() == (
        True,
        {
            "status": "ready",
            "refreshed_at": refreshed_at,
            "refresh_age_seconds": 0.0,
            "stale_after_seconds": 10.0,
        },
    )
    clock[0] += 10  # at the limit: still ready
    assert service.readiness()[0] and service.status()["refresh_age_seconds"] == 10.0
    clock[0] += 0.5
    ready, body = service.readiness()
    assert not ready
    assert body["status"] == "stale" and body["refreshed_at"] == refreshed_at
    assert body["refresh_age_seconds"] == 10.5
    assert body["reason"] == "last successful refresh 10.5 s ago, more than 10 s"
    status = service.status()
    assert (status["ready"], status["stale"]) == (False, True)
    await service.refresh()
    assert service.readiness()[0]


class Breaks(FakeStore):
    """Raises ``failure`` on every read while it is set, as a store whose Redis is down."""

    failure: Exception | None = None

    async def statuses(self) -> dict[int, dict[str, Any]]:
        if self.failure is not None:
            raise self.failure
        return await super().statuses()


async def until(check: Callable[[], bool], *, timeout_s: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.002)


@pytest.mark.parametrize(
    ("failure", "kind"),
    [
        (
            StoreUnavailable("Error 111 connecting to 127.0.0.1:6379.", kind="ConnectionError"),
            "ConnectionError",  # redis-py's name, as KpiStore maps it
        ),
        (StoreUnavailable("Timeout reading from socket", kind="TimeoutError"), "TimeoutError"),
        (TimeoutError(), "TimeoutError"),  # the refresh's overall asyncio.timeout
    ],
    ids=["refused", "socket-timeout", "refresh-timeout"],
)
async def test_last_error_clears_once_a_refresh_succeeds(failure: Exception, kind: str) -> None:
    clock = [T / 1000 + 600]
    store = Breaks(clock)
    store.reached(0, T + M + 5)
    service = exporter(store, clock, STALE)
    metrics = ExporterMetrics.create(CollectorRegistry(), exposition=service.exposition)
    task = asyncio.create_task(service.run(metrics, interval_s=0.001))
    try:
        await until(lambda: service.snapshot.refreshed_ms is not None)
        store.failure = failure
        clock[0] += 11
        await until(lambda: service.errors >= 2)
        error = kind + (f": {failure}" if str(failure) else "")
        ready, body = service.readiness()
        assert not ready and body["status"] == "stale" and body["last_error"] == error
        assert (
            body["reason"]
            == f"last successful refresh 11.0 s ago, more than 10 s; last error: {error}"
        )
        assert metrics.registry.get_sample_value(
            "streamproc_exporter_refresh_errors_total", {"kind": kind}
        ) == pytest.approx(service.errors, abs=1)  # the loop may be one failure ahead

        store.failure = None
        await until(lambda: service.last_error is None)
        assert service.readiness()[0]
        status = service.status()
        assert status["last_error"] is None and status["refresh_errors"] >= 2
        assert status["last_failure"] == {"at": rfc3339(round(clock[0] * 1000)), "error": error}
    finally:
        task.cancel()
        await asyncio.wait([task], timeout=1)


async def test_after_a_failed_refresh_everything_is_read_again() -> None:
    """Redis came back without a minute it had (no persistence): the next refresh must not keep
    serving it, though no read of what changed since could tell."""
    clock = [T / 1000 + 600]
    store = Breaks(clock)
    store.put(T, "s1", sessions=3)
    store.reached(0, T + 2 * M + 5)
    service = exporter(store, clock)
    metrics = ExporterMetrics.create(CollectorRegistry(), exposition=service.exposition)
    task = asyncio.create_task(service.run(metrics, interval_s=0.001))
    try:
        await until(lambda: service.snapshot.refreshed_ms is not None)
        store.failure = StoreUnavailable("Connection closed by server.", kind="ConnectionError")
        await until(lambda: service.errors > 0)
        store.cells_.clear()  # the restarted Redis lost minute T ...
        store.changed.clear()
        store.put(T + M, "s1", sessions=3)  # ... and got the next one, in the same window
        store.reached(0, T + 3 * M + 5)
        clock[0] += 5
        store.failure = None
        await until(lambda: service.last_error is None)
        fresh = exporter(store, clock)
        await fresh.refresh()
        assert service.snapshot.exposition == fresh.snapshot.exposition
    finally:
        task.cancel()
        await asyncio.wait([task], timeout=1)


class Hangs(FakeStore):
    """Never answers once ``frozen`` is set, as a SIGSTOPped Redis without a socket timeout."""

    def __init__(self, clock: list[float]) -> None:
        super().__init__(clock)
        self.frozen = False
        self.hanging = asyncio.Event()  # set once a read hangs

    async def statuses(self) -> dict[int, dict[str, Any]]:
        if self.frozen:
            self.hanging.set()
            await asyncio.Event().wait()
        return await super().statuses()


async def test_a_hanging_refresh_makes_the_exporter_stale_not_dead() -> None:
    clock = [T / 1000 + 600]
    store = Hangs(clock)
    store.reached(0, T + M + 5)
    service = exporter(store, clock, STALE)
    metrics = ExporterMetrics.create(CollectorRegistry(), exposition=service.exposition)
    task = asyncio.create_task(service.run(metrics, interval_s=0.001))
    try:
        await until(lambda: service.snapshot.refreshed_ms is not None)
        store.frozen = True
        await asyncio.wait_for(store.hanging.wait(), 5)
        clock[0] += 30
        ready, body = service.readiness()
        assert not ready and service.running  # /readyz 503, /healthz still 200
        assert body["refresh_age_seconds"] == pytest.approx(30, abs=0.01)
        assert body["refreshing_for_seconds"] == 30.0 and body["last_error"] is None
    finally:
        task.cancel()
        await asyncio.wait([task], timeout=1)
    assert task.cancelled()
