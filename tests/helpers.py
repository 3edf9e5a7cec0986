"""Test helpers: one valid example of every event type of the contract."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from streamproc.errors import Fenced
from streamproc.events import models as m
from streamproc.events.models import FAMILY_OF_TYPE, MONEY_FIELDS, Family
from streamproc.events.parse import EventDecoder
from streamproc.simulate import Anomalies, SimConfig, TimeRange, simulate, write_jsonl

T0_MS = 1_790_000_000_000  # 2026-09-21T14:13:20Z
NOW_MS = T0_MS + 3_600_000

_ENVELOPE: dict[str, Any] = {
    "event_time": "2026-09-21T14:13:20.250Z",
    "store_id": "store-01",
    "visitor_id": "v-1",
    "session_id": "s-1",
    "device_type": "mobile",
}

EXAMPLES: dict[str, dict[str, Any]] = {
    "session_start": {
        "channel_group": "email",
        "session_index": 1,
        "utm_source": "newsletter",
        "country": "DE",
    },
    "page_view": {"page_type": "product", "page_path": "/p/1"},
    "product_view": {"product_id": "p-1", "price_minor": 1999, "currency": "USD"},
    "page_ping": {"engagement_ms": 15000},
    "add_to_cart": {
        "cart_id": "c-1",
        "product_id": "p-1",
        "quantity": 2,
        "unit_price_minor": 1999,
        "currency": "USD",
    },
    "remove_from_cart": {"cart_id": "c-1", "product_id": "p-1", "quantity": 1},
    "checkout_started": {"cart_id": "c-1"},
    "payment_failed": {"cart_id": "c-1", "error_code": "card_declined"},
    "order_placed": {
        "order_id": "o-1",
        "total_minor": 4498,
        "currency": "USD",
        "cart_id": "c-1",
        "customer_order_index": 1,
        "items": [{"product_id": "p-1", "quantity": 2, "unit_price_minor": 1999}],
        "shipping_minor": 500,
        "tax_minor": 0,
        "discount_minor": 0,
    },
    "order_refunded": {"order_id": "o-1", "refund_minor": 1999, "currency": "USD"},
    "order_cancelled": {"order_id": "o-1"},
    "ticket_opened": {"ticket_id": "t-1", "channel": "chat", "priority": "high", "category": "x"},
    "message_added": {"ticket_id": "t-1", "author_type": "agent"},
    "ticket_escalated": {"ticket_id": "t-1"},
    "ticket_resolved": {"ticket_id": "t-1", "opened_at": "2026-09-21T13:00:00Z"},
    "ticket_reopened": {"ticket_id": "t-1"},
    "survey_response": {"survey_type": "nps", "score": 9, "ticket_id": "t-1"},
}

# Required fields per event type, beyond event_id / event_type / event_time.
REQUIRED: dict[str, tuple[str, ...]] = {
    "session_start": ("visitor_id", "session_id"),
    "page_view": ("visitor_id", "session_id"),
    "product_view": ("visitor_id", "session_id"),
    "page_ping": ("visitor_id", "session_id"),
    "add_to_cart": ("visitor_id", "session_id", "cart_id"),
    "remove_from_cart": ("visitor_id", "session_id", "cart_id"),
    "checkout_started": ("visitor_id", "session_id", "cart_id"),
    "payment_failed": ("visitor_id", "session_id", "cart_id"),
    "order_placed": ("order_id", "total_minor", "currency"),
    "order_refunded": ("order_id", "refund_minor", "currency"),
    "order_cancelled": ("order_id",),
    "ticket_opened": ("ticket_id",),
    "message_added": ("ticket_id", "author_type"),
    "ticket_escalated": ("ticket_id",),
    "ticket_resolved": ("ticket_id",),
    "ticket_reopened": ("ticket_id",),
    "survey_response": ("survey_type", "score"),
}


def make_event(kind: str, /, **overrides: Any) -> dict[str, Any]:
    """A valid event of type ``kind``; ``overrides`` replace fields (value None removes one)."""
    event: dict[str, Any] = {"event_id": f"e-{kind}", "event_type": kind}
    event.update(_ENVELOPE)
    event.update(EXAMPLES[kind])
    for key, value in overrides.items():
        if value is None:
            event.pop(key, None)
        else:
            event[key] = value
    return event


_DECODER = EventDecoder()


def decoded(kind: str, t: int, eid: str, /, **overrides: Any) -> m.Event:
    """``make_event(kind)`` at epoch ms ``t`` with id ``eid``, decoded as the engine gets it."""
    raw = dumps(make_event(kind, event_id=eid, event_time=t, **overrides))
    return _DECODER.decode(raw, FAMILY_OF_TYPE[kind], now_ms=t)


def wrong_value(field: str, value: Any) -> Any:
    """A value of the wrong JSON type for ``field``."""
    if field in {"event_time", "opened_at"}:
        return [value]
    if isinstance(value, bool | int):
        return "12"
    if isinstance(value, str):
        return 12345
    if isinstance(value, list):
        return "not-a-list"
    return 1


def invalid_variants(kind: str, *, future_ms: int) -> list[tuple[str, bytes, str]]:
    """(label, message bytes, expected reason) for every way an event of ``kind`` can be bad."""
    cases: list[tuple[str, bytes, str]] = []
    for field in ("event_id", "event_type", "event_time", *REQUIRED[kind]):
        cases.append(
            (f"{kind} without {field}", dumps(make_event(kind, **{field: None})), "missing_field")
        )
    for field, value in make_event(kind).items():
        if field != "event_type":
            bad = make_event(kind, **{field: wrong_value(field, value)})
            cases.append((f"{kind} {field} wrong type", dumps(bad), "wrong_type"))
    for field in EXAMPLES[kind]:
        if field in MONEY_FIELDS:
            cases.append(
                (f"{kind} {field} < 0", dumps(make_event(kind, **{field: -1})), "negative_money")
            )
    if "currency" in EXAMPLES[kind]:
        cases.append(
            (f"{kind} in CHF", dumps(make_event(kind, currency="CHF")), "unknown_currency")
        )
    if kind == "survey_response":
        for survey, score in (("csat", 0), ("csat", 6), ("nps", 11)):
            bad = make_event(kind, survey_type=survey, score=score)
            cases.append((f"{survey} score {score}", dumps(bad), "score_out_of_range"))
    cases.append(
        (f"{kind} in the future", dumps(make_event(kind, event_time=future_ms)), "future_time")
    )
    oversize = make_event(kind, padding="x" * 70_000)
    cases.append((f"{kind} oversize", dumps(oversize), "too_large"))
    cases.append((f"{kind} not JSON", b'{"event_type": "' + kind.encode() + b'", ', "not_json"))
    cases.append((f"{kind} not an object", b'["' + kind.encode() + b'"]', "not_object"))
    return cases


def family(event_type: str) -> Family:
    return FAMILY_OF_TYPE[event_type]


def dumps(event: dict[str, Any]) -> bytes:
    return json.dumps(event, separators=(",", ":")).encode()


def anomalous_traffic(
    *, start: datetime, minutes: float, seed: int, rate: float, episodes: bool = True
) -> list[bytes]:
    """Simulated traffic with every anomaly, three stores and two currencies (store-02 in EUR),
    as events-file lines; with ``episodes`` also an abandonment spike 40-60 min and an idle gap
    100-115 min after ``start``."""
    at = lambda minute: start + timedelta(minutes=minute)  # noqa: E731
    config = SimConfig(
        start=start,
        duration_seconds=int(minutes * 60),
        seed=seed,
        sessions_per_minute=rate,
        stores=3,
        currencies={"store-02": "EUR"},
        anomalies=Anomalies(
            duplicate_share=0.02,
            out_of_order_share=0.03,
            late_share=0.01,
            too_late_share=0.005,
            malformed_share=0.01,
            abandonment_spikes=(TimeRange(at(40), at(60)),) if episodes else (),
            idle_gaps=(TimeRange(at(100), at(115)),) if episodes else (),
        ),
    )
    out = io.BytesIO()
    write_jsonl(simulate(config), out)
    return out.getvalue().splitlines()


class Lease:
    """A worker's lease on its partitions (``worker.contracts.Lease``) for pipelines run without
    a consumer group: generation 0, held, until ``fence_after`` more confirms have passed (then
    each raises ``Fenced``, as when the group moved on)."""

    def __init__(self, fence_after: int | None = None) -> None:
        self.fence_after = fence_after
        self.confirmed: list[str] = []

    def generation(self) -> int:
        return 0

    async def confirm(self, what: str, generation: int) -> None:
        if self.fence_after is not None and len(self.confirmed) >= self.fence_after:
            raise Fenced(f"{what} is dropped: the group moved on")
        self.confirmed.append(what)


async def until(check: Callable[[], bool], *, timeout_s: float = 5.0, poll_s: float = 0.02) -> None:
    """Wait until ``check()`` is true; fail after ``timeout_s``."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(poll_s)
