"""An in-memory ``ReportStore`` for unit tests of the exporter and of the reports."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from streamproc.kpi import counters as c


class FakeStore:
    """The reads the exporter makes, from memory (KpiStore's contract, minus Redis)."""

    def __init__(self, clock: list[float]) -> None:
        self.clock = clock
        self.cells_: dict[c.CellKey, c.Counters] = {}
        self.changed: dict[int, float] = {}
        self.status: dict[int, dict[str, Any]] = {}
        self.visitor_calls: list[int] = []
        self.tickets: dict[tuple[str, str, str], int] = {}  # (store, channel, priority) -> open
        self.cells_read: list[list[int]] = []  # the minutes of each cells() call
        self.tickets_read = 0

    def put(self, minute: int, store: str, **counts: int) -> None:
        self.cells_[(minute, store)] = dict(counts)
        self.changed[minute] = self.clock[0] * 1000

    def reached(self, partition: int, latest: int) -> None:
        self.status[partition] = {"watermark": latest - 120_000, "max_ts": [latest], "at": 0}

    async def statuses(self) -> dict[int, dict[str, Any]]:
        return dict(self.status)

    async def minutes(self, since_ms: float = 0) -> list[int]:
        return sorted(m for m, at in self.changed.items() if at >= since_ms)

    async def cells(self, minutes: Iterable[int]) -> dict[c.CellKey, c.Counters]:
        wanted = set(minutes)
        self.cells_read.append(sorted(wanted))
        return {key: dict(v) for key, v in self.cells_.items() if key[0] in wanted}

    async def visitor_counts(self, keys: Iterable[Any]) -> dict[Any, int]:
        keys = list(keys)
        self.visitor_calls.append(len(keys))
        return {key: len(key[0]) for key in keys}  # one visitor per minute with data

    async def open_tickets(self) -> dict[tuple[str, str, str], int]:
        self.tickets_read += 1
        return dict(self.tickets)
