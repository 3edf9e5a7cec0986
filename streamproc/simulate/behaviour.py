"""How visitors, shoppers and support tickets behave: the model knobs of a simulation run.

Each class is frozen and validated on construction (a ``ValueError`` names the bad option); the
defaults are typical figures for a mid-sized web shop.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from streamproc.events import models as m
from streamproc.simulate.checks import (
    check,
    check_int,
    check_non_negative,
    check_positive,
    check_probability,
    freeze,
    frozen_mix,
    is_number,
)

_CHANNELS = {
    "direct": 0.24,
    "organic_search": 0.30,
    "paid_search": 0.12,
    "organic_social": 0.06,
    "paid_social": 0.06,
    "email": 0.08,
    "referral": 0.06,
    "display": 0.03,
    "affiliate": 0.03,
    "other": 0.02,
}
_DEVICES = {"mobile": 0.56, "desktop": 0.37, "tablet": 0.06, "other": 0.01}


@dataclass(frozen=True)
class Visits:
    """Who visits and how a visit unfolds.

    Attributes:
        returning_share: share of sessions by a visitor seen before (same ``visitor_id``,
            ``session_index`` > 1); the rest are first visits.
        channel_mix: weight of each ``channel_group`` (contract values).
        device_mix: weight of each ``device_type`` for new visitors (returning ones mostly
            keep theirs).
        p_bounce: share of sessions with exactly one page view (never with a cart). A product
            landing page also sends a ``product_view``, which the ``bounce_rate`` KPI does not
            count as a bounce, so that KPI comes out somewhat lower.
        mean_pageviews: mean page views of a session that neither bounces nor shops (>= 2).
        median_dwell_seconds: median time on a page (log-normal, capped at 10 minutes, so a
            session never idles past the 30-minute session timeout).
        ping_interval_seconds: ``page_ping`` heartbeat period while a page is open; 0 = none.
    """

    returning_share: float = 0.3
    channel_mix: Mapping[str, float] = field(default_factory=lambda: MappingProxyType(_CHANNELS))
    device_mix: Mapping[str, float] = field(default_factory=lambda: MappingProxyType(_DEVICES))
    p_bounce: float = 0.35
    mean_pageviews: float = 5.0
    median_dwell_seconds: float = 30.0
    ping_interval_seconds: float = 30.0

    def __post_init__(self) -> None:
        check_probability("returning_share", self.returning_share)
        freeze(self, "channel_mix", frozen_mix("channel_mix", self.channel_mix, m.CHANNEL_GROUPS))
        freeze(self, "device_mix", frozen_mix("device_mix", self.device_mix, m.DEVICE_TYPES))
        check_probability("p_bounce", self.p_bounce)
        pages = self.mean_pageviews
        check(is_number(pages) and pages >= 2, "mean_pageviews", "a number >= 2", pages)
        check_positive("median_dwell_seconds", self.median_dwell_seconds)
        check_non_negative("ping_interval_seconds", self.ping_interval_seconds)


@dataclass(frozen=True)
class Funnel:
    """Carts, checkouts, payments, orders and what happens to orders later.

    Attributes:
        p_add_to_cart: share of sessions that create a cart (``add_to_cart_rate``).
        p_checkout: share of carts that reach ``checkout_started``.
        p_order: share of checkouts that end in ``order_placed`` (after payment retries).
        p_payment_failure: chance that one payment attempt fails (``payment_failed``); an
            order may follow failed attempts, a lost checkout may have some.
        p_remove: share of carts (of more than one unit) with a ``remove_from_cart``.
        p_guest: share of orders by a guest (no ``customer_id``, no ``customer_order_index``).
        p_order_without_cart_id: share of web orders that omit ``cart_id`` (the processor
            converts the session's open cart).
        p_discount: share of orders with a discount.
        p_cancel: share of orders cancelled later (median 20 minutes after).
        p_refund: share of the remaining orders refunded later (median 3 hours after), fully
            or one line.
        offline_orders_per_session: orders with no session (phone, marketplace; keyed by
            ``order_id``) per web session.
        catalog_size: products per store (popularity is Zipf-like).
        median_price_usd: median product price, converted to each store's currency.
    """

    p_add_to_cart: float = 0.10
    p_checkout: float = 0.45
    p_order: float = 0.75
    p_payment_failure: float = 0.08
    p_remove: float = 0.15
    p_guest: float = 0.25
    p_order_without_cart_id: float = 0.1
    p_discount: float = 0.2
    p_cancel: float = 0.02
    p_refund: float = 0.05
    offline_orders_per_session: float = 0.005
    catalog_size: int = 2000
    median_price_usd: float = 35.0

    def __post_init__(self) -> None:
        for name in _FUNNEL_PROBABILITIES:
            check_probability(name, getattr(self, name))
        check_int("catalog_size", self.catalog_size, low=1)
        check_positive("median_price_usd", self.median_price_usd)


_FUNNEL_PROBABILITIES = (
    "p_add_to_cart",
    "p_checkout",
    "p_order",
    "p_payment_failure",
    "p_remove",
    "p_guest",
    "p_order_without_cart_id",
    "p_discount",
    "p_cancel",
    "p_refund",
    "offline_orders_per_session",
)


_TICKET_CHANNELS = {"email": 0.35, "chat": 0.30, "web_form": 0.20, "phone": 0.10, "social": 0.05}
_PRIORITIES = {"low": 0.20, "normal": 0.55, "high": 0.20, "urgent": 0.05}
_FIRST_RESPONSE = {
    "urgent": 600.0,
    "high": 1800.0,
    "normal": 7200.0,
    "low": 21600.0,
    "other": 7200.0,
}
_RESOLUTION = {
    "urgent": 7200.0,
    "high": 21600.0,
    "normal": 57600.0,
    "low": 129600.0,
    "other": 57600.0,
}


@dataclass(frozen=True)
class Support:
    """Support tickets, their conversations and satisfaction surveys.

    Attributes:
        tickets_per_session: tickets opened per web session (a thinned arrival process).
        channel_mix: weight of each ticket ``channel``.
        priority_mix: weight of each ``priority``.
        first_response_median_seconds: median delay of the first agent message, per priority,
            for email and web forms (chat and phone answer ~20x faster, social ~2x).
        resolution_median_seconds: median time from opening to ``ticket_resolved``, per
            priority (chat and phone ~5x faster).
        delay_sigma: log-normal sigma of both delays (1.0: p90 is ~3.6x the median).
        p_escalation: share of tickets escalated (twice as many among urgent ones).
        p_reopen: share of resolved tickets reopened hours later (then resolved again).
        p_survey: share of resolutions followed by a survey.
        nps_share: share of surveys that are NPS (0-10); the others are CSAT (1-5).
        p_order_survey: share of orders followed by an NPS survey without a ticket.
    """

    tickets_per_session: float = 0.01
    channel_mix: Mapping[str, float] = field(
        default_factory=lambda: MappingProxyType(_TICKET_CHANNELS)
    )
    priority_mix: Mapping[str, float] = field(default_factory=lambda: MappingProxyType(_PRIORITIES))
    first_response_median_seconds: Mapping[str, float] = field(
        default_factory=lambda: MappingProxyType(_FIRST_RESPONSE)
    )
    resolution_median_seconds: Mapping[str, float] = field(
        default_factory=lambda: MappingProxyType(_RESOLUTION)
    )
    delay_sigma: float = 1.0
    p_escalation: float = 0.08
    p_reopen: float = 0.06
    p_survey: float = 0.3
    nps_share: float = 0.3
    p_order_survey: float = 0.03

    def __post_init__(self) -> None:
        check_probability("tickets_per_session", self.tickets_per_session)
        freeze(self, "channel_mix", frozen_mix("channel_mix", self.channel_mix, m.TICKET_CHANNELS))
        freeze(self, "priority_mix", frozen_mix("priority_mix", self.priority_mix, m.PRIORITIES))
        for name in ("first_response_median_seconds", "resolution_median_seconds"):
            medians = frozen_mix(name, getattr(self, name), m.PRIORITIES)
            for priority in self.priority_mix:
                check(
                    medians.get(priority, 0) > 0,
                    f"{name}[{priority!r}]",
                    "a positive number (priority_mix uses it)",
                    medians.get(priority),
                )
            freeze(self, name, medians)
        check_positive("delay_sigma", self.delay_sigma)
        for name in ("p_escalation", "p_reopen", "p_survey", "nps_share", "p_order_survey"):
            check_probability(name, getattr(self, name))
