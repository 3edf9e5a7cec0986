"""What a record adds to the window partials at a given watermark (docs/semantics.md).

``contribute(record, watermark)`` is a pure function; the partial of a (minute, store) cell is the
sum over records of their contributions, so a changed record changes the partials by
``contribute(new) - contribute(old)``.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import ClassVar, NamedTuple

from streamproc.kpi import counters as c
from streamproc.kpi.absorb import mark_cell
from streamproc.kpi.epoch import MINUTE_MS, minute_of
from streamproc.kpi.histogram import bucket_of
from streamproc.kpi.records import (
    CHECKOUT,
    NONE,
    PAYMENT_FAILED,
    Cart,
    Order,
    Segment,
    SessionRecord,
    TicketRecord,
)

Presence = tuple[int, str, str, str]  # (minute, store, dimension or "", visitor)
Dims = tuple[str, str, bool]  # (channel_group, device_type, known): ``_dims``
NEVER = 2**62


@dataclass
class Contribution:
    cells: c.Cells = field(default_factory=dict)
    presence: set[Presence] = field(default_factory=set)
    open_tickets: dict[tuple[str, str, str], int] = field(default_factory=dict)
    next_change: int = NEVER  # the watermark at which this contribution next changes

    def contribution(self) -> Contribution:
        return self


@dataclass(frozen=True)
class Timeouts:
    session_ms: int
    abandonment_ms: int
    max_lateness_ms: int


def _dims(segment: Segment, settled: bool) -> Dims:
    """(channel_group, device_type, known).

    Known = no later event can change them: a session_start with a device_type was seen, or the
    session is settled (no accepted event can reach it any more). Visitor sketches cannot forget,
    so a session's visitors count in its breakdowns only once its dimensions are known.
    """
    start = segment.start_event
    channel = start.text if start is not None else "other"
    if start is not None and start.extra:
        device = start.extra
    elif segment.device is not None:
        device = segment.device.text
    else:
        device = "other"
    return channel, device, (start is not None and bool(start.extra)) or settled


def _present(
    out: Contribution,
    minute: int,
    store: str,
    visitor: str,
    dims: Dims,
    labels: tuple[str, str] | None = None,
) -> None:
    """``visitor`` was seen in the cell; in its breakdowns too once ``dims`` are known.
    ``labels``: the breakdowns' dimension labels, when the caller made them already."""
    if not visitor:
        return
    # Marks the cell as holding visitors even when nothing else is counted in it, so that its
    # window exists; the distinct count itself comes from the sketches.
    c.bump(c.cell(out.cells, minute, store), c.VISITOR_MARKS)
    presence = out.presence
    presence.add((minute, store, "", visitor))
    if dims[2]:
        channel, device = labels or _labels(dims)
        presence.add((minute, store, channel, visitor))
        presence.add((minute, store, device, visitor))


def _labels(dims: Dims) -> tuple[str, str]:
    return f"channel_group={dims[0]}", f"device_type={dims[1]}"


def _owner(segments: list[Segment], t: int, timeout_ms: int) -> int | None:
    for index, segment in enumerate(segments):
        if segment.start <= t < segment.end + timeout_ms:
            return index
    return None


