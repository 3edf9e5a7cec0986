"""Grafana dashboards as code: Shop KPIs, Customer service and Pipeline health.

Built with grafana-foundation-sdk, pinned in pyproject.toml to its Grafana 11.6 flavour (the
grafana/grafana:11.6.0 image of docker-compose.yml). The JSON under dashboards/ is generated
and committed; tests/deploy/test_grafana_dashboards.py fails when it differs from this file's
output::

    python deploy/grafana/generate.py           # rewrite dashboards/*.json
    python deploy/grafana/generate.py --check   # exit 1 when a committed file is stale

Every panel queries the data source chosen in the ``datasource`` variable. KPI panels read the
exporter's windowed gauges (one series per window, store and breakdown; ``all`` is the
pre-aggregated row, so a breakdown is never summed here), pipeline panels rate the workers'
counters. Thresholds are the alert defaults of deploy/prometheus/rules/.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from grafana_foundation_sdk.builders import dashboard as gd
from grafana_foundation_sdk.builders import stat, table, timeseries
from grafana_foundation_sdk.builders.common import GraphThresholdsStyleConfig, ReduceDataOptions
from grafana_foundation_sdk.builders.prometheus import Dataquery
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import BigValueGraphMode, GraphThresholdsStyleMode
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    DashboardLinkType,
    DataSourceRef,
    DataTransformerConfig,
    DynamicConfigValue,
    Threshold,
    ThresholdsMode,
    VariableOption,
    VariableRefresh,
    VariableSort,
)
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

HERE = Path(__file__).resolve().parent
DS = DataSourceRef(type_val="prometheus", uid="${datasource}")
CURRENCY = "USD"  # STREAMPROC_REPORTING_CURRENCY of the deployment: the unit of money panels
RATE = "$__rate_interval"

# Alert defaults (deploy/prometheus/rules/*.yml), drawn as red thresholds.
SPIKE_Z = 3.0
SIGMA_FLOOR = 0.02
MIN_CARTS_15M = 30.0
FIRST_RESPONSE_P90_SECONDS = 3600.0
LAG_SECONDS = 300.0
DEAD_LETTER_SHARE = 0.01

STORE = 'store_id="$store"'
WINDOW = 'window="$window"'
CH_DEV = 'channel_group="$channel", device_type="$device"'
WORKERS = 'topic=~"$topic", instance=~"$instance"'


@dataclass(frozen=True)
class Target:
    expr: str
    legend: str
    unit: str = ""  # a table column's unit, when it differs from the panel's


@dataclass(frozen=True)
class Spec:
    """One panel: what it shows, in which unit, and the alert threshold it carries."""

    title: str
    description: str
    unit: str
    targets: tuple[Target, ...]
    kind: str = "timeseries"  # or "stat", or "table" (one column per target, a row per store)
    width: int = 12
    thresholds: tuple[float, ...] = ()
    min: float | None = None
    max: float | None = None
    zero: bool = False  # a count: 0, not "No data", when its series is not there


Rows = list[tuple[str, list[Spec]]]


def kpi(metric: str, *selectors: str, offset: str = "") -> str:
    """A KPI gauge of the selected store (the exporter serves one series per label set);
    ``offset``: as it was that long ago (``1w``)."""
    ago = f" offset {offset}" if offset else ""
    return f"max by (store_id) ({metric}{{{', '.join(selectors)}}}{ago})"


def by(label: str, metric: str, *selectors: str) -> str:
    return f"max by ({label}) ({metric}{{{', '.join(selectors)}}})"


def rate(label: str, metric: str, selectors: str = WORKERS) -> str:
    return f"sum by ({label}) (rate({metric}{{{selectors}}}[{RATE}]))"


def one(expr: str, legend: str) -> tuple[Target, ...]:
    return (Target(expr, legend),)


# --- panels -----------------------------------------------------------------------------------


def _thresholds(values: tuple[float, ...]) -> gd.ThresholdsConfig:
    steps = [Threshold(value=None, color="green")]
    steps += [Threshold(value=value, color="red") for value in values]
    return gd.ThresholdsConfig().mode(ThresholdsMode.ABSOLUTE).steps(steps)


def _query(target: Target, ref: str) -> Dataquery:
    return Dataquery().expr(target.expr).legend_format(target.legend).ref_id(ref).range()


def _table_query(target: Target, ref: str) -> Dataquery:
    return Dataquery().expr(target.expr).ref_id(ref).instant().format(PromQueryFormat.TABLE)


def _table(spec: Spec) -> table.Panel:
    """One row per store: the targets' instant values merged on ``store_id``, each column
    named after its target's legend."""
    names = {f"Value #{ref}": t.legend for ref, t in zip("ABCDEFGH", spec.targets, strict=False)}
    organize = {"excludeByName": {"Time": True}, "renameByName": names}
    built = table.Panel().height(8)
    built = built.with_transformation(DataTransformerConfig(id_val="merge", options={}))
    built = built.with_transformation(DataTransformerConfig(id_val="organize", options=organize))
    for ref, target in zip("ABCDEFGH", spec.targets, strict=False):
        built = built.with_target(_table_query(target, ref))
        if target.unit:
            unit = DynamicConfigValue(id_val="unit", value=target.unit)
            built = built.override_by_name(target.legend, [unit])
    return built


