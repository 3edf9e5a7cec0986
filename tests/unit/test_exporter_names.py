"""Metric names and labels of every KPI row kind, and a /metrics page that promtool would pass."""

from __future__ import annotations

import re
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from streamproc.exporter.names import METRICS, Exposition, MetricFamily, families, labels_of
from streamproc.kpi import counters as c
from streamproc.kpi.histogram import BUCKETS
from streamproc.kpi.report import CH_DEV, KPIS, open_ticket_rows, window_rows
from streamproc.metrics import ExporterMetrics

NOW_S = 1_790_000_100.0


def row(kpi: str, dimension: str | None = None, value: float | None = 1.5, **extra: Any) -> Any:
    return {
        "kpi": kpi, "window": "15m", "start": "x", "end": "y", "store_id": "store-01",
        "dimension": dimension, "value": value, "numerator": None, "denominator": None,
        "final": False, **extra,
    }  # fmt: skip


def test_every_kpi_has_a_metric_with_its_breakdowns() -> None:
    assert set(METRICS) == {kpi.name for kpi in KPIS} | {"open_tickets"}
    for kpi in KPIS:
        keys = {d.partition("=")[0] for d in kpi.dimensions}
        assert keys == set(METRICS[kpi.name].breakdown), kpi.name
    assert METRICS["open_tickets"].breakdown == ("channel", "priority")


def test_one_help_type_and_label_set_per_name() -> None:
    by_name: dict[str, set[tuple[str, str, tuple[str, ...]]]] = {}
    for metric in METRICS.values():
        by_name.setdefault(metric.name, set()).add((metric.help, metric.type, metric.label_names))
    assert all(len(found) == 1 for found in by_name.values()), by_name


@pytest.mark.parametrize(
    ("kpi", "dimension", "name", "labels"),
    [
        ("sessions", None, "shop_sessions",
         {"window": "15m", "store_id": "store-01", "channel_group": "all", "device_type": "all"}),
        ("unique_visitors", "device_type=mobile", "shop_unique_visitors",
         {"window": "15m", "store_id": "store-01", "channel_group": "all",
          "device_type": "mobile"}),
        ("revenue", "channel_group=email", "shop_revenue",
         {"window": "15m", "store_id": "store-01", "channel_group": "email", "device_type": "all",
          "currency": "EUR"}),
        ("net_revenue", None, "shop_net_revenue",
         {"window": "15m", "store_id": "store-01", "currency": "EUR"}),
        ("conversion_rate", None, "shop_conversion_ratio",
         {"window": "15m", "store_id": "store-01", "channel_group": "all", "device_type": "all"}),
        ("cart_abandonment_rate", None, "shop_cart_abandonment_ratio",
         {"window": "15m", "store_id": "store-01"}),
        ("average_session_duration_seconds", None, "shop_average_session_duration_seconds",
         {"window": "15m", "store_id": "store-01"}),
        ("first_response_seconds_p90", None, "shop_first_response_seconds",
         {"window": "15m", "store_id": "store-01", "quantile": "0.9"}),
        ("resolution_seconds_p99", None, "shop_resolution_seconds",
         {"window": "15m", "store_id": "store-01", "quantile": "0.99"}),
        ("first_response_seconds_mean", None, "shop_first_response_mean_seconds",
         {"window": "15m", "store_id": "store-01"}),
        ("tickets_opened", "channel=chat", "shop_tickets_opened",
         {"window": "15m", "store_id": "store-01", "channel": "chat"}),
        ("tickets_opened", None, "shop_tickets_opened",
         {"window": "15m", "store_id": "store-01", "channel": "all"}),
        ("open_tickets", "priority=high", "shop_open_tickets",
         {"store_id": "store-01", "channel": "all", "priority": "high"}),
        ("nps", None, "shop_nps", {"window": "15m", "store_id": "store-01"}),
    ],
)  # fmt: skip
def test_labels_of_each_row_kind(
    kpi: str, dimension: str | None, name: str, labels: dict[str, str]
) -> None:
    metric, values = labels_of(row(kpi, dimension), currency="EUR")
    assert metric.name == name
    assert dict(zip(metric.label_names, values, strict=True)) == labels


def test_rows_that_cannot_be_named_are_errors() -> None:
    with pytest.raises(ValueError, match="no metric name"):
        labels_of(row("sessions_total"), currency="USD")
    with pytest.raises(ValueError, match="no breakdown by 'channel'"):
        labels_of(row("orders", "channel=chat"), currency="USD")


