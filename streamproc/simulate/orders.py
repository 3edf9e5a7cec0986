"""Orders and what happens to them later: cancellations, refunds, post-purchase surveys.

Amounts are consistent: ``total = sum(quantity * unit price) - discount + shipping + tax``, in the
store's currency. Orders, refunds and cancellations are backend events (epoch-ms times); those of
a web order carry its ``session_id`` (so they share its partition), phone and marketplace orders
have no session and are keyed by ``order_id``.
"""

from __future__ import annotations

from typing import Any

from streamproc.events.models import Family
from streamproc.simulate.catalog import Store
from streamproc.simulate.sampling import Weighted, lognormal_ms
from streamproc.simulate.timeline import MINUTE_MS
from streamproc.simulate.visits import Session, Visitor, Visitors
from streamproc.simulate.world import World

CSAT_SCORES = Weighted({5: 0.48, 4: 0.27, 3: 0.10, 2: 0.06, 1: 0.09})
NPS_SCORES = Weighted(
    {
        10: 0.25,
        9: 0.20,
        8: 0.15,
        7: 0.12,
        6: 0.07,
        5: 0.06,
        4: 0.04,
        3: 0.03,
        2: 0.03,
        1: 0.02,
        0: 0.03,
    }
)
DISCOUNTS = (0.10, 0.15, 0.20)
CANCEL_MEDIAN_SECONDS = 1200.0
REFUND_MEDIAN_SECONDS = 3 * 3600.0
ORDER_SURVEY_MEDIAN_SECONDS = 2 * 3600.0


def place_web_order(
    world: World, session: Session, t_ms: int, cart_id: str, lines: dict[int, int]
) -> bool:
    """Send ``order_placed`` for a checked-out cart; False if it could not be sent."""
    if not world.emitter.accepts(t_ms):
        return False
    rng = world.rng
    funnel = world.config.funnel
    visitor = session.visitor
    if visitor.customer_id is None and rng.random() >= funnel.p_guest:
        visitor.customer_id = world.new_id("cu")  # signs up at checkout
        session.base["customer_id"] = visitor.customer_id
    order = world.backend_event(t_ms, "order_placed", session.store.store_id)
    order["order_id"] = world.new_id("o")
    order["session_id"] = session.base["session_id"]
    order["visitor_id"] = visitor.visitor_id
    if rng.random() >= funnel.p_order_without_cart_id:
        order["cart_id"] = cart_id
    _customer(order, visitor)
    order.update(amounts(world, session.store, lines))
    world.emit(t_ms, Family.ORDERS, order)
    follow_up(world, t_ms, order)
    return True


def place_offline_order(world: World, visitors: Visitors, t_ms: int) -> None:
    """A phone or marketplace order: no session, keyed by ``order_id``. None while the
    store's payments fail (a checkout outage)."""
    rng = world.rng
    store = world.catalog.pick_store(rng)
    if world.checkout_down(store.store_id, t_ms):
        return
    lines: dict[int, int] = {}
    for _ in range(1 + rng.randrange(3)):
        product = world.catalog.pick_product(rng)
        lines[product] = lines.get(product, 0) + 1
    order = world.backend_event(t_ms, "order_placed", store.store_id)
    order["order_id"] = world.new_id("o")
    visitor = visitors.anyone(rng, store)
    if visitor is not None and visitor.customer_id is not None:
        _customer(order, visitor)
    order.update(amounts(world, store, lines))
    if world.emit(t_ms, Family.ORDERS, order):
        follow_up(world, t_ms, order)


def _customer(order: dict[str, Any], visitor: Visitor) -> None:
    if visitor.customer_id is not None:
        visitor.orders += 1
        order["customer_id"] = visitor.customer_id
        order["customer_order_index"] = visitor.orders


def amounts(world: World, store: Store, lines: dict[int, int]) -> dict[str, Any]:
    """Currency, total, items and the parts of the total, all in the store's minor units."""
    rng = world.rng
    items = [
        {
            "product_id": world.catalog.product_ids[p],
            "quantity": q,
            "unit_price_minor": store.prices[p],
        }
        for p, q in lines.items()
    ]
    subtotal = sum(store.prices[p] * q for p, q in lines.items())
    discount = 0
    if rng.random() < world.config.funnel.p_discount:
        discount = round(subtotal * DISCOUNTS[rng.randrange(len(DISCOUNTS))])
    net = subtotal - discount
    shipping = 0 if net >= store.free_shipping_from_minor else store.shipping_minor
    tax = round(net * store.tax_rate)
    return {
        "total_minor": net + shipping + tax,
        "currency": store.currency,
        "items": items,
        "discount_minor": discount,
        "shipping_minor": shipping,
        "tax_minor": tax,
    }


def later(world: World, t_ms: int, median_seconds: float, sigma: float) -> int:
    """When a follow-up happens: log-normal delay, pulled inside a bounded run when it fits."""
    rng = world.rng
    due = t_ms + max(MINUTE_MS, lognormal_ms(rng, median_seconds, sigma))
    room = world.end_ms - t_ms - 2 * MINUTE_MS
    if due >= world.end_ms and room > 0:
        due = t_ms + MINUTE_MS + rng.randrange(room)
    return world.backend_time(due)


def follow_up(world: World, t_ms: int, order: dict[str, Any]) -> None:
    """Maybe a cancellation or a refund, and maybe an NPS survey without a ticket."""
    rng = world.rng
    funnel = world.config.funnel
    keep = ("store_id", "session_id", "customer_id", "order_id")
    base = {name: order[name] for name in keep if name in order}
    if rng.random() < funnel.p_cancel:
        t_cancel = later(world, t_ms, CANCEL_MEDIAN_SECONDS, 1.0)
        event = world.backend_event(t_cancel, "order_cancelled", order["store_id"])
        event.update(base)
        world.emit(t_cancel, Family.ORDERS, event)
    elif rng.random() < funnel.p_refund:
        t_refund = later(world, t_ms, REFUND_MEDIAN_SECONDS, 1.2)
        event = world.backend_event(t_refund, "order_refunded", order["store_id"])
        event.update(base)
        event["refund_minor"] = _refund_amount(world, order)
        event["currency"] = order["currency"]
        world.emit(t_refund, Family.ORDERS, event)
    if rng.random() < world.config.support.p_order_survey:
        t_survey = later(world, t_ms, ORDER_SURVEY_MEDIAN_SECONDS, 1.0)
        survey = world.backend_event(t_survey, "survey_response", order["store_id"])
        if "customer_id" in order:
            survey["customer_id"] = order["customer_id"]
        survey["survey_type"] = "nps"
        survey["score"] = NPS_SCORES(rng)
        world.emit(t_survey, Family.TICKETS, survey)


def _refund_amount(world: World, order: dict[str, Any]) -> int:
    """The whole order (70 %), or one line of it (a return)."""
    total: int = order["total_minor"]
    items = order["items"]
    if world.rng.random() < 0.7:
        return total
    item = items[world.rng.randrange(len(items))]
    return min(total, int(item["quantity"]) * int(item["unit_price_minor"]))
