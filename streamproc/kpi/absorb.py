"""Fold one accepted event into its record. Every update is a merge (earliest-of, sum, max), so the
record does not depend on the order events arrive in."""

from __future__ import annotations

from typing import NamedTuple

from streamproc.events import models as m
from streamproc.kpi.epoch import MINUTE_MS, minute_of
from streamproc.kpi.records import (
    ADD,
    CHECKOUT,
    NONE,
    PAYMENT_FAILED,
    REMOVE,
    Cart,
    CartEvent,
    Earliest,
    Order,
    Refund,
    Segment,
    SessionRecord,
    Survey,
    TicketOpening,
    TicketRecord,
    Visit,
)

_CART_KINDS = {
    m.AddToCart: ADD,
    m.RemoveFromCart: REMOVE,
    m.CheckoutStarted: CHECKOUT,
    m.PaymentFailed: PAYMENT_FAILED,
}
_NOT_OTHER = (m.SessionStart, m.PageView, m.PagePing)


def earlier(current: Earliest | None, candidate: Earliest) -> Earliest:
    if current is None or candidate.before(current.t, current.eid):
        return candidate
    return current


def cell_key(minute: int, store: str, visitor: str) -> str:
    return f"{minute}|{store}|{visitor}"


def _start_event(event: m.WebEvent) -> Earliest | None:
    """A session_start as a segment keeps it (channel, device, session index); else None."""
    if not isinstance(event, m.SessionStart):
        return None
    return Earliest(
        event.event_time, event.event_id, text=event.channel_group,
        extra=event.device_type or "",
        number=event.session_index if event.session_index is not None else NONE,
    )  # fmt: skip


def _segment_of(event: m.WebEvent, store: str) -> Segment:
    t, eid = event.event_time, event.event_id
    is_view = isinstance(event, m.PageView)
    return Segment(
        start=t,
        end=t,
        first=Earliest(t, eid, store=store, text=event.visitor_id),
        device=Earliest(t, eid, text=event.device_type) if event.device_type else None,
        start_event=_start_event(event),
        page_views=int(is_view),
        others=int(not isinstance(event, _NOT_OTHER)),
        adds=int(isinstance(event, m.AddToCart)),
        cells={cell_key(minute_of(t), store, event.visitor_id): int(is_view)},
    )


def _merge(a: Segment, b: Segment) -> Segment:
    cells = dict(a.cells)
    for key, views in b.cells.items():
        cells[key] = cells.get(key, 0) + views
    return Segment(
        start=min(a.start, b.start),
        end=max(a.end, b.end),
        first=earlier(a.first, b.first),
        device=b.device
        if a.device is None
        else earlier(a.device, b.device)
        if b.device
        else a.device,
        start_event=(
            b.start_event
            if a.start_event is None
            else earlier(a.start_event, b.start_event)
            if b.start_event
            else a.start_event
        ),
        page_views=a.page_views + b.page_views,
        others=a.others + b.others,
        adds=a.adds + b.adds,
        cells=cells,
    )


class _Traits(NamedTuple):
    """What an event type adds to its segment's counts (the ``isinstance`` tests of
    ``_segment_of``, made once per type: they ran for every event)."""

    view: bool  # a page_view
    other: bool  # not a session_start, page_view or page_ping
    add: bool  # an add_to_cart
    start: bool  # a session_start


_TRAITS: dict[type[m.WebEvent], _Traits] = {}


def _traits(kind: type[m.WebEvent]) -> _Traits:
    found = _TRAITS.get(kind)
    if found is None:
        found = _TRAITS[kind] = _Traits(
            view=issubclass(kind, m.PageView),
            other=not issubclass(kind, _NOT_OTHER),
            add=issubclass(kind, m.AddToCart),
            start=issubclass(kind, m.SessionStart),
        )
    return found


def _absorb_into(segment: Segment, event: m.WebEvent, store: str) -> None:
    """``_merge(segment, _segment_of(event, store))``, in place: the common case (the event
    falls into one session) builds no new segment and copies no cells."""
    t, eid = event.event_time, event.event_id
    if t < segment.start:
        segment.start = t
    elif t > segment.end:
        segment.end = t
    first, device = segment.first, segment.device  # most events are not the earliest of either
    if t < first.t or (t == first.t and eid < first.eid):
        segment.first = Earliest(t, eid, store=store, text=event.visitor_id)
    if event.device_type and (
        device is None or t < device.t or (t == device.t and eid < device.eid)
    ):
        segment.device = Earliest(t, eid, text=event.device_type)
    traits = _TRAITS.get(type(event)) or _traits(type(event))  # (a call saved per event)
    if traits.start:
        segment.start_event = earlier(segment.start_event, _start_event(event))  # type: ignore[arg-type]
    if traits.view:
        segment.page_views += 1
    if traits.other:
        segment.others += 1
    if traits.add:
        segment.adds += 1
    # ``cell_key(minute_of(t), store, visitor)`` inlined: two calls fewer for every event.
    key = f"{t - t % MINUTE_MS}|{store}|{event.visitor_id}"
    cells = segment.cells
    cells[key] = cells.get(key, 0) + traits.view


