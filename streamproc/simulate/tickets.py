"""Support tickets: opening, conversation, escalation, resolution, reopening, surveys.

The customer writes when the ticket opens (a bot may answer chats and web forms at once); the
first agent message comes after a log-normal delay whose median depends on the priority (and is
much shorter on chat and phone); a few more messages may follow; the resolution comes hours
later. Later events repeat ``opened_at``. Helpdesk events due inside an idle gap wait for its end.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from streamproc.events.models import Family
from streamproc.simulate.orders import CSAT_SCORES, NPS_SCORES
from streamproc.simulate.sampling import Weighted, between_ms, geometric, lognormal_ms
from streamproc.simulate.visits import Visitors
from streamproc.simulate.world import World

CATEGORIES = Weighted(
    {
        "order_status": 0.30,
        "returns": 0.20,
        "shipping": 0.15,
        "payment": 0.10,
        "product_question": 0.15,
        "account": 0.07,
        "other": 0.03,
    }
)
# Multipliers of the priority's median delays, per channel: chats and calls are answered live.
FIRST_RESPONSE_SPEED = {"chat": 0.05, "phone": 0.05, "social": 0.5}
RESOLUTION_SPEED = {"chat": 0.2, "phone": 0.2, "social": 0.6}
CUSTOMER_REPLY_MEDIAN_SECONDS = 1800.0
REOPEN_MEDIAN_SECONDS = 6 * 3600.0
SURVEY_MEDIAN_SECONDS = 1800.0


@dataclass(slots=True)
class Ticket:
    """The fields every event of one ticket carries."""

    base: dict[str, Any]
    store_id: str
    channel: str
    priority: str


def open_ticket(world: World, visitors: Visitors, t_ms: int) -> None:
    """Open a ticket at ``t_ms`` and schedule its whole life."""
    rng = world.rng
    support = world.config.support
    store = world.catalog.pick_store(rng)
    base: dict[str, Any] = {"ticket_id": world.new_id("t")}
    visitor = visitors.anyone(rng, store)
    if visitor is not None and visitor.customer_id is not None:
        base["customer_id"] = visitor.customer_id
    channel, priority = Weighted(support.channel_mix)(rng), Weighted(support.priority_mix)(rng)
    ticket = Ticket(base, store.store_id, channel, priority)
    opened = _event(world, ticket, t_ms, "ticket_opened")
    opened.update(channel=ticket.channel, priority=ticket.priority, category=CATEGORIES(rng))
    if not world.emit(t_ms, Family.TICKETS, opened):
        return
    base["opened_at"] = t_ms
    _say(world, ticket, t_ms + between_ms(rng, 1, 60), "message_added", "customer")
    if ticket.channel in ("chat", "web_form") and rng.random() < 0.5:
        _say(world, ticket, t_ms + between_ms(rng, 2, 20), "message_added", "bot")
    t_last = _conversation(world, ticket, t_ms)
    resolution = _delay(world, ticket, support.resolution_median_seconds, RESOLUTION_SPEED)
    t_resolved = max(t_ms + resolution, t_last + between_ms(rng, 60, 900))
    t_resolved = _say(world, ticket, t_resolved, "ticket_resolved")
    _survey(world, ticket, t_resolved)
    if rng.random() < support.p_reopen:
        _reopen(world, ticket, t_resolved)


def _conversation(world: World, ticket: Ticket, t_ms: int) -> int:
    """First agent response, maybe an escalation and more messages; returns the last message."""
    rng = world.rng
    support = world.config.support
    first = _delay(world, ticket, support.first_response_median_seconds, FIRST_RESPONSE_SPEED)
    t_last = _say(world, ticket, t_ms + first, "message_added", "agent")
    p_escalation = support.p_escalation * (2 if ticket.priority == "urgent" else 1)
    if rng.random() < p_escalation:
        _say(world, ticket, t_last + between_ms(rng, 60, 3600), "ticket_escalated")
    for _ in range(geometric(rng, 0.8)):
        reply = lognormal_ms(rng, CUSTOMER_REPLY_MEDIAN_SECONDS, support.delay_sigma)
        t_last = _say(world, ticket, t_last + reply, "message_added", "customer")
        answer = _delay(world, ticket, support.first_response_median_seconds, FIRST_RESPONSE_SPEED)
        t_last = _say(world, ticket, t_last + answer, "message_added", "agent")
    return t_last


def _reopen(world: World, ticket: Ticket, t_resolved: int) -> None:
    rng = world.rng
    support = world.config.support
    t_ms = t_resolved + lognormal_ms(rng, REOPEN_MEDIAN_SECONDS, support.delay_sigma)
    t_ms = _say(world, ticket, t_ms, "ticket_reopened")
    t_ms = _say(world, ticket, t_ms + between_ms(rng, 1, 120), "message_added", "customer")
    first = _delay(world, ticket, support.first_response_median_seconds, FIRST_RESPONSE_SPEED)
    t_ms = _say(world, ticket, t_ms + first, "message_added", "agent")
    again = _delay(world, ticket, support.resolution_median_seconds, RESOLUTION_SPEED) // 3
    _say(world, ticket, t_ms + max(again, 60_000), "ticket_resolved")


def _survey(world: World, ticket: Ticket, t_resolved: int) -> None:
    rng = world.rng
    support = world.config.support
    if rng.random() >= support.p_survey:
        return
    t_ms = world.backend_time(t_resolved + lognormal_ms(rng, SURVEY_MEDIAN_SECONDS, 1.0))
    survey = world.backend_event(t_ms, "survey_response", ticket.store_id)
    survey.update(ticket.base)
    nps = rng.random() < support.nps_share
    survey["survey_type"] = "nps" if nps else "csat"
    survey["score"] = NPS_SCORES(rng) if nps else CSAT_SCORES(rng)
    world.emit(t_ms, Family.TICKETS, survey)


def _delay(world: World, ticket: Ticket, medians: Any, speeds: dict[str, float]) -> int:
    median = medians[ticket.priority] * speeds.get(ticket.channel, 1.0)
    return max(1000, lognormal_ms(world.rng, median, world.config.support.delay_sigma))


def _event(world: World, ticket: Ticket, t_ms: int, event_type: str) -> dict[str, Any]:
    event = world.backend_event(t_ms, event_type, ticket.store_id)
    event.update(ticket.base)
    return event


def _say(world: World, ticket: Ticket, t_ms: int, event_type: str, author: str = "") -> int:
    """Send one ticket event (moved past an idle gap if due in one); returns its time."""
    t_ms = world.backend_time(t_ms)
    event = _event(world, ticket, t_ms, event_type)
    if author:
        event["author_type"] = author
    world.emit(t_ms, Family.TICKETS, event)
    return t_ms