def panel(spec: Spec, panel_id: int) -> timeseries.Panel | stat.Panel | table.Panel:
    built: timeseries.Panel | stat.Panel | table.Panel
    if spec.kind == "table":
        built = _table(spec)
    elif spec.kind == "stat":
        last = ReduceDataOptions().calcs(["lastNotNull"])
        built = stat.Panel().graph_mode(BigValueGraphMode.AREA).reduce_options(last).height(4)
    else:
        built = timeseries.Panel().height(8)
        if spec.thresholds:
            style = GraphThresholdsStyleConfig().mode(GraphThresholdsStyleMode.DASHED)
            built = built.thresholds_style(style)
    built = (
        built.id(panel_id)
        .title(spec.title)
        .description(spec.description)
        .datasource(DS)
        .unit(spec.unit)
        .span(spec.width)
        .thresholds(_thresholds(spec.thresholds))
    )
    if spec.min is not None:
        built = built.min(spec.min)
    if spec.max is not None:
        built = built.max(spec.max)
    if spec.zero:
        built = built.no_value("0")
    if spec.kind != "table":
        for ref, target in zip("ABCDEFGH", spec.targets, strict=False):
            built = built.with_target(_query(target, ref))
    return built


# --- variables --------------------------------------------------------------------------------


def datasource_variable() -> gd.DatasourceVariable:
    return gd.DatasourceVariable("datasource").label("Data source").type("prometheus")


def label_variable(name: str, label: str, query: str, default: str) -> gd.QueryVariable:
    """A single-value variable; ``all`` is a label value (the exporter's total row)."""
    option = VariableOption(selected=True, text=default, value=default)
    return (
        gd.QueryVariable(name)
        .label(label)
        .datasource(DS)
        .query(query)
        .current(option)
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC)
    )


def multi_variable(name: str, label: str, query: str) -> gd.QueryVariable:
    """Several values or all of them (``.*``), for label values summed over."""
    option = VariableOption(selected=True, text="All", value="$__all")
    return (
        gd.QueryVariable(name)
        .label(label)
        .datasource(DS)
        .query(query)
        .current(option)
        .multi(True)
        .include_all(True)
        .all_value(".*")
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC)
    )


def firing_alerts(alertnames: str, selectors: str = "") -> gd.AnnotationQuery:
    extra = f", {selectors}" if selectors else ""
    expr = f'ALERTS{{alertstate="firing", alertname=~"{alertnames}"{extra}}}'
    return (
        gd.AnnotationQuery()
        .name("Firing alerts")
        .datasource(DS)
        .enable(True)
        .icon_color("red")
        .expr(expr)
    )


