"""A partition's window partials, kept in memory: the frozen sums of the records evicted, plus
the contributions of the records in the state (engine.py), and what refers to each cell.

``refs[cell]`` counts the pieces of the records in the state that hold the cell (bodies.py); a
cell whose count is down to zero, and that no accepted event can reach any more, leaves memory.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Set

from streamproc.kpi import bodies
from streamproc.kpi import counters as c
from streamproc.kpi.contrib import Dims, Head, Presence, Shapes
from streamproc.kpi.records import NONE, Frozen, Segment

Cursor = tuple[int, str]  # (deadline, record key): how far evictions went into a frozen sum
OpenTickets = Mapping[tuple[str, str, str], int]


class Projection:
    """The partials of one partition's engine, and the references that keep their cells."""

    def __init__(self) -> None:
        self.sums: dict[c.CellKey, c.Counters] = {}
        self.refs: dict[c.CellKey, int] = {}
        self.open_tickets: dict[tuple[str, str, str], int] = {}
        self.frozen_cursor: dict[c.CellKey, Cursor] = {}  # the cells with a frozen sum

    def add_frozen(self, cell: c.CellKey, frozen: Frozen) -> None:
        """A frozen sum read back from the state."""
        c.add_cells(self.sums, {cell: frozen.counters})
        self.refs.setdefault(cell, 0)
        self.frozen_cursor[cell] = (frozen.cursor_t, frozen.cursor_key)

    def frozen_in(self, cells: Iterable[c.CellKey], cursor: Cursor) -> set[c.CellKey]:
        """Of ``cells``, those whose frozen sum holds the record at ``cursor`` already (its
        eviction was cut short by a crash)."""
        return {cell for cell in cells if self.frozen_cursor.get(cell, (NONE, "")) >= cursor}

    def count(self, head: Head, sign: int, without: Set[c.CellKey] = frozenset()) -> None:
        """Add (or, ``sign`` -1, take out) a head, but for the cells ``without``."""
        chosen = head.cells
        if without:
            chosen = {k: v for k, v in chosen.items() if k not in without}
        c.add_cells(self.sums, chosen, sign)
        for cell in chosen:
            self.refs[cell] = self.refs.get(cell, 0) + sign
        self._tickets(head.open_tickets, sign)

    def add_bodies(self, segments: list[tuple[Segment, Dims]], without: Set[c.CellKey]) -> None:
        """A record's bodies (bodies.py), but for the cells ``without``."""
        changed: set[c.CellKey] = set()
        for segment, dims in segments:
            body = (segment.cells, dims)
            bodies.count(self.sums, self.refs, body, +1, changed=changed, without=without)

    def recount_bodies(
        self,
        before: list[bodies.Body],
        after: list[tuple[Segment, Dims]],
        *,
        changed: set[c.CellKey],
        presence: set[Presence],
        without: Set[c.CellKey],
    ) -> None:
        """``bodies.recount`` in this projection."""
        bodies.recount(
            self.sums,
            self.refs,
            before,
            after,
            changed=changed,
            presence=presence,
            without=without,
        )

    def recount(
        self, before: Head, after: Head, changed: set[c.CellKey], without: Set[c.CellKey]
    ) -> None:
        """Replace a record's head ``before`` by ``after``, but for the cells ``without``; adds
        the cells whose sums changed to ``changed``.

        The same as counting ``before`` out and ``after`` in, touching only the cells that differ:
        most of a touched record's cells (its earlier minutes) are the same before and after.
        The same shapes are the same cells: nothing to do, and none built.
        """
        if type(after) is Shapes and type(before) is Shapes and after.shapes == before.shapes:
            return
        sums, refs, old_cells = self.sums, self.refs, before.cells
        for cell, new in after.cells.items():
            old = old_cells.get(cell)
            if old == new or cell in without:
                continue
            if old is None:
                refs[cell] = refs.get(cell, 0) + 1
                if not new:
                    continue
                old = {}
            into = sums.get(cell)
            if into is None:
                into = sums[cell] = {}
            c.add_difference(into, new, old)
            changed.add(cell)
        for cell, old in old_cells.items():
            if cell in after.cells or cell in without:
                continue
            refs[cell] = refs.get(cell, 0) - 1
            if old:
                c.add_difference(sums.setdefault(cell, {}), {}, old)
                changed.add(cell)
        if before.open_tickets != after.open_tickets:
            self._tickets(before.open_tickets, -1)
            self._tickets(after.open_tickets, +1)

    def freeze(self, cell: c.CellKey, cursor: Cursor, pieces: int) -> None:
        """The ``pieces`` of the record at ``cursor`` that held ``cell`` are in its frozen sum
        now: its sum stays, they no longer refer to it."""
        self.frozen_cursor[cell] = cursor
        self.refs[cell] = self.refs.get(cell, 0) - pieces

    def forget_idle(self, horizon: int) -> list[c.CellKey]:
        """Cells no record refers to, of minutes before ``horizon``, leave memory; those of them
        with a frozen sum are returned (it leaves the state)."""
        gone = [cell for cell, refs in self.refs.items() if refs <= 0 and cell[0] < horizon]
        frozen = []
        for cell in gone:
            self.refs.pop(cell, None)
            self.sums.pop(cell, None)
            if self.frozen_cursor.pop(cell, None) is not None:
                frozen.append(cell)
        return frozen

    def _tickets(self, groups: OpenTickets, sign: int) -> None:
        for group, count in groups.items():
            total = self.open_tickets.get(group, 0) + sign * count
            if total:
                self.open_tickets[group] = total
            else:
                self.open_tickets.pop(group, None)
