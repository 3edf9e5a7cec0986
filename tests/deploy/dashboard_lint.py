"""A lint for the generated Grafana dashboards, in the spirit of grafana/dashboard-linter (which
cannot be installed here): templated data source, units, titles and descriptions, unique panel
ids, a refId per target, ``$__rate_interval`` in every rate, every variable declared, every query
parsing as PromQL, and every metric it selects existing: exported by a worker or the exporter,
recorded by a rule, or built into Prometheus."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import promql_parser
import yaml
from prometheus_client import CollectorRegistry

from streamproc.config import load_settings
from streamproc.exporter.names import METRICS, Exposition
from streamproc.metrics import ExporterMetrics, WorkerMetrics, all_reasons

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "deploy" / "grafana" / "dashboards"
RULES = ROOT / "deploy" / "prometheus" / "rules"
TEMPLATED = {"type": "prometheus", "uid": "${datasource}"}
PROMETHEUS_BUILTIN = {"ALERTS", "ALERTS_FOR_STATE", "up", "scrape_duration_seconds"}
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")
_RATE = re.compile(r"\b(?:rate|irate|increase)\s*\(")


@dataclass(frozen=True)
class Query:
    dashboard: str
    panel: str
    ref: str
    expr: str


def dashboards(directory: Path = DASHBOARDS) -> dict[str, dict[str, Any]]:
    return {path.name: json.loads(path.read_text()) for path in sorted(directory.glob("*.json"))}


def all_panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows and the panels inside collapsed rows included."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def data_panels(dashboard: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [p for p in all_panels(dashboard) if p.get("type") != "row"]


def panel_queries(dashboard: Mapping[str, Any]) -> list[Query]:
    return [
        Query(dashboard["title"], panel["title"], target.get("refId", ""), target["expr"])
        for panel in data_panels(dashboard)
        for target in panel.get("targets", [])
    ]


def variables(dashboard: Mapping[str, Any]) -> list[dict[str, Any]]:
    return list(dashboard.get("templating", {}).get("list", []))


def defaults(dashboard: Mapping[str, Any]) -> dict[str, str]:
    """The value each variable has when the dashboard opens (``.*`` for "All")."""
    values = {}
    for variable in variables(dashboard):
        current = variable.get("current", {}).get("value")
        if current == "$__all":
            current = variable.get("allValue", ".*")
        if isinstance(current, str):
            values[variable["name"]] = current
    return values


def substitute(expr: str, values: Mapping[str, str], *, rate_interval: str = "5m") -> str:
    """The query as Grafana sends it, for the given variable values."""
    expr = expr.replace("$__rate_interval", rate_interval)

    def value(match: re.Match[str]) -> str:
        name = next(group for group in match.groups() if group)
        return values[name]

    return _VARIABLE.sub(value, expr)


def selected_metrics(expr: str) -> set[str | None]:
    """The metric names a (substituted) PromQL expression selects; None for a selector
    without a name."""
    names: set[str | None] = set()

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            names.add(node.name)

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names


SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("", "_sum", "_count"),
    "info": ("_info",),
}


def _exposed(registry: CollectorRegistry) -> set[str]:
    """The sample names a registry's metric families expose, those whose label sets appear
    only once used (batch histograms, per-partition gauges) included."""
    names: set[str] = set()
    for family in registry.collect():
        names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names


def known_metrics() -> set[str]:
    """What a scrape of a worker and of the exporter can contain (the KPI gauges from the
    names table, the rest from the real registries), recording rules, Prometheus' own."""
    settings = load_settings(env_file=None)
    worker = CollectorRegistry()
    WorkerMetrics.create(worker, topics=settings.topics_by_family, dlq_reasons=all_reasons())
    exporter = CollectorRegistry()
    progress = Exposition(
        partitions=1, latest_event_ms=1, watermark_ms=1, window_end_ms=1, refreshed_ms=1
    )
    ExporterMetrics.create(exporter, exposition=lambda: progress)
    recorded = {
        rule["record"]
        for path in sorted(RULES.glob("*.yml"))
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "record" in rule
    }
    kpis = {metric.name for metric in METRICS.values()}
    return _exposed(worker) | _exposed(exporter) | kpis | recorded | PROMETHEUS_BUILTIN


