"""Redis: dedup, store labels, the published partials and sketches. The only module that imports
redis.

Keys, all under ``{namespace}:``::

    dedup:{event_id}              first occurrence "topic:partition:offset" (SET NX, horizon TTL)
    stores                        the store ids that keep their own label (a capped set)
    cells:{minute}                hash "{store}|{partition}" -> msgpack counters of that partition
    changed                       sorted set: minute -> when it was last written (wall ms)
    hll:{minute}:{store}:{dim}    HyperLogLog of visitors ("all" store and "" dim included)
    vis:{minute}:{store}:{dim}    the same visitors as an exact set of 64-bit hashes while small;
                                  {0} once it outgrew its cap (then only the HyperLogLog counts)
    open                          hash partition -> msgpack open-ticket gauge
    status                        hash partition -> msgpack {watermark, max_ts, evicted, at}
    end                           hash "topic:partition" -> end offset (replay and backfill)
    backfill                      a backfill's plan (JSON, ``backfill/plan.py``)

Every write is an absolute value or an idempotent add, so a re-processed batch changes nothing.
"""

from __future__ import annotations

import functools
import hashlib
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import hiredis
import msgspec
import redis.asyncio as aioredis
import redis.exceptions

from streamproc.config import Settings
from streamproc.kpi import counters as c
from streamproc.kpi.contrib import Presence


def _enc_hook(value: object) -> object:
    if isinstance(value, int):  # EpochMs
        return int(value)
    raise NotImplementedError(f"cannot encode {type(value).__name__}")


_pack = msgspec.msgpack.Encoder(enc_hook=_enc_hook).encode


def _unpack(value: bytes | str) -> Any:
    return msgspec.msgpack.decode(value.encode() if isinstance(value, str) else value)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


_DEDUP = """
local accepted = {}
for i, key in ipairs(KEYS) do
  local first = ARGV[i + 1]
  if redis.call('SET', key, first, 'NX', 'EX', ARGV[1]) then
    accepted[i] = 1
  elseif redis.call('GET', key) == first then
    accepted[i] = 1
  else
    accepted[i] = 0
  end
end
return accepted
"""

_STORES = """
local labels = {}
for i, store in ipairs(ARGV) do
  if i > 1 then
    if redis.call('SISMEMBER', KEYS[1], store) == 1 then
      labels[i - 1] = store
    elseif redis.call('SCARD', KEYS[1]) < tonumber(ARGV[1]) then
      redis.call('SADD', KEYS[1], store)
      labels[i - 1] = store
    else
      labels[i - 1] = 'other'
    end
  end
end
return labels
"""


# Exact visitor sets: members are signed 64-bit hashes (Redis keeps small integer sets as a
# compact intset, 8 bytes per member); 0 is never a hash, it marks a set that outgrew its cap.
_VISITORS_ADD = """
local cap, ttl, pos = tonumber(ARGV[1]), tonumber(ARGV[2]), 3
for _, key in ipairs(KEYS) do
  local n = tonumber(ARGV[pos])
  if redis.call('SISMEMBER', key, 0) == 0 then
    for j = pos + 1, pos + n, 1000 do
      redis.call('SADD', key, unpack(ARGV, j, math.min(j + 999, pos + n)))
    end
    if redis.call('SCARD', key) > cap then
      redis.call('DEL', key)
      redis.call('SADD', key, 0)
    end
    redis.call('EXPIRE', key, ttl)
  end
  pos = pos + n + 1
end
return 0
"""

# Distinct visitors of a union of minutes: exact while every set is whole and all of them hold
# at most ARGV[1] members, else the HyperLogLog union. KEYS: n exact sets, then n sketches.
_VISITORS_COUNT = """
local n, limit, total = #KEYS / 2, tonumber(ARGV[1]), 0
for i = 1, n do
  if redis.call('SISMEMBER', KEYS[i], 0) == 1 then total = -1 break end
  total = total + redis.call('SCARD', KEYS[i])
  if total > limit then total = -1 break end
end
if total < 0 then
  return redis.call('PFCOUNT', unpack(KEYS, n + 1, 2 * n))
end
local seen, count = {}, 0
for i = 1, n do
  for _, member in ipairs(redis.call('SMEMBERS', KEYS[i])) do
    if not seen[member] then
      seen[member] = true
      count = count + 1
    end
  end
end
return count
"""

