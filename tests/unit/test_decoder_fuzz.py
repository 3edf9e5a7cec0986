"""Fuzzing the contract: whatever bytes arrive, ``EventDecoder.decode`` returns an event or raises
InvalidEvent, and every event it accepts can be absorbed by the engine, stored and read back.

Three sources of input: arbitrary bytes, arbitrary JSON values, and valid events (``make_event``)
with fields replaced by hostile values (wrong types, huge integers, NaN, huge strings, deep
nesting, invalid UTF-8, times and bounds at their edges). Derandomized: CI runs the same examples.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from helpers import EXAMPLES, NOW_MS, dumps, make_event
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamproc.errors import InvalidEvent
from streamproc.events import models as m
from streamproc.events.parse import MAX_DEPTH, MAX_EPOCH_MS, MIN_EPOCH_MS, EventDecoder, Reason
from streamproc.kpi import records
from streamproc.kpi.batch import FAMILY_INDEX, EngineSettings, Item, Progress
from streamproc.kpi.engine import PartitionEngine
from streamproc.offline import MemoryState

# A failing example can hold a 60 KB string: hypothesis warns that its repr is large.
pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")

FUZZ = settings(
    max_examples=250,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
DECODER = EventDecoder(
    fx_rates={"EUR": Decimal("1.10"), "JPY": Decimal("0.0067"), "KWD": Decimal("3.25")}
)
REASONS = frozenset(Reason)
KINDS = sorted(EXAMPLES)
ALL_FAMILIES = list(m.Family)
# A clock at the far end of the accepted times lets events of year 9999 through to the engine.
CLOCKS = st.sampled_from([NOW_MS, MAX_EPOCH_MS])
ENDED = Progress(ended=frozenset(FAMILY_INDEX.values()))


# --- the properties -----------------------------------------------------------------------------


def decode(raw: bytes, family: m.Family, now_ms: int) -> m.Event | None:
    """The event, or None when rejected; any other outcome fails the test."""
    try:
        event = DECODER.decode(raw, family, now_ms=now_ms)
    except InvalidEvent as exc:
        assert exc.reason in REASONS, exc
        return None
    assert isinstance(event, m.FAMILY_TYPES[family])
    return event


def absorb(events: list[tuple[m.Family, m.Event]]) -> None:
    """The events go through one partition's engine; its state encodes and decodes again."""
    store = MemoryState()
    engine = PartitionEngine(0, EngineSettings(), store)
    items = [
        Item(event, FAMILY_INDEX[family], offset, event.store_id)
        for offset, (family, event) in enumerate(events)
    ]
    verdicts = engine.read(items, Progress())
    store.apply(engine.apply(verdicts.on_time, Progress(), store).writes)
    # the input ends: every session, cart and ticket is decided (and evicted or kept)
    store.apply(engine.apply([], ENDED, store).writes)
    for key, raw in store.items():
        RECORD_DECODERS[key.split("|", 1)[1][0]](raw)
    PartitionEngine(0, EngineSettings(), store)  # a restart reads the whole state back


# The engine's store keys are "{partition}|{kind}..." (engine.py).
RECORD_DECODERS: dict[str, Callable[[bytes], object]] = {
    "m": records.decode_meta,
    "f": records.decode_frozen,
    "s": records.decode_session,
    "o": records.decode_session,
    "t": records.decode_ticket,
    "v": records.decode_ticket,
}


def decode_and_absorb(messages: list[bytes], now_ms: int) -> None:
    accepted = []
    for raw in messages:
        for family in ALL_FAMILIES:
            event = decode(raw, family, now_ms)
            if event is not None:
                accepted.append((family, event))
    absorb(accepted)


# --- hostile values -----------------------------------------------------------------------------


class Raw(bytes):
    """JSON text (or not: invalid UTF-8) spliced into a message as it is."""


def encode(event: dict[str, Any]) -> bytes:
    """JSON of ``event`` with NaN/Infinity literals allowed and Raw values spliced in."""
    spliced: dict[str, Any] = {}
    for key, value in event.items():
        spliced[key] = f"@raw-{key}@" if isinstance(value, Raw) else value
    text = json.dumps(spliced, separators=(",", ":"), allow_nan=True).encode()
    for key, value in event.items():
        if isinstance(value, Raw):
            text = text.replace(json.dumps(f"@raw-{key}@").encode(), bytes(value), 1)
    return text


def nested(levels: int, *, unknown_keys: bool) -> Raw:
    opener, closer = (b'{"k":', b"}") if unknown_keys else (b"[", b"]")
    return Raw(opener * levels + b"1" + closer * levels)


