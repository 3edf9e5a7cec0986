"""A backfill's KPI windows as OpenMetrics text, for ``promtool tsdb create-blocks-from``.

Each aligned window's value becomes one sample of the live exporter's metric (same name and
labels, ``exporter/names.py``) plus ``source="backfill"``, so it never collides with live series,
stamped at the window's end in seconds: the moment a live gauge of that window would show it.
promtool needs seconds (milliseconds are accepted silently and land 50 000 years ahead), samples
of a series in time order (older ones are dropped silently), and ``# EOF`` at the end::

    # HELP shop_orders Orders placed in the window.
    # TYPE shop_orders gauge
    shop_orders{window="1h",store_id="all",...,source="backfill"} 31.0 1795305600
    ...
    # EOF

Only windows wholly inside the backfilled range are written: one that straddles a boundary holds
only part of its events, and history must not show it as the whole. ``open_tickets`` (not a
window) is left out too.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from streamproc.exporter.names import METRICS, MetricName, labels_of
from streamproc.kpi.report import Row
from streamproc.times import rfc3339_ms

SOURCE = ("source", "backfill")

Series = tuple[str, ...]  # label values, in the metric's label order


@dataclass(frozen=True)
class OpenMetricsText:
    """A backfill's KPI history as OpenMetrics text for ``promtool``, and what it holds."""

    text: str
    series: int
    samples: int
    first_s: int | None  # earliest sample timestamp
    last_s: int | None
    left_out: int  # rows of windows not wholly inside the range


def _escape_label(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _escape_help(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _value(number: float) -> str:
    return repr(float(number))


def exposition(
    rows: Iterable[Row], *, currency: str, since_ms: int, until_ms: int
) -> OpenMetricsText:
    """The rows' windows inside ``[since_ms, until_ms)`` as OpenMetrics text."""
    grouped, metrics, left_out = _series(rows, currency, since_ms, until_ms)
    lines: list[str] = []
    samples, stamps = 0, list[int]()
    for name in _family_order(metrics):
        metric = metrics[name]
        lines.append(f"# HELP {name} {_escape_help(metric.help)}")
        lines.append(f"# TYPE {name} {metric.type}")
        for values, points in sorted(grouped[name].items()):
            labels = ",".join(
                f'{key}="{_escape_label(value)}"'
                for key, value in (*zip(metric.label_names, values, strict=True), SOURCE)
            )
            ordered = sorted(points)
            lines += [f"{name}{{{labels}}} {_value(value)} {at_s}" for at_s, value in ordered]
            samples += len(ordered)
            stamps += [ordered[0][0], ordered[-1][0]]
    lines.append("# EOF")
    series = sum(len(found) for found in grouped.values())
    first, last = min(stamps, default=None), max(stamps, default=None)
    return OpenMetricsText("\n".join(lines) + "\n", series, samples, first, last, left_out)


def _series(
    rows: Iterable[Row], currency: str, since_ms: int, until_ms: int
) -> tuple[dict[str, dict[Series, list[tuple[int, float]]]], dict[str, MetricName], int]:
    """(metric name -> label values -> [(window end s, value)], the metrics, rows left out)."""
    grouped: dict[str, dict[Series, list[tuple[int, float]]]] = {}
    metrics: dict[str, MetricName] = {}
    left_out = 0
    for row in rows:
        metric = METRICS.get(row["kpi"])
        if metric is None or not metric.windowed or row["value"] is None:
            continue
        start, end = rfc3339_ms(row["start"]), rfc3339_ms(row["end"])
        if start < since_ms or end > until_ms:
            left_out += 1
            continue
        metric, values = labels_of(row, currency=currency)
        metrics[metric.name] = metric
        points = grouped.setdefault(metric.name, {}).setdefault(values, [])
        points.append((end // 1000, float(row["value"])))
    return grouped, metrics, left_out


def _family_order(metrics: dict[str, MetricName]) -> list[str]:
    """Families in the exporter's table order (each name once)."""
    order: list[str] = []
    for metric in METRICS.values():
        if metric.name in metrics and metric.name not in order:
            order.append(metric.name)
    return order
