"""Support tickets (opening, first response, resolution, escalation, open now) and surveys."""

from __future__ import annotations

from dataclasses import dataclass

from reference.common import Event, Fact, earliest, of_type, time_order

TICKET_TYPES = (
    "ticket_opened",
    "message_added",
    "ticket_escalated",
    "ticket_resolved",
    "ticket_reopened",
)


@dataclass
class Ticket:
    """The events of one ``ticket_id`` (survey responses are not among them), in time order."""

    events: list[Event]

    @property
    def first_opened(self) -> Event | None:
        return earliest(of_type(self.events, "ticket_opened"))

    @property
    def opening_ms(self) -> int | None:
        opened = self.first_opened
        if opened is not None:
            return int(opened["event_time"])
        stamps = [e["opened_at"] for e in self.events if e.get("opened_at") is not None]
        return min(stamps) if stamps else None

    @property
    def store_id(self) -> str:
        opened = self.first_opened
        return str((opened or self.events[0])["store_id"])

    @property
    def channel(self) -> str:
        opened = self.first_opened
        return "other" if opened is None else str(opened["channel"])

    @property
    def priority(self) -> str:
        opened = self.first_opened
        return "other" if opened is None else str(opened["priority"])

    def first_after_opening(self, event_type: str, author_type: str | None = None) -> Event | None:
        """The earliest event of a type (and author) at or after the opening time."""
        opening = self.opening_ms
        if opening is None:
            return None
        return earliest(
            e
            for e in of_type(self.events, event_type)
            if e["event_time"] >= opening
            and (author_type is None or e.get("author_type") == author_type)
        )

    @property
    def is_open(self) -> bool:
        """Whether its latest opened / reopened / resolved event is not a resolution."""
        states = of_type(self.events, "ticket_opened", "ticket_reopened", "ticket_resolved")
        return bool(states) and states[-1]["event_type"] != "ticket_resolved"


def build_tickets(events: list[Event]) -> list[Ticket]:
    by_id: dict[str, list[Event]] = {}
    for event in of_type(events, *TICKET_TYPES):
        by_id.setdefault(event["ticket_id"], []).append(event)
    return [Ticket(sorted(ticket_events, key=time_order)) for ticket_events in by_id.values()]


def ticket_facts(ticket: Ticket) -> list[Fact]:
    """Durations at the response / resolution time, escalation at the earliest one; all in
    the ticket's store."""
    facts: list[Fact] = []
    opening = ticket.opening_ms
    response = ticket.first_after_opening("message_added", "agent")
    if response is not None and opening is not None:
        at = (response["event_time"], ticket.store_id)
        facts.append(Fact("first_response_ms", *at, amount=response["event_time"] - opening))
    resolution = ticket.first_after_opening("ticket_resolved")
    if resolution is not None and opening is not None:
        at = (resolution["event_time"], ticket.store_id)
        facts.append(Fact("resolution_ms", *at, amount=resolution["event_time"] - opening))
    escalation = earliest(of_type(ticket.events, "ticket_escalated"))
    if escalation is not None:
        facts.append(Fact("tickets_escalated", escalation["event_time"], ticket.store_id))
    return facts


def opened_facts(events: list[Event]) -> list[Fact]:
    """Each ``ticket_opened`` event, at its own time and store, by its own channel."""
    return [
        Fact("tickets_opened", e["event_time"], e["store_id"], (f"channel={e['channel']}",))
        for e in of_type(events, "ticket_opened")
    ]


def survey_facts(events: list[Event]) -> list[Fact]:
    """CSAT and NPS responses at their own time and store; ``survey_type=other`` counts nowhere."""
    facts: list[Fact] = []
    for survey in of_type(events, "survey_response"):
        at = (survey["event_time"], survey["store_id"])
        score = survey["score"]
        if survey["survey_type"] == "csat":
            facts.append(Fact("csat_responses", *at))
            facts.append(Fact("csat_score_sum", *at, amount=score))
            if score >= 4:
                facts.append(Fact("csat_positive", *at))
        elif survey["survey_type"] == "nps":
            facts.append(Fact("nps_responses", *at))
            if score >= 9:
                facts.append(Fact("nps_promoters", *at))
            if score <= 6:
                facts.append(Fact("nps_detractors", *at))
    return facts
