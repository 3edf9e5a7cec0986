"""The Grafana dashboards: committed JSON is the generator's output, passes the lint, shows
what the issue asks for, carries the alert thresholds, and is provisioned as docker-compose
mounts it. Whether every panel query returns data from a real pipeline is checked end to end in
test_observability_e2e.py."""

from __future__ import annotations

import copy
import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from dashboard_lint import (
    ROOT,
    dashboards,
    data_panels,
    defaults,
    known_metrics,
    panel_queries,
    problems,
    variables,
)

GRAFANA = ROOT / "deploy" / "grafana"
RULES = ROOT / "deploy" / "prometheus" / "rules"


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("generate_dashboards", GRAFANA / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def known() -> set[str]:
    return known_metrics()


@pytest.fixture(scope="module")
def by_title() -> dict[str, dict[str, Any]]:
    return {d["title"]: d for d in dashboards().values()}


def test_committed_json_is_what_the_generator_makes(tmp_path: Path) -> None:
    generated = _generator().render()
    committed = {path.name: path.read_text() for path in (GRAFANA / "dashboards").glob("*.json")}
    assert sorted(committed) == sorted(generated), "run python deploy/grafana/generate.py"
    stale = [name for name, text in generated.items() if committed[name] != text]
    assert stale == [], "run python deploy/grafana/generate.py"
    assert _generator().main(["--check"]) == 0


def test_the_sdk_is_the_pinned_grafana_flavour() -> None:
    """The SDK's release number is the Grafana version it targets (its epoch is a build time):
    the same Grafana as the docker-compose image."""
    pyproject = (ROOT / "pyproject.toml").read_text()
    pin = re.search(r'"grafana-foundation-sdk==(\d+)!([\d.]+)"', pyproject)
    assert pin is not None, "grafana-foundation-sdk must be pinned exactly"
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert compose["services"]["grafana"]["image"] == f"grafana/grafana:{pin.group(2)}"


def test_every_dashboard_passes_the_lint(known: set[str]) -> None:
    found = [problem for d in dashboards().values() for problem in problems(d, known)]
    assert found == []


BREAKAGES = {
    "no unit": lambda p: p["fieldConfig"]["defaults"].pop("unit"),
    "fixed data source": lambda p: p.update(datasource={"type": "prometheus", "uid": "prom"}),
    "renamed metric": lambda p: p["targets"][0].update(
        expr=p["targets"][0]["expr"].replace("shop_conversion_ratio", "shop_conversion_rate")
    ),
    "bad PromQL": lambda p: p["targets"][0].update(expr="sum(rate(shop_sessions[5m])"),
    "fixed rate window": lambda p: p["targets"][0].update(
        expr="sum(rate(streamproc_events_total[5m]))"
    ),
    "undeclared variable": lambda p: p["targets"][0].update(expr='shop_sessions{store_id="$shop"}'),
    "repeated id": lambda p: p.update(id=1),
    "no description": lambda p: p.update(description=""),
    "no refId": lambda p: p["targets"][0].update(refId=""),
}


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_the_lint_catches(
    breakage: str, by_title: dict[str, dict[str, Any]], known: set[str]
) -> None:
    broken = copy.deepcopy(by_title["Shop KPIs"])
    panel = next(p for p in data_panels(broken) if p["title"] == "Conversion")
    BREAKAGES[breakage](panel)
    assert problems(broken, known) != []


def _panel(dashboard: dict[str, Any], title: str) -> dict[str, Any]:
    matches = [p for p in data_panels(dashboard) if p["title"] == title]
    assert matches, f"no panel {title!r} in {dashboard['title']}"
    return matches[-1]


def _selects(dashboard: dict[str, Any], metric: str) -> bool:
    return any(metric in query.expr for query in panel_queries(dashboard))


@pytest.mark.parametrize(
    ("title", "metrics", "variable_names"),
    [
        (
            "Shop KPIs",
            [
                "shop_conversion_ratio", "shop_cart_abandonment_ratio", "shop_revenue_per_visitor",
                "shop_average_order_value", "shop_revenue", "shop_sessions", "shop_unique_visitors",
            ],
            ["datasource", "store", "channel", "device", "window"],
        ),
        (
            "Customer service",
            [
                "shop_tickets_opened", "shop_open_tickets", "shop_first_response_seconds",
                "shop_resolution_seconds", "shop_escalation_ratio", "shop_csat_score", "shop_nps",
            ],
            ["datasource", "store", "channel", "window"],
        ),
        (
            "Pipeline health",
            [
                "streamproc_events_total", "streamproc_event_time_lag_seconds",
                "streamproc_dead_letters_total", "streamproc_duplicates_total",
                "streamproc_late_events_total",
            ],
            ["datasource", "topic", "instance"],
        ),
    ],
)  # fmt: skip
def test_each_dashboard_shows_what_it_promises(
    title: str,
    metrics: list[str],
    variable_names: list[str],
    by_title: dict[str, dict[str, Any]],
) -> None:
    dashboard = by_title[title]
    assert [m for m in metrics if not _selects(dashboard, m)] == []
    assert [v["name"] for v in variables(dashboard)] == variable_names
    annotation = dashboard["annotations"]["list"][0]
    assert annotation["expr"].startswith('ALERTS{alertstate="firing"')


def test_the_window_selector_defaults_to_the_alerts_windows(
    by_title: dict[str, dict[str, Any]],
) -> None:
    assert defaults(by_title["Shop KPIs"])["window"] == "15m"
    assert defaults(by_title["Customer service"])["window"] == "1h"
    throughput = _panel(by_title["Pipeline health"], "Throughput per worker")
    assert "by (instance)" in throughput["targets"][0]["expr"]


def _alert_expr(name: str) -> str:
    for path in RULES.glob("*.yml"):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                if rule.get("alert") == name:
                    return str(rule["expr"])
    raise AssertionError(f"no alert {name}")


def _red_lines(panel: dict[str, Any]) -> list[float]:
    steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
    return [step["value"] for step in steps if step["value"] is not None]


@pytest.mark.parametrize(
    ("dashboard", "panel", "alert", "pattern"),
    [
        ("Shop KPIs", "Cart abandonment z-score", "CartAbandonmentSpike", r"zscore2h\S* >= (\S+)"),
        ("Shop KPIs", "Carts created", "CartAbandonmentSpike", r"carts_created\S* >= (\S+)"),
        ("Customer service", "First-response time", "FirstResponseSlow", r"p90\S* > (\S+)"),
        ("Pipeline health", "Event-time lag", "PipelineLagHigh", r"lag_seconds\) > (\S+)"),
        ("Pipeline health", "Dead-letter share", "DeadLetterRateHigh", r"ratio_rate5m > (\S+)"),
    ],
)
def test_thresholds_are_the_alert_defaults(
    dashboard: str, panel: str, alert: str, pattern: str, by_title: dict[str, dict[str, Any]]
) -> None:
    match = re.search(pattern, _alert_expr(alert))
    assert match is not None, f"{pattern} not in {alert}"
    assert _red_lines(_panel(by_title[dashboard], panel)) == [float(match.group(1))]


def test_the_abandonment_threshold_line_is_the_alert_fallback(
    by_title: dict[str, dict[str, Any]],
) -> None:
    line = _panel(by_title["Shop KPIs"], "Cart abandonment")["targets"][1]["expr"]
    recorded = yaml.safe_load((RULES / "shop-kpis.yml").read_text())["groups"][0]["rules"]
    zscore = next(r for r in recorded if r["record"].endswith(":zscore2h"))["expr"]
    floor = re.search(r"clamp_min\(\S+, ([\d.]+)\)", " ".join(zscore.split()))
    assert floor is not None and f", {floor.group(1)})" in line
    assert "+ 3 * clamp_min(" in line


def test_provisioning_matches_the_dashboards_and_compose() -> None:
    provisioning = GRAFANA / "provisioning"
    sources = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    (source,) = sources["datasources"]
    assert source["type"] == "prometheus" and source["isDefault"] is True
    assert source["url"] == "http://prometheus:9090"
    providers = yaml.safe_load((provisioning / "dashboards" / "streamproc.yml").read_text())
    (provider,) = providers["providers"]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./deploy/grafana/dashboards:{provider['options']['path']}:ro" in mounts
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in mounts
    uids = [d["uid"] for d in dashboards().values()]
    assert len(set(uids)) == len(uids) == 3


def test_shared_crosshair_links_and_counts_that_read_0(by_title: dict[str, dict[str, Any]]) -> None:
    """One crosshair across a dashboard's panels, links between the three dashboards (by their
    tag, keeping the time range and the variables), and count stats that show 0, not "No data",
    when a store's series is not there."""
    for dashboard in by_title.values():
        assert dashboard["graphTooltip"] == 1  # shared crosshair
        (link,) = dashboard["links"]
        assert link["type"] == "dashboards" and link["tags"] == ["streamproc"]
        assert link["keepTime"] and link["includeVars"]
        assert "streamproc" in dashboard["tags"]
    counts = {
        "Shop KPIs": ["Revenue", "Sessions", "Unique visitors", "Orders"],
        "Customer service": ["Tickets opened", "Open tickets"],
    }
    for title, panels in counts.items():
        stats = {p["title"]: p for p in data_panels(by_title[title]) if p["type"] == "stat"}
        for name in panels:
            assert stats[name]["fieldConfig"]["defaults"]["noValue"] == "0", (title, name)


def test_orders_and_revenue_against_last_week_and_stores_side_by_side(
    by_title: dict[str, dict[str, Any]],
) -> None:
    shop = by_title["Shop KPIs"]
    for title, metric in (("Orders against last week", "shop_orders"),
                          ("Revenue against last week", "shop_revenue")):  # fmt: skip
        now, week_ago = (t["expr"] for t in _panel(shop, title)["targets"])
        assert metric in now and week_ago == now.replace("})", "} offset 1w)")
    last = _panel(shop, "Minutes since the last order")
    assert last["type"] == "stat" and last["fieldConfig"]["defaults"]["unit"] == "m"
    assert "timestamp(shop_orders{" in last["targets"][0]["expr"]
    stores = _panel(shop, "Stores side by side")
    assert stores["type"] == "table"
    assert [t["format"] for t in stores["targets"]] == ["table"] * 5
    assert all(t["expr"].startswith("max by (store_id) (") for t in stores["targets"])
    assert [x["id"] for x in stores["transformations"]] == ["merge", "organize"]