def test_families_group_rows_in_table_order_and_skip_missing_values() -> None:
    rows = [
        row("orders", value=3.0),
        row("first_response_seconds_p50", value=15.0),
        row("sessions", value=7.0),
        row("first_response_seconds_p99", value=None),
        row("first_response_seconds_p90", value=54.0),
    ]
    found = families(rows, currency="USD")
    assert [f.name for f in found] == [
        "shop_sessions", "shop_orders", "shop_first_response_seconds",
    ]  # fmt: skip
    quantiles = found[2]
    assert quantiles.type == "summary"
    assert [(v[-1], x) for v, x in quantiles.samples] == [("0.5", 15.0), ("0.9", 54.0)]


def every_counter() -> c.Counters:
    """A cell where every KPI has data (and every breakdown)."""
    counters: c.Counters = {
        name: 3
        for name in (
            c.SESSIONS_CLOSED, c.SESSIONS_CLOSED_PAGE_VIEWS, c.SESSIONS_BOUNCED,
            c.SESSIONS_WITH_ORDER, c.SESSIONS_WITH_CART, c.SESSIONS_WITH_INDEX,
            c.SESSIONS_NEW_VISITOR, c.UNITS, c.ORDERS_WITH_INDEX, c.ORDERS_NEW_CUSTOMER,
            c.REFUNDS, c.REFUNDED, c.CARTS_CREATED, c.CARTS_CONVERTED, c.CARTS_CHECKOUT,
            c.CARTS_CHECKOUT_ABANDONED, c.CHECKOUTS, c.PAYMENT_FAILURES, c.TICKETS_ESCALATED,
            c.CSAT_RESPONSES, c.CSAT_SUM, c.CSAT_POSITIVE, c.NPS_RESPONSES, c.NPS_PROMOTERS,
            "first_response_count", "first_response_sum_ms", "resolution_count",
            "resolution_sum_ms",
        )
    }  # fmt: skip
    counters[c.SESSIONS_DURATION] = 90_000
    for base in c.DIMENSIONED:
        counters[base] = 5
        for dimension in CH_DEV:
            counters[c.dim(base, dimension)] = 5
    counters[c.TICKETS_OPENED] = 4
    counters[c.dim(c.TICKETS_OPENED, "channel=chat")] = 4
    for name in (c.FIRST_RESPONSE, c.RESOLUTION):
        for i in range(BUCKETS):
            counters[f"{name}_bucket|{i}"] = 1
    return counters


def page() -> str:
    rows = window_rows(
        window="1h", start="s", end="e", store="all", counters=every_counter(),
        visitors=lambda dim: 4, money=100, closed=True,
    )  # fmt: skip
    rows += open_ticket_rows({("store-01", "chat", "high"): 2}, at="now")
    expo = Exposition(
        families=tuple(families(rows, currency="USD")),
        partitions=2,
        latest_event_ms=int((NOW_S - 2.5) * 1000),
        watermark_ms=1_790_000_000_000,
        window_end_ms=1_790_000_040_000,
        refreshed_ms=int((NOW_S - 4) * 1000),
    )
    metrics = ExporterMetrics.create(
        CollectorRegistry(), exposition=lambda: expo, now=lambda: NOW_S
    )
    metrics.refresh_errors.labels("ConnectionError").inc()
    metrics.refresh_seconds.observe(0.2)
    body, content_type = metrics.render()
    assert content_type.startswith("text/plain")
    return body.decode()


def test_the_page_shows_every_kpi_and_the_exporters_progress() -> None:
    parsed = {f.name: f for f in text_string_to_metric_families(page())}
    assert {m.name for m in METRICS.values()} <= set(parsed)
    lag = parsed["streamproc_exporter_event_time_lag_seconds"].samples[0].value
    assert lag == pytest.approx(2.5)
    assert parsed["streamproc_exporter_partitions"].samples[0].value == 2
    assert parsed["streamproc_exporter_watermark_timestamp_seconds"].samples[0].value == 1.79e9
    assert parsed["streamproc_exporter_refresh_errors"].type == "counter"
    assert parsed["streamproc_exporter_refresh_seconds"].type == "histogram"
    refreshed = parsed["streamproc_exporter_last_refresh_timestamp_seconds"]
    assert refreshed.type == "gauge" and refreshed.samples[0].value == NOW_S - 4
    assert parsed["streamproc_exporter_snapshot_age_seconds"].samples[0].value == 4.0
    series = parsed["streamproc_exporter_series"].samples[0].value
    assert series == sum(len(parsed[n].samples) for n in {m.name for m in METRICS.values()})
    for metric in METRICS.values():  # a constant label set per metric
        label_sets = {frozenset(s.labels) for s in parsed[metric.name].samples}
        assert label_sets == {frozenset(metric.label_names)}, metric.name


