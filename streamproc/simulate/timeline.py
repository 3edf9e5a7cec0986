"""Time on the simulated clock: epoch milliseconds, RFC 3339 text and idle gaps."""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from streamproc.simulate.config import TimeRange
from streamproc.times import epoch_ms

SECOND_MS = 1000
MINUTE_MS = 60_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Rfc3339:
    """Formats epoch ms as ``2026-11-22T10:15:30.123Z``, caching the date of the last day seen."""

    __slots__ = ("_day", "_prefix")

    def __init__(self) -> None:
        self._day = -1
        self._prefix = ""

    def __call__(self, ms: int) -> str:
        day, rest = divmod(ms, DAY_MS)
        if day != self._day:
            self._day = day
            self._prefix = (_EPOCH + timedelta(days=day)).strftime("%Y-%m-%dT")
        seconds, milli = divmod(rest, 1000)
        hours, seconds = divmod(seconds, 3600)
        minutes, seconds = divmod(seconds, 60)
        return f"{self._prefix}{hours:02d}:{minutes:02d}:{seconds:02d}.{milli:03d}Z"


class Spans:
    """Sorted, merged half-open ranges ``[start_ms, end_ms)``; a factor per range (max wins)."""

    __slots__ = ("_ends", "_factors", "_starts")

    def __init__(self, ranges: Iterable[TimeRange]) -> None:
        merged: list[list[float]] = []
        for start, end, factor in sorted(
            (epoch_ms(r.start), epoch_ms(r.end), r.factor) for r in ranges
        ):
            if merged and start <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], end)
                merged[-1][2] = max(merged[-1][2], factor)
            else:
                merged.append([start, end, factor])
        self._starts = [int(span[0]) for span in merged]
        self._ends = [int(span[1]) for span in merged]
        self._factors = [span[2] for span in merged]

    def __bool__(self) -> bool:
        return bool(self._starts)

    def _index(self, ms: int) -> int:
        """Index of the range holding ``ms``, or -1."""
        i = bisect.bisect_right(self._starts, ms) - 1
        return i if i >= 0 and ms < self._ends[i] else -1

    def contains(self, ms: int) -> bool:
        return bool(self._starts) and self._index(ms) >= 0

    def factor(self, ms: int) -> float:
        """The factor of the range holding ``ms``; 1.0 outside every range."""
        if not self._starts:
            return 1.0
        i = self._index(ms)
        return self._factors[i] if i >= 0 else 1.0

    def skip(self, ms: int) -> int:
        """``ms``, or the end of the range holding it (ranges are merged, so that end is free)."""
        if not self._starts:
            return ms
        i = self._index(ms)
        return self._ends[i] if i >= 0 else ms

    def next_start(self, ms: int, default: int) -> int:
        """The start of the first range starting after ``ms``, else ``default``."""
        i = bisect.bisect_right(self._starts, ms)
        return min(self._starts[i], default) if i < len(self._starts) else default
