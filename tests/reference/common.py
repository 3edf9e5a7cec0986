"""What every part of the reference shares: its settings, the Fact record and time order."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

# An accepted event: its JSON object with ``event_time`` (and ``opened_at``) in epoch ms, enums
# normalised, money in minor units of the reporting currency, and its Kafka key added as
# ``kafka_key`` (see accept.py).
Event = dict[str, Any]

CLICKSTREAM_TYPES = ("session_start", "page_view", "product_view", "page_ping")
CART_TYPES = ("add_to_cart", "remove_from_cart", "checkout_started", "payment_failed")
WEB_TYPES = CLICKSTREAM_TYPES + CART_TYPES


@dataclass(frozen=True)
class ReferenceSettings:
    """The engine settings the KPIs depend on, with the engine's defaults.

    Attributes:
        wall_clock_ms: "now" for a message without a Kafka timestamp (a raw line without
            ``__timestamp__``); None = the real wall clock.
    """

    session_timeout_ms: int = 1_800_000
    abandonment_timeout_ms: int = 1_800_000
    allowed_lateness_ms: int = 120_000
    max_lateness_ms: int = 3_600_000
    reporting_currency: str = "USD"
    fx_rates: Mapping[str, Decimal] = field(default_factory=dict)
    window_sizes_s: tuple[int, ...] = (3600, 86400)
    max_message_bytes: int = 65_536
    max_future_ms: int = 300_000
    wall_clock_ms: int | None = None


@dataclass(frozen=True)
class Fact:
    """One contribution to one KPI counter: an amount at a time, in a store, under breakdowns.

    Attributes:
        counter: what it adds to, e.g. ``sessions`` or ``revenue_minor``.
        dimensions: the breakdown rows it also counts in, e.g. ``("channel_group=email",
            "device_type=mobile")``; it always counts in the row without a dimension.
        amount: added to the counter (1 for a count; minor units; milliseconds).
        visitor_id: set for the ``visitors`` counter only (a distinct count).
    """

    counter: str
    time_ms: int
    store_id: str
    dimensions: tuple[str, ...] = ()
    amount: int = 1
    visitor_id: str | None = None


def time_order(event: Event) -> tuple[int, str]:
    """The tie-broken time order of events: ``(event_time, event_id)``."""
    return (event["event_time"], event["event_id"])


def earliest(events: Iterable[Event]) -> Event | None:
    """The first event in time order, or None when there is none."""
    ordered = sorted(events, key=time_order)
    return ordered[0] if ordered else None


def of_type(events: Iterable[Event], *event_types: str) -> list[Event]:
    """The events of the given types, in the order given."""
    return [event for event in events if event["event_type"] in event_types]
