"""The observability stack end to end, with real processes on loopback:

simulator -> embedded broker -> worker -> Redis -> exporter -> Prometheus (the production rule
files, durations scaled by rulerender) -> Alertmanager (the production routing) -> the stack's
webhook receiver.

Event time runs SPEED times faster than the wall clock (paced_simulation.py) and every duration
of the rules is divided by the same factor, so for both one wall second is two minutes. The
simulated traffic starts with 3.5 hours of normal traffic: the z-score fallback's baseline (the
2 hours ending 30 minutes ago) is complete after 2.5 hours, so the last hour before the spike is
watched with a complete baseline and must stay silent. Then comes an hour of abandonment spike,
which must fire and reach the webhook. There is no week of history, so it is the z-score
fallback that fires here; the week-over-week branch is covered by deploy/prometheus/tests/.
During the spike one store's checkout breaks: its orders must read 0 (not vanish) while its
sessions go on, and the orders-stalled alert must reach the pager receiver. Last, the exporter
and the worker are stopped: the target-down and KPIs-absent alerts must reach it too.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from dashboard_lint import dashboards, defaults, panel_queries, substitute, variables
from procs import StreamprocProcess, drop_keys, free_port, settings_env
from promstack import DEPLOY, PromApi, Server, alertmanager, prometheus, webhook
from rulerender import render_rules, scale_promql

from streamproc.devstack import StackInfo

pytestmark = pytest.mark.integration

SPEED = 120.0  # event seconds per wall second
FACTOR = 1 / SPEED  # production durations -> test durations
SCRAPE = "500ms"  # scrape and rule evaluation interval
STEP = 0.5  # seconds between the points of range queries
MINUTES = 280  # event minutes sent
SPIKE = (210, 270)  # the abandonment spike, event minutes from the start
ALERT = "CartAbandonmentSpike"
OUTAGE = (215, 265, "store-01")  # a checkout outage: event minutes from the start, the
# busiest store (its 5m window expects about 13 orders: the alert comes within ~12 minutes)
STALLED = "OrdersStalled"


def prometheus_config(ports: dict[str, int]) -> dict[str, Any]:
    """The production prometheus.yml, pointed at this test's processes and scraping fast."""
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    config["global"] = {
        "scrape_interval": SCRAPE,
        "scrape_timeout": SCRAPE,
        "evaluation_interval": SCRAPE,
    }
    target = f"127.0.0.1:{ports['alertmanager']}"
    config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [target]}]}]}
    for job in config["scrape_configs"]:
        port = ports[job["job_name"].removeprefix("streamproc-")]
        job.pop("dns_sd_configs", None)
        job["static_configs"] = [{"targets": [f"127.0.0.1:{port}"]}]
    return dict(config)