def session_head(
    record: SessionRecord,
    watermark: int,
    timeouts: Timeouts,
    *,
    sessionless: bool,
    bodies: list[tuple[Segment, Dims]],
) -> Head:
    """A session id's record (or, ``sessionless``, an order id's: orders without a session)
    without its segments' bodies: each segment goes to ``bodies`` with its dimensions instead,
    for the engine to count by difference (bodies.py). A record with nothing but segments (nine
    in ten) gives its head as ``Shapes``."""
    segments = record.segments
    if not (record.orders or record.refunds or record.visits or record.marks or record.carts):
        shapes: list[Shape] = []
        next_change = NEVER
        for segment in segments:
            shape, segment_dims, moment = _segment_head(segment, watermark, timeouts, 0)
            shapes.append(shape)
            bodies.append((segment, segment_dims))
            if moment < next_change:
                next_change = moment
        return Shapes(shapes, next_change)
    out = Contribution()
    placed = _placed(record.orders)
    owners = [_owner(segments, o.placed.t, timeouts.session_ms) for o in placed]  # type: ignore[union-attr]
    with_orders = [0] * len(segments)
    for owner in owners:
        if owner is not None:
            with_orders[owner] += 1
    dims: list[Dims] = []
    for index, segment in enumerate(segments):
        shape, segment_dims, moment = _segment_head(
            segment, watermark, timeouts, with_orders[index]
        )
        _add_shape(out.cells, shape)
        bodies.append((segment, segment_dims))
        dims.append(segment_dims)
        if moment < out.next_change:
            out.next_change = moment
    for order in placed:  # a repeated order_placed is not an order, but its visitor is seen
        for repeat in order.repeats:
            at = _owner(segments, repeat.t, timeouts.session_ms)
            settle_at = NONE if sessionless else repeat.t + timeouts.max_lateness_ms
            if watermark < settle_at:
                out.next_change = min(out.next_change, settle_at)
            own = ("other", repeat.extra or "other", watermark >= settle_at)
            _present(
                out,
                minute_of(repeat.t),
                repeat.store,
                repeat.text,
                dims[at] if at is not None else own,
            )
    for order, owner in zip(placed, owners, strict=True):
        assert order.placed is not None
        if owner is not None:
            _order_cells(out, order, dims[owner])
            continue
        # A session could still grow to cover it until no event for that time is accepted.
        settle_at = NONE if sessionless else order.placed.t + timeouts.max_lateness_ms
        if watermark < settle_at:
            out.next_change = min(out.next_change, settle_at)
        _order_cells(out, order, ("other", order.placed.extra or "other", watermark >= settle_at))
    for refund in record.refunds:
        cell = c.cell(out.cells, minute_of(refund.t), refund.store)
        c.bump(cell, c.REFUNDS)
        c.bump(cell, c.REFUNDED, refund.amount)
    for visit in record.visits:
        _present(out, visit.minute, visit.store, visit.visitor, ("other", visit.device, True))
    _marks(out, record.marks)
    if record.carts:
        _cart_cells(out, record.carts, placed, watermark, timeouts.abandonment_ms)
    return out


def contribute_session(
    record: SessionRecord, watermark: int, timeouts: Timeouts, *, sessionless: bool = False
) -> Contribution:
    """All a session id's record (or, ``sessionless``, an order id's) adds at ``watermark``."""
    segments: list[tuple[Segment, Dims]] = []
    head = session_head(record, watermark, timeouts, sessionless=sessionless, bodies=segments)
    return whole(head, segments)


def _placed(orders: list[Order]) -> list[Order]:
    """The placed orders, in time order (most session records have none)."""
    if not orders:
        return []
    return sorted((o for o in orders if o.placed is not None), key=_order_key)


def _segment_head(
    segment: Segment, watermark: int, timeouts: Timeouts, orders: int
) -> tuple[Shape, Dims, int]:
    """A segment's start cell at ``watermark`` (its shape), its dimensions (``_dims``), and the
    watermark at which either next changes (NEVER: settled, they never will)."""
    close_at = segment.end + timeouts.session_ms
    settle_at = close_at + timeouts.max_lateness_ms
    if watermark < close_at:
        moment = close_at
    elif watermark < settle_at:
        moment = settle_at
    else:
        moment = NEVER
    dims = _dims(segment, watermark >= settle_at)
    return _shape(segment, dims, watermark >= close_at, orders), dims, moment


def whole(head: Head, segments: list[tuple[Segment, Dims]]) -> Contribution:
    """A record's whole contribution: its ``head`` (a Contribution head is added to, not
    copied) and the bodies of its ``segments`` (bodies.py: their visitor cells)."""
    out = head.contribution()
    for segment, dims in segments:
        _visitor_cells(out, segment.cells, names_of(dims[0], dims[1]), known=dims[2])
    return out


def _marks(out: Contribution, marks: dict[str, int]) -> None:
    """The record's accepted orders and tickets events, one mark each in their cells."""
    for key, count in marks.items():
        minute, store = mark_cell(key)
        c.bump(c.cell(out.cells, minute, store), c.EVENT_MARKS, count)


def _order_key(order: Order) -> tuple[int, str]:
    assert order.placed is not None
    return order.placed.t, order.placed.eid