def add_session_event(
    record: SessionRecord, event: m.WebEvent, store: str, *, session_timeout_ms: int
) -> None:
    """A clickstream or cart event: into its session (merging sessions it bridges) and cart."""
    t = event.event_time
    segments = record.segments
    if len(segments) == 1 and (
        segments[0].start - session_timeout_ms < t < segments[0].end + session_timeout_ms
    ):
        reached = segments  # the session's one segment (nearly every event): no list built
    else:
        reached = [
            segment
            for segment in segments
            if segment.start - session_timeout_ms < t < segment.end + session_timeout_ms
        ]
    if len(reached) == 1:
        moves = t < reached[0].start
        _absorb_into(reached[0], event, store)
        if moves:
            record.segments.sort(key=lambda s: s.start)
    else:
        merged = _segment_of(event, store)
        bridged = {id(segment) for segment in reached}
        kept = []
        for segment in record.segments:
            if id(segment) in bridged:
                merged = _merge(segment, merged)
            else:
                kept.append(segment)
        kept.append(merged)
        kept.sort(key=lambda s: s.start)
        record.segments = kept
    kind = _CART_KINDS.get(type(event))
    if kind is not None:
        _add_cart_event(record, event, kind, store)  # type: ignore[arg-type]


def _add_cart_event(record: SessionRecord, event: m.CartEvent, kind: int, store: str) -> None:
    cart = next((c for c in record.carts if c.cart_id == event.cart_id), None)
    if cart is None:
        cart = Cart(event.cart_id, None)
        record.carts.append(cart)
    cart.events.append(CartEvent(event.event_time, kind, store))
    if kind == ADD:
        cart.created = earlier(cart.created, Earliest(event.event_time, event.event_id, store))


def mark(record: SessionRecord | TicketRecord, t: int, store: str) -> None:
    """Note an accepted orders or tickets event in its (minute, store) cell: many of them count
    nothing there (a customer's message, a second cancellation), but the cell must exist so that
    the store's counts read 0 in that window. Clickstream and cart events are visitor sightings
    in their segment's cells, which do the same."""
    key = f"{minute_of(t)}|{store}"
    record.marks[key] = record.marks.get(key, 0) + 1


def mark_cell(key: str) -> tuple[int, str]:
    """The (minute, store) of a key of ``marks`` (see ``mark``)."""
    minute, store = key.split("|", 1)
    return int(minute), store


def _order(record: SessionRecord, order_id: str) -> Order:
    order = next((o for o in record.orders if o.order_id == order_id), None)
    if order is None:
        order = Order(order_id)
        record.orders.append(order)
    return order


def add_order_event(record: SessionRecord, event: m.OrderEvent, store: str) -> None:
    """order_placed (earliest per order id counts), order_cancelled, order_refunded."""
    t, eid = event.event_time, event.event_id
    mark(record, t, store)
    order = _order(record, event.order_id)
    if isinstance(event, m.OrderPlaced):
        candidate = Earliest(
            t, eid, store, text=event.visitor_id or "", extra=event.device_type or "",
            number=event.customer_order_index if event.customer_order_index is not None else NONE,
        )  # fmt: skip
        if order.placed is None or candidate.before(order.placed.t, order.placed.eid):
            if order.placed is not None:
                order.repeats.append(order.placed)
            order.placed = candidate
            order.total = event.total_minor
            order.units = sum(item.quantity for item in event.items or ())
            order.cart_id = event.cart_id
        else:
            order.repeats.append(candidate)
        return
    if isinstance(event, m.OrderCancelled):
        order.cancelled = earlier(order.cancelled, Earliest(t, eid, store))
    else:
        record.refunds.append(Refund(t, store, event.refund_minor))
    if event.visitor_id:
        device = event.device_type or "other"
        record.visits.append(Visit(minute_of(t), store, event.visitor_id, device))


def add_ticket_event(record: TicketRecord, event: m.TicketFamilyEvent, store: str) -> None:
    t, eid = event.event_time, event.event_id
    mark(record, t, store)
    if event.visitor_id:
        device = event.device_type or "other"
        record.visits.append(Visit(minute_of(t), store, event.visitor_id, device))
    if isinstance(event, m.SurveyResponse):  # counts on its own; not part of the ticket's life
        record.surveys.append(Survey(t, store, event.survey_type, event.score))
        return
    record.first = earlier(record.first, Earliest(t, eid, store))
    if event.opened_at is not None and (
        record.opened_at == NONE or event.opened_at < record.opened_at
    ):
        record.opened_at = event.opened_at
    if isinstance(event, m.TicketOpened):
        opening = Earliest(t, eid, store, text=event.channel, extra=event.priority)
        record.opened = earlier(record.opened, opening)
        record.openings.append(TicketOpening(t, store, event.channel))
    elif isinstance(event, m.MessageAdded):
        if event.author_type == "agent":
            _insert_sorted(record.agent_replies, t)
        return
    elif isinstance(event, m.TicketEscalated):
        if record.escalated == NONE or t < record.escalated:
            record.escalated = t
        return
    elif isinstance(event, m.TicketResolved):
        _insert_sorted(record.resolutions, t)
    kind = "resolved" if isinstance(event, m.TicketResolved) else "open"
    latest = record.lifecycle
    if latest is None or (t, eid) > (latest.t, latest.eid):
        record.lifecycle = Earliest(t, eid, text=kind)  # the latest, despite the type's name


def _insert_sorted(times: list[int], t: int) -> None:
    times.append(t)
    times.sort()
