"""Sessions: clickstream and cart events of a ``session_id``, split at gaps of the timeout."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field

from reference.common import (
    WEB_TYPES,
    Event,
    Fact,
    ReferenceSettings,
    earliest,
    of_type,
    time_order,
)

BOUNCE_TYPES = ("session_start", "page_view", "page_ping")


@dataclass
class Session:
    """One session: its events in time order, and the orders that belong to it."""

    session_id: str
    events: list[Event]
    orders: list[Event] = field(default_factory=list)

    @property
    def start_ms(self) -> int:
        return int(self.events[0]["event_time"])

    @property
    def end_ms(self) -> int:
        return int(self.events[-1]["event_time"])

    @property
    def store_id(self) -> str:
        return str(self.events[0]["store_id"])

    @property
    def first_session_start(self) -> Event | None:
        return earliest(of_type(self.events, "session_start"))

    @property
    def channel_group(self) -> str:
        start = self.first_session_start
        return "other" if start is None else str(start["channel_group"])

    @property
    def device_type(self) -> str:
        start = self.first_session_start
        if start is not None and start.get("device_type") is not None:
            return str(start["device_type"])
        for event in self.events:
            if event.get("device_type") is not None:
                return str(event["device_type"])
        return "other"

    @property
    def session_index(self) -> int | None:
        start = self.first_session_start
        return None if start is None else start.get("session_index")

    @property
    def dimensions(self) -> tuple[str, ...]:
        return (f"channel_group={self.channel_group}", f"device_type={self.device_type}")

    @property
    def page_views(self) -> int:
        return len(of_type(self.events, "page_view"))

    @property
    def bounced(self) -> bool:
        others = [e for e in self.events if e["event_type"] not in BOUNCE_TYPES]
        return self.page_views == 1 and not others and not self.orders

    def holds(self, time_ms: int, settings: ReferenceSettings) -> bool:
        """Whether an order at ``time_ms`` belongs to this session (its id matching)."""
        return self.start_ms <= time_ms < self.end_ms + settings.session_timeout_ms


def build_sessions(events: Iterable[Event], settings: ReferenceSettings) -> list[Session]:
    """All sessions of the accepted events."""
    by_id: dict[str, list[Event]] = {}
    for event in of_type(events, *WEB_TYPES):
        by_id.setdefault(event["session_id"], []).append(event)
    sessions: list[Session] = []
    for session_id, session_events in by_id.items():
        session_events.sort(key=time_order)
        current = [session_events[0]]
        for previous, event in itertools.pairwise(session_events):
            if event["event_time"] - previous["event_time"] >= settings.session_timeout_ms:
                sessions.append(Session(session_id, current))
                current = []
            current.append(event)
        sessions.append(Session(session_id, current))
    return sessions


class SessionIndex:
    """Finds the session an event belongs to."""

    def __init__(self, sessions: list[Session], settings: ReferenceSettings) -> None:
        self._settings = settings
        self._by_event_id = {e["event_id"]: s for s in sessions for e in s.events}
        self._by_session_id: dict[str, list[Session]] = {}
        for session in sessions:
            self._by_session_id.setdefault(session.session_id, []).append(session)

    def of_web_event(self, event: Event) -> Session:
        """The session of a clickstream or cart event."""
        return self._by_event_id[event["event_id"]]

    def of_order(self, order: Event) -> Session | None:
        """The session an ``order_placed`` belongs to, if any."""
        if order.get("session_id") is None:
            return None
        for session in self._by_session_id.get(order["session_id"], []):
            if session.holds(order["event_time"], self._settings):
                return session
        return None


def session_facts(session: Session) -> list[Fact]:
    """What a session counts, at its start and store (every session is closed at the end)."""

    def fact(counter: str, amount: int = 1, dimensions: tuple[str, ...] = ()) -> Fact:
        return Fact(counter, session.start_ms, session.store_id, dimensions, amount)

    facts = [
        fact("sessions", dimensions=session.dimensions),
        fact("session_page_views", session.page_views),
        fact("session_duration_ms", session.end_ms - session.start_ms),
    ]
    if session.bounced:
        facts.append(fact("sessions_bounced"))
    if session.orders:
        facts.append(fact("sessions_with_order"))
    if of_type(session.events, "add_to_cart"):
        facts.append(fact("sessions_with_add_to_cart"))
    if session.session_index is not None:
        facts.append(fact("sessions_with_index"))
        if session.session_index == 1:
            facts.append(fact("sessions_new"))
    return facts