class Names(NamedTuple):
    """The counter names and labels of one (channel_group, device_type) pair."""

    channel: str  # "channel_group=<channel>"
    device: str  # "device_type=<device>"
    sessions_channel: str
    sessions_device: str
    views_channel: str
    views_device: str


_NAMES: dict[tuple[str, str], Names] = {}  # bounded: both values are enums (events/models.py)


def names_of(channel: str, device: str) -> Names:
    found = _NAMES.get((channel, device))
    if found is None:
        labels = f"channel_group={channel}", f"device_type={device}"
        bases = (c.SESSIONS, c.PAGE_VIEWS)
        dimensioned = (c.dim(name, label) for name in bases for label in labels)
        found = _NAMES[(channel, device)] = Names(*labels, *dimensioned)
    return found


# A segment's outcomes in its start cell: (minute, store, the counters it adds there but for
# two amounts, page views and duration, which only a closed session adds). The counters are
# one of few dicts (``_template``): shapes compare in C, by identity mostly.
Shape = tuple[int, str, dict[str, int], int, int]

# (channel, device, flags) -> the counters: bounded, both values are enums (events/models.py)
_TEMPLATES: dict[tuple[str, str, int], dict[str, int]] = {}
_WITH_ORDER, _WITH_CART, _WITH_INDEX, _NEW_VISITOR, _CLOSED, _BOUNCED = 1, 2, 4, 8, 16, 32
_FLAGGED = (
    (_WITH_ORDER, c.SESSIONS_WITH_ORDER),
    (_WITH_CART, c.SESSIONS_WITH_CART),
    (_WITH_INDEX, c.SESSIONS_WITH_INDEX),
    (_NEW_VISITOR, c.SESSIONS_NEW_VISITOR),
    (_CLOSED, c.SESSIONS_CLOSED),
    (_BOUNCED, c.SESSIONS_BOUNCED),
)


def _shape(segment: Segment, dims: Dims, closed: bool, orders: int) -> Shape:
    start_event, start = segment.start_event, segment.start
    flags = _WITH_ORDER if orders else 0
    if segment.adds:
        flags |= _WITH_CART
    if start_event is not None and start_event.number != NONE:
        flags |= (_WITH_INDEX | _NEW_VISITOR) if start_event.number == 1 else _WITH_INDEX
    views = duration = 0
    if closed:
        views, duration = segment.page_views, segment.end - start
        bounced = views == 1 and segment.others + orders == 0
        flags |= (_CLOSED | _BOUNCED) if bounced else _CLOSED
    kind = (dims[0], dims[1], flags)
    found = _TEMPLATES.get(kind)
    if found is None:
        found = _TEMPLATES[kind] = _template(*kind)
    return start - start % MINUTE_MS, segment.first.store, found, views, duration


def _template(channel: str, device: str, flags: int) -> dict[str, int]:
    names = names_of(channel, device)
    counters = {c.SESSIONS: 1, names.sessions_channel: 1, names.sessions_device: 1}
    counters |= {name: 1 for flag, name in _FLAGGED if flags & flag}
    if not flags & _CLOSED:
        counters[c.SESSIONS_OPEN] = 1
    return counters


def _add_shape(cells: c.Cells, shape: Shape) -> None:
    """A segment's outcomes into its start cell."""
    minute, store, counters, views, duration = shape
    cell = cells.get((minute, store))
    if cell is None:  # nearly always: the only segment starting in that minute
        cell = cells[(minute, store)] = counters.copy()
    else:
        for name, amount in counters.items():
            cell[name] = cell.get(name, 0) + amount
    if views:
        cell[c.SESSIONS_CLOSED_PAGE_VIEWS] = cell.get(c.SESSIONS_CLOSED_PAGE_VIEWS, 0) + views
    if duration:
        cell[c.SESSIONS_DURATION] = cell.get(c.SESSIONS_DURATION, 0) + duration


