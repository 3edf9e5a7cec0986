"""KpiStore: the worker's and the exporter's Redis, for one namespace (the keys are listed in
``store/__init__.py``). Its methods raise ``StoreError`` (``StoreUnavailable`` when Redis cannot
answer now) or ``StoreRefused``, never redis-py's errors."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions

from streamproc.config import Settings, redis_password_of
from streamproc.kpi import counters as c
from streamproc.kpi.contrib import Presence
from streamproc.store import scripts
from streamproc.store.client import connect, mapped, pack, text, unpack
from streamproc.store.contracts import ExactVisitors, PartitionStatus, VisitorKey
from streamproc.store.publish import PublishCommands, sketch_keys

# Visitor unions are counted in round trips of at most this many minutes in all (a union's
# minutes, summed; a larger union goes alone). A report of days of data asks for hundreds of
# thousands: in one pipeline, Redis took longer to read it than a reply may take
# (STREAMPROC_REDIS_TIMEOUT_SECONDS), and a 3-day replay's report failed.
UNION_MINUTES_PER_TRIP = 20_000


def _by_minutes(keys: Iterable[VisitorKey], most: int) -> Iterator[list[VisitorKey]]:
    """``keys`` in order, in lists of at most ``most`` minutes in all (or of one key)."""
    chunk: list[VisitorKey] = []
    minutes = 0
    for key in keys:
        if chunk and minutes + len(key[0]) > most:
            yield chunk
            chunk, minutes = [], 0
        chunk.append(key)
        minutes += len(key[0])
    if chunk:
        yield chunk


def _ends(raw: Mapping[Any, Any]) -> dict[tuple[str, int], int]:
    ends = {}
    for field, value in raw.items():
        topic, _, partition = text(field).rpartition(":")
        ends[(topic, int(partition))] = int(value)
    return ends


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
        self._stores = client.register_script(scripts.STORES)
        self._add_visitors = client.register_script(scripts.VISITORS_ADD)
        self._count_visitors = client.register_script(scripts.VISITORS_COUNT)
        self._labels: dict[str, str] = {}
        self._publish = PublishCommands(
            self.key,
            exact=self.exact,
            retention_s=retention_s,
            add_visitors_sha=self._add_visitors.sha,
        )
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
        password: str | None = None,
        cafile: Path | None = None,
    ) -> KpiStore:
        """A store over a new client (``client.connect``)."""
        client = connect(url, timeout_s=timeout_s, password=password, cafile=cafile)
        return cls(client, namespace, retention_s=retention_s, exact_visitors=exact_visitors)

    @classmethod
    def for_settings(cls, settings: Settings, url: str) -> KpiStore:
        """The store of ``settings.namespace`` with its retention, exact-visitor limits,
        timeout, password and CA."""
        exact = ExactVisitors(settings.visitors_exact_per_minute, settings.visitors_exact_union)
        return cls.connect(
            url,
            settings.namespace,
            retention_s=settings.redis_retention_seconds,
            exact_visitors=exact,
            timeout_s=settings.redis_timeout_seconds,
            password=redis_password_of(settings),
            cafile=settings.redis_ssl_cafile,
        )

    @mapped
    async def aclose(self) -> None:
        await self.client.aclose()

    def key(self, *parts: object) -> str:
        return ":".join((self.ns, *(str(p) for p in parts)))

    # --- worker -----------------------------------------------------------------------------

    @mapped
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
                    self._labels[store] = text(label)
        return self._labels

    @mapped
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
        sketches = sketch_keys(presence)
        publish = self._publish

        def commands(pipe: Any) -> None:
            publish.begin()
            publish.sketches(pipe, sketches)
            stamps = {str(minute): now_ms for minute, _, _ in sketches}
            publish.cells(pipe, partition, cells)
            stamps |= {str(minute): now_ms for minute, _ in cells}
            if stamps:
                pipe.zadd(self.key("changed"), stamps)
                if now_ms - self._trimmed_ms > 60_000:  # minutes whose cells expired leave
                    horizon = now_ms - self.retention_s * 1000
                    pipe.zremrangebyscore(self.key("changed"), "-inf", horizon)
                    self._trimmed_ms = now_ms
            if open_tickets is not None:
                gauge = [[s, ch, pr, n] for (s, ch, pr), n in open_tickets.items()]
                pipe.hset(self.key("open"), str(partition), pack(gauge))
            if status is not None:
                value = {
                    "watermark": status.watermark,
                    "max_ts": status.max_ts,
                    "at": status.at_ms,
                    "accepted": status.accepted,
                    "duplicates": status.duplicates,
                }
                pipe.hset(self.key("status"), str(partition), pack(value))

        await self._run(commands)
        publish.ran()

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

    @mapped
    async def end_offsets(self) -> dict[tuple[str, int], int]:
        """Known ends of the input topics (set by replay and backfill), else empty."""
        return _ends(await self.client.hgetall(self.key("end")))

    @mapped
    async def input_ends(self) -> dict[tuple[str, int], int] | None:
        """Known ends of the input topics, empty when there are none, or None while they are
        expected (``expect_end_offsets``): read together, so never half of a ``set``."""
        pipe = self.client.pipeline(transaction=True)
        pipe.exists(self.key("end-expected"))
        pipe.hgetall(self.key("end"))
        expected, raw = await pipe.execute()
        return None if expected else _ends(raw)

    @mapped
    async def expect_end_offsets(self) -> None:
        """The input's ends will be set (a replay still producing it): until they are, workers
        take every input partition for one with more to read, so that the watermark waits for it
        instead of following the wall clock."""
        await self.client.set(self.key("end-expected"), 1, ex=self.retention_s)

    @mapped
    async def set_end_offsets(self, ends: Mapping[tuple[str, int], int]) -> None:
        pipe = self.client.pipeline(transaction=True)
        if ends:
            mapping = {f"{topic}:{p}": offset for (topic, p), offset in ends.items()}
            pipe.hset(self.key("end"), mapping=mapping)  # type: ignore[arg-type]
        pipe.delete(self.key("end-expected"))
        await pipe.execute()

    # --- exporter and replay ----------------------------------------------------------------

    @mapped
    async def cells(self, minutes: Iterable[int]) -> dict[c.CellKey, c.Counters]:
        """Cells of the given minutes, summed over partitions."""
        minutes = list(minutes)
        pipe = self.client.pipeline(transaction=False)
        for minute in minutes:
            pipe.hgetall(self.key("cells", minute))
        total: dict[c.CellKey, c.Counters] = {}
        for minute, fields in zip(minutes, await pipe.execute(), strict=True):
            for field, value in fields.items():
                store = text(field).rpartition("|")[0]
                c.add_cells(total, {(minute, store): unpack(value)})
        return total

    @mapped
    async def minutes(self, since_ms: float = 0) -> list[int]:
        """Minutes with published cells, changed at or after ``since_ms`` (wall clock)."""
        found = await self.client.zrangebyscore(self.key("changed"), since_ms, "+inf")
        return sorted(int(text(m)) for m in found if isinstance(m, bytes | str))

    async def visitors(self, minutes: Sequence[int], store: str, dimension: str | None) -> int:
        """Distinct visitors over the minutes (exact while small, else HyperLogLog); errors
        mapped by ``visitor_counts``."""
        key = (tuple(minutes), store, dimension)
        return (await self.visitor_counts([key]))[key]

    @mapped
    async def visitor_counts(self, keys: Iterable[VisitorKey]) -> dict[VisitorKey, int]:
        """Distinct visitors of many (minutes, store, dimension) unions, in as few round trips
        as ``UNION_MINUTES_PER_TRIP`` allows."""
        counts: dict[VisitorKey, int] = {}
        for chunk in _by_minutes(keys, UNION_MINUTES_PER_TRIP):

            def commands(pipe: Any, chunk: list[VisitorKey] = chunk) -> None:
                for minutes, store, dimension in chunk:
                    sketches = [self.key("hll", m, store, dimension or "") for m in minutes]
                    if not sketches:
                        pipe.echo(0)
                    elif self.exact.union and len(sketches) <= scripts.MAX_EXACT_MINUTES:
                        sets = [self.key("vis", m, store, dimension or "") for m in minutes]
                        keys = [*sets, *sketches]
                        pipe.evalsha(self._count_visitors.sha, len(keys), *keys, self.exact.union)
                    else:
                        pipe.pfcount(*sketches)

            results = await self._run(commands)
            counts.update((key, int(value)) for key, value in zip(chunk, results, strict=True))
        return counts

    @mapped
    async def open_tickets(self) -> dict[tuple[str, str, str], int]:
        gauge: dict[tuple[str, str, str], int] = {}
        for value in (await self.client.hgetall(self.key("open"))).values():
            for store, channel, priority, count in unpack(value):
                key = (store, channel, priority)
                gauge[key] = gauge.get(key, 0) + count
        return gauge

    @mapped
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

    @mapped
    async def statuses(self) -> dict[int, dict[str, Any]]:
        raw = await self.client.hgetall(self.key("status"))
        return {int(p): unpack(v) for p, v in raw.items()}

    async def judged(self) -> tuple[int, int]:
        """(accepted, duplicates): the events the partitions' workers judged so, as their
        latest published statuses count them (``PartitionStatus``)."""
        statuses = (await self.statuses()).values()
        accepted = sum(s.get("accepted", 0) for s in statuses)
        return accepted, sum(s.get("duplicates", 0) for s in statuses)

    # --- backfill ---------------------------------------------------------------------------

    @mapped
    async def backfill_plan(self) -> bytes | None:
        """The plan of the backfill this namespace belongs to, if it is one."""
        value = await self.client.get(self.key("backfill"))
        return value.encode() if isinstance(value, str) else value

    @mapped
    async def set_backfill_plan(self, plan: bytes) -> None:
        await self.client.set(self.key("backfill"), plan)

    @mapped
    async def count_keys(self, kind: str) -> int:
        """How many keys of one kind the namespace holds (``cells``: minutes with cells)."""
        count = 0
        async for _ in self.client.scan_iter(match=self.key(kind, "*"), count=5000):
            count += 1
        return count
