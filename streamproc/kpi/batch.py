"""What the partition engine takes and gives (``engine.py``): its settings, the state it reads,
the events of a batch as items, what is known of the input topics, and the verdicts and outcome
of a batch; which record an event belongs to, and which partition a state key is of.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

import msgspec

from streamproc.events import models as m
from streamproc.kpi import counters as c
from streamproc.kpi.contrib import Presence, Timeouts
from streamproc.kpi.records import NONE, TOPICS

CLICKSTREAM, CART, ORDERS, TICKETS = range(TOPICS)
ALL_TOPICS = frozenset(range(TOPICS))
FAMILY_INDEX = {m.Family.CLICKSTREAM: 0, m.Family.CART: 1, m.Family.ORDERS: 2, m.Family.TICKETS: 3}


class State(Protocol):
    """Synchronous key-value state of the partitions (a Faust table in the worker; ``store``
    means a shop everywhere in the engine)."""

    def get(self, key: str) -> bytes | None: ...
    def scan(self) -> Iterable[str]:
        """Every key of the state."""
        ...


@dataclass(frozen=True)
class EngineSettings:
    session_timeout_ms: int = 1_800_000
    abandonment_timeout_ms: int = 1_800_000
    allowed_lateness_ms: int = 120_000
    max_lateness_ms: int = 3_600_000
    idle_timeout_ms: int = 60_000
    order_retention_ms: int = 7 * 86_400_000
    ticket_retention_ms: int = 14 * 86_400_000

    @property
    def timeouts(self) -> Timeouts:
        return Timeouts(self.session_timeout_ms, self.abandonment_timeout_ms, self.max_lateness_ms)


# One per event: a frozen dataclass is ~10x slower. Not tracked by the garbage collector: it
# holds no cycle, and a worker keeps many (records.py).
class Item(msgspec.Struct, frozen=True, gc=False):
    """An accepted event with its coordinates, ready to apply."""

    event: m.Event
    topic: int  # CLICKSTREAM, CART, ORDERS or TICKETS
    offset: int
    store: str  # the store label (capped)


@dataclass(frozen=True)
class Progress:
    """What the caller knows of a partition's input topics besides the events."""

    backlog: frozenset[int] = frozenset()  # topics with unread messages
    ended: frozenset[int] = frozenset()  # topics read to their known end
    wall_ms: int = 0


@dataclass
class Verdicts:
    """What ``read`` made of a batch's events."""

    on_time: list[Item]  # to apply (duplicates are dropped there), late ones included
    too_late: list[Item]  # beyond max_lateness: for the dead-letter topic
    late: int = 0  # of on_time, how many amend an already closed minute
    again: int = 0  # judged before a restart or rebalance (``Meta.read_to``): skipped


@dataclass
class Outcome:
    """The outcome of one batch or tick of one partition."""

    partition: int
    writes: list[tuple[str, bytes | None]] = field(default_factory=list)  # in order; None deletes
    cells: dict[c.CellKey, c.Counters] = field(default_factory=dict)  # changed cells, whole values
    presence: set[Presence] = field(default_factory=set)  # visitor sketches to add to
    open_tickets: dict[tuple[str, str, str], int] | None = None  # whole gauge, when it changed
    watermark: int = NONE
    evicted: int = 0
    duplicates: list[Item] = field(default_factory=list)  # of the events applied, in order


def record_key(item: Item) -> str:
    """The record an event belongs to (docs/semantics.md: what meets on one partition)."""
    event = item.event
    if item.topic in (CLICKSTREAM, CART):
        return f"s:{event.session_id}"
    if item.topic == ORDERS:
        return f"s:{event.session_id}" if event.session_id else f"o:{event.order_id}"  # type: ignore[attr-defined]
    ticket = getattr(event, "ticket_id", None)
    if ticket:
        return f"t:{ticket}"
    return f"v:{event.customer_id or event.event_id}"


def key_partition(key: str) -> int:
    """The partition whose state holds ``key``: every state key starts with its engine's
    ``prefix``."""
    return int(key.split("|", 1)[0])