class Shapes:
    """The head of a session record with nothing but segments: their shapes. Two heads of one
    record compare without either's cells being built; most runs leave a record's shapes as
    they were (an open session's start cell does not change as it grows)."""

    __slots__ = ("_cells", "next_change", "shapes")
    presence: ClassVar[frozenset[Presence]] = frozenset()
    open_tickets: ClassVar[Mapping[tuple[str, str, str], int]] = MappingProxyType({})

    def __init__(self, shapes: list[Shape], next_change: int) -> None:
        self.shapes = shapes
        self.next_change = next_change
        self._cells: c.Cells | None = None

    @property
    def cells(self) -> c.Cells:
        """Built once, when asked for: read only."""
        if self._cells is None:
            self._cells = _cells_of(self.shapes)
        return self._cells

    def contribution(self) -> Contribution:
        """The same as a Contribution of its own, to add to."""
        return Contribution(cells=_cells_of(self.shapes), next_change=self.next_change)


def _cells_of(shapes: list[Shape]) -> c.Cells:
    cells: c.Cells = {}
    for shape in shapes:
        _add_shape(cells, shape)
    return cells


Head = Contribution | Shapes  # what a record adds but for its segments' bodies


def _visitor_cells(out: Contribution, seen: dict[str, int], names: Names, *, known: bool) -> None:
    """A segment's "minute|store|visitor" cells: page views (ch/dev) and visitor presence.

    ``c.add_dimensioned`` and ``_present`` inlined: this loop runs for every cell of every
    re-evaluated session."""
    cells, presence = out.cells, out.presence
    channel, device = names.channel, names.device
    views_name, marks_name = c.PAGE_VIEWS, c.VISITOR_MARKS
    views_channel, views_device = names.views_channel, names.views_device
    for key, views in seen.items():
        minute, store, visitor = cell_parts(key)
        counters = cells.get((minute, store))
        if counters is None:
            counters = cells[(minute, store)] = {}
        if views:
            counters[views_name] = counters.get(views_name, 0) + views
            counters[views_channel] = counters.get(views_channel, 0) + views
            counters[views_device] = counters.get(views_device, 0) + views
        if not visitor:
            continue
        counters[marks_name] = counters.get(marks_name, 0) + 1
        presence.add((minute, store, "", visitor))
        if known:
            presence.add((minute, store, channel, visitor))
            presence.add((minute, store, device, visitor))


def cell_parts(key: str) -> tuple[int, str, str]:
    """``"minute|store|visitor"`` (absorb.cell_key) -> (minute, store, visitor)."""
    minute, store, visitor = key.split("|", 2)
    return int(minute), store, visitor


def _order_cells(out: Contribution, order: Order, dims: Dims) -> None:
    placed = order.placed
    assert placed is not None
    minute = minute_of(placed.t)
    cell = c.cell(out.cells, minute, placed.store)
    c.add_dimensioned(cell, c.ORDERS, 1, channel=dims[0], device=dims[1])
    c.add_dimensioned(cell, c.REVENUE, order.total, channel=dims[0], device=dims[1])
    c.bump(cell, c.UNITS, order.units)
    c.bump(cell, c.ORDERS_WITH_INDEX, int(placed.number != NONE))
    c.bump(cell, c.ORDERS_NEW_CUSTOMER, int(placed.number == 1))
    _present(out, minute, placed.store, placed.text, dims)
    cancel = order.cancelled
    if cancel is not None:
        c.bump(c.cell(out.cells, minute_of(cancel.t), cancel.store), c.CANCELLED, order.total)


def _abandoned_at(cart: Cart, created: int, timeout_ms: int) -> int:
    """When the cart's first gap of ``timeout_ms`` after creation decides it abandoned."""
    times = sorted({e.t for e in cart.events if e.t >= created})
    for current, following in itertools.pairwise(times):
        if following - current >= timeout_ms:
            return current + timeout_ms
    return times[-1] + timeout_ms


