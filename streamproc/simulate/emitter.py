"""From event dicts to records: encoding, keys, delays, duplicates and junk, by arrival time.

Shares are fractions of all records (see ``Anomalies``). With ``d`` the duplicate share and ``b``
the malformed share, each original event is followed by a duplicate with probability
``d / (1 - d - b)`` and by a junk message with probability ``b / (1 - d - b)``; it is delayed
with probability ``share / (1 - d - b)`` for each delay kind. A delay that would make a record
arrive after the end of the run or inside an idle gap is not applied (the event is sent on time).
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Iterator
from typing import Any

import msgspec

from streamproc.events.models import Family
from streamproc.events.routing import key_for
from streamproc.simulate.config import Anomalies
from streamproc.simulate.malformed import corrupt
from streamproc.simulate.record import Kind, SimRecord
from streamproc.simulate.timeline import HOUR_MS, MINUTE_MS, SECOND_MS, Spans

# (kind, shortest delay, longest delay) in ms; see Anomalies for why these bounds.
DELAYS = (
    (Kind.OUT_OF_ORDER, 1 * SECOND_MS, 90 * SECOND_MS),
    (Kind.LATE, 5 * MINUTE_MS, 30 * MINUTE_MS),
    (Kind.TOO_LATE, 2 * HOUR_MS, 3 * HOUR_MS),
)
DUPLICATE_DELAY_MS = (100, 10 * SECOND_MS)

_encode = msgspec.json.Encoder().encode


class Emitter:
    """Queues the records of a run by arrival time; ``emit`` is the only way in."""

    def __init__(
        self,
        rng: random.Random,
        anomalies: Anomalies,
        *,
        end_ms: int,
        gaps: Spans,
        fresh_id: Callable[[], str],
    ) -> None:
        self._rng = rng
        self._end_ms = end_ms
        self._gaps = gaps
        self._fresh_id = fresh_id
        originals = 1 - anomalies.duplicate_share - anomalies.malformed_share
        self._p_duplicate = anomalies.duplicate_share / originals
        self._p_malformed = anomalies.malformed_share / originals
        shares = (anomalies.out_of_order_share, anomalies.late_share, anomalies.too_late_share)
        cumulative, self._delay_thresholds = 0.0, []
        for share in shares:
            cumulative += share / originals
            self._delay_thresholds.append(cumulative)
        self._p_delay = cumulative
        self._queue: list[tuple[int, int, SimRecord]] = []
        self._seq = 0

    def __len__(self) -> int:
        return len(self._queue)

    def accepts(self, t_ms: int) -> bool:
        """Whether an event at ``t_ms`` can be sent: before the end and outside idle gaps."""
        return t_ms < self._end_ms and not (self._gaps and self._gaps.contains(t_ms))

    def emit(self, t_ms: int, family: Family, event: dict[str, Any]) -> bool:
        """Queue one event (and what anomalies add to it); False if its time is not accepted."""
        if not self.accepts(t_ms):
            return False
        rng = self._rng
        value = _encode(event)
        key = key_for(event, family)
        kind, arrival = Kind.EVENT, t_ms
        if self._p_delay and (draw := rng.random()) < self._p_delay:
            kind, arrival = self._delayed(t_ms, draw)
        event_type = event["event_type"]
        self._push(SimRecord(family, key, value, t_ms, arrival, kind, event_type))
        if self._p_duplicate and rng.random() < self._p_duplicate:
            again = arrival + rng.randint(*DUPLICATE_DELAY_MS)
            if self.accepts(again):
                self._push(SimRecord(family, key, value, t_ms, again, Kind.DUPLICATE, event_type))
        if self._p_malformed and rng.random() < self._p_malformed:
            self._malformed(t_ms, family, event)
        return True

    def _delayed(self, t_ms: int, draw: float) -> tuple[Kind, int]:
        for threshold, (kind, shortest, longest) in zip(
            self._delay_thresholds, DELAYS, strict=True
        ):
            if draw < threshold:
                arrival = t_ms + self._rng.randint(shortest, longest)
                return (kind, arrival) if self.accepts(arrival) else (Kind.EVENT, t_ms)
        return Kind.EVENT, t_ms

    def _malformed(self, t_ms: int, family: Family, event: dict[str, Any]) -> None:
        family, value, key, reason = corrupt(
            self._rng, event, family, arrival_ms=t_ms, event_id=self._fresh_id()
        )
        self._push(SimRecord(family, key, value, t_ms, t_ms, Kind.MALFORMED, None, reason.value))

    def _push(self, record: SimRecord) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (record.arrival_ms, self._seq, record))

    def pop_until(self, until_ms: int) -> Iterator[SimRecord]:
        """Records arriving at or before ``until_ms``, in arrival order (ties: queue order)."""
        queue = self._queue
        while queue and queue[0][0] <= until_ms:
            yield heapq.heappop(queue)[2]
