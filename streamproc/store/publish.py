"""The Redis commands of a worker's publish: visitor sketches and exact sets, window cells, and
key retention set no more often than needed."""

from __future__ import annotations

import functools
import hashlib
import heapq
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import msgspec

from streamproc.kpi import counters as c
from streamproc.kpi.contrib import Presence
from streamproc.store.client import pack
from streamproc.store.contracts import ExactVisitors

# A key's retention is set again at most this often (seconds; or a quarter of it).
EXPIRE_EVERY_S = 3600.0
# Keys whose retention was set that a publisher remembers, at most (about 100 bytes each).
REMEMBERED_MAX = 100_000

Sketches = dict[tuple[int, str, str], set[str]]  # (minute, store, dimension) -> visitors


def sketch_keys(presence: Iterable[Presence]) -> Sketches:
    """(minute, store, dimension) -> visitors; each also counts for the store ``all``."""
    sketches: Sketches = defaultdict(set)
    for minute, store, dimension, visitor in presence:
        sketches[(minute, store, dimension)].add(visitor)
    # The stores' sets, united per key (in C): a quarter less time than two adds per presence.
    for (minute, _, dimension), visitors in list(sketches.items()):
        sketches[(minute, "all", dimension)] |= visitors
    return sketches


def visitor_hash(visitor: str) -> int:
    """A signed 64-bit hash of a visitor id, never 0 (0 marks an outgrown set)."""
    value = int.from_bytes(
        hashlib.blake2b(visitor.encode(), digest_size=8).digest(), "big", signed=True
    )
    return value or 1


def _hash_text(visitor: str) -> str:
    """``visitor_hash`` in decimal, as exact sets keep it (Lua's numbers cannot hold 64 bits)."""
    return str(visitor_hash(visitor))


class PublishCommands:
    """Builds a publish's commands into a pipeline (again, when it is run again).

    A key's retention (EXPIRE) is set at most once an hour (a quarter of the retention) per key:
    a key written every batch needs no EXPIRE every batch (half of a batch's commands), and the
    retention cannot run out between two writes that far apart. The keys given an EXPIRE are
    remembered once their pipeline has run (``ran``).
    """

    def __init__(
        self,
        key: Callable[..., str],
        *,
        exact: ExactVisitors,
        retention_s: int,
        add_visitors_sha: str,
    ) -> None:
        self.key = key
        self.exact = exact
        self.retention_s = retention_s
        self.add_visitors_sha = add_visitors_sha
        self.expiring: list[str] = []
        self._expired: dict[str, float] = {}  # key -> when this process last set its retention
        self._every_s = min(EXPIRE_EVERY_S, retention_s / 4)

    def begin(self) -> None:
        """A pipeline is being built (again: one that failed is built anew)."""
        self.expiring = []

    def ran(self) -> None:
        """The pipeline ran: its EXPIREs hold from now."""
        now = time.monotonic()
        self._expired.update(dict.fromkeys(self.expiring, now))
        self.expiring = []

    def sketches(self, pipe: Any, sketches: Sketches) -> None:
        """Sketches go first, then cells, then the `changed` stamps: Redis runs a pipeline in
        order, so a reader that sees a stamp or a new cell also sees the visitors with it. One
        script call adds every visitor (``scripts.VISITORS_ADD``); what goes with each key (its
        visitors, their hashes) is one MessagePack argument, not an argument apiece: the client
        packed those at ~110 ns each, most of a publish with many keys of few visitors."""
        if not sketches:
            return
        exact = bool(self.exact.per_minute)
        hll, vis = self.key("hll", ""), self.key("vis", "")  # key(kind, minute, store, dimension)
        now = time.monotonic()
        keys: list[str] = []
        values: list[int | str] = []
        # A visitor is in several sketches of a publish (its store's and ``all``, per
        # dimension): hashed once per publish. (A process-wide cache of 65,536 took 15 MB, 150
        # bytes per session of a worker holding 100 k.)
        hash_of = functools.cache(_hash_text)
        for (minute, store, dimension), visitors in sketches.items():
            where = f"{minute}:{store}:{dimension}"
            key = hll + where
            keys.append(key)
            values += (len(visitors), int(self._expires(key, now)))
            values += visitors
            if exact:
                keys.append(vis + where)
                values += map(hash_of, visitors)
        args = (self.exact.per_minute, self.retention_s, int(exact), msgspec.msgpack.encode(values))
        pipe.evalsha(self.add_visitors_sha, len(keys), *keys, *args)

    def cells(self, pipe: Any, partition: int, cells: Mapping[c.CellKey, c.Counters]) -> None:
        """One HSET (and HDEL) per minute's hash for all its changed cells."""
        by_minute: dict[int, dict[str, bytes | None]] = defaultdict(dict)
        for (minute, store), counters in cells.items():
            by_minute[minute][f"{store}|{partition}"] = pack(counters) if counters else None
        for minute, fields in by_minute.items():
            key = self.key("cells", minute)
            values = {field: value for field, value in fields.items() if value is not None}
            if values:
                pipe.hset(key, mapping=values)
            if len(values) < len(fields):
                pipe.hdel(key, *(field for field, value in fields.items() if value is None))
            self._expire(pipe, key)

    def _expire(self, pipe: Any, key: str) -> None:
        if self._expires(key):
            pipe.expire(key, self.retention_s)

    def _expires(self, key: str, now: float | None = None) -> bool:
        """Whether ``key``'s retention is to be set ``now`` (noted in ``expiring``)."""
        if now is None:
            now = time.monotonic()
        every = self._every_s
        if now - self._expired.get(key, -every) < every:
            return False
        if len(self._expired) > REMEMBERED_MAX:
            self._forget(now)
        self.expiring.append(key)
        return True

    def _forget(self, now: float) -> None:
        """Keep the keys whose retention was set within the hour, the latest ``REMEMBERED_MAX``
        // 2 of them at most. A key forgotten gets its EXPIRE again when next written: nothing
        but a command. (Keys are per minute of event time: a backfill makes an hour's worth of
        them in seconds. Keeping every key of the hour, this ran for each new key once there
        were that many: a copy of 100 k entries each time.)"""
        young = [(t, k) for k, t in self._expired.items() if now - t < self._every_s]
        if len(young) > REMEMBERED_MAX // 2:
            young = heapq.nlargest(REMEMBERED_MAX // 2, young)
        self._expired = {k: t for t, k in young}