# A key's retention is set again at most this often (seconds; or a quarter of it), see _expire.
_EXPIRE_EVERY_S = 3600.0
# Lua's unpack() is limited to a few thousand values: longer unions use the sketches alone.
_MAX_EXACT_MINUTES = 3000


def _ends(raw: Mapping[Any, Any]) -> dict[tuple[str, int], int]:
    ends = {}
    for field, value in raw.items():
        topic, _, partition = _text(field).rpartition(":")
        ends[(topic, int(partition))] = int(value)
    return ends


def _sketch_keys(presence: Iterable[Presence]) -> dict[tuple[int, str, str], set[str]]:
    """(minute, store, dimension) -> visitors; each also counts for the store ``all``."""
    sketches: dict[tuple[int, str, str], set[str]] = defaultdict(set)
    for minute, store, dimension, visitor in presence:
        sketches[(minute, store, dimension)].add(visitor)
        sketches[(minute, "all", dimension)].add(visitor)
    return sketches


@functools.lru_cache(maxsize=1 << 16)  # a visitor is in several sketches of one publish
def visitor_hash(visitor: str) -> int:
    """A signed 64-bit hash of a visitor id, never 0 (0 marks an outgrown set)."""
    value = int.from_bytes(
        hashlib.blake2b(visitor.encode(), digest_size=8).digest(), "big", signed=True
    )
    return value or 1


class _HiredisPacking:
    """Commands packed by hiredis (C), as redis-py's synchronous client packs them. Its asyncio
    connections pack in Python, copying a growing buffer once per argument: 3.9 µs per event id
    of a worker's dedup call of 20,000 ids, against 0.34 µs with hiredis. (redis-py's own
    hiredis serializer also copies every argument in a Python loop; ours are str, bytes and
    int, which hiredis takes as they are.)"""

    def pack_command(self, *args: Any) -> list[bytes]:
        if isinstance(args[0], str):  # a command of two words ("SCRIPT LOAD") is two arguments
            args = (*args[0].encode().split(), *args[1:])
        try:
            return [hiredis.pack_command(args)]
        except TypeError as exc:
            raise redis.exceptions.DataError(str(exc)) from exc


# Redis errors worth retrying a batch for: the server is unreachable, restarting, loading, frozen
# (timeouts), failing over (read-only replica, master down) or out of memory until someone acts.
TRANSIENT: tuple[type[Exception], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.MasterDownError,
    redis.exceptions.TryAgainError,
    redis.exceptions.OutOfMemoryError,
)
# Every error that comes from Redis (transient or not): never the fault of one event.
STORE_ERRORS: tuple[type[Exception], ...] = (redis.exceptions.RedisError,)


@dataclass(frozen=True)
class ExactVisitors:
    """How far visitor counts are exact (settings ``visitors_exact_*``); beyond, HyperLogLog."""

    per_minute: int = 512  # members of one minute's set before it gives way to the sketch
    union: int = 20_000  # members of all sets of a window that are still counted exactly


@dataclass(frozen=True)
class PartitionStatus:
    partition: int
    watermark: int
    max_ts: list[int]
    at_ms: int


VisitorKey = tuple[tuple[int, ...], str, str | None]  # (minutes, store, dimension)


class PipelineStore(Protocol):
    """What a worker asks of Redis (``KpiStore``; unit tests pass an in-memory one)."""

    async def input_ends(self) -> dict[tuple[str, int], int] | None: ...
    async def labels(self, stores: Iterable[str], *, cap: int) -> dict[str, str]: ...
    async def first_occurrences(
        self, ids: Sequence[str], coordinates: Sequence[str], *, horizon_s: int
    ) -> list[bool]: ...
    async def publish(
        self,
        partition: int,
        *,
        cells: Mapping[c.CellKey, c.Counters],
        presence: Iterable[Presence],
        open_tickets: Mapping[tuple[str, str, str], int] | None,
        status: PartitionStatus | None,
    ) -> None: ...


class ReportStore(Protocol):
    """What the exporter reads from Redis (``KpiStore``; unit tests pass an in-memory one)."""

    async def statuses(self) -> dict[int, dict[str, Any]]: ...
    async def minutes(self, since_ms: float = 0) -> list[int]: ...
    async def cells(self, minutes: Iterable[int]) -> dict[c.CellKey, c.Counters]: ...
    async def visitor_counts(self, keys: Iterable[VisitorKey]) -> dict[VisitorKey, int]: ...
    async def open_tickets(self) -> dict[tuple[str, str, str], int]: ...
    async def aclose(self) -> None: ...


