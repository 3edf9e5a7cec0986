"""What the worker and the exporter ask of Redis (``KpiStore``; unit tests pass in-memory
stores), and the plain data that crosses. A store fails with ``streamproc.errors.StoreError``:
``StoreUnavailable`` while Redis cannot answer (the worker holds its batch, the exporter serves its
last snapshot), ``StoreRefused`` for a password or certificate it refused."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from streamproc.kpi import counters as c
from streamproc.kpi.contrib import Presence


@dataclass(frozen=True)
class ExactVisitors:
    """How far visitor counts are exact (settings ``visitors_exact_*``); beyond, HyperLogLog."""

    per_minute: int = 512  # members of one minute's set before it gives way to the sketch
    union: int = 20_000  # members of all sets of a window that are still counted exactly


@dataclass(frozen=True)
class PartitionStatus:
    """Where a partition stands, published with each of its outcomes. ``accepted`` and
    ``duplicates`` count the events judged so since the partition's state began (they are in
    its state, so a restart neither loses nor repeats them)."""

    partition: int
    watermark: int
    max_ts: list[int]
    at_ms: int
    accepted: int = 0
    duplicates: int = 0


VisitorKey = tuple[tuple[int, ...], str, str | None]  # (minutes, store, dimension)


class PipelineStore(Protocol):
    """What a worker asks of Redis."""

    async def input_ends(self) -> dict[tuple[str, int], int] | None: ...
    async def labels(self, stores: Iterable[str], *, cap: int) -> dict[str, str]: ...
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
    """What the exporter reads from Redis."""

    async def statuses(self) -> dict[int, dict[str, Any]]: ...
    async def minutes(self, since_ms: float = 0) -> list[int]: ...
    async def cells(self, minutes: Iterable[int]) -> dict[c.CellKey, c.Counters]: ...
    async def visitor_counts(self, keys: Iterable[VisitorKey]) -> dict[VisitorKey, int]: ...
    async def open_tickets(self) -> dict[tuple[str, str, str], int]: ...
    async def aclose(self) -> None: ...