def build(
    uid: str,
    title: str,
    description: str,
    *,
    variables: list[gd.DatasourceVariable | gd.QueryVariable],
    annotation: gd.AnnotationQuery,
    rows: Rows,
) -> gd.Dashboard:
    dash = (
        gd.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["streamproc", "generated"])
        .refresh("30s")
        .time("now-6h", "now")
        .timezone("utc")
        .tooltip(DashboardCursorSync.CROSSHAIR)  # one crosshair across every panel
        .annotation(annotation)
        .link(
            gd.DashboardLink("streamproc")
            .type(DashboardLinkType.DASHBOARDS)
            .tags(["streamproc"])
            .as_dropdown(False)
            .include_vars(True)
            .keep_time(True)
        )
    )
    for variable in variables:
        dash = dash.with_variable(variable)
    panel_id = 0
    for row_title, specs in rows:
        panel_id += 1
        dash = dash.with_row(gd.Row(row_title).id(panel_id))
        for spec in specs:
            panel_id += 1
            dash = dash.with_panel(panel(spec, panel_id))
    return dash


# --- Shop KPIs --------------------------------------------------------------------------------

SHOP_NOW = [
    Spec("Conversion", "Orders per session in the window.", "percentunit",
         one(kpi("shop_conversion_ratio", WINDOW, STORE, CH_DEV), "conversion"), "stat", 4),
    Spec("Cart abandonment", "Share of the window's carts not converted (yet).", "percentunit",
         one(kpi("shop_cart_abandonment_ratio", WINDOW, STORE), "abandonment"), "stat", 4),
    Spec("Revenue", "Order totals in the window, reporting currency.", f"currency{CURRENCY}",
         one(kpi("shop_revenue", WINDOW, STORE, CH_DEV), "revenue"), "stat", 4, zero=True),
    Spec("Sessions", "Sessions started in the window.", "short",
         one(kpi("shop_sessions", WINDOW, STORE, CH_DEV), "sessions"), "stat", 4, zero=True),
    Spec("Unique visitors", "Distinct visitors in the window (HyperLogLog, about 1 % error).",
         "short", one(kpi("shop_unique_visitors", WINDOW, STORE, CH_DEV), "visitors"), "stat", 4,
         zero=True),
    Spec("Orders", "Orders placed in the window.", "short",
         one(kpi("shop_orders", WINDOW, STORE, CH_DEV), "orders"), "stat", 4, zero=True),
]  # fmt: skip

ABANDONMENT_THRESHOLD = (
    'store_id_window:shop_cart_abandonment_ratio:avg_over_time2h_offset30m{store_id="$store"}'
    f" + {SPIKE_Z:g} * clamp_min(store_id_window:shop_cart_abandonment_ratio:"
    f'stddev_over_time2h_offset30m{{store_id="$store"}}, {SIGMA_FLOOR:g})'
)

SHOP_CARTS = [
    Spec("Cart abandonment",
         "Share of the window's carts not converted. The dashed line is where the spike alert's "
         "fallback fires for the 15m window: the previous 2 h's mean + 3 sigma (the alert "
         "compares with the same time last week first, when it exists).", "percentunit",
         (Target(kpi("shop_cart_abandonment_ratio", WINDOW, STORE), "abandonment ($window)"),
          Target(ABANDONMENT_THRESHOLD, "spike threshold (15m)")), min=0, max=1),
    Spec("Cart abandonment z-score",
         "Standard deviations of the 15m abandonment above the 2 h that ended 30 minutes ago "
         "(sigma floored at 0.02). The spike alert needs >= 3 for 10 minutes, and 30 carts.",
         "none", one("store_id_window:shop_cart_abandonment_ratio:zscore2h{store_id=\"$store\"}",
                     "z-score (15m)"), thresholds=(SPIKE_Z,)),
    Spec("Carts created", "Carts created in the window; the spike alert needs 30 in 15m.",
         "short", one(kpi("shop_carts_created", WINDOW, STORE), "carts ($window)"),
         thresholds=(MIN_CARTS_15M,)),
    Spec("Checkout abandonment and payment failures",
         "Of the carts with a checkout, the share abandoned; payment failures per checkout.",
         "percentunit",
         (Target(kpi("shop_checkout_abandonment_ratio", WINDOW, STORE), "checkout abandonment"),
          Target(kpi("shop_payment_failure_ratio", WINDOW, STORE), "payment failures")),
         min=0, max=1),
]  # fmt: skip

