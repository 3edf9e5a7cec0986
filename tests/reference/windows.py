"""Facts into aligned windows: one cell per (window, store, breakdown)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from reference.common import Fact

ALL_STORES = "all"


class CellKey(NamedTuple):
    """An aligned window ``[start_ms, start_ms + size_s)``, a store (or ``all``), a breakdown."""

    size_s: int
    start_ms: int
    store_id: str
    dimension: str | None


@dataclass
class Cell:
    """The facts of one cell: every amount per counter, and the distinct visitors."""

    amounts: dict[str, list[int]] = field(default_factory=dict)
    visitors: set[str] = field(default_factory=set)

    def add(self, fact: Fact) -> None:
        self.amounts.setdefault(fact.counter, []).append(fact.amount)
        if fact.visitor_id is not None:
            self.visitors.add(fact.visitor_id)

    def total(self, counter: str) -> int:
        """Sum of the counter's amounts (for a count: the number of facts)."""
        return sum(self.amounts.get(counter, []))

    def count(self, counter: str) -> int:
        """How many facts the counter got."""
        return len(self.amounts.get(counter, []))

    def samples(self, counter: str) -> list[int]:
        return list(self.amounts.get(counter, []))


def window_start_ms(time_ms: int, size_s: int) -> int:
    """Start of the aligned window of ``size_s`` seconds (UTC epoch alignment) holding a time."""
    size_ms = size_s * 1000
    return time_ms - time_ms % size_ms


def aggregate(facts: Iterable[Fact], sizes_s: Iterable[int]) -> dict[CellKey, Cell]:
    """Every fact counts in its window of each size, for ``all`` and its store, without a
    breakdown and under each of its dimensions."""
    sizes = tuple(sizes_s)
    cells: dict[CellKey, Cell] = {}
    for fact in facts:
        for size_s in sizes:
            start_ms = window_start_ms(fact.time_ms, size_s)
            for store_id in (ALL_STORES, fact.store_id):
                for dimension in (None, *fact.dimensions):
                    key = CellKey(size_s, start_ms, store_id, dimension)
                    cells.setdefault(key, Cell()).add(fact)
    return cells