class KpiStore:
    """The worker's and exporter's view of Redis, for one namespace."""

    def __init__(
        self,
        client: aioredis.Redis,
        namespace: str,
        *,
        retention_s: int = 8 * 86400,
        exact_visitors: ExactVisitors | None = None,
    ):
        self.client = client
        self.ns = namespace
        self.retention_s = retention_s
        self.exact = exact_visitors or ExactVisitors()
        self._dedup = client.register_script(_DEDUP)
        self._stores = client.register_script(_STORES)
        self._add_visitors = client.register_script(_VISITORS_ADD)
        self._count_visitors = client.register_script(_VISITORS_COUNT)
        self._labels: dict[str, str] = {}
        self._expired: dict[str, float] = {}  # key -> when this process last set its retention
        self._expire_every_s = min(_EXPIRE_EVERY_S, retention_s / 4)
        self._trimmed_ms = 0

    @classmethod
    def connect(
        cls,
        url: str,
        namespace: str,
        *,
        retention_s: int = 8 * 86400,
        exact_visitors: ExactVisitors | None = None,
        timeout_s: float = 5.0,
    ) -> KpiStore:
        """A store over a new client. ``timeout_s`` bounds every connect and every reply: a
        frozen or unreachable Redis raises (a transient error) instead of hanging the caller."""
        client = aioredis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        pool = client.connection_pool
        base = pool.connection_class  # a TCP, TLS or Unix socket connection, by the URL
        pool.connection_class = type(base.__name__, (_HiredisPacking, base), {})
        return cls(client, namespace, retention_s=retention_s, exact_visitors=exact_visitors)

    @classmethod
    def for_settings(cls, settings: Settings, url: str) -> KpiStore:
        """The store of ``settings.namespace`` with its retention, exact-visitor limits and
        timeout."""
        exact = ExactVisitors(settings.visitors_exact_per_minute, settings.visitors_exact_union)
        return cls.connect(
            url,
            settings.namespace,
            retention_s=settings.redis_retention_seconds,
            exact_visitors=exact,
            timeout_s=settings.redis_timeout_seconds,
        )

    async def aclose(self) -> None:
        await self.client.aclose()

    def key(self, *parts: object) -> str:
        return ":".join((self.ns, *(str(p) for p in parts)))

    # --- worker -----------------------------------------------------------------------------

    async def first_occurrences(
        self, ids: Sequence[str], coordinates: Sequence[str], *, horizon_s: int
    ) -> list[bool]:
        """For each event id: whether this message is its first occurrence (or is it again)."""
        if not ids:
            return []
        keys = [self.key("dedup", event_id) for event_id in ids]
        result = await self._dedup(keys=keys, args=[horizon_s, *coordinates])
        return [bool(flag) for flag in result]

    async def labels(self, stores: Iterable[str], *, cap: int) -> dict[str, str]:
        """The label of each store id: its own while the cap allows, else ``other``."""
        unknown = sorted({s for s in stores if s not in self._labels})
        if unknown:
            reserved = [s for s in unknown if s in ("all", "other")]
            ask = [s for s in unknown if s not in ("all", "other")]
            for store in reserved:
                self._labels[store] = "other"
            if ask:
                found = await self._stores(keys=[self.key("stores")], args=[cap, *ask])
                for store, label in zip(ask, found, strict=True):
                    self._labels[store] = _text(label)
        return self._labels

    async def publish(
        self,
        partition: int,
        *,
        cells: Mapping[c.CellKey, c.Counters],
        presence: Iterable[Presence],
        open_tickets: Mapping[tuple[str, str, str], int] | None,
        status: PartitionStatus | None,
    ) -> None:
        """Write one partition's changed partials and sketches, in one round trip."""
        now_ms = int(time.time() * 1000)
        expiring: list[str] = []
        sketches = _sketch_keys(presence)

        def commands(pipe: Any) -> None:
            expiring.clear()
            self._sketch_commands(pipe, sketches, expiring)
            stamps = {str(minute): now_ms for minute, _, _ in sketches}
            self._cell_commands(pipe, partition, cells, expiring)
            stamps |= {str(minute): now_ms for minute, _ in cells}
            if stamps:
                pipe.zadd(self.key("changed"), stamps)
                if now_ms - self._trimmed_ms > 60_000:  # minutes whose cells expired leave
                    horizon = now_ms - self.retention_s * 1000
                    pipe.zremrangebyscore(self.key("changed"), "-inf", horizon)
                    self._trimmed_ms = now_ms
            if open_tickets is not None:
                gauge = [[s, ch, pr, n] for (s, ch, pr), n in open_tickets.items()]
                pipe.hset(self.key("open"), str(partition), _pack(gauge))
            if status is not None:
                value = {"watermark": status.watermark, "max_ts": status.max_ts, "at": status.at_ms}
                pipe.hset(self.key("status"), str(partition), _pack(value))

        await self._run(commands)
        now = time.monotonic()
        self._expired.update(dict.fromkeys(expiring, now))

    def _sketch_commands(
        self, pipe: Any, sketches: dict[tuple[int, str, str], set[str]], expiring: list[str]
    ) -> None:
        """Sketches go first, then cells, then the `changed` stamps: Redis runs a pipeline in
        order, so a reader that sees a stamp or a new cell also sees the visitors with it."""
        exact: list[str] = []
        args: list[int] = [self.exact.per_minute, self.retention_s]
        for where, visitors in sketches.items():
            key = self.key("hll", *where)
            pipe.pfadd(key, *visitors)
            self._expire(pipe, key, expiring)
            if self.exact.per_minute:
                exact.append(self.key("vis", *where))
                args.append(len(visitors))
                args.extend(visitor_hash(v) for v in visitors)
        if exact:
            pipe.evalsha(self._add_visitors.sha, len(exact), *exact, *args)

    def _cell_commands(
        self,
        pipe: Any,
        partition: int,
        cells: Mapping[c.CellKey, c.Counters],
        expiring: list[str],
    ) -> None:
        """One HSET (and HDEL) per minute's hash for all its changed cells."""
        by_minute: dict[int, dict[str, bytes | None]] = defaultdict(dict)
        for (minute, store), counters in cells.items():
            by_minute[minute][f"{store}|{partition}"] = _pack(counters) if counters else None
        for minute, fields in by_minute.items():
            key = self.key("cells", minute)
            values = {field: value for field, value in fields.items() if value is not None}
            if values:
                pipe.hset(key, mapping=values)
            if len(values) < len(fields):
                pipe.hdel(key, *(field for field, value in fields.items() if value is None))
            self._expire(pipe, key, expiring)

    def _expire(self, pipe: Any, key: str, expiring: list[str]) -> None:
        """Set ``key``'s retention, at most once an hour (a quarter of the retention) per key:
        a key written every batch needs no EXPIRE every batch (half of a batch's commands), and
        the retention cannot run out between two writes that far apart. ``expiring`` collects
        the keys, remembered once their pipeline has run."""
        now, every = time.monotonic(), self._expire_every_s
        if now - self._expired.get(key, -every) < every:
            return
        if len(self._expired) > 100_000:  # bounded: forget keys not refreshed within the hour
            self._expired = {k: t for k, t in self._expired.items() if now - t < every}
        pipe.expire(key, self.retention_s)
        expiring.append(key)

    async def _run(self, commands: Callable[[Any], None]) -> list[Any]:
        """Run the ``commands`` a function puts into a pipeline, in one round trip.

        Scripts are called by their SHA: redis-py asks SCRIPT EXISTS before every pipeline that
        holds a script object (a round trip more per batch). A Redis that does not know them
        (restarted) gets them loaded, and the pipeline runs again: its commands are idempotent.
        """
        for attempt in (1, 2):
            pipe = self.client.pipeline(transaction=False)
            commands(pipe)
            try:
                return list(await pipe.execute())
            except redis.exceptions.NoScriptError:
                if attempt == 2:
                    raise
                for script in (self._add_visitors, self._count_visitors):
                    await self.client.script_load(script.script)
        raise AssertionError("unreachable")

    async def end_offsets(self) -> dict[tuple[str, int], int]:
        """Known ends of the input topics (set by replay and backfill), else empty."""
        return _ends(await self.client.hgetall(self.key("end")))

    async def input_ends(self) -> dict[tuple[str, int], int] | None:
        """Known ends of the input topics, empty when there are none, or None while they are
        expected (``expect_end_offsets``): read together, so never half of a ``set``."""
        pipe = self.client.pipeline(transaction=True)
        pipe.exists(self.key("end-expected"))
        pipe.hgetall(self.key("end"))
        expected, raw = await pipe.execute()
        return None if expected else _ends(raw)

    async def expect_end_offsets(self) -> None:
        """The input's ends will be set (a replay still producing it): until they are, workers
        take every input partition for one with more to read, so that the watermark waits for it
        instead of following the wall clock."""
        await self.client.set(self.key("end-expected"), 1, ex=self.retention_s)

    async def set_end_offsets(self, ends: Mapping[tuple[str, int], int]) -> None:
        pipe = self.client.pipeline(transaction=True)
        if ends:
            mapping = {f"{topic}:{p}": offset for (topic, p), offset in ends.items()}
            pipe.hset(self.key("end"), mapping=mapping)  # type: ignore[arg-type]
        pipe.delete(self.key("end-expected"))
        await pipe.execute()

    # --- exporter and replay ----------------------------------------------------------------

    async def cells(self, minutes: Iterable[int]) -> dict[c.CellKey, c.Counters]:
        """Cells of the given minutes, summed over partitions."""
        minutes = list(minutes)
        pipe = self.client.pipeline(transaction=False)
        for minute in minutes:
            pipe.hgetall(self.key("cells", minute))
        total: dict[c.CellKey, c.Counters] = {}
        for minute, fields in zip(minutes, await pipe.execute(), strict=True):
            for field, value in fields.items():
                store = _text(field).rpartition("|")[0]
                c.add_cells(total, {(minute, store): _unpack(value)})
        return total

    async def minutes(self, since_ms: float = 0) -> list[int]:
        """Minutes with published cells, changed at or after ``since_ms`` (wall clock)."""
        found = await self.client.zrangebyscore(self.key("changed"), since_ms, "+inf")
        return sorted(int(_text(m)) for m in found if isinstance(m, bytes | str))

    async def visitors(self, minutes: Sequence[int], store: str, dimension: str | None) -> int:
        """Distinct visitors over the minutes (exact while small, else HyperLogLog)."""
        key = (tuple(minutes), store, dimension)
        return (await self.visitor_counts([key]))[key]

    async def visitor_counts(self, keys: Iterable[VisitorKey]) -> dict[VisitorKey, int]:
        """Distinct visitors of many (minutes, store, dimension) unions, in one round trip."""
        ordered = list(keys)

        def commands(pipe: Any) -> None:
            for minutes, store, dimension in ordered:
                sketches = [self.key("hll", m, store, dimension or "") for m in minutes]
                if not sketches:
                    pipe.echo(0)
                elif self.exact.union and len(sketches) <= _MAX_EXACT_MINUTES:
                    sets = [self.key("vis", m, store, dimension or "") for m in minutes]
                    keys = [*sets, *sketches]
                    pipe.evalsha(self._count_visitors.sha, len(keys), *keys, self.exact.union)
                else:
                    pipe.pfcount(*sketches)

        results = await self._run(commands) if ordered else []
        return {key: int(value) for key, value in zip(ordered, results, strict=True)}

    async def open_tickets(self) -> dict[tuple[str, str, str], int]:
        gauge: dict[tuple[str, str, str], int] = {}
        for value in (await self.client.hgetall(self.key("open"))).values():
            for store, channel, priority, count in _unpack(value):
                key = (store, channel, priority)
                gauge[key] = gauge.get(key, 0) + count
        return gauge

    async def drop(self) -> int:
        """Delete every key of this namespace (a finished replay); returns how many."""
        deleted, batch = 0, []
        async for key in self.client.scan_iter(match=f"{self.ns}:*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:  # one round trip per thousand keys, not per key
                deleted += int(await self.client.unlink(*batch))
                batch.clear()
        if batch:
            deleted += int(await self.client.unlink(*batch))
        return deleted

    async def statuses(self) -> dict[int, dict[str, Any]]:
        raw = await self.client.hgetall(self.key("status"))
        return {int(p): _unpack(v) for p, v in raw.items()}

    # --- backfill ---------------------------------------------------------------------------

    async def backfill_plan(self) -> bytes | None:
        """The plan of the backfill this namespace belongs to, if it is one."""
        value = await self.client.get(self.key("backfill"))
        return value.encode() if isinstance(value, str) else value

    async def set_backfill_plan(self, plan: bytes) -> None:
        await self.client.set(self.key("backfill"), plan)

    async def count_keys(self, kind: str) -> int:
        """How many keys of one kind the namespace holds (``dedup``: distinct accepted ids)."""
        count = 0
        async for _ in self.client.scan_iter(match=self.key(kind, "*"), count=5000):
            count += 1
        return count
