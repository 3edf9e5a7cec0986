"""Prometheus and Alertmanager configuration: promtool and amtool accept it, the rule unit
tests (deploy/prometheus/tests) pass and fail when a guard is removed, every alert of docs/alerts.md
exists with its annotations, and the end-to-end test's rendering changes durations only.

Skipped when promtool or amtool is missing, except in CI (CI=true), where scripts/test installs
them and a missing binary fails."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from dashboard_lint import known_metrics, selected_metrics
from promstack import DEPLOY, require_binary
from rulerender import duration_ms, render_rules, skeleton

PROMETHEUS = DEPLOY / "prometheus"
ALERTMANAGER = DEPLOY / "alertmanager" / "alertmanager.yml"
RULE_FILES = sorted((PROMETHEUS / "rules").glob("*.yml"))
TEST_FILES = sorted((PROMETHEUS / "tests").glob("*.yml"))


def run(*argv: str | Path, cwd: Path = PROMETHEUS) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in argv], cwd=cwd, capture_output=True, text=True, timeout=600
    )


def rules() -> list[dict[str, Any]]:
    return [
        rule
        for path in RULE_FILES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
    ]


def alerts() -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for rule in rules() if "alert" in rule}


@pytest.fixture(scope="module")
def promtool() -> str:
    return require_binary("promtool")


@pytest.fixture(scope="module")
def amtool() -> str:
    return require_binary("amtool")


def test_promtool_checks_the_config_and_its_rule_files(promtool: str) -> None:
    done = run(promtool, "check", "config", "prometheus.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(RULE_FILES)} rule files found" in done.stdout


def test_promtool_checks_the_rules(promtool: str) -> None:
    done = run(promtool, "check", "rules", *RULE_FILES)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_rule_unit_tests_pass(promtool: str) -> None:
    assert len(TEST_FILES) == 7
    done = run(promtool, "test", "rules", *TEST_FILES)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("SUCCESS") == len(TEST_FILES)


# A guard removed or weakened must make a rule unit test fail: proof that the tests bite.
MUTATIONS = {
    "no minimum of carts": ("shop-kpis.yml", " >= 30\n", " >= 0\n", "cart-abandonment-fallback"),
    "baseline maturity ignored": (
        "shop-kpis.yml",
        '{window="15m"} offset 150m',
        '{window="15m"}',
        "cart-abandonment-fallback",
    ),
    "z-score also with last week's data": (
        "shop-kpis.yml",
        "unless on (store_id, window)",
        "or on (store_id, window)",
        "cart-abandonment-week",
    ),
    "spike without `for`": ("shop-kpis.yml", "for: 10m", "for: 0m", "cart-abandonment-fallback"),
    "no minimum of sessions": ("shop-kpis.yml", ">= 200", ">= 0", "conversion"),
    "no minimum of tickets": ("shop-kpis.yml", ">= 10\n", ">= 0\n", "first-response"),
    "lag of idle partitions": (
        "pipeline.yml",
        "(time() - max by (instance, partition) (streamproc_watermark_timestamp_seconds)) > 300",
        "vector(1)",
        "pipeline",
    ),
    "dead letters at any traffic": ("pipeline.yml", ">= 1\n", ">= 0\n", "pipeline"),
    "orders expected at any traffic": (
        "shop-kpis.yml",
        "expected >= 5",
        "expected >= 0",
        "orders-stalled",
    ),
    "orders stalled without `for`": (
        "shop-kpis.yml",
        "store_id_window:shop_orders:max == 0\n          )\n        for: 5m",
        "store_id_window:shop_orders:max == 0\n          )\n        for: 0m",
        "orders-stalled",
    ),
    "no fallback on last week": ("shop-kpis.yml", '1d"}) > 0\n', '1d"}) >= 0\n', "orders-stalled"),
    "quiet topics alert": ("pipeline.yml", "offset 10m)) >= 60", "offset 10m)) >= 0", "silence"),
    "a silent topic while all are": (
        "pipeline.yml",
        "sum(increase(streamproc_events_total[10m])) > 0",
        "vector(1)",
        "silence",
    ),
    "one failed refresh is stale": ("pipeline.yml", "[5m])) >= 3", "[5m])) >= 1", "silence"),
    "other jobs down": (
        "pipeline.yml",
        'up{job=~"streamproc-worker|streamproc-exporter"}',
        "up",
        "silence",
    ),
}


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_the_rule_unit_tests_catch(mutation: str, promtool: str, tmp_path: Path) -> None:
    rule_file, old, new, test_file = MUTATIONS[mutation]
    shutil.copytree(PROMETHEUS / "tests", tmp_path / "tests")
    (tmp_path / "rules").mkdir()
    for path in RULE_FILES:
        text = path.read_text()
        if path.name == rule_file:
            assert old in text, f"{old!r} not in {rule_file}"
            text = text.replace(old, new)
        (tmp_path / "rules" / path.name).write_text(text)
    done = run(promtool, "test", "rules", f"tests/{test_file}.yml", cwd=tmp_path)
    assert done.returncode != 0, done.stdout


def test_amtool_checks_the_alertmanager_config(amtool: str) -> None:
    done = run(amtool, "check-config", ALERTMANAGER)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (["alertname=CartAbandonmentSpike", "store_id=store-01", "severity=critical"], "pager"),
        (["alertname=PipelineLagHigh", "severity=critical", "partition=3"], "pager"),
        (["alertname=FirstResponseSlow", "store_id=store-01", "severity=warning"], "webhook"),
        (["alertname=DeadLetterRateHigh", "severity=warning", "topic=shop.cart"], "webhook"),
        (["alertname=Anything", "severity=info"], "webhook"),
    ],
)
def test_every_alert_reaches_its_receiver_by_severity(
    amtool: str, labels: list[str], receiver: str
) -> None:
    done = run(
        amtool, "config", "routes", "test", f"--config.file={ALERTMANAGER}",
        f"--verify.receivers={receiver}", *labels,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def test_alerts_are_grouped_by_store_within_each_severity() -> None:
    config = yaml.safe_load(ALERTMANAGER.read_text())
    route = config["route"]
    assert route["group_by"] == ["store_id"] and route["receiver"] == "webhook"
    critical, info, no_store = route["routes"]
    assert critical["matchers"] == ['severity="critical"'] and critical["receiver"] == "pager"
    assert info["matchers"] == ['severity="info"'] and "receiver" not in info
    assert no_store == {"matchers": ['store_id=""'], "group_by": ["alertname"]}
    assert critical["routes"] == info["routes"] == [no_store]
    urls = {r["name"]: r["webhook_configs"][0]["url"] for r in config["receivers"]}
    assert urls == {"pager": WEBHOOK, "webhook": WEBHOOK}


WEBHOOK = "http://alert-webhook:8080/alerts"


def test_the_alerts_of_kpis_md() -> None:
    """docs/alerts.md, the table: names, `for` and the thresholds in the expressions."""
    found = alerts()
    assert sorted(found) == [
        "CartAbandonmentSpike", "ConversionDrop", "DeadLetterRateHigh", "ExporterStale",
        "FirstResponseSlow", "InputTopicSilent", "OrdersStalled", "PipelineLagHigh",
        "ShopKpisAbsent", "StreamprocTargetDown",
    ]  # fmt: skip
    spike = " ".join(found["CartAbandonmentSpike"]["expr"].split())
    assert (
        ">= on (store_id, window) 1.5 * max by (store_id, window) (shop_cart_abandonment_" in spike
    )
    assert 'zscore2h{window="15m"} >= 3' in spike and "offset 1w" in spike
    assert 'shop_carts_created:max{window="15m"} >= 30' in spike
    conversion = " ".join(found["ConversionDrop"]["expr"].split())
    assert "< on (store_id, window) 0.5 * max" in conversion and ">= 200" in conversion
    assert 'p90{window="1h"} > 3600' in found["FirstResponseSlow"]["expr"]
    assert "> 300" in found["PipelineLagHigh"]["expr"]
    assert "ratio_rate5m > 0.01" in found["DeadLetterRateHigh"]["expr"]
    fors = {name: rule["for"] for name, rule in found.items()}
    assert fors["CartAbandonmentSpike"] == "10m" and fors["FirstResponseSlow"] == "15m"


@pytest.mark.parametrize("name", sorted(alerts()))
def test_every_alert_says_where_what_and_what_to_do(name: str) -> None:
    """The monitoring-mixin conventions: severity critical, warning or info; a summary and a
    description saying where and how much; a runbook section that exists; a dashboard panel
    that exists, with the alert's store, window or topic selected."""
    rule = alerts()[name]
    annotations = rule["annotations"]
    assert sorted(annotations) == ["dashboard_url", "description", "runbook_url", "summary"]
    assert rule["labels"]["severity"] in ("critical", "warning", "info")
    assert annotations["runbook_url"] == f"docs/runbook.md#{name.lower()}"
    assert f"\n### {name}\n" in RUNBOOK.read_text()
    if "store_id" in rule["expr"] and "absent(" not in rule["expr"]:
        for key in ("summary", "description"):
            assert "$labels.store_id" in annotations[key]
        assert "var-store={{ $labels.store_id }}" in annotations["dashboard_url"]
    url = re.fullmatch(r"/d/([a-z-]+)\?(.*)viewPanel=(\d+)", annotations["dashboard_url"])
    assert url is not None, annotations["dashboard_url"]
    dashboard = DASHBOARDS[url.group(1)]
    assert int(url.group(3)) in {panel["id"] for panel in dashboard["panels"]}
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    chosen = re.findall(r"var-([a-z]+)=", url.group(2))
    assert set(chosen) <= variables


