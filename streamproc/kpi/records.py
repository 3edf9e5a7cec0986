"""Persisted state: one record per session id, order id (orders without a session), ticket id
or survey key, on its partition. Records hold mergeable aggregates (earliest-of, sums, sets), so
the same events absorbed in any order give the same record (``absorb.py``); contributions are
computed from them (``contrib.py``).

``off`` is the highest offset absorbed per input topic (clickstream, cart, orders, tickets): a
re-processed event at or below it is skipped, which makes at-least-once delivery exactly-once in
effect. ``seen`` holds the ids (hashed, ``event_hash``) of the events absorbed, ``repeats`` where
the messages dropped as their duplicates were read (``offset * TOPICS + topic``): a message read
again after a restart is recognised as itself or as a duplicate (``PartitionEngine.apply``). A
repeated event always meets its first occurrence here: its record key comes from its own fields
(``batch.record_key``), and once a record leaves the state, every event it could hold is too
late.

The structs are not tracked by the garbage collector (``gc=False``): records are trees (no
struct refers back to what holds it), so reference counting frees them, and the collector's
passes no longer walk every record, segment and earliest-of a partition holds (bench/engine.py:
~10 % of the engine's time). Their encoded form is unchanged.
"""

from __future__ import annotations

import hashlib

import msgspec
from msgspec import Struct

NONE = -1  # "no such event yet" for times


class Earliest(Struct, array_like=True, gc=False):
    """The earliest event of some kind by (time, event_id), with what it carries."""

    t: int
    eid: str
    store: str = ""
    text: str = ""  # visitor, channel, device ... whatever the kind needs
    extra: str = ""
    number: int = NONE

    def before(self, t: int, eid: str) -> bool:
        """Whether this event comes before one at (t, eid)."""
        return (self.t, self.eid) < (t, eid)


class Segment(Struct, array_like=True, gc=False):
    """A session: consecutive clickstream/cart events less than the session timeout apart."""

    start: int
    end: int
    first: Earliest  # store, visitor
    device: Earliest | None  # earliest event with a device_type (text)
    start_event: Earliest | None  # earliest session_start: text=channel, extra=device, number=index
    page_views: int = 0
    others: int = 0  # events other than session_start, page_view and page_ping
    adds: int = 0  # add_to_cart events
    cells: dict[str, int] = {}  # "minute|store|visitor" -> page views (0: present, no page view)


class CartEvent(Struct, array_like=True, gc=False):
    t: int
    kind: int  # ADD, REMOVE, CHECKOUT, PAYMENT_FAILED
    store: str


ADD, REMOVE, CHECKOUT, PAYMENT_FAILED = 0, 1, 2, 3


class Cart(Struct, array_like=True, gc=False):
    cart_id: str
    created: Earliest | None  # earliest add_to_cart
    events: list[CartEvent] = []


class Order(Struct, array_like=True, gc=False):
    order_id: str
    placed: Earliest | None = None  # text=visitor, extra=device, number=customer_order_index
    total: int = 0
    units: int = 0
    cart_id: str | None = None
    cancelled: Earliest | None = None  # earliest order_cancelled (store)
    # later order_placed events of the same order: not counted, but their visitors are
    repeats: list[Earliest] = []


class Visit(Struct, array_like=True, gc=False):
    """A visitor seen outside a session (refunds, cancellations, tickets, surveys)."""

    minute: int
    store: str
    visitor: str
    device: str


class Refund(Struct, array_like=True, gc=False):
    t: int
    store: str
    amount: int


class SessionRecord(Struct, array_like=True, gc=False):
    """Everything keyed by one session id (or, without a session, by one order id)."""

    off: list[int]
    segments: list[Segment] = []
    carts: list[Cart] = []
    orders: list[Order] = []
    refunds: list[Refund] = []
    visits: list[Visit] = []
    marks: dict[str, int] = {}  # "minute|store" -> accepted orders events (absorb.mark)
    seen: bytearray = msgspec.field(default_factory=bytearray)  # event hashes (first_sight)
    repeats: list[int] = []  # offset * TOPICS + topic of the messages dropped as duplicates


class Survey(Struct, array_like=True, gc=False):
    t: int
    store: str
    kind: str  # csat, nps, other
    score: int


class TicketOpening(Struct, array_like=True, gc=False):
    t: int
    store: str
    channel: str


