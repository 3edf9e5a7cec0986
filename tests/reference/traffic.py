"""Page views and unique visitors: per event, at its own time and store."""

from __future__ import annotations

from reference.common import WEB_TYPES, Event, Fact, of_type
from reference.sessions import SessionIndex


def page_view_facts(events: list[Event], sessions: SessionIndex) -> list[Fact]:
    """Each ``page_view``, broken down by the dimensions of its session."""
    return [
        Fact("page_views", e["event_time"], e["store_id"], sessions.of_web_event(e).dimensions)
        for e in of_type(events, "page_view")
    ]


def visitor_dimensions(event: Event, sessions: SessionIndex) -> tuple[str, ...]:
    """The event's session's, else ``other`` and the event's own device type."""
    if event["event_type"] in WEB_TYPES:
        return sessions.of_web_event(event).dimensions
    if event["event_type"] == "order_placed":
        session = sessions.of_order(event)
        if session is not None:
            return session.dimensions
    return ("channel_group=other", f"device_type={event.get('device_type') or 'other'}")


def visitor_facts(events: list[Event], sessions: SessionIndex) -> list[Fact]:
    """One fact per accepted event that carries a ``visitor_id`` (any topic)."""
    return [
        Fact(
            "visitors",
            e["event_time"],
            e["store_id"],
            visitor_dimensions(e, sessions),
            visitor_id=e["visitor_id"],
        )
        for e in events
        if e.get("visitor_id") is not None
    ]
