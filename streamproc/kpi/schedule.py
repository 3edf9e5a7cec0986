"""When a partition's engine looks at each of its records again: when its contribution next
changes or it may be evicted, whichever comes first (watermarks, in event time)."""

from __future__ import annotations

import heapq
from collections.abc import Iterator


class Schedule:
    """The records to look at again, each at a watermark. A record goes by its state key (the
    partition's prefix and its key: the string the state holds, not one more per record).

    ``when`` holds each record's watermark; the heap holds, for every record in ``when``, an
    entry at or before it (``due`` queues it again when it comes too early). A record is
    scheduled anew by nearly every run that touches it, nearly always later (its session's end
    moves on): that needs no entry of its own, only one that moves it earlier does.
    """

    def __init__(self) -> None:
        self.when: dict[str, int] = {}
        self.heap: list[tuple[int, str]] = []

    def set(self, full: str, when: int) -> None:
        """Look at the record ``full`` again once the watermark reaches ``when``."""
        current = self.when.get(full)
        if current != when:
            self.when[full] = when
            if current is None or when < current:
                heapq.heappush(self.heap, (when, full))
                if len(self.heap) > len(self.when) * 5 // 4 + 1024:
                    self._compact()

    def drop(self, full: str) -> None:
        """Never look at the record again (it leaves the state, or nothing can change it)."""
        self.when.pop(full, None)

    def due(self, watermark: int) -> Iterator[str]:
        """The records whose time the watermark has reached, each once: they leave the
        schedule (the caller sets them again)."""
        heap, scheduled = self.heap, self.when
        while heap and heap[0][0] <= watermark:
            when, full = heapq.heappop(heap)
            due = scheduled.get(full)
            if due is None or due < when:
                continue  # no longer scheduled, or an earlier entry of it came first
            if due > when:  # scheduled later since, without an entry of its own
                heapq.heappush(heap, (due, full))
                continue
            del scheduled[full]
            yield full

    def _compact(self) -> None:
        """The heap again without its superseded entries (those of records scheduled earlier
        since, or no longer): one entry per scheduled record, at its time. Rebuilt once it holds
        a quarter more entries than records, which costs a push O(1) more, amortised."""
        self.heap = [(when, full) for full, when in self.when.items()]
        heapq.heapify(self.heap)
