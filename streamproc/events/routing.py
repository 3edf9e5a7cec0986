"""Which topic and which Kafka key an event goes to (``docs/events.md``, "Topics and keys").

These rules work on the raw JSON object, so that tools can route events without validating them:
a bad event still reaches the topic where the processor will dead-letter it.

An events file (JSONL) holds one event object per line. A line may instead be a *raw message*
``{"__raw__": "<payload text>", "__family__": "clickstream", "__key__": "k", "__timestamp__": ms}``
(or ``"__raw_b64__": "<base64 bytes>"`` for payloads that are not UTF-8): the payload is sent as-is
with that key and Kafka timestamp, which is how the simulator injects messages that are not even
JSON.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from streamproc.events.models import FAMILY_OF_TYPE, Family

RAW_PAYLOAD = "__raw__"
RAW_PAYLOAD_B64 = "__raw_b64__"
RAW_FAMILY = "__family__"
RAW_KEY = "__key__"
RAW_TIMESTAMP = "__timestamp__"


def family_of(event: Mapping[str, Any]) -> Family | None:
    """The topic family of an event object, or None when its event_type is unknown."""
    event_type = event.get("event_type")
    return FAMILY_OF_TYPE.get(event_type) if isinstance(event_type, str) else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def key_for(event: Mapping[str, Any], family: Family) -> str | None:
    """The Kafka key prescribed for an event of ``family``.

    clickstream and cart: ``session_id``; orders: ``session_id``, else ``order_id``; tickets:
    ``ticket_id``, else (a survey without a ticket) ``customer_id``, else ``event_id``.
    """
    if family is Family.TICKETS:
        return (
            _text(event.get("ticket_id"))
            or _text(event.get("customer_id"))
            or _text(event.get("event_id"))
        )
    if family is Family.ORDERS:
        return _text(event.get("session_id")) or _text(event.get("order_id"))
    return _text(event.get("session_id"))
