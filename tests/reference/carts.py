"""Carts: created by their first ``add_to_cart``, decided by walking a session id's events."""

from __future__ import annotations

from dataclasses import dataclass

from reference.common import CART_TYPES, Event, Fact, ReferenceSettings, of_type

OPEN, CONVERTED, ABANDONED = "open", "converted", "abandoned"


@dataclass
class Cart:
    """A ``cart_id`` of one ``session_id``; ``created`` is its first ``add_to_cart``."""

    cart_id: str
    created: Event
    last_ms: int
    state: str = OPEN
    checkout: bool = False


def step_order(event: Event) -> tuple[int, int, str]:
    """Time order, orders before cart events at equal times, then ``event_id``."""
    is_cart_event = 0 if event["event_type"] == "order_placed" else 1
    return (event["event_time"], is_cart_event, event["event_id"])


def walk_carts(steps: list[Event], settings: ReferenceSettings) -> list[Cart]:
    """Decide the carts of one ``session_id`` from its cart events and counted orders.

    The whole input is known, so a cart still open after the last step is abandoned.
    """
    carts: dict[str, Cart] = {}
    for step in sorted(steps, key=step_order):
        for cart in carts.values():
            timed_out = cart.last_ms <= step["event_time"] - settings.abandonment_timeout_ms
            if cart.state == OPEN and timed_out:
                cart.state = ABANDONED
        if step["event_type"] == "order_placed":
            convert(carts, step)
        else:
            apply_cart_event(carts, step)
    for cart in carts.values():
        if cart.state == OPEN:
            cart.state = ABANDONED
    return list(carts.values())


def apply_cart_event(carts: dict[str, Cart], event: Event) -> None:
    cart = carts.get(event["cart_id"])
    if cart is None:
        if event["event_type"] == "add_to_cart":
            carts[event["cart_id"]] = Cart(event["cart_id"], event, event["event_time"])
        return  # cart events before its first add_to_cart are ignored
    if cart.state != OPEN:
        return  # a decided cart stays decided
    cart.last_ms = event["event_time"]
    if event["event_type"] == "checkout_started":
        cart.checkout = True


def convert(carts: dict[str, Cart], order: Event) -> None:
    if order.get("cart_id") is not None:
        named = carts.get(order["cart_id"])
        if named is not None and named.state == OPEN:
            named.state = CONVERTED
        return
    open_carts = [cart for cart in carts.values() if cart.state == OPEN]
    if open_carts:
        newest = max(open_carts, key=lambda c: (c.created["event_time"], c.cart_id))
        newest.state = CONVERTED


def all_carts(events: list[Event], orders: list[Event], settings: ReferenceSettings) -> list[Cart]:
    """The carts of every ``session_id``; ``orders`` are the counted orders."""
    steps: dict[str, list[Event]] = {}
    for event in of_type(events, *CART_TYPES):
        steps.setdefault(event["session_id"], []).append(event)
    for order in orders:
        if order.get("session_id") is not None and order["session_id"] in steps:
            steps[order["session_id"]].append(order)
    carts: list[Cart] = []
    for session_steps in steps.values():
        carts += walk_carts(session_steps, settings)
    return carts


def cart_facts(cart: Cart) -> list[Fact]:
    """What a cart counts, at its creation time and store."""
    created = cart.created

    def fact(counter: str) -> Fact:
        return Fact(counter, created["event_time"], created["store_id"])

    facts = [fact("carts_created")]
    if cart.state == CONVERTED:
        facts.append(fact("carts_converted"))
    if cart.checkout:
        facts.append(fact("carts_with_checkout"))
        if cart.state == ABANDONED:
            facts.append(fact("carts_checkout_abandoned"))
    return facts


def checkout_facts(events: list[Event]) -> list[Fact]:
    """``checkout_started`` and ``payment_failed`` events, at their own time and store."""
    counters = {"checkout_started": "checkouts", "payment_failed": "payment_failures"}
    return [
        Fact(counters[e["event_type"]], e["event_time"], e["store_id"])
        for e in of_type(events, *counters)
    ]