SHOP_CONVERSION = [
    Spec("Conversion", "Orders per session in the window.", "percentunit",
         (Target(kpi("shop_conversion_ratio", WINDOW, STORE, CH_DEV), "conversion"),
          Target(kpi("shop_add_to_cart_ratio", WINDOW, STORE), "sessions with a cart")), min=0),
    Spec("Conversion by channel", "Orders per session, per channel group (all devices).",
         "percentunit", one(by("channel_group", "shop_conversion_ratio", WINDOW, STORE,
                               'channel_group!="all"', 'device_type="all"'), "{{channel_group}}"),
         min=0),
    Spec("Conversion by device", "Orders per session, per device type (all channels).",
         "percentunit", one(by("device_type", "shop_conversion_ratio", WINDOW, STORE,
                               'channel_group="all"', 'device_type!="all"'), "{{device_type}}"),
         min=0),
    Spec("Sessions by channel", "Sessions started in the window, per channel group.", "short",
         one(by("channel_group", "shop_sessions", WINDOW, STORE, 'channel_group!="all"',
                'device_type="all"'), "{{channel_group}}")),
]  # fmt: skip

SHOP_SALES = [
    Spec("Revenue", "Order totals in the window, reporting currency.", f"currency{CURRENCY}",
         one(kpi("shop_revenue", WINDOW, STORE, CH_DEV), "revenue")),
    Spec("Revenue per visitor", "Revenue per unique visitor in the window.",
         f"currency{CURRENCY}", one(kpi("shop_revenue_per_visitor", WINDOW, STORE, CH_DEV), "RPV")),
    Spec("Average order value", "Revenue per order in the window.", f"currency{CURRENCY}",
         one(kpi("shop_average_order_value", WINDOW, STORE, CH_DEV), "AOV")),
    Spec("Sessions and unique visitors", "Sessions started and distinct visitors in the window.",
         "short", (Target(kpi("shop_sessions", WINDOW, STORE, CH_DEV), "sessions"),
                   Target(kpi("shop_unique_visitors", WINDOW, STORE, CH_DEV), "visitors"))),
]  # fmt: skip


ALL_CH_DEV = 'channel_group="all", device_type="all"'
LAST_ORDER = (
    '(time() - max by (store_id) (max_over_time(timestamp(shop_orders{window="1m", '
    f"{STORE}, {ALL_CH_DEV}}} > 0)[1d:1m]))) / 60"
)


def _store_column(metric: str, *selectors: str) -> str:
    return f"max by (store_id) ({metric}{{{', '.join((WINDOW, *selectors))}}})"


SHOP_WEEK = [
    Spec("Orders against last week",
         "Orders placed in the window, and the same window a week ago. Zero is a value: 0 "
         "while the store has sessions but no order (the orders-stalled alert's case).",
         "short", (Target(kpi("shop_orders", WINDOW, STORE, CH_DEV), "orders ($window)"),
                   Target(kpi("shop_orders", WINDOW, STORE, CH_DEV, offset="1w"), "a week ago"))),
    Spec("Revenue against last week",
         "Order totals in the window, and the same window a week ago, reporting currency.",
         f"currency{CURRENCY}",
         (Target(kpi("shop_revenue", WINDOW, STORE, CH_DEV), "revenue ($window)"),
          Target(kpi("shop_revenue", WINDOW, STORE, CH_DEV, offset="1w"), "a week ago"))),
    Spec("Minutes since the last order",
         "Minutes since the last whole minute with an order in the store (looked back over a "
         "day, at one-minute resolution).", "m", one(LAST_ORDER, "minutes"), "stat", 6),
    Spec("Stores side by side",
         "Every store (and all) in the window: sessions, orders, revenue, conversion and cart "
         "abandonment.", "short",
         (Target(_store_column("shop_sessions", ALL_CH_DEV), "Sessions"),
          Target(_store_column("shop_orders", ALL_CH_DEV), "Orders"),
          Target(_store_column("shop_revenue", ALL_CH_DEV), "Revenue", f"currency{CURRENCY}"),
          Target(_store_column("shop_conversion_ratio", ALL_CH_DEV), "Conversion", "percentunit"),
          Target(_store_column("shop_cart_abandonment_ratio"), "Cart abandonment",
                 "percentunit")),
         "table", 18),
]  # fmt: skip


