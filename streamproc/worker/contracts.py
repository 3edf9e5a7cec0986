"""What the framework-free pipeline is given by the worker's Faust side (``app.py``,
``tasks.py``) and by the unit tests: the state table, the dead-letter sink, and the consumer's
positions."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Protocol

from streamproc.deadletter import DeadLetter
from streamproc.ingest import Message


class StateTable(Protocol):
    """The changelogged state (a Faust table): reads anywhere, writes with a partition's event."""

    def get(self, key: str) -> bytes | None: ...
    def scan(self) -> Iterable[str]: ...
    async def write(self, writes: list[tuple[str, bytes | None]], partition: int) -> None:
        """Store the writes in order, to the changelog partition ``partition``."""
        ...


# Sends a dead letter; returns its delivery to wait for (None: delivered already).
DeadLetterSink = Callable[[Message, DeadLetter], Awaitable[Awaitable[object] | None]]


Highwater = Callable[[str, int], int | None]  # (topic, partition) -> next offset, or None
# (topic, partition) -> the offset the consumer was placed at when it was assigned the partition
# (the group's committed offset; None: from the beginning). Everything before it was absorbed by
# an earlier owner, whose state this worker recovered: it is read, though never delivered here.
ReadFrom = Callable[[str, int], int | None]
Owned = Callable[[], set[int]]  # the input partitions this worker is assigned


class Lease(Protocol):
    """Whether this worker still owns its partitions (``membership.Membership``)."""

    def generation(self) -> int:
        """The consumer-group generation its partitions were assigned in."""
        ...

    async def confirm(self, what: str, generation: int) -> None:
        """Return while the partitions of ``generation`` are known to be this worker's; wait
        while that is not known; raise ``errors.Fenced`` once they may have moved. Awaited
        before every write of state (``what``, for the log)."""
        ...
