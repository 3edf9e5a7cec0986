"""Redis that wants a password, an ACL user or TLS: a real redis-server with ``requirepass``, an
ACL user and a TLS port whose certificate a CA made by the test signed. Right credentials work
(``redis://`` and ``rediss://``, password in the URL or in STREAMPROC_REDIS_PASSWORD); a wrong
password or an untrusted certificate stops a command within seconds with one line naming the
setting, and the password never shows."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from certs import make_certs
from faults import HOST, _Server, _wait_until, redis_binary, stable_port
from helpers import anomalous_traffic
from procs import settings_env
from reference.common import ReferenceSettings
from reference.kpis import reference_report
from reference.report import compare_reports

from streamproc.devstack import RedisAuth, StackInfo, ping_redis
from streamproc.errors import StoreRefused
from streamproc.store import KpiStore

pytestmark = pytest.mark.integration

PASSWORD = "s3cret-sentinel-7f2a"  # must never appear in any output
WRONG = "wrong-sentinel-91c4"


class SecureRedis:
    """redis-server with a password, an ACL user ``alice``, a plain port and a TLS port."""

    def __init__(self, workdir: Path) -> None:
        self.ca, cert, key = make_certs(workdir / "certs")
        self.port, self.tls_port = stable_port(), stable_port()
        argv = [str(redis_binary()), "--port", str(self.port), "--bind", HOST]
        argv += ["--tls-port", str(self.tls_port), "--tls-cert-file", str(cert)]
        argv += ["--tls-key-file", str(key), "--tls-ca-cert-file", str(self.ca)]
        argv += ["--tls-auth-clients", "no", "--requirepass", PASSWORD]
        argv += ["--user", "alice", "on", ">alice-pw", "~*", "&*", "+@all"]
        argv += ["--save", "", "--daemonize", "no", "--dir", str(workdir)]
        self._server = _Server("redis", argv, workdir / "redis.log", dict(os.environ))
        self.url = f"redis://{HOST}:{self.port}/0"
        self.tls_url = f"rediss://{HOST}:{self.tls_port}/0"

    def __enter__(self) -> SecureRedis:
        self._server.start()
        auth = RedisAuth(password=PASSWORD)
        _wait_until(lambda: ping_redis(self.url, auth=auth), self._server, 20.0)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.kill()


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureRedis]:
    if shutil.which("openssl") is None:  # scripts/test installs it
        missing = "openssl is not installed (apt-get install openssl)"
        pytest.fail(missing) if os.environ.get("CI") == "true" else pytest.skip(missing)
    with SecureRedis(tmp_path_factory.mktemp("secure-redis")) as server:
        yield server


async def _round_trip(store: KpiStore) -> dict[tuple[str, int], int]:
    try:
        await store.set_end_offsets({("clicks", 3): 42})
        return await store.end_offsets()
    finally:
        await store.aclose()


def test_password_acl_user_and_tls_work(redis: SecureRedis) -> None:
    ways = {
        "password setting": (redis.url, PASSWORD, None),
        "password in the URL": (f"redis://:{PASSWORD}@{HOST}:{redis.port}/0", None, None),
        "ACL user in the URL": (f"redis://alice:alice-pw@{HOST}:{redis.port}/0", None, None),
        "ACL user, password setting": (f"redis://alice@{HOST}:{redis.port}/0", "alice-pw", None),
        "TLS with the CA": (redis.tls_url, PASSWORD, redis.ca),
    }
    for way, (url, password, cafile) in ways.items():
        store = KpiStore.connect(url, f"sec-{len(way)}", password=password, cafile=cafile)
        assert asyncio.run(_round_trip(store)) == {("clicks", 3): 42}, way
        assert ping_redis(url, auth=RedisAuth(password=password, cafile=cafile)), way
    assert not ping_redis(redis.tls_url, auth=RedisAuth(password=PASSWORD))  # CA unknown


@pytest.mark.parametrize(
    ("case", "setting"),
    [
        ("wrong password", "STREAMPROC_REDIS_PASSWORD"),
        ("no password", "STREAMPROC_REDIS_PASSWORD"),
        ("untrusted certificate", "STREAMPROC_REDIS_SSL_CAFILE"),
    ],
)
def test_a_refusal_names_the_setting_at_once(redis: SecureRedis, case: str, setting: str) -> None:
    url, password = {
        "wrong password": (redis.url, WRONG),
        "no password": (redis.url, None),
        "untrusted certificate": (redis.tls_url, PASSWORD),
    }[case]
    store = KpiStore.connect(url, "sec-refused", password=password, timeout_s=5.0)
    started = time.monotonic()
    with pytest.raises(StoreRefused) as refused:
        asyncio.run(_round_trip(store))
    assert time.monotonic() - started < 5.0
    assert setting in str(refused.value)
    assert PASSWORD not in str(refused.value) and WRONG not in str(refused.value)


def test_exporter_and_worker_stop_with_one_line(
    redis: SecureRedis, stack: StackInfo, namespace: str, tmp_path: Path
) -> None:
    """A wrong password stops the exporter and a worker within seconds, exit status 2, one line
    naming the setting, no traceback, no password; the right ones over TLS start serving."""
    env = settings_env(namespace, bootstrap=stack.bootstrap_servers, redis_url=redis.url)
    env |= {"STREAMPROC_REDIS_PASSWORD": WRONG, "STREAMPROC_WORKER_PORT": "0"}
    env |= {"STREAMPROC_EXPORTER_PORT": "0"}
    for command, within_s in (("exporter", 15.0), ("worker", 60.0)):
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "streamproc", command],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=within_s + 30,
        )
        output = done.stdout + done.stderr
        assert done.returncode == 2, (command, output[-3000:])
        assert time.monotonic() - started < within_s, (command, output[-3000:])
        assert "STREAMPROC_REDIS_PASSWORD" in output and "Traceback" not in output, output
        assert WRONG not in output and PASSWORD not in output, output


def test_a_replay_over_tls_with_a_password_matches_the_reference(
    redis: SecureRedis, stack: StackInfo, tmp_path: Path
) -> None:
    """Workers, their reports and the replay's own reads all go through ``rediss://`` with the
    password and the CA from the settings (the workers inherit them)."""
    lines = anomalous_traffic(
        start=datetime(2026, 11, 3, 9, tzinfo=UTC), minutes=45, seed=8, rate=10
    )
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"".join(line + b"\n" for line in lines))
    env = {
        **os.environ,
        "STREAMPROC_BOOTSTRAP_SERVERS": stack.bootstrap_servers,
        "STREAMPROC_REDIS_URL": redis.tls_url,
        "STREAMPROC_REDIS_PASSWORD": PASSWORD,
        "STREAMPROC_REDIS_SSL_CAFILE": str(redis.ca),
        "STREAMPROC_PARTITIONS": "4",
        "STREAMPROC_FX_RATES": "EUR=1.08",
    }
    out = tmp_path / "report.json"
    windows = ["--window", "15m", "--window", "1h"]
    done = subprocess.run(
        [sys.executable, "-m", "streamproc", "replay", str(events), "--report", str(out), *windows],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert PASSWORD not in output
    expected = reference_report(
        lines, ReferenceSettings(fx_rates={"EUR": Decimal("1.08")}, window_sizes_s=(900, 3600))
    )
    assert not compare_reports(json.loads(out.read_text()), expected, visitors_rel_tol=0.02)


def test_dev_stack_reuses_a_redis_with_a_password_and_never_shows_it(
    redis: SecureRedis, tmp_path: Path
) -> None:
    """`dev up` pings the Redis of the URL with its password, reuses it, and prints (as do
    `dev status` and `settings`) the URL with the password masked; DEBUG logging included."""
    env = {
        **os.environ,
        "STREAMPROC_STATE_DIR": str(tmp_path),
        "STREAMPROC_REDIS_URL": f"redis://:{PASSWORD}@{HOST}:{redis.port}/0",
        "STREAMPROC_LOG_LEVEL": "debug",
    }
    outputs = []
    try:
        for args in (["dev", "up"], ["dev", "status"], ["settings"]):
            done = subprocess.run(
                [sys.executable, "-m", "streamproc", *args],
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            outputs.append(done.stdout + done.stderr)
            assert done.returncode == 0, outputs[-1][-3000:]
    finally:
        subprocess.run(
            [sys.executable, "-m", "streamproc", "dev", "down"], env=env, timeout=120, check=False
        )
    assert "redis (external)" in outputs[0] and ":***@" in outputs[0], outputs[0]
    assert all(PASSWORD not in output for output in outputs), outputs