def shop_kpis() -> gd.Dashboard:
    return build(
        "streamproc-shop-kpis",
        "Shop KPIs",
        "Live e-commerce KPIs of trailing event-time windows, from the streamproc exporter. "
        "Channel and device breakdowns are exclusive: set one of them to all.",
        variables=[
            datasource_variable(),
            label_variable("store", "Store", "label_values(shop_sessions, store_id)", "all"),
            label_variable(
                "channel", "Channel", "label_values(shop_sessions, channel_group)", "all"
            ),
            label_variable("device", "Device", "label_values(shop_sessions, device_type)", "all"),
            label_variable("window", "Window", "label_values(shop_sessions, window)", "15m"),
        ],
        annotation=firing_alerts(
            "CartAbandonmentSpike|ConversionDrop|OrdersStalled", 'store_id="$store"'
        ),
        rows=[
            ("Now ($window)", SHOP_NOW),
            ("Carts", SHOP_CARTS),
            ("Conversion", SHOP_CONVERSION),
            ("Sales and traffic", SHOP_SALES),
            ("Orders against last week", SHOP_WEEK),
        ],
    )


# --- Customer service -------------------------------------------------------------------------

SUPPORT_NOW = [
    Spec("Tickets opened", "Support tickets opened in the window.", "short",
         one(kpi("shop_tickets_opened", WINDOW, STORE, 'channel="all"'), "tickets"), "stat", 5,
         zero=True),
    Spec("Open tickets", "Tickets open now (opened or reopened, not resolved).", "short",
         one(kpi("shop_open_tickets", STORE, 'channel="all"', 'priority="all"'), "open"),
         "stat", 5, zero=True),
    Spec("First response p90", "90 % of the window's first responses came within this.", "s",
         one(kpi("shop_first_response_seconds", WINDOW, STORE, 'quantile="0.9"'), "p90"),
         "stat", 5, thresholds=(FIRST_RESPONSE_P90_SECONDS,)),
    Spec("CSAT", "Mean CSAT score (1-5) of the window's responses.", "none",
         one(kpi("shop_csat_score", WINDOW, STORE), "CSAT"), "stat", 4, min=1, max=5),
    Spec("NPS", "Net promoter score of the window's responses (-100 to 100).", "none",
         one(kpi("shop_nps", WINDOW, STORE), "NPS"), "stat", 5, min=-100, max=100),
]  # fmt: skip

SUPPORT_TICKETS = [
    Spec("Tickets opened by channel", "Support tickets opened in the window, per channel.",
         "short", one(by("channel", "shop_tickets_opened", WINDOW, STORE, 'channel!="all"'),
                      "{{channel}}")),
    Spec("Open tickets by priority", "Tickets open now in the selected channel, per priority.",
         "short", one(by("priority", "shop_open_tickets", STORE, 'channel="$channel"',
                         'priority!="all"'), "{{priority}}")),
    Spec("Escalation rate", "Tickets escalated per ticket opened in the window.", "percentunit",
         one(kpi("shop_escalation_ratio", WINDOW, STORE), "escalated"), min=0),
]  # fmt: skip

SUPPORT_TIMES = [
    Spec("First-response time",
         "Percentiles (from histogram buckets) and mean of the first agent response times in "
         "the window. The alert fires when the 1h window's p90 is above 1 h for 15 minutes.",
         "s",
         (Target(by("quantile", "shop_first_response_seconds", WINDOW, STORE), "p{{quantile}}"),
          Target(kpi("shop_first_response_mean_seconds", WINDOW, STORE), "mean")),
         thresholds=(FIRST_RESPONSE_P90_SECONDS,)),
    Spec("Resolution time", "Percentiles and mean of the times to the first resolution.", "s",
         (Target(by("quantile", "shop_resolution_seconds", WINDOW, STORE), "p{{quantile}}"),
          Target(kpi("shop_resolution_mean_seconds", WINDOW, STORE), "mean"))),
]  # fmt: skip

