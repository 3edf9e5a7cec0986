"""Segment bodies in the projection, counted by difference.

A session segment's body is what its visitor cells (``"minute|store|visitor" -> page views``)
add to the partials: page views (ch/dev) and a visitor mark in each (minute, store) cell, and the
visitor's presence there. It depends only on those cells and the segment's dimensions
(``contrib.Dims``). A run that touches a session nearly always adds to the cells of one segment
and leaves its dimensions as they were; the engine then counts only the cells that changed,
where the rest of a contribution (``contrib.py`` without bodies: the head) is evaluated whole
before and after. A body whose segment is new, merged, or whose dimensions changed is taken out
whole and counted again whole.

References: ``refs[cell]`` counts the pieces that hold a cell, one per record whose head holds
it and one per body key in it. A cell leaves memory only once nothing refers to it.
"""

from __future__ import annotations

from collections.abc import Set

from streamproc.kpi import counters as c
from streamproc.kpi.contrib import Dims, Names, Presence, cell_parts, names_of
from streamproc.kpi.records import Segment

Body = tuple[Segment, dict[str, int], Dims]  # a segment, its cells and dimensions when counted


def _add(counters: c.Counters, name: str, amount: int) -> None:
    total = counters.get(name, 0) + amount
    if total:
        counters[name] = total
    else:
        counters.pop(name, None)


def _views(counters: c.Counters, names: Names, amount: int) -> None:
    """Page views of a cell, and by its segment's channel and device."""
    _add(counters, c.PAGE_VIEWS, amount)
    _add(counters, names.views_channel, amount)
    _add(counters, names.views_device, amount)


def _see(presence: set[Presence], cell: c.CellKey, visitor: str, names: Names, known: bool) -> None:
    """The visitor's presence in the cell, and in its breakdowns once the dimensions are known."""
    minute, store = cell
    presence.add((minute, store, "", visitor))
    if known:
        presence.add((minute, store, names.channel, visitor))
        presence.add((minute, store, names.device, visitor))


def count(
    sums: c.Cells,
    refs: dict[c.CellKey, int],
    body: tuple[dict[str, int], Dims],
    sign: int,
    *,
    changed: set[c.CellKey],
    presence: set[Presence] | None = None,
    without: Set[c.CellKey] = frozenset(),
) -> None:
    """Add (``sign`` +1) or take out (-1) a whole body, but for the cells ``without``; with
    ``presence``, collect the body's visitor presence into it."""
    cells, (channel, device, known) = body
    names = names_of(channel, device)
    for key, views in cells.items():
        minute, store, visitor = cell_parts(key)
        cell = (minute, store)
        if cell in without:
            continue
        refs[cell] = refs.get(cell, 0) + sign
        if not views and not visitor:
            continue
        counters = sums.get(cell)
        if counters is None:
            counters = sums[cell] = {}
        if views:
            _views(counters, names, sign * views)
        if visitor:
            _add(counters, c.VISITOR_MARKS, sign)
            if presence is not None:
                _see(presence, cell, visitor, names, known)
        changed.add(cell)


def advance(
    sums: c.Cells,
    refs: dict[c.CellKey, int],
    cells: dict[str, int],
    before: Body,
    *,
    changed: set[c.CellKey],
    presence: set[Presence],
) -> None:
    """The body of ``before``'s segment, now holding ``cells``, its dimensions unchanged: count
    the keys that are new or changed. Keys never leave a segment (absorb.py adds, merges make a
    new segment), so the difference is theirs alone."""
    _, old_cells, (channel, device, known) = before
    names = names_of(channel, device)
    for key, views in cells.items():
        old = old_cells.get(key)
        if old == views:
            continue
        minute, store, visitor = cell_parts(key)
        cell = (minute, store)
        counters = sums.get(cell)
        if counters is None:
            counters = sums[cell] = {}
        if old is None:
            refs[cell] = refs.get(cell, 0) + 1
            old = 0
            if visitor:
                _add(counters, c.VISITOR_MARKS, 1)
                _see(presence, cell, visitor, names, known)
                changed.add(cell)
        if views != old:
            _views(counters, names, views - old)
            changed.add(cell)


def recount(
    sums: c.Cells,
    refs: dict[c.CellKey, int],
    before: list[Body],
    after: list[tuple[Segment, Dims]],
    *,
    changed: set[c.CellKey],
    presence: set[Presence],
    without: Set[c.CellKey],
) -> None:
    """Replace a record's bodies ``before`` (as counted) by its segments ``after`` (with their
    dimensions now); adds the presence that is new to ``presence``.

    The two common cases first, without the containers the general one builds per record: a
    new record, and the same segments in the same order with the same dimensions."""
    if not before:
        for segment, dims in after:
            body = (segment.cells, dims)
            count(sums, refs, body, +1, changed=changed, presence=presence, without=without)
        return
    if not without and _same_shape(before, after):
        for counted, (segment, _) in zip(before, after, strict=True):
            advance(sums, refs, segment.cells, counted, changed=changed, presence=presence)
        return
    kept: dict[int, Body] = {}
    if not without:  # (an eviction cut short by a crash: counted whole, but for those cells)
        kept = {id(body[0]): body for body in before}
    fresh: set[Presence] = set()
    gone: set[Presence] = set()
    advanced: set[int] = set()
    for segment, dims in after:
        prior = kept.get(id(segment))
        if prior is not None and prior[2] == dims:
            advance(sums, refs, segment.cells, prior, changed=changed, presence=presence)
            advanced.add(id(segment))
        else:
            body = (segment.cells, dims)
            count(sums, refs, body, +1, changed=changed, presence=fresh, without=without)
    for segment, old_cells, dims in before:
        if id(segment) not in advanced:
            count(
                sums, refs, (old_cells, dims), -1, changed=changed, presence=gone, without=without
            )
    presence |= fresh - gone


def _same_shape(before: list[Body], after: list[tuple[Segment, Dims]]) -> bool:
    """The same segments (objects), in the same order, with the same dimensions."""
    if len(before) != len(after):
        return False
    for (old, _, old_dims), (segment, dims) in zip(before, after, strict=True):
        if old is not segment or old_dims != dims:
            return False
    return True


def snapshot(segments: list[tuple[Segment, Dims]]) -> list[Body]:
    """The bodies as they are counted now, kept through the changes the run makes in place."""
    return [(segment, dict(segment.cells), dims) for segment, dims in segments]


def references(head: c.Cells, segments: list[tuple[Segment, Dims]]) -> dict[c.CellKey, int]:
    """The pieces of one record that hold each cell (see the module's docstring)."""
    pieces = dict.fromkeys(head, 1)
    for segment, _ in segments:
        for key in segment.cells:
            minute, store, _visitor = cell_parts(key)
            cell = (minute, store)
            pieces[cell] = pieces.get(cell, 0) + 1
    return pieces
