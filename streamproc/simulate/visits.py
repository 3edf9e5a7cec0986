"""Visitors, sessions and page views: the clickstream half of the model.

A session opens with ``session_start`` (channel, ``session_index``, referrer/UTM, country), then
page views; a product page also sends a ``product_view``; every page sends ``page_ping``
heart-beats while it stays open (``engagement_ms`` = engaged time on that page so far).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from streamproc.events.models import Family
from streamproc.simulate.behaviour import Visits
from streamproc.simulate.catalog import Store
from streamproc.simulate.sampling import Weighted, between_ms, lognormal_ms
from streamproc.simulate.world import World

POOL_SIZE = 20_000  # returning visitors remembered per store (bounded memory when unbounded)
MAX_DWELL_MS = 600_000  # 10 minutes: far from the 30-minute session timeout
MAX_PINGS = 40

LANDING_PAGES = Weighted(
    {"home": 0.33, "category": 0.22, "product": 0.30, "search": 0.05, "content": 0.10}
)
NEXT_PAGES = Weighted(
    {
        "product": 0.45,
        "category": 0.25,
        "search": 0.10,
        "home": 0.08,
        "content": 0.07,
        "other": 0.05,
    }
)
_CATEGORIES = ("shoes", "jackets", "dresses", "bags", "accessories", "kids", "home", "sale")
_QUERIES = ("running+shoes", "rain+jacket", "gift", "linen", "wool+socks", "backpack")
_CAMPAIGNS = ("spring_sale", "brand", "new_arrivals", "retargeting", "weekly_digest", "bf_2026")
_ACQUISITION: dict[str, tuple[dict[str, str], ...]] = {
    "organic_search": (
        {"referrer": "https://www.google.com/"},
        {"referrer": "https://www.bing.com/"},
        {"referrer": "https://duckduckgo.com/"},
    ),
    "paid_search": (
        {"referrer": "https://www.google.com/", "utm_source": "google", "utm_medium": "cpc"},
        {"referrer": "https://www.bing.com/", "utm_source": "bing", "utm_medium": "cpc"},
    ),
    "organic_social": (
        {"referrer": "https://www.instagram.com/"},
        {"referrer": "https://www.facebook.com/"},
        {"referrer": "https://www.tiktok.com/"},
    ),
    "paid_social": (
        {"utm_source": "facebook", "utm_medium": "paid_social"},
        {"utm_source": "instagram", "utm_medium": "paid_social"},
        {"utm_source": "tiktok", "utm_medium": "paid_social"},
    ),
    "email": ({"utm_source": "newsletter", "utm_medium": "email"},),
    "referral": (
        {"referrer": "https://www.reddit.com/"},
        {"referrer": "https://blog.example.org/gift-guide"},
    ),
    "display": ({"utm_source": "gdn", "utm_medium": "display"},),
    "affiliate": ({"utm_source": "awin", "utm_medium": "affiliate"},),
}


@dataclass(slots=True)
class Visitor:
    """A browser (``visitor_id``) and, once known, the customer behind it."""

    visitor_id: str
    device_type: str
    country: str
    visits: int = 0
    customer_id: str | None = None
    orders: int = 0


@dataclass(slots=True)
class Session:
    """One visit: the fields every event of it carries, and when it must end (idle gap, end)."""

    store: Store
    visitor: Visitor
    base: dict[str, str]
    deadline_ms: int


class Visitors:
    """Per store, a bounded pool of past visitors that returning sessions come from."""

    def __init__(self, visits: Visits) -> None:
        self._returning_share = visits.returning_share
        self._devices = Weighted(visits.device_mix)
        self.channels = Weighted(visits.channel_mix)
        self._pools: dict[str, list[Visitor]] = {}

    def arrive(self, world: World, store: Store) -> Visitor:
        """A returning visitor (``returning_share``) or a new one, with its visit counted."""
        rng = world.rng
        pool = self._pools.setdefault(store.store_id, [])
        if pool and rng.random() < self._returning_share:
            visitor = pool[rng.randrange(len(pool))]
        else:
            country = store.countries[rng.randrange(len(store.countries))]
            visitor = Visitor(world.new_id("v"), self._devices(rng), country)
            if len(pool) < POOL_SIZE:
                pool.append(visitor)
            else:
                pool[rng.randrange(POOL_SIZE)] = visitor
        visitor.visits += 1
        return visitor

    def anyone(self, rng: random.Random, store: Store) -> Visitor | None:
        """A past visitor of the store (for tickets and phone orders), if there is one."""
        pool = self._pools.get(store.store_id)
        return pool[rng.randrange(len(pool))] if pool else None


def open_session(world: World, visitors: Visitors, t_ms: int) -> Session:
    """Pick a store and visitor, send ``session_start``; the session ends before any idle gap."""
    rng = world.rng
    store = world.catalog.pick_store(rng)
    visitor = visitors.arrive(world, store)
    base = {
        "store_id": store.store_id,
        "visitor_id": visitor.visitor_id,
        "session_id": world.new_id("s"),
        "device_type": visitor.device_type,
    }
    if visitor.customer_id is not None:  # a logged-in customer
        base["customer_id"] = visitor.customer_id
    session = Session(store, visitor, base, world.gaps.next_start(t_ms, world.end_ms))
    event = world.web_event(t_ms, "session_start", base)
    channel = visitors.channels(rng)
    event["channel_group"] = channel
    event["session_index"] = visitor.visits
    event.update(_acquisition(rng, channel))
    event["country"] = visitor.country
    world.emit(t_ms, Family.CLICKSTREAM, event)
    return session


def _acquisition(rng: random.Random, channel: str) -> dict[str, str]:
    choices = _ACQUISITION.get(channel)
    if not choices:
        return {}
    fields = dict(choices[rng.randrange(len(choices))])
    if "utm_medium" in fields:
        fields["utm_campaign"] = _CAMPAIGNS[rng.randrange(len(_CAMPAIGNS))]
    return fields


def emit_web(
    world: World, session: Session, t_ms: int, family: Family, event: dict[str, Any]
) -> bool:
    """Send a session event, unless the session is over (an idle gap began, or the run ended)."""
    return t_ms < session.deadline_ms and world.emit(t_ms, family, event)


def view_page(
    world: World, session: Session, t_ms: int, page_type: str, *, product: int | None = None
) -> int:
    """One page view (+ product view, + heart-beats); returns when the visitor moves on."""
    rng = world.rng
    if page_type == "product" and product is None:
        product = world.catalog.pick_product(rng)
    event = world.web_event(t_ms, "page_view", session.base)
    event["page_type"] = page_type
    event["page_path"] = _path(world, page_type, product)
    emit_web(world, session, t_ms, Family.CLICKSTREAM, event)
    if product is not None:
        t_view = t_ms + rng.randrange(50, 800)
        view = world.web_event(t_view, "product_view", session.base)
        view["product_id"] = world.catalog.product_ids[product]
        view["price_minor"] = session.store.prices[product]
        view["currency"] = session.store.currency
        emit_web(world, session, t_view, Family.CLICKSTREAM, view)
    visits = world.config.visits
    dwell = min(MAX_DWELL_MS, max(2000, lognormal_ms(rng, visits.median_dwell_seconds, 0.9)))
    _heartbeats(world, session, t_ms, dwell)
    return t_ms + dwell + between_ms(rng, 0.3, 3.0)


def _heartbeats(world: World, session: Session, t_ms: int, dwell_ms: int) -> None:
    interval = int(world.config.visits.ping_interval_seconds * 1000)
    if interval <= 0:
        return
    engaged = 0.5 + 0.5 * world.rng.random()  # share of the time the tab is in focus
    for n in range(1, min(MAX_PINGS, dwell_ms // interval) + 1):
        t_ping = t_ms + n * interval
        ping = world.web_event(t_ping, "page_ping", session.base)
        ping["engagement_ms"] = int(n * interval * engaged)
        if not emit_web(world, session, t_ping, Family.CLICKSTREAM, ping):
            return


def _path(world: World, page_type: str, product: int | None) -> str:
    rng = world.rng
    if product is not None:
        return f"/p/{world.catalog.product_ids[product]}"
    if page_type == "category":
        return f"/c/{_CATEGORIES[rng.randrange(len(_CATEGORIES))]}"
    if page_type == "search":
        return f"/search?q={_QUERIES[rng.randrange(len(_QUERIES))]}"
    if page_type == "content":
        return f"/blog/{_CATEGORIES[rng.randrange(len(_CATEGORIES))]}-guide"
    return {"home": "/", "cart": "/cart", "checkout": "/checkout"}.get(page_type, "/account")
