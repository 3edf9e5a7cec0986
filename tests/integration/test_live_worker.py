"""A live worker and the exporter, no replay: what the product promises while it runs.

One worker (idle timeout 2 s) and one exporter on the embedded broker and a real Redis; events
are sent by hand, half an hour in the past, then nothing more:

* windows, sessions and carts close when traffic stops, with no further event (the worker's
  ticks move the watermark on with the wall clock);
* with a store cap of 2, the third and fourth store are counted as ``other`` and the totals
  still hold;
* a late order (its minute closed, within ``max_lateness``) amends that minute in the report and
  the trailing window on ``/metrics``; an event beyond ``max_lateness`` is dead-lettered as
  ``too_late``; both are counted in the worker's metrics.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from helpers import dumps, family, make_event
from procs import StreamprocProcess, live_env

from streamproc import metrics
from streamproc.deadletter import DeadLetter
from streamproc.devstack import StackInfo
from streamproc.events.routing import key_for
from streamproc.kpi.epoch import rfc3339

pytestmark = pytest.mark.integration

MINUTE_MS = 60_000


def _minute_ago(minutes: int) -> int:
    now = int(time.time() * 1000)
    return now - now % MINUTE_MS - minutes * MINUTE_MS


def _session(
    store: str, sid: str, start_ms: int, *kinds: str, **extra: Any
) -> list[dict[str, Any]]:
    """Events of one session, one second apart, in the minute of ``start_ms``."""
    events = []
    for n, kind in enumerate(kinds):
        fields = {"store_id": store, "session_id": sid, "visitor_id": f"v-{sid}"}
        fields |= {"cart_id": f"cart-{sid}"} if family(kind).value == "cart" else {}
        fields |= extra if kind == "order_placed" else {}
        if kind == "order_placed":
            fields |= {"order_id": f"order-{sid}", "cart_id": f"cart-{sid}", "items": None}
        events.append(
            make_event(
                kind, event_id=f"{sid}-{n}", event_time=start_ms + 5_000 + n * 1_000, **fields
            )
        )
    return events


async def _send(bootstrap: str, env: dict[str, str], events: list[dict[str, Any]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for event in events:
            fam = family(event["event_type"])
            key = key_for(event, fam)
            topic = env[f"STREAMPROC_TOPIC_{fam.value.upper()}"]
            await producer.send_and_wait(
                topic,
                dumps(event),
                key=key.encode() if key else None,
                timestamp_ms=event["event_time"],
            )
    finally:
        await producer.stop()


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


def _wait(check: Callable[[], Any], seconds: float, what: str) -> Any:
    deadline = time.monotonic() + seconds
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except OSError as error:
            last = error
        else:
            if last:
                return last
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


class Views:
    """The exporter's report rows of one minute, and its /metrics samples."""

    def __init__(self, port: int, minute_ms: int) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.minute_ms = minute_ms

    def rows(self) -> dict[tuple[str, str], dict[str, Any]]:
        """(kpi, store_id) -> row of the 1m window at ``minute``, without dimensions."""
        span = f"from={rfc3339(self.minute_ms)}&to={rfc3339(self.minute_ms + MINUTE_MS)}"
        found = _get_json(f"{self.base}/api/kpis?window=1m&dimension=none&{span}")
        start = rfc3339(self.minute_ms)
        return {(r["kpi"], r["store_id"]): r for r in found if r["start"] == start}

    def gauge(self, name: str, **labels: str) -> float | None:
        return metrics.scrape(f"{self.base}/metrics").overall(name, **labels)


