"""Orders (once per ``order_id``), refunds and cancellations: orders, revenue, net revenue."""

from __future__ import annotations

from reference.common import Event, Fact, earliest, of_type, time_order
from reference.sessions import SessionIndex


def counted_orders(events: list[Event]) -> list[Event]:
    """The earliest ``order_placed`` of each ``order_id``, in time order."""
    by_order_id: dict[str, list[Event]] = {}
    for order in of_type(events, "order_placed"):
        by_order_id.setdefault(order["order_id"], []).append(order)
    firsts = [earliest(orders) for orders in by_order_id.values()]
    return sorted((order for order in firsts if order is not None), key=time_order)


def order_dimensions(order: Event, sessions: SessionIndex) -> tuple[str, ...]:
    """Those of the session it belongs to, else ``other`` and its own device type."""
    session = sessions.of_order(order)
    if session is not None:
        return session.dimensions
    return ("channel_group=other", f"device_type={order.get('device_type') or 'other'}")


def order_facts(order: Event, sessions: SessionIndex) -> list[Fact]:
    """What a counted order adds, at its own time and store."""
    dimensions = order_dimensions(order, sessions)

    def fact(counter: str, amount: int = 1, dims: tuple[str, ...] = ()) -> Fact:
        return Fact(counter, order["event_time"], order["store_id"], dims, amount)

    units = sum(item.get("quantity", 1) for item in order.get("items") or [])
    facts = [
        fact("orders", dims=dimensions),
        fact("revenue_minor", order["total_minor"], dimensions),
        fact("net_revenue_minor", order["total_minor"]),
        fact("units", units),
    ]
    if order.get("customer_order_index") is not None:
        facts.append(fact("orders_with_index"))
        if order["customer_order_index"] == 1:
            facts.append(fact("orders_first"))
    return facts


def refund_facts(events: list[Event]) -> list[Fact]:
    """Each refund counts once and subtracts its amount, at its own time and store."""
    facts: list[Fact] = []
    for refund in of_type(events, "order_refunded"):
        at = (refund["event_time"], refund["store_id"])
        facts.append(Fact("refunds", *at))
        facts.append(Fact("net_revenue_minor", *at, amount=-refund["refund_minor"]))
    return facts


def cancellation_facts(events: list[Event], orders: list[Event]) -> list[Fact]:
    """The earliest cancellation of a known order subtracts its total, at its time and store.

    Known = a counted order with that ``order_id`` and the same Kafka key as the cancellation,
    i.e. one the engine finds on the cancellation's partition.
    """
    order_by_id = {order["order_id"]: order for order in orders}
    cancellations: dict[str, list[Event]] = {}
    for cancel in of_type(events, "order_cancelled"):
        order = order_by_id.get(cancel["order_id"])
        if order is not None and cancel["kafka_key"] == order["kafka_key"]:
            cancellations.setdefault(cancel["order_id"], []).append(cancel)
    facts: list[Fact] = []
    for order_id, cancels in cancellations.items():
        first = earliest(cancels)
        assert first is not None
        total = order_by_id[order_id]["total_minor"]
        facts.append(Fact("net_revenue_minor", first["event_time"], first["store_id"], (), -total))
    return facts