class TicketRecord(Struct, array_like=True, gc=False):
    """A support ticket (or, for surveys without a ticket, just those surveys)."""

    off: list[int]
    opened: Earliest | None = None  # earliest ticket_opened: text=channel, extra=priority
    opened_at: int = NONE  # smallest opened_at seen
    first: Earliest | None = None  # earliest event (store fallback)
    agent_replies: list[int] = []  # times of agent messages, sorted
    resolutions: list[int] = []  # times of ticket_resolved, sorted
    escalated: int = NONE  # earliest escalation time
    lifecycle: Earliest | None = None  # latest opened/reopened/resolved: text=kind
    openings: list[TicketOpening] = []  # every ticket_opened event
    surveys: list[Survey] = []
    visits: list[Visit] = []
    marks: dict[str, int] = {}  # "minute|store" -> accepted events (absorb.mark)
    seen: bytearray = msgspec.field(default_factory=bytearray)  # event hashes (first_sight)
    repeats: list[int] = []  # offset * TOPICS + topic of the messages dropped as duplicates


class Meta(Struct, array_like=True, gc=False):
    """Per partition: how far each input topic has got, and the eviction cursor."""

    max_ts: list[int]  # highest event time read, per input topic
    watermark: int = NONE
    evicted_t: int = NONE  # records with (deadline, key) <= this cursor are evicted
    evicted_key: str = ""
    # Highest offset judged, per input topic. An event at or below it is read again after a
    # restart or rebalance (from the committed offset); what its first reading decided (absorbed,
    # dead letter, duplicate) is done, so it is skipped: judged again against the watermark it
    # helped to move, it would be taken for too late. (Absent from metas written before it.)
    read_to: list[int] = msgspec.field(default_factory=lambda: [NONE] * TOPICS)
    # Events judged (as counted by ``read_to``) and absorbed, and those dropped as duplicates.
    accepted: int = 0
    duplicates: int = 0


class Frozen(Struct, array_like=True, gc=False):
    """Contributions of evicted records to one (minute, store) cell."""

    cursor_t: int
    cursor_key: str
    counters: dict[str, int]


def _enc_hook(value: object) -> object:
    if isinstance(value, int):  # EpochMs and other int subclasses
        return int(value)
    raise NotImplementedError(f"cannot encode {type(value).__name__}")


encode = msgspec.msgpack.Encoder(enc_hook=_enc_hook).encode
decode_session = msgspec.msgpack.Decoder(SessionRecord).decode
decode_ticket = msgspec.msgpack.Decoder(TicketRecord).decode
decode_meta = msgspec.msgpack.Decoder(Meta).decode
decode_frozen = msgspec.msgpack.Decoder(Frozen).decode

TOPICS = 4  # clickstream, cart, orders, tickets


def new_offsets() -> list[int]:
    return [NONE] * TOPICS


_blake2b = hashlib.blake2b


def event_hash(event_id: str) -> bytes:
    """A 64-bit hash of an event id: a record keeps 8 bytes per event, whatever the id's length
    (up to 128 characters). Two ids of one record collide with a chance of n²/2⁶⁵ for n events:
    3·10⁻¹⁶ for a session of 100."""
    return _blake2b(event_id.encode(), digest_size=8).digest()


def has_seen(seen: bytes | bytearray, digest: bytes) -> bool:
    """Whether ``digest`` is one of the 8-byte hashes packed in ``seen``."""
    at = seen.find(digest)
    while at >= 0:
        if at % 8 == 0:
            return True
        at = seen.find(digest, at + 1)  # straddles two hashes: look further
    return False


# Records with more hashes than this are looked up in a set (one per batch) instead of scanned.
SCAN_BYTES = 1024


def first_sight(seen: bytearray, event_id: str, sets: dict[int, set[bytes]]) -> bool:
    """Whether the event ``event_id`` is new to a record's ``seen``; its hash (``event_hash``)
    packed into it if so.

    The hashes are one bytes object per record, searched in C: a set of ints cost a Python
    object per event at every decode of the record. A record past ``SCAN_BYTES`` (a crawler's
    session) is looked up in a set instead, made once per batch and kept in ``sets`` (by the
    ``seen`` object's id): scanned, each of its events would cost a pass over all of them.
    """
    digest = _blake2b(event_id.encode(), digest_size=8).digest()  # event_hash, without a call
    if len(seen) < SCAN_BYTES:
        # Nearly every event is new: one search that finds nothing, and no call.
        if seen.find(digest) >= 0 and has_seen(seen, digest):
            return False
    else:
        known = sets.get(id(seen))
        if known is None:
            known = sets[id(seen)] = {bytes(seen[i : i + 8]) for i in range(0, len(seen), 8)}
        if digest in known:
            return False
        known.add(digest)
    seen += digest
    return True
