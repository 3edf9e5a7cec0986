"""The worker's own topics (state changelog, ticks) have the input's partition count: created so
before Faust starts, and a wrong one, as a broker's auto-creation leaves it, is refused with the
command that repairs it."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
from procs import StreamprocProcess, settings_env

from streamproc import broker
from streamproc.devstack import StackInfo

pytestmark = pytest.mark.integration


def test_a_changelog_with_another_partition_count_is_refused_then_recreated(
    stack: StackInfo, namespace: str, tmp_path: Path
) -> None:
    servers = stack.bootstrap_servers
    env = settings_env(namespace, bootstrap=servers, redis_url=stack.redis_url, worker_port=0)
    changelog, ticks = f"{namespace}-worker-state-changelog", f"{namespace}-worker-ticks"
    # what a broker's auto-creation leaves behind when a client asks for a missing topic
    asyncio.run(broker.ensure_topics(servers, {changelog: 3}))

    refused = subprocess.run(
        [sys.executable, "-m", "streamproc", "worker"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2, refused.stdout + refused.stderr
    message = " ".join(refused.stderr.split())
    assert f"{changelog} has 3" in message, message
    assert "streamproc worker --recreate-state-topics" in message
    assert "Traceback" not in refused.stderr

    log = tmp_path / "worker.log"
    with StreamprocProcess(["worker", "--recreate-state-topics"], env, log) as worker:
        worker.wait_for_log("worker metrics on", timeout=60)
        counts = asyncio.run(broker.partition_counts(servers, [changelog, ticks]))
        assert counts == {changelog: 4, ticks: 4}
        assert f"deleting {changelog} has 3" in worker.log