SUPPORT_SATISFACTION = [
    Spec("CSAT", "Mean CSAT score (1-5).", "none",
         one(kpi("shop_csat_score", WINDOW, STORE), "CSAT"), min=1, max=5),
    Spec("CSAT positive share", "Share of CSAT responses scoring 4 or 5.", "percentunit",
         one(kpi("shop_csat_positive_ratio", WINDOW, STORE), "4 or 5"), min=0, max=1),
    Spec("NPS", "Promoters minus detractors, per 100 NPS responses.", "none",
         one(kpi("shop_nps", WINDOW, STORE), "NPS"), min=-100, max=100),
]  # fmt: skip


def customer_service() -> gd.Dashboard:
    return build(
        "streamproc-customer-service",
        "Customer service",
        "Support tickets, response and resolution times, satisfaction; trailing event-time "
        "windows from the streamproc exporter.",
        variables=[
            datasource_variable(),
            label_variable("store", "Store", "label_values(shop_tickets_opened, store_id)", "all"),
            label_variable("channel", "Channel", "label_values(shop_open_tickets, channel)", "all"),
            label_variable("window", "Window", "label_values(shop_tickets_opened, window)", "1h"),
        ],
        annotation=firing_alerts("FirstResponseSlow", 'store_id="$store"'),
        rows=[
            ("Now ($window)", SUPPORT_NOW),
            ("Tickets", SUPPORT_TICKETS),
            ("Response and resolution", SUPPORT_TIMES),
            ("Satisfaction", SUPPORT_SATISFACTION),
        ],
    )


# --- Pipeline health --------------------------------------------------------------------------

PIPELINE_FLOW = [
    Spec("Throughput per topic", "Valid events consumed per second.", "ops",
         one(rate("topic", "streamproc_events_total"), "{{topic}}")),
    Spec("Throughput per worker", "Valid events consumed per second, per worker.", "ops",
         one(rate("instance", "streamproc_events_total"), "{{instance}}")),
    Spec("Batch time p99", "99th percentile of the time to process one batch, per worker.", "s",
         one("histogram_quantile(0.99, sum by (instance, le) (rate(streamproc_batch_seconds_bucket"
             f"{{{WORKERS}}}[{RATE}])))", "{{instance}}")),
    Spec("Batch size", "Mean messages per batch, per topic.", "short",
         one(f"{rate('topic', 'streamproc_batch_events_sum')} / "
             f"{rate('topic', 'streamproc_batch_events_count')}", "{{topic}}")),
]  # fmt: skip

PIPELINE_LAG = [
    Spec("Event-time lag",
         "Wall clock minus the newest event read, per partition. It also grows on an idle "
         "partition; the lag alert needs the watermark to trail too.", "s",
         one(by("instance, partition", "streamproc_event_time_lag_seconds",
                'instance=~"$instance"'), "{{instance}} p{{partition}}"),
         thresholds=(LAG_SECONDS,)),
    Spec("Watermark lag",
         "Wall clock minus the watermark, per partition: the lag plus the allowed lateness "
         "(2 min by default); an idle partition's watermark follows the wall clock.", "s",
         one('time() - (max by (instance, partition) (streamproc_watermark_timestamp_seconds'
             '{instance=~"$instance"}) > 0)', "{{instance}} p{{partition}}")),
    Spec("Exporter", "Event-time lag of the newest published event, and the age of the last "
         "successful refresh of the KPIs.", "s",
         (Target("streamproc_exporter_event_time_lag_seconds", "event-time lag"),
          Target("time() - streamproc_exporter_last_refresh_timestamp_seconds", "refresh age"))),
    Spec("Exporter refresh p99", "99th percentile of the time to re-read Redis and recompute.",
         "s", one("histogram_quantile(0.99, sum by (le) "
                  f"(rate(streamproc_exporter_refresh_seconds_bucket[{RATE}])))", "p99")),
]  # fmt: skip