BOUNDS = [
    0,
    1,
    -1,
    m.MAX_MONEY_MINOR,
    m.MAX_QUANTITY,
    m.MAX_INT32,
    m.MIN_SCORE,
    m.MAX_SCORE,
    MIN_EPOCH_MS,
    MAX_EPOCH_MS,
    NOW_MS,
    2**53,
    2**63 - 1,
    2**64 - 1,
]
EDGE_INTS = st.sampled_from(
    [b + d for b in BOUNDS for d in (-1, 0, 1)] + [10**19, 10**400, -(10**400), -(2**63) - 1]
)
EDGE_TIME_TEXT = st.sampled_from(
    [
        "0001-01-01T00:00:00Z",
        "0001-01-01T00:00:00+23:59",
        "1999-12-31T23:59:59.999Z",
        "2000-01-01T00:00:00Z",
        "2000-01-01T00:00:00+00:01",
        "9999-12-31T23:59:59.999Z",
        "9999-12-31T23:59:59.999999+23:59",
        "9999-12-31T23:59:59.999-00:01",
        "9999-12-31T23:59:59.9999999999Z",
        "2026-02-30T00:00:00Z",
        "2026-09-21T14:13:20",
        "2026-09-21",
        "2026-W38-1T00:00:00Z",
        "+10000-01-01T00:00:00Z",
        "2026-09-21T14:13:20.250\x00Z",
        "",
    ]
)
ANY_TIME_TEXT = st.datetimes(
    min_value=datetime(1, 1, 2),  # noqa: DTZ001 - hypothesis adds the zone below
    max_value=datetime(9999, 12, 30),  # noqa: DTZ001
    timezones=st.sampled_from(
        [UTC, timezone(timedelta(hours=23, minutes=59)), timezone(-timedelta(hours=23, minutes=59))]
    ),
).map(lambda dt: dt.isoformat())
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | EDGE_INTS
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -0.0])
    | st.text(max_size=12)
    | st.sampled_from(["other", "USD", "eur", "KWD", "CHF", "csat", "nps", "agent", ""])
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=6) | st.sampled_from(sorted(m.MONEY_FIELDS)), children)
    ),
    max_leaves=12,
)
HUGE_TEXT = st.sampled_from(["x" * 60_000, "é" * 30_000, "x" * 70_000, "[" * 5000, '\\"' * 3000])
DEEP = st.builds(
    nested,
    st.sampled_from([MAX_DEPTH - 2, MAX_DEPTH - 1, MAX_DEPTH, 1000, 20_000]),
    unknown_keys=st.booleans(),
)
INVALID_UTF8 = st.sampled_from([Raw(b'"\xff\xfe"'), Raw(b'"\xc3"'), Raw(b'"\xed\xa0\x80"')])
NAN_LITERALS = st.sampled_from([Raw(b"NaN"), Raw(b"Infinity"), Raw(b"-Infinity"), Raw(b"1e400")])
ITEMS = st.lists(
    st.fixed_dictionaries(
        {},
        optional={
            "product_id": st.text(max_size=5) | SCALARS,
            "quantity": EDGE_INTS | SCALARS,
            "unit_price_minor": EDGE_INTS | SCALARS,
        },
    ),
    max_size=4,
)
HOSTILE = (
    SCALARS
    | EDGE_INTS
    | EDGE_TIME_TEXT
    | ANY_TIME_TEXT
    | JSON_VALUES
    | HUGE_TEXT
    | DEEP
    | INVALID_UTF8
    | NAN_LITERALS
    | ITEMS
)
FIELDS = sorted(
    {field for kind in KINDS for field in make_event(kind)}
    | {"opened_at", "schema_version", "customer_id", "unknown_field", "items"}
)


@st.composite
def mutated_events(draw: st.DrawFn) -> bytes:
    """A valid event with one to three fields replaced by hostile values."""
    kind = draw(st.sampled_from(KINDS))
    event = make_event(kind)
    for _ in range(draw(st.integers(1, 3))):
        event[draw(st.sampled_from(FIELDS))] = draw(HOSTILE)
    raw = encode(event)
    if draw(st.integers(0, 9)) == 0:  # now and then, one byte flipped anywhere
        at = draw(st.integers(0, len(raw) - 1))
        raw = raw[:at] + bytes([draw(st.integers(0, 255))]) + raw[at + 1 :]
    return raw


# --- the tests ----------------------------------------------------------------------------------


@FUZZ
@given(raw=st.binary(max_size=400), now_ms=CLOCKS)
def test_arbitrary_bytes(raw: bytes, now_ms: int) -> None:
    decode_and_absorb([raw, b'{"event_type":"page_view",' + raw], now_ms)


@FUZZ
@given(value=JSON_VALUES, now_ms=CLOCKS)
def test_arbitrary_json(value: Any, now_ms: int) -> None:
    decode_and_absorb([json.dumps(value, allow_nan=True).encode()], now_ms)


@FUZZ
@given(
    kind=st.sampled_from(KINDS),
    fields=st.dictionaries(st.sampled_from(FIELDS), JSON_VALUES, max_size=6),
    now_ms=CLOCKS,
)
def test_arbitrary_json_in_every_field(kind: str, fields: dict[str, Any], now_ms: int) -> None:
    decode_and_absorb([encode({**make_event(kind), **fields})], now_ms)


@settings(FUZZ, max_examples=600)
@given(messages=st.lists(mutated_events(), min_size=1, max_size=4), now_ms=CLOCKS)
def test_mutated_events(messages: list[bytes], now_ms: int) -> None:
    """Accepted ones go through the engine together, with the valid examples of their kinds."""
    decode_and_absorb([*messages, *(dumps(make_event(kind)) for kind in KINDS)], now_ms)


@pytest.mark.parametrize("now_ms", [NOW_MS, MAX_EPOCH_MS])
def test_every_edge_value_in_every_field(now_ms: int) -> None:
    """Not left to chance: each edge integer and time in each field of each event type."""
    values: list[Any] = [
        *[b + d for b in BOUNDS for d in (-1, 0, 1)],
        10**19,
        10**400,
        -(10**400),
        "9999-12-31T23:59:59.999Z",
        "9999-12-31T23:59:59.999-00:01",
        "0001-01-01T00:00:00+23:59",
        math.nan,
        math.inf,
    ]
    for kind in KINDS:
        fields = sorted(set(make_event(kind)) - {"event_type"} | {"opened_at", "schema_version"})
        decode_and_absorb(
            [encode(make_event(kind, **{f: v})) for f in fields for v in values], now_ms
        )
