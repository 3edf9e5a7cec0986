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
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import TYPE_CHECKING, NamedTuple

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
    start_http_server,
)
from prometheus_client import disable_created_metrics as _disable_created_metrics
from prometheus_client.aiohttp import make_aiohttp_handler
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from streamproc import __version__
from streamproc.events.models import FAMILY_TYPES, Family
from streamproc.events.parse import Reason

if TYPE_CHECKING:
    from streamproc.exporter.names import Exposition

# `_created` series double the series count and carry nothing our rules use.
_disable_created_metrics()  # type: ignore[no-untyped-call]


class WorkerMetrics(NamedTuple):
    events: Counter
    dead_letters: Counter
    duplicates: Counter
    late: Counter
    evicted: Counter
    batch_events: Histogram
    batch_seconds: Histogram
    watermark: Gauge
    event_lag: Gauge
    redis_retries: Counter
    fenced: Counter
    consumer_lag: Gauge
    rebalances: Counter
    recovery_remaining: Gauge

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
            late=Counter(
                "streamproc_late_events",
                "Events that amended an already closed window (within max_lateness); later ones "
                "are dead letters with reason too_late.",
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
                "Messages of the topic per processed batch (a run of one partition's slices, "
                "processed and stored at once).",
                ["topic"],
                buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 5000, 10000),
                registry=registry,
            ),
            batch_seconds=Histogram(
                "streamproc_batch_seconds",
                "Time to process one batch that held messages of the topic, Redis and sending "
                "its state included (its delivery to the broker is awaited alongside the next "
                "batches).",
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
            redis_retries=Counter(
                "streamproc_redis_retries",
                "Redis calls that failed with a transient error and were retried; the worker "
                "holds its batch (and commits nothing) meanwhile.",
                registry=registry,
            ),
            fenced=Counter(
                "streamproc_fenced_work",
                "Batches, deliveries and ticks dropped unacked because their partition may have "
                "moved to another worker (this one stalled past its group session); the "
                "partition's owner processes them.",
                registry=registry,
            ),
            consumer_lag=Gauge(
                "streamproc_consumer_lag_records",
                "Records of each input partition this worker owns that it has not processed: the "
                "partition's end as its last fetch saw it, minus the next offset to process.",
                ["topic", "partition"],
                registry=registry,
            ),
            rebalances=Counter(
                "streamproc_rebalances",
                "Partition assignments this worker received: one per rebalance it took part in.",
                registry=registry,
            ),
            recovery_remaining=Gauge(
                "streamproc_state_recovery_remaining_records",
                "State changelog records left to read before the worker processes again after a "
                "rebalance or restart; 0 when it is not recovering.",
                registry=registry,
            ),
        )
        _process_metrics(registry)
        reasons = list(dlq_reasons)
        for family, topic in topics.items():
            for cls_ in FAMILY_TYPES[family]:
                metrics.events.labels(topic, cls_.__struct_config__.tag)
            for reason in reasons:
                metrics.dead_letters.labels(topic, reason)
            metrics.duplicates.labels(topic)
            metrics.late.labels(topic)
        return metrics


def _process_metrics(registry: CollectorRegistry) -> None:
    """What every streamproc process exposes: its version, memory, CPU and Python."""
    Gauge(
        "streamproc_build_info",
        "Version of the running streamproc.",
        ["version"],
        registry=registry,
    ).labels(__version__).set(1)
    ProcessCollector(registry=registry)  # process_resident_memory_bytes, cpu seconds
    PlatformCollector(registry=registry)


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

    def overall(self, name: str, **labels: str) -> float | None:
        """The sample of ``name`` with ``labels`` that is not broken down (other labels "all").

        ``currency`` is not a breakdown; None when there is no such sample (yet).
        """
        for s in self.samples:
            if (
                s.name == name
                and all(s.labels.get(k) == v for k, v in labels.items())
                and all(
                    v == "all" for k, v in s.labels.items() if k not in labels and k != "currency"
                )
            ):
                return s.value
        return None

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


# --- exporter -------------------------------------------------------------------------------