def _cart_cells(
    out: Contribution, carts: list[Cart], orders: list[Order], watermark: int, timeout_ms: int
) -> None:
    for cart in carts:
        for event in cart.events:
            if event.kind in (CHECKOUT, PAYMENT_FAILED):
                name = c.CHECKOUTS if event.kind == CHECKOUT else c.PAYMENT_FAILURES
                c.bump(c.cell(out.cells, minute_of(event.t), event.store), name)
    live = [cart for cart in carts if cart.created is not None]
    window = {
        cart.cart_id: (cart.created.t, _abandoned_at(cart, cart.created.t, timeout_ms))  # type: ignore[union-attr]
        for cart in live
    }
    converted: dict[str, int] = {}  # cart id -> time of the order that converted it
    for order in orders:
        t = order.placed.t  # type: ignore[union-attr]
        open_ids = [
            cid for cid, (start, end) in window.items() if start < t < end and cid not in converted
        ]
        if order.cart_id is not None:
            if order.cart_id in open_ids:
                converted[order.cart_id] = t
        elif open_ids:
            by_id = {cart.cart_id: cart for cart in live}
            newest = max(open_ids, key=lambda cid: (by_id[cid].created.t, cid))  # type: ignore[union-attr]
            converted[newest] = t
    for cart in live:
        created = cart.created
        assert created is not None
        cell = c.cell(out.cells, minute_of(created.t), created.store)
        c.bump(cell, c.CARTS_CREATED)
        # a checkout counts while the cart is open: before its order or its abandonment
        decided = converted.get(cart.cart_id, window[cart.cart_id][1])
        checkout = any(e.kind == CHECKOUT and created.t <= e.t < decided for e in cart.events)
        c.bump(cell, c.CARTS_CHECKOUT, int(checkout))
        if cart.cart_id in converted:
            c.bump(cell, c.CARTS_CONVERTED)
            continue
        abandon_at = window[cart.cart_id][1]
        if watermark >= abandon_at:
            c.bump(cell, c.CARTS_ABANDONED)
            c.bump(cell, c.CARTS_CHECKOUT_ABANDONED, int(checkout))
        else:
            c.bump(cell, c.CARTS_UNDECIDED)
            out.next_change = min(out.next_change, abandon_at)


def contribute_ticket(record: TicketRecord) -> Contribution:
    """Ticket outcomes and surveys; these do not wait for the watermark."""
    out = Contribution()
    for opening in record.openings:
        cell = c.cell(out.cells, minute_of(opening.t), opening.store)
        c.bump(cell, c.TICKETS_OPENED)
        c.bump(cell, c.dim(c.TICKETS_OPENED, f"channel={opening.channel}"))
    for survey in record.surveys:
        _survey_cells(out, survey.t, survey.store, survey.kind, survey.score)
    for visit in record.visits:
        _present(out, visit.minute, visit.store, visit.visitor, ("other", visit.device, True))
    _marks(out, record.marks)
    opened = record.opened
    store = opened.store if opened is not None else record.first.store if record.first else ""
    opening_t = opened.t if opened is not None else record.opened_at
    if opening_t != NONE:
        reply = next((t for t in record.agent_replies if t >= opening_t), None)
        if reply is not None:
            _duration(out, c.FIRST_RESPONSE, reply, store, reply - opening_t)
        resolved = next((t for t in record.resolutions if t >= opening_t), None)
        if resolved is not None:
            _duration(out, c.RESOLUTION, resolved, store, resolved - opening_t)
    if record.escalated != NONE:
        c.bump(c.cell(out.cells, minute_of(record.escalated), store), c.TICKETS_ESCALATED)
    if record.lifecycle is not None and record.lifecycle.text == "open":
        channel = opened.text if opened is not None else "other"
        priority = opened.extra if opened is not None else "other"
        out.open_tickets[(store, channel, priority)] = 1
    return out


def _duration(out: Contribution, name: str, t: int, store: str, duration_ms: int) -> None:
    cell = c.cell(out.cells, minute_of(t), store)
    c.bump(cell, f"{name}_bucket|{bucket_of(duration_ms)}")
    c.bump(cell, f"{name}_sum_ms", duration_ms)
    c.bump(cell, f"{name}_count")


def _survey_cells(out: Contribution, t: int, store: str, kind: str, score: int) -> None:
    cell = c.cell(out.cells, minute_of(t), store)
    if kind == "csat":
        c.bump(cell, c.CSAT_RESPONSES)
        c.bump(cell, c.CSAT_SUM, score)
        c.bump(cell, c.CSAT_POSITIVE, int(score >= 4))
    elif kind == "nps":
        c.bump(cell, c.NPS_RESPONSES)
        c.bump(cell, c.NPS_PROMOTERS, int(score >= 9))
        c.bump(cell, c.NPS_DETRACTORS, int(score <= 6))
