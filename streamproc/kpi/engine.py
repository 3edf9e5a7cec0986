"""The partition engine: events in, records and window partials out. Pure; the Faust agent wraps it.

Per partition, persisted state is records (with per-topic offset markers), a meta record
(watermark inputs, eviction cursor) and the frozen contributions of evicted records. The window
partials are a projection kept in memory: ``frozen + sum(contribute(record, watermark))``, rebuilt
from the state after a restart or rebalance, so they are exact whatever was re-processed.

One batch for one partition: ``verdicts = engine.read(...)``; then ``outcome =
engine.apply(verdicts.on_time, ...)`` drops duplicates and computes everything; the caller
publishes ``outcome`` (Redis) and then stores ``outcome.writes`` in order. What the engine takes
and gives (settings, items, progress, verdicts, outcomes) is defined in ``batch.py``.
"""

from __future__ import annotations

from collections.abc import Iterable, Set

from streamproc.kpi import absorb, bodies, retention
from streamproc.kpi import counters as c
from streamproc.kpi.batch import (
    CART,
    ORDERS,
    EngineSettings,
    Item,
    Outcome,
    Progress,
    State,
    Verdicts,
    record_key,
)
from streamproc.kpi.contrib import (
    NEVER,
    Contribution,
    Dims,
    Head,
    contribute_ticket,
    session_head,
    whole,
)
from streamproc.kpi.projection import Projection
from streamproc.kpi.records import (
    NONE,
    TOPICS,
    Frozen,
    Meta,
    Segment,
    SessionRecord,
    TicketRecord,
    decode_frozen,
    decode_meta,
    decode_session,
    decode_ticket,
    encode,
    first_sight,
    new_offsets,
)
from streamproc.kpi.schedule import Schedule
from streamproc.kpi.watermark import advance, judge

Record = SessionRecord | TicketRecord
# A record being worked on: it, its head contribution and its bodies as counted (bodies.py).
Opened = tuple[Record, Head, list[bodies.Body]]


# What a record not yet in the state contributes; shared, so never changed (a ``before`` is only
# read). Most records of a batch are new: this saves four containers each, and their collection.
_NOTHING = Contribution()
_NO_CELLS: frozenset[c.CellKey] = frozenset()
_NO_BODIES: list[bodies.Body] = []  # shared: never changed


def _decode(key: str, raw: bytes) -> Record:
    return decode_session(raw) if key[0] in "so" else decode_ticket(raw)


def _new(key: str) -> Record:
    return SessionRecord(new_offsets()) if key[0] in "so" else TicketRecord(new_offsets())


