"""Prometheus, Alertmanager and the webhook receiver as processes for tests, and a small
client for Prometheus' HTTP API."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def require_binary(name: str) -> str:
    """The binary's path; skip when it is missing, unless in CI (CI installs it: scripts/test)."""
    found = shutil.which(name)
    if found is not None:
        return found
    message = f"{name} not found (apt-get install prometheus prometheus-alertmanager)"
    if os.environ.get("CI", "").lower() not in ("", "0", "false"):
        pytest.fail(f"{message}; scripts/test installs it in CI")
    pytest.skip(message)


class Server:
    """A server process with its output in a log file, stopped by its PID on exit."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        log: Path,
        ready_url: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.argv = list(argv)
        self.log_path = log
        self.ready_url = ready_url
        self.env = {**os.environ, **env} if env is not None else None
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def __enter__(self) -> Server:
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.argv,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self._log is not None:
            self._log.close()

    def check(self) -> None:
        """Fail with the end of its log when the process has exited."""
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"{self.argv[:2]} exited:\n{self.log_path.read_text()[-3000:]}")

    def wait_for_log(self, text: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log_path.read_text(errors="replace"):
            self.check()
            assert time.monotonic() < deadline, f"{text!r} not logged by {self.argv[:2]}"
            time.sleep(0.1)

    def wait_ready(self, timeout: float = 30.0) -> None:
        assert self.ready_url is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check()
            try:
                with urllib.request.urlopen(self.ready_url, timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"{self.ready_url} not ready in {timeout} s")


def prometheus(config: Path, *, data: Path, port: int, log: Path) -> Server:
    argv = [
        require_binary("prometheus"),
        f"--config.file={config}",
        f"--storage.tsdb.path={data}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    return Server(argv, log=log, ready_url=f"http://127.0.0.1:{port}/-/ready")


def alertmanager(config: Path, *, data: Path, port: int, log: Path) -> Server:
    argv = [
        require_binary("prometheus-alertmanager"),
        f"--config.file={config}",
        f"--storage.path={data}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",  # no gossip port: a single instance
    ]
    return Server(argv, log=log, ready_url=f"http://127.0.0.1:{port}/-/ready")


def webhook(*, port: int, output: Path, log: Path) -> Server:
    """The stack's own receiver (deploy/alertmanager/webhook_log.py), writing to ``output``."""
    script = DEPLOY / "alertmanager" / "webhook_log.py"
    argv = [sys.executable, str(script), "--bind", "127.0.0.1", "--port", str(port)]
    argv += ["--output", str(output)]
    return Server(argv, log=log, ready_url=f"http://127.0.0.1:{port}/")


class PromApi:
    """The few Prometheus HTTP API calls the tests need."""

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}/api/v1"

    def _get(self, path: str, **params: Any) -> Any:
        url = f"{self.base}/{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"query": expr}
        if at is not None:
            params["time"] = at
        return list(self._get("query", **params)["result"])

    def query_range(
        self, expr: str, *, start: float, end: float, step: float
    ) -> list[dict[str, Any]]:
        return list(self._get("query_range", query=expr, start=start, end=end, step=step)["result"])

    def label_values(self, label: str, match: str) -> list[str]:
        """What Grafana's ``label_values(match, label)`` lists."""
        return list(self._get(f"label/{label}/values", **{"match[]": match}))

    def alerts(self) -> list[dict[str, Any]]:
        return list(self._get("alerts")["alerts"])

    def rule_health(self) -> list[tuple[str, str, str]]:
        """(name, health, last error) of every rule."""
        return [
            (rule["name"], rule["health"], rule.get("lastError", ""))
            for group in self._get("rules")["groups"]
            for rule in group["rules"]
        ]