def alertmanager_config(webhook_port: int) -> dict[str, Any]:
    """The production routing, delivering within a second or two to the test's receiver."""
    config = yaml.safe_load((DEPLOY / "alertmanager" / "alertmanager.yml").read_text())
    config["route"].update(group_wait="1s", group_interval="2s", repeat_interval="1h")
    for receiver in config["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            hook["url"] = f"http://127.0.0.1:{webhook_port}/alerts"
    return dict(config)


@dataclass
class Run:
    api: PromApi
    start: float  # wall clock of event minute 0
    event_start: datetime  # event time of event minute 0
    rules: list[dict[str, Any]]  # the rendered rule files
    notifications: Path
    delivered: list[dict[str, Any]] = field(default_factory=list)
    delivered_at: float | None = None
    stalled_at: float | None = None  # when the orders-stalled notification arrived
    stopped_at: float | None = None  # when the exporter and the worker were stopped
    silenced: list[dict[str, Any]] = field(default_factory=list)  # notifications after that
    end: float = 0.0

    def at(self, minutes: float) -> float:
        """The wall-clock time at which event minute ``minutes`` is sent."""
        return self.start + minutes * 60 / SPEED

    def read(self, minutes: float) -> float:
        """The wall-clock time at which the worker first read event minute ``minutes`` (its
        highest event time read, from its lag gauge), or the end of the run.

        A loaded machine makes the worker lag behind the simulator by seconds (= event minutes),
        so what Prometheus saw before the spike is bounded by this, not by ``at``.
        """
        target = (self.event_start + timedelta(minutes=minutes)).timestamp()
        read = "max(time() - streamproc_event_time_lag_seconds)"
        for series in self.range(read, start=self.start, end=self.end):
            for t, value in series["values"]:
                if float(value) >= target:
                    return float(t)
        return self.end

    def read_notifications(self) -> list[dict[str, Any]]:
        if not self.notifications.exists():
            return []
        lines = self.notifications.read_text().splitlines()
        return [json.loads(line)["payload"] for line in lines]

    def range(self, expr: str, *, start: float, end: float) -> list[dict[str, Any]]:
        return self.api.query_range(expr, start=start, end=end, step=STEP)


def _firing(
    notifications: list[dict[str, Any]], alertname: str, **labels: str
) -> dict[str, Any] | None:
    """The first notification carrying a firing ``alertname`` with those labels."""
    for notification in notifications:
        for alert in notification["alerts"]:
            found = alert["labels"]
            if (
                alert["status"] == "firing"
                and found["alertname"] == alertname
                and all(found.get(k) == v for k, v in labels.items())
            ):
                return notification
    return None


def _spike_notification(notifications: list[dict[str, Any]]) -> dict[str, Any] | None:
    return _firing(notifications, ALERT)


def _render(tmp: Path, ports: dict[str, int]) -> list[dict[str, Any]]:
    (tmp / "rules").mkdir()
    rules = [
        render_rules(path, tmp / "rules" / path.name, factor=FACTOR)
        for path in sorted((DEPLOY / "prometheus" / "rules").glob("*.yml"))
    ]
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(prometheus_config(ports)))
    (tmp / "alertmanager.yml").write_text(yaml.safe_dump(alertmanager_config(ports["webhook"])))
    return rules


def _simulator(env: dict[str, str], *, start: datetime, wall_start: float, log: Path) -> Server:
    argv = [
        sys.executable,
        str(Path(__file__).with_name("paced_simulation.py")),
        f"--start={start.isoformat()}",
        f"--wall-start={wall_start}",
        f"--speed={SPEED}",
        f"--minutes={MINUTES}",
        f"--spike={SPIKE[0]}..{SPIKE[1]}",
        f"--outage={OUTAGE[0]}..{OUTAGE[1]}@{OUTAGE[2]}",
    ]
    return Server(argv, log=log, env=env)


def _check_alive(servers: list[Server], streamproc: list[StreamprocProcess]) -> None:
    for server in servers:
        server.check()
    for process in streamproc:
        assert process.proc is not None
        assert process.proc.poll() is None, f"{process.args} exited:\n{process.log[-3000:]}"


def _wait_for_delivery(
    result: Run, servers: list[Server], streamproc: list[StreamprocProcess], sim: Server
) -> None:
    """Until the spike and the orders-stalled alerts were delivered (or the traffic ran out)."""
    deadline = result.at(MINUTES) + 10
    while time.time() < deadline:
        delivered = result.read_notifications()
        if result.stalled_at is None and _firing(delivered, STALLED, store_id=OUTAGE[2]):
            result.stalled_at = time.time()
        if result.delivered_at is None and _spike_notification(delivered) is not None:
            result.delivered_at = time.time()
        result.delivered = delivered
        if result.delivered_at is not None and result.stalled_at is not None:
            return
        _check_alive(servers, streamproc)
        assert sim.proc is not None and sim.proc.poll() in (None, 0), sim.log_path.read_text()
        time.sleep(0.5)


SILENCE = (  # what stopping the exporter and the worker must deliver: (alertname, labels)
    ("StreamprocTargetDown", {"job": "streamproc-exporter"}),
    ("StreamprocTargetDown", {"job": "streamproc-worker"}),
    ("ShopKpisAbsent", {}),
)


