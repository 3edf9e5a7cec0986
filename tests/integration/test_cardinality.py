"""A cardinality flood through a live worker and exporter: 100 k sessions, each of its own
store_id and channel_group, each viewing a product of its own. The exported series stay within
the caps (STREAMPROC_MAX_STORES stores, the contract's channel groups, no product label), the
worker's and the exporter's memory stay bounded, and the totals are right."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from aiokafka import AIOKafkaProducer
from helpers import family, make_event
from procs import StreamprocProcess, live_env

from streamproc import metrics
from streamproc.devstack import StackInfo
from streamproc.events.models import CHANNEL_GROUPS
from streamproc.events.routing import key_for

pytestmark = pytest.mark.integration

SESSIONS = 100_000
MAX_STORES = 50
# About twice what this flood measured (worker 270 MiB: 100 k open sessions in its state;
# exporter 69 MiB: 52 stores' series, however many store ids came).
WORKER_RSS_MIB = 600
EXPORTER_RSS_MIB = 150


def _flood(start_ms: int) -> list[dict[str, Any]]:
    events = []
    for n in range(SESSIONS):
        sid, at = f"s{n}", start_ms + (n * 300_000) // SESSIONS  # over 5 minutes
        envelope = {"store_id": f"st-{n}", "session_id": sid, "visitor_id": f"v{n}"}
        events.append(
            make_event("session_start", event_id=f"{sid}-0", event_time=at, **envelope)
            | {"channel_group": f"ch-{n}"}
        )
        events.append(
            make_event(
                "product_view",
                event_id=f"{sid}-1",
                event_time=at + 1_000,
                product_id=f"prod-{n}",
                **envelope,
            )
        )
    return events


async def _send(bootstrap: str, env: dict[str, str], events: list[dict[str, Any]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, acks=1)
    await producer.start()
    try:
        sent = []
        for event in events:
            fam = family(event["event_type"])
            key = key_for(event, fam)
            sent.append(
                await producer.send(
                    env[f"STREAMPROC_TOPIC_{fam.value.upper()}"],
                    json.dumps(event).encode(),
                    key=key.encode() if key else None,
                    timestamp_ms=event["event_time"],
                )
            )
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


def _rss_mib(proc: StreamprocProcess) -> float:
    assert proc.proc is not None
    return float(psutil.Process(proc.proc.pid).memory_info().rss) / 2**20


def _sessions(page: metrics.Scrape, **labels: str) -> float:
    found = page.overall(
        "shop_sessions", window="1h", channel_group="all", device_type="all", **labels
    )
    return -1.0 if found is None else float(found)


def test_a_flood_of_labels_stays_within_the_caps(
    stack: StackInfo, namespace: str, tmp_path: Path
) -> None:
    now = int(time.time() * 1000)
    start_ms = now - now % 60_000 - 10 * 60_000
    events = _flood(start_ms)
    env, worker_port, exporter_port = live_env(
        namespace, stack, max_stores=MAX_STORES, windows="1m,1h"
    )
    with (
        StreamprocProcess(["worker"], env, tmp_path / "worker.log") as worker,
        StreamprocProcess(["exporter"], env, tmp_path / "exporter.log") as exporter,
    ):
        asyncio.run(_send(stack.bootstrap_servers, env, events))
        worker_url = f"http://127.0.0.1:{worker_port}/metrics"
        exporter_url = f"http://127.0.0.1:{exporter_port}/metrics"
        deadline = time.monotonic() + 240
        page: metrics.Scrape | None = None
        while time.monotonic() < deadline:
            try:
                done = metrics.scrape(worker_url).total("streamproc_events_total")
                page = metrics.scrape(exporter_url, timeout=30)
            except OSError:
                done = 0
            if done >= len(events) and page and _sessions(page, store_id="all") >= SESSIONS:
                break
            time.sleep(2)
        else:
            raise AssertionError(f"the flood was not counted in time:\n{worker.log[-3000:]}")
        worker_rss, exporter_rss = _rss_mib(worker), _rss_mib(exporter)
        text = exporter.log
    assert page is not None
    stores = set(page.by("shop_sessions", "store_id"))
    assert len(stores - {"all", "other"}) == MAX_STORES and {"all", "other"} <= stores
    groups = set(page.by("shop_sessions", "channel_group"))
    assert groups <= CHANNEL_GROUPS | {"all"}, groups
    labels = {(k, v) for sample in page.samples for k, v in sample.labels.items()}
    assert not [kv for kv in labels if "prod" in kv[0] or kv[1].startswith(("prod-", "ch-"))]
    assert len(page.samples) < 5_000  # 1,764 here (windows 1m and 1h); 52 stores at most
    # the totals: every session counted once, whichever label it got
    assert _sessions(page, store_id="all") == SESSIONS
    per_store = [_sessions(page, store_id=s) for s in stores - {"all"}]
    assert sum(per_store) == SESSIONS
    assert worker_rss < WORKER_RSS_MIB and exporter_rss < EXPORTER_RSS_MIB, (
        worker_rss,
        exporter_rss,
    )
    assert "Traceback" not in text
