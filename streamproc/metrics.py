"""Prometheus metrics of the worker (pipeline health). The only module that imports
prometheus_client.

Workers export counters and histograms only; ratios come from recording rules. Exposition lines::

    streamproc_events_total{topic="shop.cart",event_type="add_to_cart"} 1042.0
    streamproc_dead_letters_total{topic="shop.orders",reason="negative_money"} 3.0
    streamproc_duplicates_total{topic="shop.clickstream"} 12.0
    streamproc_watermark_timestamp_seconds{partition="3"} 1.7943e+09
    streamproc_build_info{version="0.1.0"} 1.0
"""

from __future__ import annotations

import threading
import urllib.request
from collections.abc import Iterable
from typing import NamedTuple

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    start_http_server,
)
from prometheus_client import disable_created_metrics as _disable_created_metrics
from prometheus_client.parser import text_string_to_metric_families

from streamproc import __version__
from streamproc.events.models import FAMILY_TYPES, Family
from streamproc.events.parse import Reason

# `_created` series double the series count and carry nothing our rules use.
_disable_created_metrics()  # type: ignore[no-untyped-call]


class WorkerMetrics(NamedTuple):
    events: Counter
    dead_letters: Counter
    duplicates: Counter
    evicted: Counter
    batch_events: Histogram
    batch_seconds: Histogram
    watermark: Gauge
    event_lag: Gauge

    @classmethod
    def create(
        cls, registry: CollectorRegistry, *, topics: dict[Family, str], dlq_reasons: Iterable[str]
    ) -> WorkerMetrics:
        """Declare the metrics in ``registry`` and pre-create every known label set at 0."""
        metrics = cls(
            events=Counter(
                "streamproc_events",
                "Valid events consumed, by input topic and event type.",
                ["topic", "event_type"],
                registry=registry,
            ),
            dead_letters=Counter(
                "streamproc_dead_letters",
                "Messages sent to the dead-letter topic, by source topic and reason.",
                ["topic", "reason"],
                registry=registry,
            ),
            duplicates=Counter(
                "streamproc_duplicates",
                "Events dropped because their event_id was seen before.",
                ["topic"],
                registry=registry,
            ),
            evicted=Counter(
                "streamproc_records_evicted",
                "Session, order and ticket records that left state after their outcome was final.",
                registry=registry,
            ),
            batch_events=Histogram(
                "streamproc_batch_events",
                "Messages per processed batch.",
                ["topic"],
                buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 5000, 10000),
                registry=registry,
            ),
            batch_seconds=Histogram(
                "streamproc_batch_seconds",
                "Time to process one batch, Redis and state writes included.",
                ["topic"],
                buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
                registry=registry,
            ),
            watermark=Gauge(
                "streamproc_watermark_timestamp_seconds",
                "Event-time watermark of each partition this worker owns.",
                ["partition"],
                registry=registry,
            ),
            event_lag=Gauge(
                "streamproc_event_time_lag_seconds",
                "Wall clock minus the highest event time read, per partition this worker owns.",
                ["partition"],
                registry=registry,
            ),
        )
        Gauge(
            "streamproc_build_info",
            "Version of the running streamproc.",
            ["version"],
            registry=registry,
        ).labels(__version__).set(1)
        ProcessCollector(registry=registry)  # process_resident_memory_bytes, cpu seconds
        PlatformCollector(registry=registry)
        reasons = list(dlq_reasons)
        for family, topic in topics.items():
            for cls_ in FAMILY_TYPES[family]:
                metrics.events.labels(topic, cls_.__struct_config__.tag)
            for reason in reasons:
                metrics.dead_letters.labels(topic, reason)
            metrics.duplicates.labels(topic)
        return metrics


def all_reasons() -> list[str]:
    return [reason.value for reason in Reason]


class Sample(NamedTuple):
    name: str
    labels: dict[str, str]
    value: float


class Scrape(NamedTuple):
    """The samples of one ``/metrics`` page."""

    samples: list[Sample]

    def total(self, name: str, **labels: str) -> float:
        """Sum of the samples called ``name`` whose labels include ``labels``."""
        return sum(
            s.value
            for s in self.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        )

    def by(self, name: str, label: str) -> dict[str, float]:
        """Sum of ``name`` per value of one label."""
        sums: dict[str, float] = {}
        for s in self.samples:
            if s.name == name and label in s.labels:
                sums[s.labels[label]] = sums.get(s.labels[label], 0.0) + s.value
        return sums


def scrape(url: str, *, timeout: float = 2.0) -> Scrape:
    """Read and parse a ``/metrics`` page."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        text = response.read().decode()
    return Scrape(
        [
            Sample(sample.name, dict(sample.labels), sample.value)
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        ]
    )


class MetricsServer(NamedTuple):
    port: int
    thread: threading.Thread
    shutdown: object


def serve(registry: CollectorRegistry, *, bind: str, port: int) -> MetricsServer:
    """Serve ``/metrics`` of ``registry`` from a daemon thread; returns the bound port.

    A thread (not the worker's event loop) answers scrapes even while a batch keeps the loop busy.
    """
    server, thread = start_http_server(port, addr=bind, registry=registry)
    return MetricsServer(server.server_port, thread, server.shutdown)