class PartitionEngine:
    """The in-memory projection and the logic of one partition."""

    def __init__(
        self, partition: int, settings: EngineSettings, state: State, *, wall_ms: int = 0
    ) -> None:
        """``wall_ms``: when the engine starts. A partition counts as idle only an idle timeout
        after that: a worker's first tick can come before its first fetch, and a backlog must not
        be taken for silence (its events would all be too late)."""
        self.partition = partition
        self.settings = settings
        self.timeouts = settings.timeouts  # made once: contribution() runs for every record
        self.prefix = f"{partition}|"  # every state key of the partition: key_partition reads it
        self.meta = Meta([NONE] * TOPICS)
        self.projection = Projection()
        self.schedule = Schedule()  # when to look at each record again (by its state key)
        self.last_event_wall_ms = wall_ms
        self._load(state)

    # --- contributions --------------------------------------------------------------------

    def contribution(self, key: str, record: Record, watermark: int) -> Contribution:
        """All a record adds to the partials at ``watermark``."""
        segments: list[tuple[Segment, Dims]] = []
        return whole(self._head(key, record, watermark, segments), segments)

    def _head(
        self, key: str, record: Record, watermark: int, segments: list[tuple[Segment, Dims]]
    ) -> Head:
        """The contribution but for the bodies of the record's segments, which go to
        ``segments`` with their dimensions (bodies.py)."""
        if isinstance(record, SessionRecord):
            sessionless = key.startswith("o:")
            return session_head(
                record, watermark, self.timeouts, sessionless=sessionless, bodies=segments
            )
        return contribute_ticket(record)

    def references(self, key: str, record: Record, watermark: int) -> dict[c.CellKey, int]:
        """What the record adds to ``refs``: the pieces of it that hold each cell."""
        segments: list[tuple[Segment, Dims]] = []
        head = self._head(key, record, watermark, segments)
        return bodies.references(head.cells, segments)

    def deadline(self, key: str, record: Record) -> int:
        """After this watermark no accepted event can change the record: it may be evicted."""
        return retention.deadline(key, record, self.settings)

    # --- loading ----------------------------------------------------------------------------

    def _load(self, state: State) -> None:
        frozen: dict[c.CellKey, Frozen] = {}
        records: list[tuple[str, str, Record]] = []
        for full in state.scan():
            if not full.startswith(self.prefix):
                continue
            key = full[len(self.prefix) :]
            raw = state.get(full)
            if raw is None:
                continue
            if key == "m":
                self.meta = decode_meta(raw)
            elif key.startswith("f:"):
                _, minute, cell_store = key.split(":", 2)
                frozen[(int(minute), cell_store)] = decode_frozen(raw)
            else:
                records.append((full, key, _decode(key, raw)))
        self.applied_watermark = self.meta.watermark
        projection = self.projection
        for cell, value in frozen.items():
            projection.add_frozen(cell, value)
        # A record whose eviction was cut short by a crash is already in some frozen sums.
        self.half_evicted: dict[str, set[c.CellKey]] = {}
        for full, key, record in records:
            segments: list[tuple[Segment, Dims]] = []
            contrib = self._head(key, record, self.meta.watermark, segments)
            deadline = self.deadline(key, record)
            frozen_in: set[c.CellKey] = set()
            if projection.frozen_cursor:
                pieces = bodies.references(contrib.cells, segments)
                frozen_in = projection.frozen_in(pieces, (deadline, key))
            if frozen_in:
                self.half_evicted[key] = frozen_in
            projection.count(contrib, +1, frozen_in)
            projection.add_bodies(segments, frozen_in)
            self.schedule.set(full, min(contrib.next_change, deadline))

    # --- the batch --------------------------------------------------------------------------

    def read(self, items: Iterable[Item], progress: Progress, *, wall_ms: int = 0) -> Verdicts:
        """Judge valid events read (``watermark.judge``). ``wall_ms``: when they were read; a
        partition without an event for the idle timeout moves its watermark with the wall clock
        (``watermark.advance``)."""
        verdicts = judge(self.meta, self.settings, items, progress)
        if verdicts.on_time or verdicts.too_late:
            self.last_event_wall_ms = wall_ms
        return verdicts

    def apply(self, items: list[Item], progress: Progress, state: State) -> Outcome:
        """Absorb the events judged on time but for duplicates, advance the watermark,
        re-evaluate and evict: the outcome.

        A duplicate is an event whose id its record has seen (records.py: ``seen``). The
        events of an outcome whose meta (with its ``read_to`` and counts) did not reach the
        changelog are judged again after a restart; their record tells which were absorbed
        (``off``: up to that offset, every message of the topic was judged) and which dropped
        as duplicates (``repeats``). Each counts as it did, and changes nothing else.
        """
        previous = self.applied_watermark  # the projection holds contributions at this one
        work: dict[str, Opened] = {}
        duplicates: list[Item] = []
        sets: dict[int, set[bytes]] = {}  # the event hashes of big records (first_sight)
        # Clickstream and cart events, nearly all, get their record key here, without a call to
        # ``record_key`` (this loop runs for every event); each event is absorbed by its topic.
        session_timeout_ms = self.settings.session_timeout_ms
        add_session_event = absorb.add_session_event
        for item in items:
            event, topic, offset = item.event, item.topic, item.offset
            web = topic <= CART
            key = "s:" + event.session_id if web else record_key(item)  # type: ignore[operator]
            opened = work.get(key)
            if opened is None:
                opened = work[key] = self._open(state, key, previous, create=True)
            record = opened[0]
            if first_sight(record.seen, event.event_id, sets):
                if record.off[topic] < offset:
                    record.off[topic] = offset
                    if web:
                        add_session_event(
                            record,  # type: ignore[arg-type]
                            event,  # type: ignore[arg-type]
                            item.store,
                            session_timeout_ms=session_timeout_ms,
                        )
                    elif topic == ORDERS:  # into a session's record, or an order's own
                        absorb.add_order_event(record, event, item.store)  # type: ignore[arg-type]
                    else:
                        absorb.add_ticket_event(record, event, item.store)  # type: ignore[arg-type]
                # else absorbed before its record kept the ids of its events
                continue
            read_at = offset * TOPICS + topic  # where it was read (records.py)
            if read_at in record.repeats:
                duplicates.append(item)  # dropped before a restart too
            elif offset > record.off[topic]:
                record.repeats.append(read_at)
                duplicates.append(item)
            # else this very message, absorbed before a restart
        self.meta.accepted += len(items) - len(duplicates)
        self.meta.duplicates += len(duplicates)
        watermark = advance(self.meta, self.settings, progress, self.last_event_wall_ms)
        cut = len(self.prefix)
        unchanged: set[str] = set()  # records due, not touched: the state holds them as they are
        for full in self.schedule.due(watermark):
            key = full[cut:]
            if key not in work:
                opened = self._open(state, key, previous, create=False)
                if opened[0] is not None:
                    work[key] = opened
                    unchanged.add(key)
        outcome = self._settle(work, watermark, previous, state, unchanged)
        outcome.duplicates = duplicates
        return outcome

    def _open(self, state: State, key: str, watermark: int, *, create: bool) -> Opened:
        raw = state.get(self.prefix + key)
        if raw is None:
            return (_new(key) if create else None), _NOTHING, _NO_BODIES  # type: ignore[return-value]
        record = _decode(key, raw)
        segments: list[tuple[Segment, Dims]] = []
        head = self._head(key, record, watermark, segments)
        return record, head, bodies.snapshot(segments) if segments else _NO_BODIES

    def _settle(
        self,
        work: dict[str, Opened],
        watermark: int,
        previous: int,
        state: State,
        unchanged: Set[str] = frozenset(),
    ) -> Outcome:
        """Re-evaluate the records in ``work`` at ``watermark``; the writes to make. A record
        ``unchanged`` (due, not touched by an event) is not written again: the state holds it.

        Records leave the state (and cells memory) only once ``previous``, the watermark of the
        outcome before, has passed their deadline: that watermark is in the changelog before any
        of this outcome's deletes. A crash can cut an outcome's writes short; were a delete kept
        and this outcome's watermark (written last) lost, the restarted engine would judge the
        re-delivered events of the deleted record against the older watermark, take them as on
        time and count them a second time in a new record.
        """
        outcome = Outcome(self.partition, watermark=watermark)
        self.applied_watermark = watermark
        changed: set[c.CellKey] = set()
        frozen: dict[c.CellKey, Frozen] = {}
        records, deletes = [], []
        projection = self.projection
        open_before = dict(projection.open_tickets)
        evictions: list[tuple[int, str, Head, list[tuple[Segment, Dims]]]] = []
        for key, (record, before, counted) in work.items():
            segments: list[tuple[Segment, Dims]] = []
            after = self._head(key, record, watermark, segments)
            # cells whose frozen sum already holds this record (an eviction cut short by a crash)
            frozen_in = self.half_evicted.pop(key, _NO_CELLS)
            projection.recount(before, after, changed, frozen_in)
            outcome.presence |= after.presence - before.presence
            projection.recount_bodies(
                counted, segments, changed=changed, presence=outcome.presence, without=frozen_in
            )
            deadline = self.deadline(key, record)
            full = self.prefix + key  # one string for the write and the schedule
            # The end of the input (NEVER) decides everything but is no reason to forget.
            if deadline < previous and watermark < NEVER:
                evictions.append((deadline, key, after, segments))
                deletes.append((full, None))
                self.schedule.drop(full)
            else:
                if key not in unchanged:
                    records.append((full, encode(record)))
                if watermark < NEVER:
                    self.schedule.set(full, min(after.next_change, deadline))
                else:  # the input has ended: nothing can change it, never look at it again
                    self.schedule.drop(full)
        for deadline, key, after, segments in sorted(evictions, key=lambda e: (e[0], e[1])):
            self._freeze(state, frozen, key, deadline, after, segments)  # in cursor order
        outcome.evicted = len(evictions)
        outcome.cells = {cell: dict(projection.sums.get(cell, {})) for cell in changed}
        outcome.writes = [
            (f"{self.prefix}f:{m_}:{s_}", encode(v)) for (m_, s_), v in frozen.items()
        ]
        outcome.writes += records + deletes + self._forget_idle_cells(previous)
        outcome.writes.append((self.prefix + "m", encode(self.meta)))
        if projection.open_tickets != open_before:
            outcome.open_tickets = dict(projection.open_tickets)
        return outcome

    def _freeze(
        self,
        state: State,
        frozen: dict[c.CellKey, Frozen],
        key: str,
        deadline: int,
        head: Head,
        segments: list[tuple[Segment, Dims]],
    ) -> None:
        """Move an evicted record's contribution (its ``head`` and the bodies of its
        ``segments``) from ``refs`` into the frozen sums."""
        pieces = bodies.references(head.cells, segments)
        contrib = whole(head, segments)
        if self.meta.evicted_t == NONE or (deadline, key) > (
            self.meta.evicted_t,
            self.meta.evicted_key,
        ):
            self.meta.evicted_t, self.meta.evicted_key = deadline, key
        for cell, counters in contrib.cells.items():
            current = frozen.get(cell) or self._read_frozen(state, cell)
            if (current.cursor_t, current.cursor_key) < (deadline, key):
                c.add_cells({cell: current.counters}, {cell: counters})
                frozen[cell] = Frozen(deadline, key, current.counters)
                self.projection.freeze(cell, (deadline, key), pieces[cell])  # counted until now
        self.projection.count(Contribution(open_tickets=contrib.open_tickets), -1)

    def _read_frozen(self, state: State, cell: c.CellKey) -> Frozen:
        raw = state.get(f"{self.prefix}f:{cell[0]}:{cell[1]}")
        return decode_frozen(raw) if raw is not None else Frozen(NONE, "", {})

    def _forget_idle_cells(self, watermark: int) -> list[tuple[str, bytes | None]]:
        """Cells no event can change any more leave memory, and their frozen sums the state."""
        horizon = watermark - self.settings.max_lateness_ms
        gone = self.projection.forget_idle(horizon)
        return [(f"{self.prefix}f:{minute}:{store}", None) for minute, store in gone]
