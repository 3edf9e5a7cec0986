"""`streamproc dev up | status | down` as a user runs them."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def cli(*args: str, state_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "STREAMPROC_STATE_DIR": str(state_dir), "COLUMNS": "200"}
    env.pop("STREAMPROC_REDIS_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "streamproc", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_dev_up_status_down(tmp_path: Path) -> None:
    assert cli("dev", "status", state_dir=tmp_path).returncode == 1
    up = cli("dev", "up", state_dir=tmp_path)
    assert up.returncode == 0, up.stderr
    assert "STREAMPROC_BOOTSTRAP_SERVERS=127.0.0.1:" in up.stdout
    try:
        again = cli("dev", "up", state_dir=tmp_path)
        assert again.returncode == 0 and "already running" in again.stderr
        status = cli("dev", "status", state_dir=tmp_path)
        assert status.returncode == 0 and "broker (tansu)" in status.stdout
    finally:
        down = cli("dev", "down", state_dir=tmp_path)
    assert down.returncode == 0 and "stopped: broker" in down.stdout
    assert cli("dev", "status", state_dir=tmp_path).returncode == 1
    assert "nothing was running" in cli("dev", "down", state_dir=tmp_path).stdout


def _bootstrap(up: subprocess.CompletedProcess[str]) -> str:
    found = re.search(r"STREAMPROC_BOOTSTRAP_SERVERS=(\S+)", up.stdout)
    assert found is not None, up.stdout
    return found.group(1)


def test_dev_broker_keeps_its_port_and_refuses_to_move(tmp_path: Path) -> None:
    first = cli("dev", "up", state_dir=tmp_path)
    assert first.returncode == 0, first.stderr
    cli("dev", "down", state_dir=tmp_path)
    second = cli("dev", "up", state_dir=tmp_path)
    try:
        assert second.returncode == 0, second.stderr
        assert _bootstrap(second) == _bootstrap(first)
    finally:
        cli("dev", "down", state_dir=tmp_path)

    host, _, port = _bootstrap(first).rpartition(":")
    with socket.socket() as squatter:
        squatter.bind((host, int(port)))
        squatter.listen()
        taken = cli("dev", "up", state_dir=tmp_path)
    assert taken.returncode == 2
    error = " ".join(taken.stderr.split())  # as the terminal wrapped it
    assert f"error: the dev broker's port {host}:{port}" in error
    assert "set STREAMPROC_DEV_BROKER_PORT to another port" in error
