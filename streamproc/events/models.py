"""The event contract (``docs/events.md``) as typed structs, one tagged union per topic family.

The structs are decoded straight from message bytes by msgspec (see ``parse.py``). After
``EventDecoder.decode`` returns, an event is normalised:

* ``event_time`` (and ``opened_at``) are :class:`EpochMs`: integer epoch milliseconds, UTC,
  from 2000-01-01 to 9999-12-31T23:59:59.999Z;
* every integer lies within the bounds below, so arithmetic on it and its msgpack encoding are safe;
* enum-valued fields hold one of the documented values, unknown values mapped to ``"other"``
  (``device_type`` stays ``None`` when absent, so that a session's first event can set it);
* money fields are integer minor units of the **reporting** currency, and ``currency`` is the
  reporting currency code.
"""

from __future__ import annotations

import enum
from typing import Annotated, Final, TypeAlias

import msgspec
from msgspec import Meta, Struct


class EpochMs(int):
    """Event time in integer epoch milliseconds (UTC)."""

    __slots__ = ()


class Family(enum.StrEnum):
    """A topic family: which event types may appear on which input topic."""

    CLICKSTREAM = "clickstream"
    CART = "cart"
    ORDERS = "orders"
    TICKETS = "tickets"


EventId = Annotated[str, Meta(min_length=1, max_length=128)]
StoreId = Annotated[str, Meta(min_length=1, max_length=64)]
# Ids are not bounded by the contract; 256 characters keeps per-session state small.
Id = Annotated[str, Meta(min_length=1, max_length=256)]
Text = Annotated[str, Meta(max_length=2048)]

# Every integer is bounded, so that any accepted value fits the engine's msgpack state (64-bit
# integers) and the counters that sum it keep a wide margin.
# Money: 10**13 minor units is 100 billion USD, or 400 million USD in VND (no minor unit), far
# above any order; a per-minute, per-store revenue counter then needs ~900,000 maximal orders to
# overflow a signed 64-bit integer, and real traffic stays a million times below that. Converted
# amounts are held to the same bound (``parse.py``).
MAX_MONEY_MINOR: Final = 10**13
# Units of one line; an order's units (all lines of a 64 KiB message) stay below 3 * 10**12.
MAX_QUANTITY: Final = 10**9
# Counts and small numbers (visit and order indexes, schema versions, engagement in ms: 24.8
# days) fit a signed 32-bit integer, in any store downstream.
MAX_INT32: Final = 2**31 - 1
# Survey scores: every common scale (CSAT 1-5, NPS 0-10, CES 1-7, percentages, signed Likert)
# fits; the csat and nps ranges are checked per survey type.
MIN_SCORE: Final = -100
MAX_SCORE: Final = 100

Money = Annotated[int, Meta(ge=0, le=MAX_MONEY_MINOR)]
Quantity = Annotated[int, Meta(ge=1, le=MAX_QUANTITY)]
Index = Annotated[int, Meta(ge=1, le=MAX_INT32)]
SchemaVersion = Annotated[int, Meta(ge=0, le=MAX_INT32)]
DurationMs = Annotated[int, Meta(ge=0, le=MAX_INT32)]
Score = Annotated[int, Meta(ge=MIN_SCORE, le=MAX_SCORE)]

CHANNEL_GROUPS = frozenset(
    {
        "direct",
        "organic_search",
        "paid_search",
        "organic_social",
        "paid_social",
        "email",
        "referral",
        "display",
        "affiliate",
        "other",
    }
)
DEVICE_TYPES = frozenset({"desktop", "mobile", "tablet", "other"})
PAGE_TYPES = frozenset(
    {"home", "category", "product", "search", "cart", "checkout", "content", "other"}
)
TICKET_CHANNELS = frozenset({"email", "chat", "phone", "social", "web_form", "other"})
PRIORITIES = frozenset({"low", "normal", "high", "urgent", "other"})
AUTHOR_TYPES = frozenset({"customer", "agent", "bot", "other"})
SURVEY_TYPES = frozenset({"csat", "nps", "other"})


class Event(Struct, tag_field="event_type", kw_only=True):
    """The common envelope of every event."""

    event_id: EventId
    event_time: EpochMs
    store_id: StoreId = "default"
    visitor_id: Id | None = None
    session_id: Id | None = None
    customer_id: Id | None = None
    device_type: str | None = None
    schema_version: SchemaVersion = 1

    @property
    def event_type(self) -> str:
        """The ``event_type`` tag of this struct class."""
        return type(self).__struct_config__.tag  # type: ignore[return-value]


class WebEvent(Event, kw_only=True):
    """Clickstream and cart events: a visitor and a session are required."""

    visitor_id: Id
    session_id: Id


# --- clickstream -------------------------------------------------------------------------------


