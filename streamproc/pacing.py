"""Release timed records when the wall clock reaches their time (live simulation)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Protocol, TypeVar


class Timed(Protocol):
    @property
    def arrival_ms(self) -> int: ...


T = TypeVar("T", bound=Timed)


async def paced(
    records: Iterable[T],
    *,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    speed: float = 1.0,
    granularity_s: float = 0.02,
) -> AsyncIterator[T]:
    """Yield each record once ``clock()`` has reached its ``arrival_ms``.

    ``clock`` may run ``speed`` times faster than the wall clock that ``sleep`` waits on (a
    simulation replayed at 120x): a wait is divided by it. Records already due come at once (a
    start in the past catches up, then runs live); the generator sleeps only when the next record
    is more than ``granularity_s`` (of the wall clock) ahead.
    """
    for record in records:
        wait = (record.arrival_ms / 1000 - clock()) / speed
        if wait > granularity_s:
            await sleep(wait)
        yield record
