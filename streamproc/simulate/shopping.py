"""Carts and checkouts: the cart half of a shopping session.

A shopping session adds one or more products (each from its product page), sometimes removes
some on the cart page (never all), and reaches checkout with ``p_checkout`` (divided by the
factor of an abandonment spike at the cart's creation). A checkout ends in an order with
``p_order`` (never during a checkout outage of its store); payment attempts fail with
``p_payment_failure`` each (an order comes after up to three failures; a lost checkout had some
failures too, or none).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from streamproc.events.models import Family
from streamproc.simulate.orders import place_web_order
from streamproc.simulate.sampling import Weighted, between_ms, geometric
from streamproc.simulate.visits import LANDING_PAGES, NEXT_PAGES, Session, emit_web, view_page
from streamproc.simulate.world import World

QUANTITIES = Weighted({1: 0.80, 2: 0.14, 3: 0.04, 4: 0.02})
ERROR_CODES = Weighted(
    {
        "card_declined": 0.45,
        "insufficient_funds": 0.2,
        "3ds_failed": 0.15,
        "expired_card": 0.1,
        "processing_error": 0.1,
    }
)
CART_ID_PREFIX = "cart-"  # + the event_id of the cart's first add_to_cart (see SimStats)


@dataclass(slots=True)
class Cart:
    """A cart being filled: its id (set by the first add) and product index -> quantity."""

    cart_id: str = ""
    created_ms: int = 0
    lines: dict[int, int] = field(default_factory=dict)


def shop(world: World, session: Session, t_ms: int) -> None:
    """A session that creates a cart; it may check out and order."""
    rng = world.rng
    funnel = world.config.funnel
    t_ms = view_page(world, session, t_ms, LANDING_PAGES(rng))
    cart = Cart()
    for _ in range(1 + geometric(rng, 0.6)):
        for _ in range(geometric(rng, 0.8)):
            t_ms = view_page(world, session, t_ms, NEXT_PAGES(rng))
        t_ms = _add(world, session, t_ms, cart)
    if not cart.cart_id or t_ms >= session.deadline_ms:
        return
    if sum(cart.lines.values()) > 1 and rng.random() < funnel.p_remove:
        t_ms = _remove(world, session, t_ms, cart)
    spike = world.abandonment_spikes.factor(cart.created_ms)
    if cart.lines and rng.random() < funnel.p_checkout / spike:
        _checkout(world, session, t_ms, cart)
    elif rng.random() < 0.5:
        view_page(world, session, t_ms, "cart")  # a last look, then gone


def _add(world: World, session: Session, t_ms: int, cart: Cart) -> int:
    rng = world.rng
    product = world.catalog.pick_product(rng)
    leave_ms = view_page(world, session, t_ms, "product", product=product)
    t_add = min(t_ms + between_ms(rng, 2, 25), leave_ms - 100)
    event = world.web_event(t_add, "add_to_cart", session.base)
    if not cart.cart_id:
        cart.cart_id, cart.created_ms = CART_ID_PREFIX + event["event_id"], t_add
    quantity = QUANTITIES(rng)
    event["cart_id"] = cart.cart_id
    event["product_id"] = world.catalog.product_ids[product]
    event["quantity"] = quantity
    event["unit_price_minor"] = session.store.prices[product]
    event["currency"] = session.store.currency
    if emit_web(world, session, t_add, Family.CART, event):
        cart.lines[product] = cart.lines.get(product, 0) + quantity
    elif len(cart.lines) == 0:
        cart.cart_id = ""  # the cart was never created
    return leave_ms


def _remove(world: World, session: Session, t_ms: int, cart: Cart) -> int:
    rng = world.rng
    leave_ms = view_page(world, session, t_ms, "cart")
    t_remove = min(t_ms + between_ms(rng, 2, 20), leave_ms - 100)
    products = list(cart.lines)
    product = products[rng.randrange(len(products))]
    # The whole line or one unit, but never the last unit: p_checkout is a share of carts.
    quantity = cart.lines[product] if len(products) > 1 and rng.random() < 0.7 else 1
    event = world.web_event(t_remove, "remove_from_cart", session.base)
    event["cart_id"] = cart.cart_id
    event["product_id"] = world.catalog.product_ids[product]
    event["quantity"] = quantity
    if emit_web(world, session, t_remove, Family.CART, event):
        cart.lines[product] -= quantity
        if cart.lines[product] == 0:
            del cart.lines[product]
    return leave_ms


def _checkout(world: World, session: Session, t_ms: int, cart: Cart) -> None:
    rng = world.rng
    funnel = world.config.funnel
    t_ms = view_page(world, session, t_ms, "cart")
    event = world.web_event(t_ms, "checkout_started", session.base)
    event["cart_id"] = cart.cart_id
    if not emit_web(world, session, t_ms, Family.CART, event):
        return
    t_ms = view_page(world, session, t_ms + between_ms(rng, 0.5, 2), "checkout")
    ordered = rng.random() < funnel.p_order and not world.checkout_down(
        session.store.store_id, t_ms
    )
    for _ in range(_payment_failures(world, ordered=ordered)):
        t_ms += between_ms(rng, 15, 90)
        failed = world.web_event(t_ms, "payment_failed", session.base)
        failed["cart_id"] = cart.cart_id
        failed["error_code"] = ERROR_CODES(rng)
        emit_web(world, session, t_ms, Family.CART, failed)
    if ordered:
        t_ms += between_ms(rng, 3, 30)
        if t_ms < session.deadline_ms and place_web_order(
            world, session, t_ms, cart.cart_id, cart.lines
        ):
            view_page(world, session, t_ms + between_ms(rng, 1, 3), "other")  # confirmation


def _payment_failures(world: World, *, ordered: bool) -> int:
    rng = world.rng
    p_failure = world.config.funnel.p_payment_failure
    if not ordered:  # gave up: some after failed payments, most at the form
        if rng.random() >= min(1.0, 5 * p_failure):
            return 0
        p_failure = 0.5
    failures = 0 if ordered else 1
    while failures < 3 and rng.random() < p_failure:
        failures += 1
    return failures