def _stop_and_wait_for_silence(result: Run, streamproc: list[StreamprocProcess]) -> None:
    """Stop the exporter and the worker; wait until the silence alerts were delivered."""
    seen = len(result.read_notifications())
    for process in streamproc:
        process.stop()
    result.stopped_at = time.time()
    deadline = result.stopped_at + 30
    while time.time() < deadline:
        result.silenced = result.read_notifications()[seen:]
        if all(_firing(result.silenced, name, **labels) for name, labels in SILENCE):
            return
        time.sleep(0.5)


@pytest.fixture(scope="module")
def run(stack: StackInfo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    """Everything running until the spike alert was delivered (or the traffic ran out)."""
    tmp = tmp_path_factory.mktemp("observability")
    names = ("worker", "exporter", "prometheus", "alertmanager", "webhook")
    ports = {name: free_port() for name in names}
    rules = _render(tmp, ports)
    namespace = f"t_{uuid.uuid4().hex[:10]}"
    env = settings_env(
        namespace,
        bootstrap=stack.bootstrap_servers,
        redis_url=stack.redis_url,
        worker_port=ports["worker"],
        exporter_port=ports["exporter"],
        exporter_refresh_seconds=1,
        batch_max_wait_ms=1000,  # fewer, larger batches: keeps up on a loaded machine
        state_dir=tmp / "state",
    )
    notifications = tmp / "notifications.jsonl"
    am_config, prom_config = tmp / "alertmanager.yml", tmp / "prometheus.yml"
    with (
        webhook(port=ports["webhook"], output=notifications, log=tmp / "webhook.log") as hook,
        alertmanager(
            am_config, data=tmp / "am", port=ports["alertmanager"], log=tmp / "am.log"
        ) as am,
        prometheus(
            prom_config, data=tmp / "tsdb", port=ports["prometheus"], log=tmp / "prom.log"
        ) as prom,
    ):
        for server in (hook, am, prom):
            server.wait_ready()
        event_start = (datetime.now(UTC) - timedelta(hours=8)).replace(second=0, microsecond=0)
        result = Run(
            PromApi(ports["prometheus"]), time.time() + 1.0, event_start, rules, notifications
        )
        with (
            _simulator(
                env, start=event_start, wall_start=result.start, log=tmp / "simulator.log"
            ) as sim,
            StreamprocProcess(["exporter"], env, tmp / "exporter.log") as exporter,
        ):
            sim.wait_for_log("producing from")
            with StreamprocProcess(["worker"], env, tmp / "worker.log") as worker:
                worker.wait_for_log("worker metrics on")
                _wait_for_delivery(result, [hook, am, prom], [worker, exporter], sim)
                # An alert joining a group that is already notifying (another alert of the same
                # store) is delivered within the evaluation that fired it: the range queries
                # must reach a few evaluations past the delivery to see it firing.
                time.sleep(4 * STEP)
                if result.delivered_at is not None and result.stalled_at is not None:
                    _stop_and_wait_for_silence(result, [exporter, worker])
                result.end = time.time()
                yield result
    drop_keys(stack.redis_url, namespace)


def test_the_spike_alert_fires_and_reaches_the_webhook_grouped_by_store(run: Run) -> None:
    notification = _spike_notification(run.delivered)
    seen = [(n["status"], n["groupLabels"]) for n in run.read_notifications()]
    assert notification is not None, f"no {ALERT} notification; got {seen}"
    assert run.delivered_at is not None and run.delivered_at > run.at(SPIKE[0])
    store = notification["groupLabels"]["store_id"]
    assert notification["groupLabels"] == {"store_id": store}  # grouped by store
    alert = next(a for a in notification["alerts"] if a["labels"]["alertname"] == ALERT)
    assert alert["status"] == "firing"
    assert alert["labels"] == {
        "alertname": ALERT,
        "severity": "critical",
        "store_id": store,
        "window": "15m",
    }
    annotations = alert["annotations"]
    assert annotations["summary"].startswith(f"Cart abandonment spike in store {store}: ")
    assert "Same time last week: no data." in annotations["description"]
    assert annotations["runbook_url"] == "docs/runbook.md#cartabandonmentspike"
    assert annotations["dashboard_url"].startswith(f"/d/streamproc-shop-kpis?var-store={store}&")
    firing = run.range(
        f'ALERTS{{alertname="{ALERT}", alertstate="firing"}}', start=run.start, end=run.end
    )
    first = min(float(t) for series in firing for t, _ in series["values"])
    print(  # the report of the run (pytest -s)
        f"\n{ALERT} firing in Prometheus {first - run.at(SPIKE[0]):.1f} s after the spike began, "
        f"for stores {sorted(s['metric']['store_id'] for s in firing)}"
    )
    print(
        f"\n{ALERT} for store {store} delivered {run.delivered_at - run.at(SPIKE[0]):.1f} s "
        f"(= {(run.delivered_at - run.at(SPIKE[0])) * SPEED / 60:.0f} event minutes) after the "
        f"spike began: {annotations['summary']} | {annotations['description']}"
    )


def test_orders_of_a_broken_checkout_read_0_and_stalled_reaches_the_pager(run: Run) -> None:
    """One store's orders stop while its sessions go on: its orders read 0 (the series never
    vanishes), and OrdersStalled reaches the pager receiver within 20 event minutes."""
    store = OUTAGE[2]
    notification = _firing(run.delivered, STALLED, store_id=store)
    seen = [(n["status"], n["groupLabels"]) for n in run.read_notifications()]
    assert notification is not None and run.stalled_at is not None, f"no {STALLED}; got {seen}"
    assert notification["receiver"] == "pager"
    alert = next(a for a in notification["alerts"] if a["labels"]["alertname"] == STALLED)
    assert alert["labels"] == {"alertname": STALLED, "severity": "critical", "store_id": store}
    assert alert["annotations"]["summary"].startswith(f"No orders in store {store} where ")
    assert alert["annotations"]["runbook_url"] == "docs/runbook.md#ordersstalled"
    broke = run.read(OUTAGE[0])  # when the worker read the outage's first minute
    firing = run.range(
        f'ALERTS{{alertname="{STALLED}", alertstate="firing", store_id="{store}"}}',
        start=broke,
        end=run.end,
    )
    assert firing, f"{STALLED} never fired in Prometheus after the worker read the outage"
    first = min(float(t) for series in firing for t, _ in series["values"])
    event_minutes = (first - broke) * SPEED / 60
    print(f"\n{STALLED} firing {event_minutes:.0f} event minutes after the checkout broke")
    assert event_minutes <= 20
    # from the outage to the alert: the store's orders are a series at 0, sessions go on
    window = {"start": broke, "end": first}
    selector = f'window="5m", store_id="{store}", channel_group="all", device_type="all"'
    (orders,) = run.range(f"shop_orders{{{selector}}}", **window)
    times = [float(t) for t, _ in orders["values"]]
    assert all(b - a <= 2 * STEP for a, b in itertools.pairwise(times)), "orders had a gap"
    assert float(orders["values"][-1][1]) == 0
    (sessions,) = run.range(f"shop_sessions{{{selector}}}", **window)
    assert min(float(v) for _, v in sessions["values"]) > 0


def test_stopping_the_exporter_and_the_worker_alerts(run: Run) -> None:
    """Gone is not a healthy zero: both targets are down and the KPIs absent."""
    assert run.stopped_at is not None, "the run did not get that far"
    missing = [name for name, labels in SILENCE if not _firing(run.silenced, name, **labels)]
    assert missing == [], [n["groupLabels"] for n in run.silenced]
    absent = _firing(run.silenced, "ShopKpisAbsent")
    assert absent is not None and absent["receiver"] == "pager"
    down = _firing(run.silenced, "StreamprocTargetDown")
    assert down is not None and down["receiver"] == "webhook"


def test_no_spike_alert_before_the_spike_though_the_fallback_was_armed(run: Run) -> None:
    """Normal traffic with a complete baseline, enough carts and nothing else in the way: the
    alert stays silent because the z-score stays below 3 for all but moments: a single refresh
    can score higher (the exporter's trailing end follows the fastest topic, so the newest carts'
    orders may not be read yet), which `for` rides out."""
    before = {"start": run.start, "end": run.read(SPIKE[0])}
    assert run.range(f'ALERTS{{alertname="{ALERT}", alertstate="firing"}}', **before) == []
    armed = scale_promql(
        """
        store_id_window:shop_cart_abandonment_ratio:zscore2h{window="15m"}
          and on (store_id, window)
        store_id_window:shop_carts_created:max{window="15m"} >= 30
          and on (store_id, window)
        store_id_window:shop_cart_abandonment_ratio:max{window="15m"} offset 150m
        """,
        FACTOR,
    )
    series = run.range(armed, **before)
    scores = [float(v) for s in series for _, v in s["values"] if s["metric"]["store_id"] == "all"]
    watched_minutes = len(scores) * STEP * SPEED / 60
    assert watched_minutes >= 30, f"armed for {watched_minutes:.0f} event minutes only"
    median = sorted(scores)[len(scores) // 2]
    assert -1 < median < 1, scores  # normal traffic sits on its baseline


def test_every_recording_rule_produces_series(run: Run) -> None:
    records = [
        r["record"] for f in run.rules for g in f["groups"] for r in g["rules"] if "record" in r
    ]
    empty = [name for name in records if not run.range(name, start=run.start, end=run.end)]
    assert empty == []


def test_every_rule_evaluates_without_errors(run: Run) -> None:
    assert [rule for rule in run.api.rule_health() if rule[1] != "ok"] == []


def _finite(series: list[dict[str, Any]]) -> bool:
    return any(math.isfinite(float(v)) for s in series for _, v in s["values"])


def test_every_dashboard_panel_query_returns_data(run: Run) -> None:
    """Every query of every panel, with the variables at their defaults (store, channel and
    device `all`, window 15m or 1h, every topic and worker) and $__rate_interval as Grafana
    computes it for these scrapes, returns finite values from the pipeline's data."""
    empty = []
    for dashboard in dashboards().values():
        values = defaults(dashboard)
        for query in panel_queries(dashboard):
            expr = substitute(query.expr, values, rate_interval="5s")
            # A subquery steps at absolute wall-clock instants of its resolution (one minute):
            # the run is about two minutes of wall time, the exporter starts with it and stops
            # before its end, so one or two such instants fall where the series is, and which
            # depends on where the minute boundaries fall. Stepped at the scrape interval, it
            # reads every sample of the run.
            expr = _SUBQUERY_STEP.sub(rf"[\1:{SCRAPE}]", expr)
            # Last week's curve: there is no week of history, so it is asked for a week ahead,
            # where its offset reads this run's data.
            ahead = WEEK_S if "offset 1w" in expr else 0
            if not _finite(run.range(expr, start=run.start + ahead, end=run.end + ahead)):
                empty.append(f"{query.dashboard} / {query.panel} {query.ref}: {expr}")
    assert empty == []


WEEK_S = 7 * 86400
_SUBQUERY_STEP = re.compile(r"\[([^\]:]+):[^\]]+\]")  # [range:resolution]


def test_the_variables_list_their_defaults(run: Run) -> None:
    for dashboard in dashboards().values():
        current = defaults(dashboard)
        for variable in variables(dashboard):
            if variable["type"] != "query":
                continue
            match = re.fullmatch(r"label_values\((\w+), (\w+)\)", variable["query"])
            assert match is not None, variable["query"]
            metric, label = match.groups()
            found = run.api.label_values(label, metric)
            assert found, f"{dashboard['title']}: {variable['query']} lists nothing"
            if current[variable["name"]] != ".*":
                assert current[variable["name"]] in found, (variable["name"], found)


def test_the_firing_alert_annotations_query(run: Run) -> None:
    """The annotation queries run; the Shop KPIs one shows the spike alert."""
    for dashboard in dashboards().values():
        (annotation,) = dashboard["annotations"]["list"]
        expr = substitute(annotation["expr"], defaults(dashboard))
        series = run.range(expr, start=run.start, end=run.end)
        if dashboard["title"] == "Shop KPIs":
            assert {s["metric"]["alertname"] for s in series} == {ALERT}
