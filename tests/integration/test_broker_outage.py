"""A worker whose broker dies: a few log lines for the outage, not ~110 a second, and a broker
restarted by `dev up` at the address the worker keeps retrying.

The broker is a private DevStack (the session one must not be killed). Measured on the 2-core
machine: 2237 lines in 20 s before the rate limit, 8 with it (the first line of each kind).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from procs import StreamprocProcess, drop_keys, settings_env

from streamproc.devstack import DevStack

pytestmark = pytest.mark.integration

OUTAGE_S = 20.0
MAX_LINES = 30  # one per kind of error (8 measured), with room for Faust's own warnings


def _wait_for_text(worker: StreamprocProcess, text: str, *, after: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while text not in worker.log[after:]:
        assert time.monotonic() < deadline, f"{text!r} not logged:\n{worker.log[after:][-3000:]}"
        time.sleep(0.2)


def test_broker_outage_logs_a_few_lines_and_dev_up_restarts_it_in_place(
    tmp_path: Path, namespace: str
) -> None:
    dev = DevStack(tmp_path / "stack")
    info = dev.up()
    env = settings_env(
        namespace,
        bootstrap=info.bootstrap_servers,
        redis_url=info.redis_url,
        worker_port=0,
        state_dir=tmp_path / "state",
    )
    try:
        with StreamprocProcess(["worker"], env, tmp_path / "worker.log") as worker:
            worker.wait_for_log("[^Worker]: Ready", timeout=90)
            time.sleep(2)  # let the first commits and fetches settle
            before = worker.log
            os.kill(info.broker_pid, signal.SIGKILL)
            time.sleep(OUTAGE_S)
            during = worker.log[len(before) :]
            lines = during.splitlines()
            assert "Unable connect to node" in during  # the outage is logged, once
            assert len(lines) <= MAX_LINES, f"{len(lines)} lines in {OUTAGE_S:g} s:\n{during}"

            mark = len(worker.log)
            again = dev.up()
            assert again.bootstrap_servers == info.bootstrap_servers
            # The worker finds the broker again; the line was logged at startup, and is not
            # suppressed as a repeat.
            _wait_for_text(worker, "Discovered coordinator", after=mark, timeout=30)
            worker.kill()  # how it copes with the empty broker is not this test's subject
    finally:
        dev.down()
        drop_keys(info.redis_url, namespace)
