"""Safe defaults of a live worker and exporter: their HTTP servers listen on 127.0.0.1 unless
told otherwise, and no customer, visitor, session, order or ticket id reaches a metric label or
an INFO log line (the ids of this traffic carry a marker; malformed messages included)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil
import pytest
from helpers import anomalous_traffic
from procs import StreamprocProcess, live_env

from streamproc import metrics
from streamproc.devstack import StackInfo

pytestmark = pytest.mark.integration

MARK = "PIIMARK"
ID_FIELDS = ("visitor_id", "session_id", "customer_id", "order_id", "ticket_id", "cart_id")


def _marked(line: bytes) -> bytes:
    """The line with every id marked; a line that is not an event object is kept as it is."""
    try:
        event = json.loads(line)
    except ValueError:
        return line
    if not isinstance(event, dict):
        return line
    for field in ID_FIELDS:
        if isinstance(event.get(field), str):
            event[field] = f"{MARK}-{event[field]}"
    return json.dumps(event).encode()


def _listening(pid: int) -> set[str]:
    return {
        conn.laddr.ip
        for conn in psutil.Process(pid).net_connections(kind="inet")
        if conn.status == psutil.CONN_LISTEN
    }


def test_servers_listen_on_loopback_and_ids_stay_out_of_labels_and_logs(
    stack: StackInfo, namespace: str, tmp_path: Path
) -> None:
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=40)
    lines = [_marked(line) for line in anomalous_traffic(start=start, minutes=30, seed=4, rate=6)]
    assert sum(MARK.encode() in line for line in lines) > 100
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"".join(line + b"\n" for line in lines))
    env, worker_port, exporter_port = live_env(namespace, stack)
    env.pop("STREAMPROC_BIND", None)  # the default
    produced = subprocess.run(
        [sys.executable, "-m", "streamproc", "produce", str(events)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert produced.returncode == 0, produced.stderr[-2000:]
    with (
        StreamprocProcess(["worker"], env, tmp_path / "worker.log") as worker,
        StreamprocProcess(["exporter"], env, tmp_path / "exporter.log") as exporter,
    ):
        worker_url = f"http://127.0.0.1:{worker_port}/metrics"
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                page = metrics.scrape(worker_url)
                if page.total("streamproc_events_total") >= 0.9 * len(lines):
                    break
            except OSError:
                pass
            time.sleep(1)
        else:
            raise AssertionError(f"the worker did not read the traffic:\n{worker.log[-3000:]}")
        time.sleep(3)  # a refresh of the exporter after the last publish
        pages = {
            "worker /metrics": urllib.request.urlopen(worker_url, timeout=10).read().decode(),
            "exporter /metrics": urllib.request.urlopen(
                f"http://127.0.0.1:{exporter_port}/metrics", timeout=10
            )
            .read()
            .decode(),
        }
        assert "shop_sessions" in pages["exporter /metrics"]
        for proc in (worker, exporter):
            assert proc.proc is not None
            assert _listening(proc.proc.pid) == {"127.0.0.1"}, proc.args
        logs = {"worker log": worker.log, "exporter log": exporter.log}
    assert "dead letter" in logs["worker log"]  # the malformed messages' path ran and logged
    for name, text in {**pages, **logs}.items():
        leaked = [line for line in text.splitlines() if MARK in line]
        assert not leaked, f"{name} shows ids: {leaked[:3]}"
