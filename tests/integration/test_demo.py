"""`streamproc demo`: starts the whole local pipeline, shows live numbers, stops everything."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from streamproc import metrics
from streamproc.config import load_settings
from streamproc.demo import DemoOptions, running

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


def test_demo_processes_live_traffic_and_stops_everything(tmp_path: Path) -> None:
    settings = load_settings(env_file=None, state_dir=tmp_path, worker_port=0)
    with running(settings, DemoOptions(sessions_per_minute=600, malformed_share=0.05)) as demo:
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
    time.sleep(0.5)
    assert not [pid for pid in pids if _alive(pid)]
    assert not (tmp_path / "demo" / "dev" / "stack.json").exists()


def test_demo_command_runs_and_shuts_down_on_ctrl_c(tmp_path: Path) -> None:
    env = {**os.environ, "STREAMPROC_STATE_DIR": str(tmp_path), "STREAMPROC_WORKER_PORT": "0"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamproc", "demo", "--rate", "600"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    time.sleep(25)
    os.killpg(proc.pid, signal.SIGINT)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, output
    assert "demo stopped" in output
    counts = [
        int(n.replace(",", ""))
        for n in re.findall(r"shop\.clickstream\s*│\s*[\d.,]+\s*│\s*([\d,]+)", output)
    ]
    assert counts and counts[-1] > 0, output[-2000:]
    assert not (tmp_path / "demo" / "dev" / "stack.json").exists()