RUNBOOK = DEPLOY.parent / "docs" / "runbook.md"
DASHBOARDS = {
    board["uid"]: board
    for board in (
        json.loads(path.read_text())
        for path in sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))
    )
}


def test_recording_rules_are_named_level_metric_operations() -> None:
    names = [rule["record"] for rule in rules() if "record" in rule]
    assert len(names) == len(set(names))
    assert [n for n in names if not re.fullmatch(r"[a-z_]+:[a-z0-9_]+:[a-z0-9_]+", n)] == []


def test_every_metric_the_rules_select_exists() -> None:
    known = known_metrics()
    selected = {name for rule in rules() for name in selected_metrics(rule["expr"])}
    assert sorted(str(name) for name in selected if name not in known) == []


@pytest.mark.parametrize("path", RULE_FILES, ids=lambda p: p.name)
def test_the_test_rendering_changes_durations_only(path: Path, tmp_path: Path) -> None:
    rendered = render_rules(path, tmp_path / path.name, factor=1 / 120)
    production = yaml.safe_load(path.read_text())
    for group, group_rendered in zip(production["groups"], rendered["groups"], strict=True):
        for rule, test_rule in zip(group["rules"], group_rendered["rules"], strict=True):
            assert skeleton(test_rule["expr"]) == skeleton(rule["expr"])
            assert test_rule["expr"] != rule["expr"] or "[" not in rule["expr"]
            assert test_rule.get("labels") == rule.get("labels")
            if "for" in rule:
                assert duration_ms(test_rule["for"]) == round(duration_ms(rule["for"]) / 120)
            for key, text in rule.get("annotations", {}).items():
                assert skeleton(test_rule["annotations"][key]) == skeleton(text)


def test_the_rendered_rules_are_valid(promtool: str, tmp_path: Path) -> None:
    for path in RULE_FILES:
        render_rules(path, tmp_path / path.name, factor=1 / 120)
    done = run(promtool, "check", "rules", *sorted(tmp_path.glob("*.yml")))
    assert done.returncode == 0, done.stdout + done.stderr
