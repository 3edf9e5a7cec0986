"""`streamproc demo`: starts the whole local pipeline, shows live numbers, stops everything."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from streamproc import metrics
from streamproc.config import load_settings
from streamproc.demo import Demo, DemoOptions, running

pytestmark = pytest.mark.integration


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = (
        Path(f"/proc/{pid}/stat").read_text().split()[2] if Path(f"/proc/{pid}").exists() else ""
    )
    return state != "Z"


DEMO = (sys.executable, "-m", "streamproc", "demo")
KPIS = (
    "shop_sessions",
    "shop_orders",
    "shop_revenue",
    "shop_cart_abandonment_ratio",
    "shop_unique_visitors",
)


def _kpis_changing(demo: Demo, *, within_s: float) -> list[dict[str, float]]:
    """Snapshots of the exporter's 1h KPIs for all stores, until two of them differ."""
    snapshots: list[dict[str, float]] = []
    last: object = None
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        demo.check()
        try:
            page = metrics.scrape(f"{demo.exporter_url}/metrics", timeout=10)
        except OSError as exc:
            last = exc
        else:
            last = {name: page.overall(name, window="1h", store_id="all") for name in KPIS}
            if all(v is not None for v in last.values()):
                snapshots.append({k: float(v) for k, v in last.items() if v is not None})
                if snapshots[-1] != snapshots[0]:
                    return snapshots
        time.sleep(2)
    raise AssertionError(
        f"the exporter's KPIs did not change in {within_s:g} s: {snapshots[-3:]}; last: {last}"
    )


def test_demo_processes_live_traffic_and_stops_everything(tmp_path: Path) -> None:
    settings = load_settings(env_file=None, state_dir=tmp_path, worker_port=0)
    with running(
        settings, DemoOptions(sessions_per_minute=600, malformed_share=0.05, history_seconds=600)
    ) as demo:
        pids = [child.proc.pid for child in demo.children]
        assert demo.info is not None
        pids.append(demo.info.broker_pid)
        seen: list[float] = []
        deadline = time.monotonic() + 60
        # wait for a positive count, then for it to grow
        while time.monotonic() < deadline and (len(seen) < 2 or seen[-1] <= seen[0]):
            demo.check()
            with contextlib.suppress(OSError):
                count = metrics.scrape(demo.worker_metrics_url).total("streamproc_events_total")
                if count > 0:
                    seen.append(count)
            time.sleep(2)
        assert len(seen) >= 2 and seen[-1] > seen[0], seen  # counts grow while it runs
        snapshots = _kpis_changing(demo, within_s=120)
        first, last = snapshots[0], snapshots[-1]
        assert first["shop_sessions"] > 0, first
        assert 0 <= first["shop_cart_abandonment_ratio"] <= 1, first
        assert last != first, snapshots
    time.sleep(0.5)
    assert not [pid for pid in pids if _alive(pid)]
    assert not (tmp_path / "demo" / "dev" / "stack.json").exists()


def test_demo_command_runs_and_shuts_down_on_ctrl_c(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "STREAMPROC_STATE_DIR": str(tmp_path),
        "STREAMPROC_WORKER_PORT": "0",
        "STREAMPROC_EXPORTER_PORT": "0",
    }
    proc = subprocess.Popen(
        [*DEMO, "--rate", "600", "--history", "10m", "--svg", str(tmp_path / "view.svg")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    time.sleep(25)
    os.killpg(proc.pid, signal.SIGINT)
    try:  # the worker's Faust shutdown is slow on a loaded machine: allow for it
        output, _ = proc.communicate(timeout=150)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGUSR1)  # the demo prints every thread's stack
        time.sleep(2)
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        for pid in re.findall(r"started \w+ \(pid (\d+)\)", output):  # own sessions each
            with contextlib.suppress(ProcessLookupError):
                os.killpg(int(pid), signal.SIGKILL)  # no process left behind for the next test
        pytest.fail(f"the demo did not stop within 150 s of Ctrl-C:\n{output[-6000:]}")
    assert proc.returncode == 0, output
    assert "demo stopped" in output
    counts = [
        int(n.replace(",", ""))
        for n in re.findall(r"shop\.clickstream\s*│\s*[\d.,]+\s*│\s*([\d,]+)", output)
    ]
    assert counts and counts[-1] > 0, output[-2000:]
    # The KPI table shows the simulated history's sessions (sent at start).
    sessions = [int(n.replace(",", "")) for n in re.findall(r"│ sessions\s*│\s*([\d,]+)", output)]
    assert sessions and sessions[-1] > 0, output[-3000:]
    assert not (tmp_path / "demo" / "dev" / "stack.json").exists()
    # --svg saved the last view: the same table, as text of an SVG picture.
    picture = ET.parse(tmp_path / "view.svg").getroot()
    text = "".join(t.text or "" for t in picture.iter("{http://www.w3.org/2000/svg}text"))
    text = text.replace("\xa0", " ")
    shown = re.findall(r"│\s*sessions\s*│\s*([\d,]+)", text)
    assert shown and int(shown[0].replace(",", "")) > 0, text
    assert "shop.clickstream" in text and "dead letters by reason" in text, text
