"""Trailing windows for live panels: where they end, and their sums kept up to date by deltas.

The trailing end (``trailing_end``) is the start of the first minute that is not yet complete:

* A partition has *reached* event time ``R = max(highest event time read on any input topic,
  watermark + allowed lateness)``. The second term moves on with the wall clock when the
  partition is idle, so a quiet partition does not hold the windows back.
* A minute is complete once every partition that has reached anything has reached its end, so
  ``end = minute_of(min R)``: the minute holding the slowest partition's position is still being
  filled and is left out. Partitions whose input has ended (watermark ``NEVER``) hold nothing back.
* When every partition has ended (replay, backfill), or no partition has reported yet, ``end`` is
  the minute after the latest minute with published data; with no data at all there is no end.

A trailing window of size ``W`` is the whole minutes ``[end - W, end)``. Its values may still be
amended by late events (within the allowed lateness) and, for outcome KPIs, by sessions and carts
that close later: live panels trade finality for freshness, reports use aligned windows.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from streamproc.kpi import counters as c
from streamproc.kpi.aligned import Window
from streamproc.kpi.contrib import NEVER
from streamproc.kpi.epoch import MINUTE_MS, minute_of

MinuteCells = dict[str, c.Counters]  # store -> counters of one minute, summed over partitions


@dataclass(frozen=True)
class Position:
    """What one partition published about its progress (``KpiStore.statuses``)."""

    partition: int
    watermark: int  # epoch ms; -1 before the first, NEVER once its input has ended
    max_ts: tuple[int, ...]  # highest event time read per input topic (-1: none yet)
    at_ms: int = 0  # wall clock of the publish

    @classmethod
    def of(cls, partition: int, status: Mapping[str, Any]) -> Position:
        max_ts = tuple(int(t) for t in status.get("max_ts") or ())
        return cls(partition, int(status.get("watermark", -1)), max_ts, int(status.get("at", 0)))

    @property
    def ended(self) -> bool:
        return self.watermark >= NEVER

    @property
    def latest_ms(self) -> int:
        """Highest event time read (-1 when none)."""
        return max(self.max_ts, default=-1)


def reached(position: Position, *, allowed_lateness_ms: int) -> int | None:
    """Event time the partition has read through; None when ended or without any position."""
    if position.ended:
        return None
    idle = position.watermark + allowed_lateness_ms if position.watermark >= 0 else -1
    found = max(position.latest_ms, idle)
    return found if found >= 0 else None


def trailing_end(
    positions: Iterable[Position], *, allowed_lateness_ms: int, latest_minute: int | None
) -> int | None:
    """End (exclusive, epoch ms) of every trailing window; see the module docstring."""
    marks = [reached(p, allowed_lateness_ms=allowed_lateness_ms) for p in positions]
    live = [m for m in marks if m is not None]
    if live:
        return minute_of(min(live))
    return None if latest_minute is None else latest_minute + MINUTE_MS


def lowest_watermark(positions: Iterable[Position]) -> int | None:
    """Lowest watermark of the partitions still running (None: none has one, or all ended)."""
    marks = [p.watermark for p in positions if not p.ended]
    return min(marks) if marks and min(marks) >= 0 else None


class Trailing:
    """Per-minute cells of the recent past and the running sums of each trailing window.

    Sums change by deltas only: a re-read minute adds ``new - old`` to the windows holding it, a
    moved end adds the minutes entering and subtracts those leaving. Counters are integers, so the
    sums stay exact. Minutes before ``end - largest window`` are dropped.
    """

    def __init__(self, sizes_ms: Iterable[int]) -> None:
        self.sizes = tuple(sorted(set(sizes_ms)))
        if not self.sizes or any(s <= 0 or s % MINUTE_MS for s in self.sizes):
            raise ValueError(f"window sizes must be whole minutes: {self.sizes}")
        self.horizon_ms = self.sizes[-1]
        self.end: int | None = None
        self.cells: dict[int, MinuteCells] = {}
        self.sums: dict[int, dict[str, c.Counters]] = {size: {} for size in self.sizes}

    def needs_reload(self, end: int) -> bool:
        """Whether the cache lacks minutes the windows ending at ``end`` need (first use, or
        the end moved back)."""
        return self.end is None or end < self.end

    def reset(self, end: int, cells: Mapping[int, MinuteCells]) -> None:
        """Start over from every minute at or after ``end - largest window``."""
        self.end = end
        self.cells = {m: dict(v) for m, v in cells.items() if m >= end - self.horizon_ms and v}
        for size in self.sizes:
            self.sums[size] = {}
            for minute, found in self.cells.items():
                if end - size <= minute < end:
                    self._apply(size, found, 1)

    def update(self, cells: Mapping[int, MinuteCells]) -> set[int]:
        """Replace the cells of re-read minutes (empty: the minute has no data any more).

        Returns the minutes whose content changed."""
        if self.end is None:
            raise RuntimeError("reset() first")
        changed: set[int] = set()
        for minute, new in cells.items():
            if minute < self.end - self.horizon_ms:
                continue
            old = self.cells.get(minute, {})
            if new == old:
                continue
            changed.add(minute)
            for size in self.sizes:
                if self.end - size <= minute < self.end:
                    self._apply(size, old, -1)
                    self._apply(size, new, 1)
            if new:
                self.cells[minute] = dict(new)
            else:
                self.cells.pop(minute, None)
        return changed

    def move(self, end: int) -> None:
        """Move every window to end at ``end`` (not before the current end)."""
        if self.end is None or end < self.end:
            raise ValueError("the end can only move forward; reset() otherwise")
        old = self.end
        for size in self.sizes:
            self._span(size, old - size, min(old, end - size), -1)  # leaving
            self._span(size, max(old, end - size), end, 1)  # entering
        self.end = end
        low = end - self.horizon_ms
        for minute in [m for m in self.cells if m < low]:
            del self.cells[minute]

    def windows(self) -> list[Window]:
        """The trailing windows per size: "all" first, then each store. A store with data in the
        largest window has a window of every size, empty where it had none (its counts read 0
        there); a store without leaves the windows."""
        found: list[Window] = []
        if self.end is None:
            return found
        ordered = sorted(self.cells)
        outer = (self.end - self.horizon_ms, self.horizon_ms)
        present = sorted(
            (store for store, sums in self.sums[self.horizon_ms].items() if sums),
            key=lambda s: (s != "all", s),
        )
        for size in self.sizes:
            start = self.end - size
            spans: dict[str, list[int]] = {"all": []}
            for minute in ordered:
                if start <= minute < self.end:
                    spans["all"].append(minute)
                    for store in self.cells[minute]:
                        spans.setdefault(store, []).append(minute)
            sums = self.sums[size]
            for store in present:
                span = tuple(spans.get(store, ()))
                found.append(Window(size, start, store, dict(sums.get(store, {})), span, outer))
        return found

    def _span(self, size: int, start: int, stop: int, sign: int) -> None:
        for minute in range(start, stop, MINUTE_MS):
            found = self.cells.get(minute)
            if found:
                self._apply(size, found, sign)

    def _apply(self, size: int, cells: MinuteCells, sign: int) -> None:
        sums = self.sums[size]
        for store, counters in cells.items():
            for scope in (store, "all"):
                into = sums.setdefault(scope, {})
                c.add_counters(into, counters, sign)
                if not into:
                    del sums[scope]