class SessionStart(WebEvent, tag="session_start", kw_only=True):
    channel_group: str = "other"
    session_index: Index | None = None
    referrer: Text | None = None
    utm_source: Text | None = None
    utm_medium: Text | None = None
    utm_campaign: Text | None = None
    country: Text | None = None


class PageView(WebEvent, tag="page_view", kw_only=True):
    page_type: str = "other"
    page_path: Text | None = None


class ProductView(WebEvent, tag="product_view", kw_only=True):
    product_id: Id | None = None
    price_minor: Money | None = None
    currency: str | None = None


class PagePing(WebEvent, tag="page_ping", kw_only=True):
    engagement_ms: DurationMs | None = None


# --- cart --------------------------------------------------------------------------------------


class CartEvent(WebEvent, kw_only=True):
    cart_id: Id


class AddToCart(CartEvent, tag="add_to_cart", kw_only=True):
    product_id: Id | None = None
    quantity: Quantity = 1
    unit_price_minor: Money | None = None
    currency: str | None = None


class RemoveFromCart(CartEvent, tag="remove_from_cart", kw_only=True):
    product_id: Id | None = None
    quantity: Quantity = 1


class CheckoutStarted(CartEvent, tag="checkout_started", kw_only=True):
    pass


class PaymentFailed(CartEvent, tag="payment_failed", kw_only=True):
    error_code: Text | None = None


# --- orders ------------------------------------------------------------------------------------


class OrderItem(Struct, kw_only=True):
    product_id: Id | None = None
    quantity: Quantity = 1
    unit_price_minor: Money | None = None


class OrderPlaced(Event, tag="order_placed", kw_only=True):
    order_id: Id
    total_minor: Money
    currency: str
    cart_id: Id | None = None
    customer_order_index: Index | None = None
    items: list[OrderItem] | None = None
    discount_minor: Money | None = None
    shipping_minor: Money | None = None
    tax_minor: Money | None = None


class OrderRefunded(Event, tag="order_refunded", kw_only=True):
    order_id: Id
    refund_minor: Money
    currency: str


class OrderCancelled(Event, tag="order_cancelled", kw_only=True):
    order_id: Id


# --- tickets -----------------------------------------------------------------------------------


class TicketEvent(Event, kw_only=True):
    ticket_id: Id
    opened_at: EpochMs | None = None


class TicketOpened(TicketEvent, tag="ticket_opened", kw_only=True):
    channel: str = "other"
    priority: str = "other"
    category: Text | None = None


class MessageAdded(TicketEvent, tag="message_added", kw_only=True):
    author_type: str


class TicketEscalated(TicketEvent, tag="ticket_escalated", kw_only=True):
    pass


class TicketResolved(TicketEvent, tag="ticket_resolved", kw_only=True):
    pass


class TicketReopened(TicketEvent, tag="ticket_reopened", kw_only=True):
    pass


class SurveyResponse(Event, tag="survey_response", kw_only=True):
    survey_type: str
    score: Score
    ticket_id: Id | None = None
    opened_at: EpochMs | None = None


ClickstreamEvent: TypeAlias = SessionStart | PageView | ProductView | PagePing
CartFamilyEvent: TypeAlias = AddToCart | RemoveFromCart | CheckoutStarted | PaymentFailed
OrderEvent: TypeAlias = OrderPlaced | OrderRefunded | OrderCancelled
TicketFamilyEvent: TypeAlias = (
    TicketOpened | MessageAdded | TicketEscalated | TicketResolved | TicketReopened | SurveyResponse
)

FAMILY_TYPES: dict[Family, tuple[type[Event], ...]] = {
    Family.CLICKSTREAM: (SessionStart, PageView, ProductView, PagePing),
    Family.CART: (AddToCart, RemoveFromCart, CheckoutStarted, PaymentFailed),
    Family.ORDERS: (OrderPlaced, OrderRefunded, OrderCancelled),
    Family.TICKETS: (
        TicketOpened,
        MessageAdded,
        TicketEscalated,
        TicketResolved,
        TicketReopened,
        SurveyResponse,
    ),
}

EVENT_TYPES: dict[str, type[Event]] = {
    cls.__struct_config__.tag: cls  # type: ignore[misc]
    for classes in FAMILY_TYPES.values()
    for cls in classes
}
FAMILY_OF_TYPE: dict[str, Family] = {
    cls.__struct_config__.tag: family  # type: ignore[misc]
    for family, classes in FAMILY_TYPES.items()
    for cls in classes
}

# Fields holding money in minor units, converted to the reporting currency at ingest.
MONEY_FIELDS = frozenset(
    {
        "price_minor",
        "unit_price_minor",
        "total_minor",
        "refund_minor",
        "discount_minor",
        "shipping_minor",
        "tax_minor",
    }
)


def encode(event: Event) -> bytes:
    """JSON bytes of an event (as normalised), for tests and tools."""
    return msgspec.json.encode(event)