PIPELINE_QUALITY = [
    Spec("Dead letters by reason", "Messages sent to the dead-letter topic per second.", "ops",
         one(rate("reason", "streamproc_dead_letters_total"), "{{reason}}")),
    Spec("Dead-letter share", "Dead letters per message read, per topic (5m); the alert fires "
         "above 1 % for 10 minutes with at least 1 message/s.", "percentunit",
         one('topic:streamproc_dead_letters_per_input_messages:ratio_rate5m{topic=~"$topic"}',
             "{{topic}}"), thresholds=(DEAD_LETTER_SHARE,), min=0),
    Spec("Duplicates", "Events dropped because their event_id was seen before.", "ops",
         one(rate("topic", "streamproc_duplicates_total"), "{{topic}}")),
    Spec("Late events", "Events that amended a closed window (late) and events beyond the "
         "maximum lateness (too late, dead-lettered).", "ops",
         (Target(rate("topic", "streamproc_late_events_total"), "late {{topic}}"),
          Target(rate("topic", "streamproc_dead_letters_total",
                      f'reason="too_late", {WORKERS}'), "too late {{topic}}"))),
]  # fmt: skip

WORKER_PROCESS = 'job="streamproc-worker", instance=~"$instance"'  # job: prometheus.yml

PIPELINE_PROCESSES = [
    Spec("Worker CPU", "CPU time per second of each worker process (1 = one core).",
         "percentunit", one(rate("instance", "process_cpu_seconds_total", WORKER_PROCESS),
                            "{{instance}}")),
    Spec("Worker memory", "Resident memory of each worker process.", "bytes",
         one(by("instance", "process_resident_memory_bytes", WORKER_PROCESS), "{{instance}}")),
    Spec("Held and dropped work",
         "Redis calls retried while a worker holds its batch (Redis down or slow), and work a "
         "worker dropped unacked because it stalled past its group session (its partitions' "
         "owner processes it).", "ops",
         (Target(rate("instance", "streamproc_redis_retries_total", WORKER_PROCESS),
                 "Redis retries {{instance}}"),
          Target(rate("instance", "streamproc_fenced_work_total", WORKER_PROCESS),
                 "fenced {{instance}}"))),
]  # fmt: skip


def pipeline_health() -> gd.Dashboard:
    return build(
        "streamproc-pipeline-health",
        "Pipeline health",
        "Throughput, lag, dead letters, duplicates and late events of the streamproc workers, "
        "and the exporter's refresh.",
        variables=[
            datasource_variable(),
            multi_variable("topic", "Topic", "label_values(streamproc_events_total, topic)"),
            multi_variable("instance", "Worker", "label_values(streamproc_events_total, instance)"),
        ],
        annotation=firing_alerts("PipelineLagHigh|DeadLetterRateHigh"),
        rows=[
            ("Throughput", PIPELINE_FLOW),
            ("Lag", PIPELINE_LAG),
            ("Bad input", PIPELINE_QUALITY),
            ("Worker processes", PIPELINE_PROCESSES),
        ],
    )


# --- files ------------------------------------------------------------------------------------

DASHBOARDS = {
    "shop-kpis.json": shop_kpis,
    "customer-service.json": customer_service,
    "pipeline-health.json": pipeline_health,
}


def render() -> dict[str, str]:
    """File name -> JSON text of every dashboard."""
    encoder = JSONEncoder(sort_keys=True, indent=2)
    return {name: encoder.encode(make().build()) + "\n" for name, make in DASHBOARDS.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    parser.add_argument("--out", type=Path, default=HERE / "dashboards")
    args = parser.parse_args(argv)
    stale = []
    for name, text in render().items():
        path = args.out / name
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if stale:
        sys.stderr.write(f"stale, run deploy/grafana/generate.py: {', '.join(stale)}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
