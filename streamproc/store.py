"""Redis: dedup, store labels, the published partials and sketches. The only module that imports
redis.

Keys, all under ``{namespace}:``::

    dedup:{event_id}              first occurrence "topic:partition:offset" (SET NX, horizon TTL)
    stores                        the store ids that keep their own label (a capped set)
    cells:{minute}                hash "{store}|{partition}" -> msgpack counters of that partition
    changed                       sorted set: minute -> when it was last written (wall ms)
    hll:{minute}:{store}:{dim}    HyperLogLog of visitors ("all" store and "" dim included)
    open                          hash partition -> msgpack open-ticket gauge
    status                        hash partition -> msgpack {watermark, max_ts, evicted, at}
    end                           hash "topic:partition" -> end offset (replay and backfill)

Every write is an absolute value or an idempotent add, so a re-processed batch changes nothing.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import redis.asyncio as aioredis
import redis.exceptions

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


# Redis errors worth retrying a batch for (the server is restarting, loading or unreachable).
TRANSIENT: tuple[type[Exception], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,
)


@dataclass(frozen=True)
class PartitionStatus:
    partition: int
    watermark: int
    max_ts: list[int]
    at_ms: int


class KpiStore:
    """The worker's and exporter's view of Redis, for one namespace."""

    def __init__(self, client: aioredis.Redis, namespace: str, *, retention_s: int = 8 * 86400):
        self.client = client
        self.ns = namespace
        self.retention_s = retention_s
        self._dedup = client.register_script(_DEDUP)
        self._stores = client.register_script(_STORES)
        self._labels: dict[str, str] = {}

    @classmethod
    def connect(cls, url: str, namespace: str) -> KpiStore:
        return cls(aioredis.Redis.from_url(url), namespace)

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
        pipe = self.client.pipeline(transaction=False)
        for (minute, store), counters in cells.items():
            key = self.key("cells", minute)
            field = f"{store}|{partition}"
            if counters:
                pipe.hset(key, field, _pack(counters))
            else:
                pipe.hdel(key, field)
            pipe.expire(key, self.retention_s)
            pipe.zadd(self.key("changed"), {str(minute): now_ms})
        sketches: dict[str, set[str]] = defaultdict(set)
        for minute, store, dimension, visitor in presence:
            sketches[self.key("hll", minute, store, dimension)].add(visitor)
            sketches[self.key("hll", minute, "all", dimension)].add(visitor)
        for key, visitors in sketches.items():
            pipe.pfadd(key, *visitors)
            pipe.expire(key, self.retention_s)
        if open_tickets is not None:
            gauge = [[s, ch, pr, n] for (s, ch, pr), n in open_tickets.items()]
            pipe.hset(self.key("open"), str(partition), _pack(gauge))
        if status is not None:
            value = {"watermark": status.watermark, "max_ts": status.max_ts, "at": status.at_ms}
            pipe.hset(self.key("status"), str(partition), _pack(value))
        await pipe.execute()

    async def end_offsets(self) -> dict[tuple[str, int], int]:
        """Known ends of the input topics (set by replay and backfill), else empty."""
        raw = await self.client.hgetall(self.key("end"))
        ends = {}
        for field, value in raw.items():
            topic, _, partition = _text(field).rpartition(":")
            ends[(topic, int(partition))] = int(value)
        return ends

    async def set_end_offsets(self, ends: Mapping[tuple[str, int], int]) -> None:
        if ends:
            mapping = {f"{topic}:{p}": offset for (topic, p), offset in ends.items()}
            await self.client.hset(self.key("end"), mapping=mapping)  # type: ignore[arg-type]

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
        """Distinct visitors over the minutes (HyperLogLog union)."""
        keys = [self.key("hll", minute, store, dimension or "") for minute in minutes]
        return int(await self.client.pfcount(*keys)) if keys else 0

    async def visitor_counts(
        self, keys: Iterable[tuple[tuple[int, ...], str, str | None]]
    ) -> dict[tuple[tuple[int, ...], str, str | None], int]:
        """Distinct visitors of many (minutes, store, dimension) unions, in one round trip."""
        ordered = list(keys)
        pipe = self.client.pipeline(transaction=False)
        for minutes, store, dimension in ordered:
            pipe.pfcount(*(self.key("hll", m, store, dimension or "") for m in minutes))
        results = await pipe.execute() if ordered else []
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
        deleted = 0
        async for key in self.client.scan_iter(match=f"{self.ns}:*", count=1000):
            deleted += int(await self.client.delete(key))
        return deleted

    async def statuses(self) -> dict[int, dict[str, Any]]:
        raw = await self.client.hgetall(self.key("status"))
        return {int(p): _unpack(v) for p, v in raw.items()}