def _panel_problems(panel: Mapping[str, Any]) -> Iterator[str]:
    title = panel.get("title", "")
    if not title or not panel.get("description"):
        yield f"panel {panel.get('id')}: title and description are required"
    if panel.get("datasource") != TEMPLATED:
        yield f"{title}: data source is not the templated ${{datasource}}"
    if not panel.get("fieldConfig", {}).get("defaults", {}).get("unit"):
        yield f"{title}: no unit"
    targets = panel.get("targets", [])
    if not targets:
        yield f"{title}: no query"
    refs = [target.get("refId") for target in targets]
    if not all(refs) or len(set(refs)) != len(refs):
        yield f"{title}: every target needs its own refId, got {refs}"
    for target in targets:
        if target.get("datasource", TEMPLATED) != TEMPLATED:
            yield f"{title}: a target overrides the data source"


def _query_problems(
    where: str, expr: str, values: Mapping[str, str], known: set[str]
) -> Iterator[str]:
    for match in _VARIABLE.finditer(expr):
        name = next(group for group in match.groups() if group)
        if name not in values and not name.startswith("__"):
            yield f"{where}: variable ${name} is not declared"
            return
    for call in _RATE.finditer(expr):
        window = expr[call.end() :].split("[", 1)[1].split("]", 1)[0]
        if window != "$__rate_interval":
            yield f"{where}: rate over [{window}] instead of [$__rate_interval]"
    try:
        names = selected_metrics(substitute(expr, values))
    except ValueError as exc:
        yield f"{where}: does not parse: {exc}"
        return
    for name in sorted(names, key=str):
        if name is None or name not in known:
            yield f"{where}: selects {name!r}, which nothing exposes or records"


def _layout_problems(dashboard: Mapping[str, Any]) -> Iterator[str]:
    ids = [panel.get("id") for panel in all_panels(dashboard)]
    if None in ids or len(set(ids)) != len(ids):
        yield f"panel ids missing or repeated: {ids}"
    for panel in all_panels(dashboard):
        grid = panel.get("gridPos", {})
        if grid.get("x", 0) + grid.get("w", 0) > 24:
            yield f"{panel.get('title')}: wider than the 24-column grid"


def _variable_problems(dashboard: Mapping[str, Any]) -> Iterator[str]:
    found = {v["name"]: v for v in variables(dashboard)}
    source = found.get("datasource", {})
    if source.get("type") != "datasource" or source.get("query") != "prometheus":
        yield "no `datasource` variable of type prometheus"
    for variable in found.values():
        if variable["type"] == "query" and variable.get("datasource") != TEMPLATED:
            yield f"variable {variable['name']}: data source is not templated"


def problems(dashboard: Mapping[str, Any], known: set[str]) -> list[str]:
    """Everything wrong with one dashboard (empty: it passes)."""
    values = defaults(dashboard)
    found = [*_variable_problems(dashboard), *_layout_problems(dashboard)]
    for panel in data_panels(dashboard):
        found += _panel_problems(panel)
        for target in panel.get("targets", []):
            where = f"{panel.get('title')} {target.get('refId')}"
            found += _query_problems(where, target.get("expr", ""), values, known)
    for annotation in dashboard.get("annotations", {}).get("list", []):
        if annotation.get("datasource") != TEMPLATED:
            found.append(f"annotation {annotation.get('name')}: data source is not templated")
        where = f"annotation {annotation.get('name')}"
        found += _query_problems(where, annotation.get("expr", ""), values, known)
    return [f"{dashboard.get('title')}: {problem}" for problem in found]
