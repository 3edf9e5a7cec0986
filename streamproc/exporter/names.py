"""KPI report rows -> Prometheus metric families: the one table of names, labels and types.

Naming follows the Prometheus naming rules (``promtool check metrics``; ``docs/metrics.md`` lists
the metrics): prefix ``shop_``, base units (``_seconds``), ``_ratio`` for shares, no ``_total``
(these are windowed gauges, not counters), money in the reporting currency with a ``currency``
label. Every metric has a constant label set; a breakdown label is ``"all"`` on the row that is not
broken down, so ``sum()`` over a breakdown must select ``!= "all"``. Percentiles are a summary
with only ``quantile`` samples: a ``quantile`` label is reserved for summaries, and a window's
count and sum are not the counters a summary's ``_count`` and ``_sum`` promise. Exposition
lines::

    shop_conversion_ratio{window="15m",store_id="all",channel_group="all",device_type="all"} 0.031
    shop_orders{window="1h",store_id="store-01",channel_group="email",device_type="all"} 31.0
    shop_revenue{window="1h",store_id="all",channel_group="all",device_type="all",currency="USD"} 8
    shop_first_response_seconds{window="1h",store_id="all",quantile="0.9"} 1840.0
    shop_open_tickets{store_id="all",channel="chat",priority="all"} 12.0
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from streamproc.kpi.report import Row

CH_DEV = ("channel_group", "device_type")
NOT_BROKEN_DOWN = "all"


@dataclass(frozen=True)
class MetricName:
    """How the rows of one KPI are exposed."""

    name: str
    help: str
    breakdown: tuple[str, ...] = ()  # label names of the row's dimension ("all" when none)
    type: str = "gauge"  # or "summary" (percentiles)
    money: bool = False  # adds currency="<reporting currency>"
    windowed: bool = True  # adds window="<size>"
    quantile: str | None = None  # adds quantile="<q>"

    @property
    def label_names(self) -> tuple[str, ...]:
        return (
            *(("window",) if self.windowed else ()),
            "store_id",
            *self.breakdown,
            *(("currency",) if self.money else ()),
            *(("quantile",) if self.quantile else ()),
        )


# Counts and money read 0 rather than disappear (kpi/report.py; docs/metrics.md, "Zero is a value").
ZERO = " 0 when none but the store had events (docs/metrics.md: Zero is a value)."


def _seconds(kpi: str, what: str) -> dict[str, MetricName]:
    """The three percentiles and the mean of a duration KPI."""
    name = f"shop_{kpi}_seconds"
    help_ = f"{what} counted in the window, percentiles from histogram buckets (seconds)."
    quantiles = {
        f"{kpi}_seconds_p{p}": MetricName(name, help_, type="summary", quantile=q)
        for p, q in (("50", "0.5"), ("90", "0.9"), ("99", "0.99"))
    }
    mean = MetricName(f"shop_{kpi}_mean_seconds", f"Mean of the {what.lower()} (seconds).")
    return {**quantiles, f"{kpi}_seconds_mean": mean}


# KPI id (kpi/report.py KPIS, plus open_tickets) -> metric. Help texts follow docs/semantics.md.
METRICS: dict[str, MetricName] = {
    "sessions": MetricName("shop_sessions", "Sessions started in the window." + ZERO, CH_DEV),
    "unique_visitors": MetricName(
        "shop_unique_visitors",
        "Distinct visitors in the window (exact while small, else HyperLogLog)." + ZERO,
        CH_DEV,
    ),
    "page_views": MetricName("shop_page_views", "Page views in the window." + ZERO, CH_DEV),
    "orders": MetricName("shop_orders", "Orders placed in the window." + ZERO, CH_DEV),
    "revenue": MetricName(
        "shop_revenue",
        "Order totals in the window, reporting currency." + ZERO,
        CH_DEV,
        money=True,
    ),
    "net_revenue": MetricName(
        "shop_net_revenue",
        "Revenue minus refunds and cancelled orders in the window, reporting currency." + ZERO,
        money=True,
    ),
    "conversion_rate": MetricName(
        "shop_conversion_ratio", "Orders per session in the window.", CH_DEV
    ),
    "average_order_value": MetricName(
        "shop_average_order_value", "Revenue per order, reporting currency.", CH_DEV, money=True
    ),
    "revenue_per_visitor": MetricName(
        "shop_revenue_per_visitor",
        "Revenue per unique visitor, reporting currency.",
        CH_DEV,
        money=True,
    ),
    "session_conversion_rate": MetricName(
        "shop_session_conversion_ratio", "Share of sessions with an order."
    ),
    "add_to_cart_rate": MetricName(
        "shop_add_to_cart_ratio", "Share of sessions with an add_to_cart."
    ),
    "pageviews_per_session": MetricName(
        "shop_page_views_per_session", "Page views per closed session."
    ),
    "bounce_rate": MetricName("shop_bounce_ratio", "Share of closed sessions that bounced."),
    "average_session_duration_seconds": MetricName(
        "shop_average_session_duration_seconds", "Mean duration of closed sessions (seconds)."
    ),
    "new_visitor_share": MetricName(
        "shop_new_visitor_ratio", "Share of sessions (with an index) that are a first visit."
    ),
    "units_per_order": MetricName("shop_units_per_order", "Item units per order."),
    "new_customer_order_share": MetricName(
        "shop_new_customer_order_ratio", "Share of orders (with an index) by new customers."
    ),
    "refund_rate": MetricName("shop_refund_ratio", "Refunds per order in the window."),
    "carts_created": MetricName("shop_carts_created", "Carts created in the window." + ZERO),
    "cart_abandonment_rate": MetricName(
        "shop_cart_abandonment_ratio", "Share of the window's carts not converted."
    ),
    "checkout_abandonment_rate": MetricName(
        "shop_checkout_abandonment_ratio", "Share of carts with a checkout that were abandoned."
    ),
    "payment_failure_rate": MetricName(
        "shop_payment_failure_ratio", "Payment failures per checkout started."
    ),
    "tickets_opened": MetricName(
        "shop_tickets_opened", "Support tickets opened in the window." + ZERO, ("channel",)
    ),
    **_seconds("first_response", "First-response times"),
    **_seconds("resolution", "Resolution times"),
    "escalation_rate": MetricName("shop_escalation_ratio", "Tickets escalated per ticket opened."),
    "csat_score": MetricName("shop_csat_score", "Mean CSAT score (1-5)."),
    "csat_positive_share": MetricName(
        "shop_csat_positive_ratio", "Share of CSAT responses scoring 4 or 5."
    ),
    "nps": MetricName("shop_nps", "Net promoter score (-100 to 100)."),
    "open_tickets": MetricName(
        "shop_open_tickets", "Support tickets open now.", ("channel", "priority"), windowed=False
    ),
}


@dataclass(frozen=True)
class MetricFamily:
    """One metric family, free of prometheus_client (metrics.py turns it into one)."""

    name: str
    help: str
    type: str
    label_names: tuple[str, ...]
    samples: tuple[tuple[tuple[str, ...], float], ...]  # (label values, value)


def labels_of(row: Row, *, currency: str) -> tuple[MetricName, tuple[str, ...]]:
    """The metric of a row and its label values, in ``label_names`` order."""
    metric = METRICS.get(row["kpi"])
    if metric is None:
        raise ValueError(f"no metric name for KPI {row['kpi']!r}")
    breakdown = dict.fromkeys(metric.breakdown, NOT_BROKEN_DOWN)
    dimension = row["dimension"]
    if dimension is not None:
        key, _, value = dimension.partition("=")
        if key not in breakdown:
            raise ValueError(f"KPI {row['kpi']!r} has no breakdown by {key!r}")
        breakdown[key] = value
    values = (
        *((row["window"],) if metric.windowed else ()),
        row["store_id"],
        *breakdown.values(),
        *((currency,) if metric.money else ()),
        *((metric.quantile,) if metric.quantile else ()),
    )
    return metric, values


def families(rows: Iterable[Row], *, currency: str) -> list[MetricFamily]:
    """The rows as metric families, in table order; rows without a value are left out."""
    samples: dict[str, list[tuple[tuple[str, ...], float]]] = {}
    for row in rows:
        if row["value"] is None:
            continue
        metric, values = labels_of(row, currency=currency)
        samples.setdefault(metric.name, []).append((values, float(row["value"])))
    out: list[MetricFamily] = []
    seen: set[str] = set()
    for metric in METRICS.values():
        if metric.name in samples and metric.name not in seen:
            seen.add(metric.name)
            found = tuple(samples[metric.name])
            out.append(
                MetricFamily(metric.name, metric.help, metric.type, metric.label_names, found)
            )
    return out


@dataclass(frozen=True)
class Exposition:
    """What ``/metrics`` shows from one refresh: the KPI families and how far the input got."""

    families: tuple[MetricFamily, ...] = ()
    partitions: int = 0  # partitions that published a status
    latest_event_ms: int | None = None  # highest event time read by any partition
    watermark_ms: int | None = None  # lowest watermark of the partitions still running
    window_end_ms: int | None = None  # end of the trailing windows
    # Wall clock of the refresh that made it; not part of the result, so two refreshes that
    # read the same data compare equal.
    refreshed_ms: int | None = field(default=None, compare=False)

    @property
    def series(self) -> int:
        return sum(len(family.samples) for family in self.families)
