"""Child processes, started, checked and stopped in one place.

Each runs in a session of its own, so that a signal reaches its process group (what it started
too), with its output in a log file. A ``Child`` (``spawn``, ``exited``, ``stop``) ends with this
process: replay and backfill workers, the demo's processes. A detached server (``spawn_detached``,
``running``, ``terminate``) outlives it: the dev stack's broker and Redis, recorded by pid and
creation time (``Detached``) so that a later process can check and stop it without mistaking a
recycled pid for it. Stopping is SIGTERM to the group, then SIGKILL once a deadline has passed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, NamedTuple

import psutil

logger = logging.getLogger(__name__)

LOCALHOST = "127.0.0.1"
_POLL_SECONDS = 0.05
_KILL_WAIT_SECONDS = 5.0  # for a detached server after SIGKILL
# macOS keeps a process's start time as the clock read then; a recycled pid starts far later.
_SAME_START_SECONDS = 1.0

Cmdline = Callable[[list[bytes]], bool]  # whether /proc/<pid>/cmdline's words are the server's


class Child(NamedTuple):
    """A child process and its open log file, ``<name>.log``."""

    proc: subprocess.Popen[bytes]
    log: IO[bytes]

    @property
    def log_path(self) -> Path:
        return Path(self.log.name)

    @property
    def name(self) -> str:
        return self.log_path.stem


def spawn(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    log: Path,
    append: bool = False,
    preexec_fn: Callable[[], None] | None = None,
    cwd: Path | None = None,
) -> Child:
    """Start ``argv`` in a session of its own (in ``cwd``, else here), its output going to
    ``log`` (appended to with ``append``, else truncated). ``preexec_fn`` runs in the child
    before ``argv`` starts."""
    log.parent.mkdir(parents=True, exist_ok=True)
    out = log.open("ab" if append else "wb")
    try:
        proc = subprocess.Popen(
            argv,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=preexec_fn,
            cwd=cwd,
        )
    except BaseException:
        out.close()
        raise
    return Child(proc, out)


def exited(children: Iterable[Child], *, allowed: tuple[int, ...] = ()) -> Child | None:
    """The first of ``children`` that has exited with a status not in ``allowed``, if any."""
    return next((c for c in children if c.proc.poll() not in (None, *allowed)), None)


def stop(children: Sequence[Child], *, timeout: float) -> None:
    """SIGTERM to the group of every child still running, SIGKILL to the group of each one still
    running ``timeout`` seconds later (waited for in this order); their logs are closed."""
    for child in children:
        if child.proc.poll() is None:
            _signal_group(child.proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for child in children:
        try:
            child.proc.wait(max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            _kill(child.name, child.proc.pid)
            child.proc.wait()
        child.log.close()


@dataclass(frozen=True)
class Detached:
    """A server of ``spawn_detached``, here or by an earlier process: its pid, and its creation
    time (``psutil.Process.create_time``) unless it could not be read or was not recorded."""

    pid: int
    created: float | None


def spawn_detached(argv: list[str], *, env: Mapping[str, str], log: Path) -> Detached:
    """Start ``argv`` to outlive this process, its output going to ``log`` (truncated)."""
    # posix_spawn rather than Popen: a Popen object dropped while its detached child still runs
    # warns ResourceWarning. setsid=True is Popen's start_new_session: the server outlives this
    # process, and ``terminate`` signals its process group.
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, str(log), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644),
        (os.POSIX_SPAWN_DUP2, 1, 2),
    ]
    pid = os.posix_spawn(argv[0], argv, env, file_actions=actions, setsid=True)
    try:  # not reaped yet, so the pid is still this child's
        created: float | None = psutil.Process(pid).create_time()
    except psutil.Error:
        created = None
    return Detached(pid, created)


def exit_code(pid: int) -> int | None:
    """The exit code of our child ``pid`` once it has exited (reaping it), else None."""
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return None
    return os.waitstatus_to_exitcode(status) if done else None


def running(server: Detached, *, cmdline: Cmdline | None = None) -> bool:
    """Whether ``server`` still runs, never mistaking a recycled pid for it. Our child runs until
    reaped (its pid is not reused before); another process's must still be the same program: by
    ``cmdline`` where there is /proc, else by its recorded creation time, else by pid alone."""
    try:
        done, _ = os.waitpid(server.pid, os.WNOHANG)
    except ChildProcessError:  # not our child: started by an earlier process
        return _same_process(server, cmdline)
    return done == 0


def terminate(server: Detached, *, name: str, deadline: float, cmdline: Cmdline | None) -> bool:
    """SIGTERM to ``server``'s process group, SIGKILL once ``deadline`` (monotonic) has passed;
    False when it was not running. Raises PermissionError (not ours to signal) or TimeoutError
    (it survived SIGKILL)."""
    if not running(server, cmdline=cmdline):
        return False
    _signal_group(server.pid, signal.SIGTERM)
    if not _gone(server, cmdline, deadline):
        _kill(name, server.pid)
        if not _gone(server, cmdline, time.monotonic() + _KILL_WAIT_SECONDS):
            raise TimeoutError(f"{name} (pid {server.pid}) survived SIGKILL")
    logger.info("stopped %s (pid %d)", name, server.pid)
    return True


def tail(log: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a child's log, for an error that says why it exited."""
    try:
        text = log.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        return f"(log unreadable: {exc})"
    return "\n".join(text.splitlines()[-lines:]) or "(log is empty)"


def free_port(preferred: int = 0, *, host: str = LOCALHOST) -> int:
    """``preferred`` when it is free, else (and for 0) any free port."""
    if preferred and not port_in_use(preferred, host=host):
        return preferred
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_in_use(port: int, *, host: str = LOCALHOST) -> bool:
    with socket.socket() as sock:
        # SO_REUSEADDR, as servers set it: only a listener makes the bind fail, not TIME_WAIT.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def _same_process(server: Detached, cmdline: Cmdline | None) -> bool:
    if cmdline is not None and Path("/proc").is_dir():
        try:
            words = Path(f"/proc/{server.pid}/cmdline").read_bytes().replace(b"\0", b" ").split()
        except OSError:
            return False
        return cmdline(words)  # a zombie's is empty
    if server.created is not None:
        try:
            found = psutil.Process(server.pid)
            started = found.create_time()
            zombie = found.status() == psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False
        return abs(started - server.created) < _SAME_START_SECONDS and not zombie
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(server.pid, 0)
        return True
    return False


def _gone(server: Detached, cmdline: Cmdline | None, deadline: float) -> bool:
    while running(server, cmdline=cmdline):
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL_SECONDS)
    return True


def _kill(name: str, pid: int) -> None:
    logger.warning("%s (pid %d) ignored SIGTERM; sending SIGKILL", name, pid)
    _signal_group(pid, signal.SIGKILL)


def _signal_group(pid: int, signum: signal.Signals) -> None:
    """``signum`` to the process group ``pid`` leads, else to ``pid`` alone; nothing if gone."""
    with contextlib.suppress(ProcessLookupError):
        if os.getpgid(pid) == pid:
            os.killpg(pid, signum)
        else:
            os.kill(pid, signum)
