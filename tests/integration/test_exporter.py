"""The exporter against a real Redis: two partitions' partials, published the way workers publish
them, come out of /metrics as the hand-computed KPIs of the trailing windows, and out of /api/kpis
as the aligned report; a failing Redis leaves the last snapshot served and is counted."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from helpers import until
from prometheus_client import CollectorRegistry
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from streamproc.exporter import Exporter, ExporterConfig, serve
from streamproc.exporter.names import METRICS
from streamproc.kpi import counters as c
from streamproc.kpi.epoch import rfc3339
from streamproc.metrics import ExporterMetrics
from streamproc.reporting import aligned_report
from streamproc.store import KpiStore, PartitionStatus

pytestmark = pytest.mark.integration

M = 60_000
T = 1_790_000_040_000  # 2026-09-21T14:14:00Z, the 5th minute of an aligned 5-minute window
A, B, C, D = T, T + M, T + 2 * M, T + 3 * M
LATENESS = 120_000
NOW_S = D / 1000 + 42.0  # the exporter's clock
CONFIG = ExporterConfig(sizes_ms=(M, 5 * M), currency="USD", allowed_lateness_ms=LATENESS)


def cell(**counts: int) -> c.Counters:
    return {name: n for name, n in counts.items() if n}


def traffic(sessions: int, orders: int, revenue: int, *, channel: str, device: str) -> c.Counters:
    counters: c.Counters = {}
    for name, amount in ((c.SESSIONS, sessions), (c.ORDERS, orders), (c.REVENUE, revenue)):
        c.add_dimensioned(counters, name, amount, channel=channel, device=device)
    return counters


def status(partition: int, latest: int, *others: int) -> PartitionStatus:
    return PartitionStatus(partition, latest - LATENESS, [latest, *others], int(NOW_S * 1000))


async def seed(store: KpiStore) -> None:
    """Partition 0 has read up to D+10s, partition 1 up to C+30s: the trailing end is C."""
    support = {
        f"{c.FIRST_RESPONSE}_bucket|0": 2,  # <= 15 s
        f"{c.FIRST_RESPONSE}_bucket|2": 2,  # 30-60 s
        "first_response_count": 4,
        "first_response_sum_ms": 100_000,
        c.TICKETS_OPENED: 2,
        c.dim(c.TICKETS_OPENED, "channel=chat"): 2,
    }
    await store.publish(
        0,
        cells={
            (A, "s1"): traffic(2, 1, 2500, channel="email", device="mobile") | support,
            (B, "s1"): traffic(1, 0, 0, channel="direct", device="desktop"),
            (D, "s1"): traffic(5, 0, 0, channel="direct", device="desktop"),  # still filling
        },
        presence=[
            (A, "s1", "", "v1"),
            (A, "s1", "", "v2"),
            (A, "s1", "channel_group=email", "v1"),
            (A, "s1", "channel_group=email", "v2"),
            (B, "s1", "", "v4"),
        ],
        open_tickets={("s1", "chat", "high"): 2},
        status=status(0, D + 10_000, -1, A + 5_000, A + 30_000),
    )
    await store.publish(
        1,
        cells={
            (A, "s2"): traffic(3, 1, 1000, channel="other", device="desktop"),
            (B, "s1"): traffic(1, 1, 500, channel="direct", device="desktop"),
        },
        presence=[(A, "s2", "", "v2"), (A, "s2", "", "v3"), (B, "s1", "", "v1")],
        open_tickets={("s1", "email", "low"): 1, ("s2", "chat", "low"): 3},
        status=status(1, C + 30_000, C + 1_000, -1, -1),
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Running:
    exporter: Exporter
    url: str
    http: aiohttp.ClientSession

    async def get(self, path: str, **params: Any) -> tuple[int, Any]:
        async with self.http.get(self.url + path, params=params) as response:
            if response.content_type == "application/json":
                return response.status, await response.json()
            return response.status, await response.text()

    async def scrape(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        status, text = await self.get("/metrics")
        assert status == 200
        return {
            (s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }


@pytest.fixture
async def store(stack: Any, namespace: str) -> AsyncIterator[KpiStore]:
    store = KpiStore.connect(stack.redis_url, namespace)
    try:
        yield store
    finally:
        await store.drop()
        await store.aclose()


@pytest.fixture
async def running(stack: Any, namespace: str, store: KpiStore) -> AsyncIterator[Running]:
    await seed(store)
    exporter = Exporter(KpiStore.connect(stack.redis_url, namespace), CONFIG, now=lambda: NOW_S)
    metrics = ExporterMetrics.create(
        CollectorRegistry(), exposition=exporter.exposition, now=lambda: NOW_S
    )
    started: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    stop = asyncio.Event()
    task = asyncio.create_task(
        serve(
            exporter, metrics, bind="127.0.0.1", port=0, interval_s=0.05,
            on_started=started.set_result, stop=stop,
        )
    )  # fmt: skip
    url = await asyncio.wait_for(started, 5)
    await until(lambda: exporter.snapshot.refreshed_ms is not None)
    async with aiohttp.ClientSession() as http:
        yield Running(exporter, url, http)
    stop.set()
    await asyncio.wait_for(task, 5)


async def test_metrics_negotiate_openmetrics_and_gzip(running: Running) -> None:
    """prometheus_client's aiohttp handler: OpenMetrics to a scraper that asks for it, gzip to
    one that accepts it, the same samples as the text format."""
    text_format = await running.scrape()
    headers = {
        "Accept": "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        "Accept-Encoding": "gzip",
    }
    async with running.http.get(running.url + "/metrics", headers=headers) as response:
        assert response.status == 200
        assert response.headers["Content-Encoding"] == "gzip"
        assert response.content_type == "application/openmetrics-text"
        body = await response.text()  # decompressed by the client
    assert body.endswith("# EOF\n")
    openmetrics = {
        (s.name, frozenset(s.labels.items())): s.value
        for family in openmetrics_families(body)
        for s in family.samples
    }
    shop = {key: value for key, value in text_format.items() if key[0].startswith("shop_")}
    assert shop and all(openmetrics[key] == value for key, value in shop.items())


def sample(name: str, window: str | None = "5m", store: str = "all", **labels: str) -> Any:
    """The key of one sample; breakdown labels not given are "all"."""
    metric = next(m for m in METRICS.values() if m.name == name)
    full = {"window": window, "store_id": store, "currency": "USD", **labels}
    full |= {key: labels.get(key, "all") for key in metric.breakdown}
    return (name, frozenset((k, full[k]) for k in metric.label_names))


async def test_metrics_are_the_kpis_of_the_trailing_windows(running: Running) -> None:
    scraped = await running.scrape()
    expected = {
        # 1m = [B, C): s1 on both partitions
        sample("shop_sessions", "1m"): 2,
        sample("shop_sessions", "1m", "s1", channel_group="direct"): 2,
        sample("shop_orders", "1m"): 1,
        sample("shop_revenue", "1m"): 5.0,
        sample("shop_conversion_ratio", "1m"): 0.5,
        sample("shop_unique_visitors", "1m"): 2,
        # 5m = [C - 5m, C): minutes A and B, both partitions, both stores
        sample("shop_sessions"): 7,
        sample("shop_sessions", store="s1"): 4,
        sample("shop_sessions", store="s2"): 3,
        sample("shop_sessions", channel_group="email"): 2,
        sample("shop_sessions", device_type="desktop"): 5,
        sample("shop_orders"): 3,
        sample("shop_revenue"): 40.0,
        sample("shop_revenue", store="s1"): 30.0,
        sample("shop_net_revenue"): 40.0,
        sample("shop_conversion_ratio"): 3 / 7,
        sample("shop_conversion_ratio", store="s2", device_type="desktop"): 1 / 3,
        sample("shop_average_order_value"): 40.0 / 3,
        sample("shop_unique_visitors"): 4,  # v1 v2 v3 v4 over both partitions
        sample("shop_unique_visitors", store="s1"): 3,
        sample("shop_unique_visitors", store="s1", channel_group="email"): 2,
        sample("shop_revenue_per_visitor"): 10.0,
        sample("shop_first_response_seconds", quantile="0.5"): 15.0,
        sample("shop_first_response_seconds", quantile="0.9"): 54.0,  # 30 + 30 * (3.6 - 2) / 2
        sample("shop_first_response_seconds", quantile="0.99"): 59.4,  # 30 + 30 * 1.96 / 2
        sample("shop_first_response_mean_seconds"): 25.0,
        sample("shop_tickets_opened", channel="chat"): 2,
        sample("shop_tickets_opened"): 2,
        # open tickets, now: summed over partitions
        sample("shop_open_tickets", None): 6,
        sample("shop_open_tickets", None, channel="chat"): 5,
        sample("shop_open_tickets", None, priority="low"): 4,
        sample("shop_open_tickets", None, "s1"): 3,
        sample("shop_open_tickets", None, "s2", channel="chat"): 3,
        # the exporter's view of progress
        ("streamproc_exporter_partitions", frozenset()): 2,
        ("streamproc_exporter_window_end_timestamp_seconds", frozenset()): C / 1000,
        ("streamproc_exporter_watermark_timestamp_seconds", frozenset()): (C + 30_000 - LATENESS)
        / 1000,
        ("streamproc_exporter_event_time_lag_seconds", frozenset()): 32.0,  # NOW - (D + 10 s)
        ("streamproc_exporter_last_refresh_timestamp_seconds", frozenset()): NOW_S,
    }
    assert {key: scraped.get(key) for key in expected} == pytest.approx(expected)
    zero = [  # counts and money of a store with data in the largest window: 0, not absent
        sample("shop_sessions", "1m", "s2"),  # no data of s2 in its minute
        sample("shop_orders", "1m", "s2"),
        sample("shop_revenue", "1m", "s2"),
        sample("shop_tickets_opened", "1m", "s2"),
    ]
    assert [scraped.get(key) for key in zero] == [0.0] * len(zero)
    absent = [
        sample("shop_conversion_ratio", "1m", "s2"),  # 0 sessions: no denominator
        sample("shop_bounce_ratio"),  # no closed sessions: no denominator
        sample("shop_first_response_seconds", "1m", quantile="0.5"),
    ]
    assert [key for key in absent if key in scraped] == []
    assert all(not (name == "shop_sessions" and v == 12) for (name, _), v in scraped.items())


async def test_trailing_windows_follow_new_data(running: Running, store: KpiStore) -> None:
    await store.publish(
        1,
        cells={(C, "s1"): traffic(4, 0, 0, channel="direct", device="desktop")},
        presence=[],
        open_tickets=None,
        status=status(1, D + 5_000, C + 1_000, -1, -1),
    )
    exporter = running.exporter
    await until(lambda: exporter.snapshot.exposition.window_end_ms == D)
    scraped = await running.scrape()
    assert scraped[sample("shop_sessions", "1m")] == 4  # [C, D)
    assert scraped[sample("shop_sessions")] == 11  # [D - 5m, D): A, B, C
    assert scraped[sample("shop_sessions", "1m", "s2")] == 0  # s2 is in the 5m window only
    # the incremental result equals one computed from scratch
    fresh = Exporter(store, CONFIG, now=lambda: NOW_S)
    await fresh.refresh()
    assert fresh.snapshot.exposition == exporter.snapshot.exposition


async def test_api_kpis_is_the_aligned_report_filtered(running: Running, store: KpiStore) -> None:
    status, everything = await running.get("/api/kpis")
    assert status == 200
    assert everything == await aligned_report(store, sizes_ms=[M, 5 * M], reporting_currency="USD")
    assert {row["window"] for row in everything} == {"1m", "5m", "now"}

    status, found = await running.get(
        "/api/kpis", kpi="orders", window="1m", store_id="s1", dimension="none"
    )
    assert status == 200
    assert [(r["start"], r["value"], r["final"]) for r in found] == [
        (rfc3339(A), 1.0, False),  # open: the lowest watermark is A + 30 s
        (rfc3339(B), 1.0, False),
        (rfc3339(D), 0.0, False),  # s1 had events in D, but no order: zero is a value
    ]
    status, found = await running.get(
        "/api/kpis", kpi="orders", dimension="none", **{"from": rfc3339(B), "to": rfc3339(C)}
    )
    assert {(r["window"], r["start"], r["store_id"]) for r in found} == {
        ("1m", rfc3339(B), "all"), ("1m", rfc3339(B), "s1"),
        ("5m", rfc3339(B), "all"), ("5m", rfc3339(B), "s1"),
    }  # fmt: skip
    status, found = await running.get("/api/kpis", kpi="open_tickets", dimension="priority=low")
    assert [(r["store_id"], r["value"]) for r in found] == [("all", 4.0), ("s1", 1.0), ("s2", 3.0)]

    status, error = await running.get("/api/kpis", window="2h")
    assert status == 400
    assert error == {"error": "window: '2h' is not reported; one of 1m, 5m, now"}
    status, error = await running.get("/api/kpis", since="2026-01-01T00:00:00Z")
    assert status == 400 and error["error"].startswith("unknown parameter 'since'")


async def test_status_and_health(running: Running) -> None:
    status, body = await running.get("/api/status")
    assert status == 200
    assert body["trailing_end"] == rfc3339(C)
    assert body["watermark"] == rfc3339(C + 30_000 - LATENESS)
    assert body["latest_event_time"] == rfc3339(D + 10_000)
    assert body["windows"] == ["1m", "5m"] and body["refresh_errors"] == 0
    assert [p["partition"] for p in body["partitions"]] == [0, 1]
    assert body["partitions"][1]["latest_event_time"] == rfc3339(C + 30_000)
    assert (body["ready"], body["stale"], body["refresh_age_seconds"]) == (True, False, 0.0)
    assert body["last_error"] is None and body["last_failure"] is None
    assert await running.get("/healthz") == (200, {"status": "ok"})
    assert await running.get("/readyz") == (
        200,
        {
            "status": "ready",
            "refreshed_at": rfc3339(int(NOW_S * 1000)),
            "refresh_age_seconds": 0.0,
            "stale_after_seconds": 60.0,
        },
    )


async def test_a_failing_redis_keeps_the_last_snapshot_served(
    running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    exporter = running.exporter
    before = await running.scrape()
    working = exporter.store
    exporter.store = KpiStore.connect(f"redis://127.0.0.1:{free_port()}/0", "nowhere")
    caplog.set_level(logging.INFO, logger="streamproc.exporter")
    try:
        await until(lambda: exporter.errors >= 3)
        during = await running.scrape()
        errors = (
            "streamproc_exporter_refresh_errors_total",
            frozenset({("kind", "ConnectionError")}),
        )
        assert during[errors] >= 3
        shop = {key: v for key, v in during.items() if key[0].startswith("shop_")}
        assert shop == {key: v for key, v in before.items() if key[0].startswith("shop_")}
        _, body = await running.get("/api/status")
        assert body["refresh_errors"] >= 3 and body["last_error"].startswith("ConnectionError")
        assert (await running.get("/api/kpis"))[0] == 503
        assert (await running.get("/healthz"))[0] == 200
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "ConnectionError" in warnings[0].getMessage()
    finally:
        broken, exporter.store = exporter.store, working
        with contextlib.suppress(Exception):
            await broken.aclose()
    errors_then = exporter.errors
    await until(lambda: any("works again" in r.getMessage() for r in caplog.records))
    assert exporter.errors == errors_then
    _, body = await running.get("/api/status")
    assert body["last_error"] is None and body["refresh_errors"] == errors_then
    assert body["last_failure"]["error"].startswith("ConnectionError")