async def test_idle_close_label_caps_and_late_events_through_the_live_pipeline(
    stack: StackInfo, namespace: str, tmp_path: Path
) -> None:
    env, worker_port, exporter_port = live_env(
        namespace,
        stack,
        idle_timeout_seconds=2,
        session_timeout_seconds=60,
        abandonment_timeout_seconds=60,
        max_lateness_seconds=3600,
        max_stores=2,
        windows="1m,1h",
    )
    m0 = _minute_ago(30)
    first = [  # the first two stores seen keep their label (the cap is 2) ...
        *_session("s1", "a", m0, "page_view", "add_to_cart", "checkout_started", "order_placed"),
        *_session("s2", "b", m0, "page_view", "add_to_cart"),  # abandoned
    ]
    then = [  # ... these two, seen later, are `other`
        *_session("s3", "c", m0, "page_view"),  # a bounce
        *_session("s4", "d", m0, "page_view", "page_view"),
    ]
    for event in first:
        if event["event_type"] == "order_placed":
            event |= {"total_minor": 5000, "currency": "USD"}
    await _send(stack.bootstrap_servers, env, first)

    logs = tmp_path
    with (
        StreamprocProcess(["worker"], env, logs / "worker.log") as worker,
        StreamprocProcess(["exporter"], env, logs / "exporter.log") as exporter,
    ):
        views = Views(exporter_port, m0)
        worker_metrics = f"http://127.0.0.1:{worker_port}/metrics"
        _wait(
            lambda: metrics.scrape(worker_metrics).total("streamproc_events_total") >= len(first),
            60,
            "the first two stores' events to be read",
        )
        await _send(stack.bootstrap_servers, env, then)

        def decided() -> dict[tuple[str, str], dict[str, Any]] | None:
            rows = views.rows()
            row = rows.get(("cart_abandonment_rate", "all"))
            return rows if row is not None and row["final"] else None

        rows = _wait(decided, 90, "the carts of the idle minute to be decided")
        sessions = {s: rows[("sessions", s)]["value"] for s in ("all", "s1", "s2", "other")}
        assert sessions == {"all": 4, "s1": 1, "s2": 1, "other": 2}, worker.log[-2000:]
        assert not {key for key in rows if key[1] in ("s3", "s4")}
        assert rows[("cart_abandonment_rate", "all")]["value"] == 0.5
        assert rows[("cart_abandonment_rate", "s2")]["value"] == 1.0
        bounce = rows[("bounce_rate", "all")]
        assert (bounce["numerator"], bounce["denominator"], bounce["final"]) == (1, 4, True)
        assert rows[("orders", "all")]["value"] == 1
        assert rows[("unique_visitors", "other")]["value"] == 2

        orders_1h = _wait(
            lambda: views.gauge("shop_orders", window="1h", store_id="all"), 30, "/metrics"
        )
        assert orders_1h == 1
        assert views.gauge("shop_sessions", window="1h", store_id="other") == 2

        # The minute is closed: a late order amends it; one from 3 h ago is too late.
        late = make_event(
            "order_placed",
            event_id="late-order",
            event_time=m0 + 20_000,
            store_id="s1",
            order_id="late-order",
            total_minor=3000,
            currency="USD",
            session_id=None,
            cart_id=None,
            items=None,
        )
        too_late = make_event(
            "page_view",
            event_id="too-late",
            event_time=_minute_ago(180),
            store_id="s1",
            session_id="z",
            visitor_id="v-z",
        )
        await _send(stack.bootstrap_servers, env, [late, too_late])

        def amended() -> dict[tuple[str, str], dict[str, Any]] | None:
            rows = views.rows()
            return rows if rows[("orders", "all")]["value"] == 2 else None

        rows = _wait(amended, 60, "the late order in the closed minute")
        assert rows[("revenue", "all")]["value"] == 80.0
        assert rows[("revenue", "s1")]["value"] == 80.0
        assert rows[("sessions", "all")]["value"] == 4  # the too-late session is not counted
        _wait(
            lambda: views.gauge("shop_orders", window="1h", store_id="all") == 2,
            30,
            "the late order on /metrics",
        )
        assert views.gauge("shop_revenue", window="1h", store_id="all") == 80.0

        letters = await _dead_letters(stack.bootstrap_servers, env["STREAMPROC_TOPIC_DLQ"])
        assert [(DeadLetter.from_headers(r.headers).reason, r.value) for r in letters] == [
            ("too_late", dumps(too_late))
        ]
        scraped = metrics.scrape(f"http://127.0.0.1:{worker_port}/metrics")
        assert scraped.total("streamproc_late_events_total") == 1
        assert scraped.total("streamproc_dead_letters_total", reason="too_late") == 1
        # everything read is processed, on every input partition the worker owns
        lag = [s for s in scraped.samples if s.name == "streamproc_consumer_lag_records"]
        topics = {env[f"STREAMPROC_TOPIC_{t}"] for t in ("CLICKSTREAM", "CART", "ORDERS")}
        assert topics <= {s.labels["topic"] for s in lag} and all(s.value == 0 for s in lag)
        assert scraped.total("streamproc_rebalances_total") >= 1
        assert scraped.total("streamproc_state_recovery_remaining_records") == 0
        assert worker.stop() == 0, worker.log[-3000:]
        assert exporter.stop() == 0, exporter.log[-3000:]


async def _dead_letters(bootstrap: str, topic: str) -> list[Any]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    records: list[Any] = []
    try:
        deadline = time.monotonic() + 20
        while not records and time.monotonic() < deadline:
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                records.extend(batch)
    finally:
        await consumer.stop()
    return records
