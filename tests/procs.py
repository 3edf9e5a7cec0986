"""Run ``streamproc`` sub-commands as real processes in integration tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, NamedTuple

import redis

from streamproc.devstack import StackInfo


def drop_keys(redis_url: str, prefix: str) -> int:
    """Delete every Redis key starting with ``prefix`` (a test's namespace); returns how many."""
    client = redis.Redis.from_url(redis_url)
    deleted, batch = 0, []
    try:
        for key in client.scan_iter(match=f"{prefix}*", count=5000):
            batch.append(key)
            if len(batch) >= 5000:
                deleted += int(client.unlink(*batch))
                batch.clear()
        if batch:
            deleted += int(client.unlink(*batch))
    finally:
        client.close()
    return deleted


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def settings_env(
    namespace: str, *, bootstrap: str, redis_url: str, **extra: object
) -> dict[str, str]:
    """Environment for a streamproc process with its own topics and Redis namespace."""
    env = {
        "STREAMPROC_BOOTSTRAP_SERVERS": bootstrap,
        "STREAMPROC_REDIS_URL": redis_url,
        "STREAMPROC_NAMESPACE": namespace,
        "STREAMPROC_TOPIC_CLICKSTREAM": f"{namespace}.clickstream",
        "STREAMPROC_TOPIC_CART": f"{namespace}.cart",
        "STREAMPROC_TOPIC_ORDERS": f"{namespace}.orders",
        "STREAMPROC_TOPIC_TICKETS": f"{namespace}.tickets",
        "STREAMPROC_TOPIC_DLQ": f"{namespace}.dlq",
        "STREAMPROC_PARTITIONS": "4",
        "STREAMPROC_LOG_LEVEL": "info",
    }
    env.update({f"STREAMPROC_{key.upper()}": str(value) for key, value in extra.items()})
    return env


class LiveEnv(NamedTuple):
    env: dict[str, str]
    worker_port: int
    exporter_port: int


def live_env(namespace: str, stack: StackInfo, **extra: object) -> LiveEnv:
    """Environment for a live worker and exporter of one test (exporter refreshing every
    second), with their two free ports."""
    worker_port, exporter_port = free_port(), free_port()
    env = settings_env(
        namespace,
        bootstrap=stack.bootstrap_servers,
        redis_url=stack.redis_url,
        worker_port=worker_port,
        exporter_port=exporter_port,
        **({"exporter_refresh_seconds": 1} | extra),
    )
    return LiveEnv(env, worker_port, exporter_port)


class StreamprocProcess:
    """``python -m streamproc ARGS`` with its output in a log file; stopped on exit. It runs in
    ``cwd`` when given, else in this process's directory."""

    def __init__(
        self, args: list[str], env: Mapping[str, str], log_path: Path, *, cwd: Path | None = None
    ) -> None:
        self.args = args
        self.log_path = log_path
        self.cwd = cwd
        self._env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
        self._log: IO[bytes] | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> StreamprocProcess:
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamproc", *self.args],
            env=self._env,
            cwd=self.cwd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, text: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log:
                return
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"process exited ({self.proc.returncode}):\n{self.log[-3000:]}"
                )
            time.sleep(0.1)
        raise AssertionError(f"{text!r} not logged within {timeout} s:\n{self.log[-3000:]}")

    def kill(self) -> None:
        """SIGKILL, like a crash."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM and wait; SIGKILL if it does not stop in time."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        return self.proc.returncode