# The rules of `promtool check metrics` (client_golang prometheus/testutil/promlint/validations).
_UNITS = {
    "minutes", "hours", "days", "weeks", "kelvins", "fahrenheit", "rankine", "inches",
    "yards", "miles", "bits", "calories", "pounds", "ounces",
}  # fmt: skip
_PREFIXES = ("pico", "nano", "micro", "milli", "centi", "deci", "deca", "hecto", "kilo", "kibi")
_BASE = {"amperes", "bytes", "celsius", "grams", "joules", "kelvin", "meters", "metres",
         "seconds", "volts"}  # fmt: skip
_ABBREVIATIONS = ("s", "ms", "us", "ns", "sec", "b", "kb", "mb", "gb", "tb", "pb", "m", "h", "d")


def promlint(text: str) -> list[str]:
    problems = []
    helps = set(re.findall(r"^# HELP (\S+) \S", text, flags=re.M))
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)", text, flags=re.M))
    labels: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels.setdefault(family.name, set()).update(sample.labels)
    for name, kind in types.items():
        full = name  # the text format's family name: counters keep _total
        parts = full.split("_")
        if name not in helps:
            problems.append(f"{full}: no help text")
        for part in parts:
            if part in _UNITS or any(
                part.startswith(p) and part[len(p) :] in _BASE | _UNITS for p in _PREFIXES
            ):
                problems.append(f"{full}: not a base unit: {part}")
        if kind == "counter" and not full.endswith("_total"):
            problems.append(f"{full}: counter without _total")
        if kind not in ("counter", "untyped") and full.endswith("_total"):
            problems.append(f"{full}: non-counter with _total")
        if kind != "histogram" and full.endswith("_bucket"):
            problems.append(f"{full}: _bucket")
        if kind not in ("histogram", "summary") and full.endswith(("_count", "_sum")):
            problems.append(f"{full}: _count/_sum")
        if kind != "summary" and "quantile" in labels.get(name.removesuffix("_total"), ()):
            problems.append(f"{full}: quantile label on a {kind}")
        if kind != "histogram" and "le" in labels.get(name, ()):
            problems.append(f"{full}: le label")
        for type_name in ("counter", "gauge", "summary", "histogram"):
            if f"_{type_name}_" in full or full.endswith(f"_{type_name}"):
                problems.append(f"{full}: type in name")
        if ":" in full or re.search("[a-z][A-Z]", full):
            problems.append(f"{full}: reserved character or camelCase")
        if any(f"_{a}_" in full or full.endswith(f"_{a}") for a in _ABBREVIATIONS):
            problems.append(f"{full}: abbreviated unit")
        if kind != "gauge" and full.endswith("_timestamp_seconds"):
            problems.append(f"{full}: _timestamp_seconds on a {kind}")
    return problems


def test_before_the_first_refresh_the_page_does_not_date_its_kpis() -> None:
    """No last-refresh timestamp of 0 (1970): the series are absent until a refresh succeeds."""
    metrics = ExporterMetrics.create(CollectorRegistry(), exposition=Exposition, now=lambda: NOW_S)
    parsed = {f.name for f in text_string_to_metric_families(metrics.render()[0].decode())}
    assert "streamproc_exporter_series" in parsed
    assert "streamproc_exporter_last_refresh_timestamp_seconds" not in parsed
    assert "streamproc_exporter_snapshot_age_seconds" not in parsed


def test_the_page_passes_the_promtool_naming_rules() -> None:
    text = page()
    assert promlint(text) == []
    # and the lint catches what it should
    bad = (
        "# HELP x_ms_total a\n# TYPE x_ms_total gauge\nx_ms_total 1\n"
        '# HELP y_seconds b\n# TYPE y_seconds gauge\ny_seconds{quantile="0.5"} 1\n'
    )
    assert len(promlint(bad)) == 3


def test_family_is_plain_data() -> None:
    family = MetricFamily("shop_orders", "h", "gauge", ("window",), ((("1m",), 1.0),))
    assert family.samples[0][1] == 1.0
