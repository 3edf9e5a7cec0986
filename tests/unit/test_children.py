"""streamproc.children with real processes: spawned, checked, stopped (SIGTERM, then SIGKILL),
detached servers found again by pid and creation time, and free ports."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from streamproc import children

ENV = dict(os.environ)


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


SLEEPER = _python("import time; print('ready', flush=True); time.sleep(60)")
# Ignores SIGTERM: only SIGKILL stops it.
STUBBORN = _python(
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print('ready', flush=True); time.sleep(60)"
)
# Starts a grandchild in its process group, prints its pid and waits for it.
PARENT = _python(
    "import subprocess, sys; "
    "grandchild = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
    "print(grandchild.pid, flush=True); grandchild.wait()"
)


def _wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def _logged(log: Path, text: str) -> Callable[[], bool]:
    return lambda: log.exists() and text in log.read_text()


def _gone(pid: int) -> bool:
    """No such process, or only a zombie (an orphan's parent here may not reap it)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.fixture
def orphan() -> Iterator[int]:
    """A sleeping process leading its own group that is not a child of this one: a server as
    a later ``dev`` command finds it, or a process that took a recycled pid."""
    code = (
        "import subprocess, sys; "
        "print(subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], "
        "stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True).pid)"
    )  # not writing to the pipes: run() would wait for the orphan to close them
    started = subprocess.run(_python(code), check=True, capture_output=True, text=True)
    pid = int(started.stdout)
    yield pid
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


# --- children of this process ----------------------------------------------------------------


def test_a_child_runs_in_its_own_session_with_its_output_in_its_log(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "job.log"
    child = children.spawn(SLEEPER, env=ENV, log=log)
    try:
        assert (child.name, child.log_path) == ("job", log)
        assert os.getsid(child.proc.pid) == os.getpgid(child.proc.pid) == child.proc.pid
        _wait_for(_logged(log, "ready"))
    finally:
        children.stop([child], timeout=5)
    assert child.log.closed

    said = _python("import sys; print('out', flush=True); print('err', file=sys.stderr)")
    for append, expected in ((True, ["ready", "out", "err"]), (False, ["out", "err"])):
        again = children.spawn(said, env=ENV, log=log, append=append)
        again.proc.wait(10)
        children.stop([again], timeout=5)
        assert log.read_text().split() == expected


def test_an_exited_child_is_found_and_its_log_tail_tells_why(tmp_path: Path) -> None:
    sleeper = children.spawn(SLEEPER, env=ENV, log=tmp_path / "sleeper.log")
    failing = children.spawn(
        _python("for n in range(30): print('line', n)\nraise SystemExit(3)"),
        env=ENV,
        log=tmp_path / "failing.log",
    )
    try:
        failing.proc.wait(10)
        assert children.exited([sleeper, failing]) is failing
        assert children.exited([sleeper, failing], allowed=(3,)) is None
        assert failing.proc.returncode == 3
        tail = children.tail(failing.log_path, 3)
        assert tail == "line 27\nline 28\nline 29"
    finally:
        children.stop([sleeper, failing], timeout=5)
    assert children.exited([sleeper]) is sleeper  # stopped by SIGTERM
    assert sleeper.proc.returncode == -signal.SIGTERM


def test_tail_of_an_empty_or_missing_log(tmp_path: Path) -> None:
    (tmp_path / "empty.log").touch()
    assert children.tail(tmp_path / "empty.log") == "(log is empty)"
    assert children.tail(tmp_path / "missing.log").startswith("(log unreadable: ")


def test_stop_signals_the_whole_process_group(tmp_path: Path) -> None:
    child = children.spawn(PARENT, env=ENV, log=tmp_path / "parent.log")
    try:
        _wait_for(lambda: child.log_path.read_text().strip().isdigit())
        grandchild = int(child.log_path.read_text())
        assert os.getpgid(grandchild) == child.proc.pid
    finally:
        children.stop([child], timeout=5)
    assert child.proc.returncode == -signal.SIGTERM
    _wait_for(lambda: _gone(grandchild))


def test_stop_kills_a_child_that_ignores_sigterm_once_the_timeout_has_passed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stubborn = children.spawn(STUBBORN, env=ENV, log=tmp_path / "stubborn.log")
    sleeper = children.spawn(SLEEPER, env=ENV, log=tmp_path / "sleeper.log")
    _wait_for(_logged(stubborn.log_path, "ready"))
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="streamproc.children"):
        children.stop([stubborn, sleeper], timeout=0.5)
    assert time.monotonic() - started >= 0.5
    assert stubborn.proc.returncode == -signal.SIGKILL
    assert sleeper.proc.returncode == -signal.SIGTERM
    assert f"stubborn (pid {stubborn.proc.pid}) ignored SIGTERM; sending SIGKILL" in caplog.text
    assert stubborn.log.closed and sleeper.log.closed


# --- detached servers ------------------------------------------------------------------------


def test_a_detached_server_is_recorded_found_running_and_terminated(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    server = children.spawn_detached(SLEEPER, env=ENV, log=log)
    try:
        assert os.getsid(server.pid) == server.pid
        assert server.created == psutil.Process(server.pid).create_time()
        _wait_for(_logged(log, "ready"))
        assert children.running(server)
        assert children.exit_code(server.pid) is None
    finally:
        stopped = children.terminate(
            server, name="server", deadline=time.monotonic() + 5, cmdline=None
        )
    assert stopped and not children.running(server)
    assert not children.terminate(server, name="server", deadline=time.monotonic(), cmdline=None)


def test_the_exit_code_of_a_detached_server_that_died(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    server = children.spawn_detached(
        _python("print('fatal: no storage'); raise SystemExit(3)"), env=ENV, log=log
    )
    codes: list[int | None] = []

    def exited() -> bool:
        codes.append(children.exit_code(server.pid))
        return codes[-1] is not None

    _wait_for(exited)
    assert codes[-1] == 3
    assert children.tail(log) == "fatal: no storage"


def test_terminate_kills_a_server_that_ignores_sigterm(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = tmp_path / "server.log"
    server = children.spawn_detached(STUBBORN, env=ENV, log=log)
    _wait_for(_logged(log, "ready"))
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="streamproc.children"):
        assert children.terminate(server, name="stubborn", deadline=started + 0.5, cmdline=None)
    assert time.monotonic() - started >= 0.5
    assert not children.running(server)
    assert f"stubborn (pid {server.pid}) ignored SIGTERM; sending SIGKILL" in caplog.text


def test_a_server_of_an_earlier_process_is_known_by_its_creation_time(orphan: int) -> None:
    created = psutil.Process(orphan).create_time()
    # The pid recorded with another creation time: a recycled pid, never signalled.
    recycled = children.Detached(orphan, created - 60)
    assert not children.running(recycled)
    assert not children.terminate(recycled, name="old", deadline=time.monotonic(), cmdline=None)
    assert not _gone(orphan)

    server = children.Detached(orphan, created)
    assert children.running(server)
    assert children.terminate(server, name="server", deadline=time.monotonic() + 5, cmdline=None)
    assert _gone(orphan) and not children.running(server)


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="no /proc to read a cmdline from")
def test_where_there_is_proc_the_cmdline_tells_whether_it_is_the_server(orphan: int) -> None:
    server = children.Detached(orphan, None)
    assert children.running(server, cmdline=lambda words: b"time.sleep(60)" in words)
    assert not children.running(server, cmdline=lambda words: False)
    assert not children.terminate(
        server, name="other", deadline=time.monotonic(), cmdline=lambda words: False
    )
    assert not _gone(orphan)


def test_a_pid_without_a_creation_time_or_cmdline_is_checked_alone(orphan: int) -> None:
    # As recorded by an older streamproc, read where there is no /proc.
    assert children.running(children.Detached(orphan, None))
    assert not children.running(children.Detached(2**22 + 1, None))  # above any pid_max


# --- ports -----------------------------------------------------------------------------------


def test_free_port_prefers_the_one_asked_for_when_nothing_listens_there() -> None:
    with socket.socket() as listener:
        listener.bind((children.LOCALHOST, 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert children.port_in_use(port)
        other = children.free_port(port)
        assert other != port and not children.port_in_use(other)
    assert not children.port_in_use(port)
    assert children.free_port(port) == port
    assert children.free_port() > 0