class KpiCollector(Collector):
    """The exporter's KPI gauges and progress, from the last refresh's snapshot. Lines::

    shop_orders{window="15m",store_id="all",channel_group="email",device_type="all"} 31.0
    shop_first_response_seconds{window="1h",store_id="all",quantile="0.9"} 1840.0
    streamproc_exporter_event_time_lag_seconds 2.4
    streamproc_exporter_watermark_timestamp_seconds 1.7943e+09
    streamproc_exporter_last_refresh_timestamp_seconds 1.7943e+09
    streamproc_exporter_snapshot_age_seconds 3.1

    The last two are absent until the first successful refresh (no misleading 0 = 1970), and
    always come with the snapshot they date: a scrape sees the KPIs and how old they are.
    """

    def __init__(self, exposition: Callable[[], Exposition], *, now: Callable[[], float]) -> None:
        self._exposition = exposition
        self._now = now

    def describe(self) -> Iterable[Metric]:
        return []  # names vary with the data; nothing to check for duplicates up front

    def collect(self) -> Iterable[Metric]:
        expo = self._exposition()  # one snapshot for the whole scrape
        for family in expo.families:
            if family.type == "gauge":
                gauge = GaugeMetricFamily(family.name, family.help, labels=family.label_names)
                for values, value in family.samples:
                    gauge.add_metric(values, value)
                yield gauge
            else:
                metric = Metric(family.name, family.help, family.type)
                for values, value in family.samples:
                    labels = dict(zip(family.label_names, values, strict=True))
                    metric.add_sample(family.name, labels, value)
                yield metric
        yield from self._progress(expo)

    def _progress(self, expo: Exposition) -> Iterator[Metric]:
        def gauge(name: str, help_: str, value: float) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, help_, value=value)

        yield gauge(
            "streamproc_exporter_partitions",
            "Partitions that published their progress.",
            expo.partitions,
        )
        yield gauge("streamproc_exporter_series", "KPI series in the last snapshot.", expo.series)
        if expo.refreshed_ms is not None:
            refreshed = expo.refreshed_ms / 1000
            yield gauge(
                "streamproc_exporter_last_refresh_timestamp_seconds",
                "When the KPIs were last refreshed successfully.",
                refreshed,
            )
            yield gauge(
                "streamproc_exporter_snapshot_age_seconds",
                "Wall clock minus the last successful refresh: how old the served KPIs are.",
                max(0.0, self._now() - refreshed),
            )
        if expo.latest_event_ms is not None:
            yield gauge(
                "streamproc_exporter_event_time_lag_seconds",
                "Wall clock minus the latest event time published by any partition.",
                self._now() - expo.latest_event_ms / 1000,
            )
        if expo.watermark_ms is not None:
            yield gauge(
                "streamproc_exporter_watermark_timestamp_seconds",
                "Lowest watermark of the partitions still running.",
                expo.watermark_ms / 1000,
            )
        if expo.window_end_ms is not None:
            yield gauge(
                "streamproc_exporter_window_end_timestamp_seconds",
                "End (exclusive) of the trailing windows the shop_ gauges cover.",
                expo.window_end_ms / 1000,
            )


class ExporterMetrics(NamedTuple):
    registry: CollectorRegistry
    refresh_seconds: Histogram
    refresh_errors: Counter

    @classmethod
    def create(
        cls,
        registry: CollectorRegistry,
        *,
        exposition: Callable[[], Exposition],
        now: Callable[[], float] = time.time,
    ) -> ExporterMetrics:
        """Declare the exporter's own metrics and its KPI collector in ``registry``."""
        metrics = cls(
            registry=registry,
            refresh_seconds=Histogram(
                "streamproc_exporter_refresh_seconds",
                "Time to read Redis and recompute the KPIs, failed refreshes included.",
                buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
                registry=registry,
            ),
            refresh_errors=Counter(
                "streamproc_exporter_refresh_errors",
                "Failed refreshes, by kind of error; the last snapshot stays served.",
                ["kind"],
                registry=registry,
            ),
        )
        _process_metrics(registry)
        registry.register(KpiCollector(exposition, now=now))
        return metrics

    def render(self) -> tuple[bytes, str]:
        """The ``/metrics`` page and its content type (text format, uncompressed)."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def aiohttp_handler(self) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        """The exporter's ``/metrics``: prometheus_client's own aiohttp handler, which answers
        the OpenMetrics format to a scraper that asks for it and compresses for one that accepts
        gzip (at the store cap the page is ~40 k series, ~4 MB uncompressed)."""
        return make_aiohttp_handler(self.registry)
