"""The simulator keeps the event contract: what is valid decodes, junk fails with its reason,
keys follow the routing rules, and the promised delays, gaps and shares hold."""

from __future__ import annotations

import math
from collections import Counter
from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from streamproc.errors import InvalidEvent
from streamproc.events import models as m
from streamproc.events.parse import EventDecoder, Reason
from streamproc.events.routing import key_for
from streamproc.simulate import (
    BAD_INPUT_REASONS,
    Anomalies,
    Kind,
    SimConfig,
    SimRecord,
    Support,
    TimeRange,
    fx_rates,
    simulate,
)

START = datetime(2026, 11, 20, 6, tzinfo=UTC)
HOURS = 12
GAP = TimeRange(START + timedelta(hours=3), START + timedelta(hours=3, minutes=40))
ANOMALIES = Anomalies(
    idle_gaps=(GAP,),
    abandonment_spikes=(TimeRange(START + timedelta(hours=5), START + timedelta(hours=6)),),
    conversion_drops=(TimeRange(START + timedelta(hours=7), START + timedelta(hours=8)),),
    duplicate_share=0.02,
    out_of_order_share=0.03,
    late_share=0.01,
    too_late_share=0.01,
    malformed_share=0.03,
)
CONFIG = SimConfig(
    start=START,
    duration_seconds=HOURS * 3600,
    seed=7,
    sessions_per_minute=8,
    stores=4,
    currencies={"store-02": "EUR", "store-03": "JPY", "store-04": "KWD"},
    support=Support(tickets_per_session=0.05, p_reopen=0.3),
    anomalies=ANOMALIES,
)
SECOND_MS = 1000
MINUTE_MS = 60 * SECOND_MS
HOUR_MS = 60 * MINUTE_MS


@pytest.fixture(scope="module")
def records() -> list[SimRecord]:
    return list(simulate(CONFIG))


@pytest.fixture(scope="module")
def decoded(records: list[SimRecord]) -> list[m.Event | InvalidEvent]:
    decoder = EventDecoder(fx_rates=fx_rates(CONFIG))
    results: list[m.Event | InvalidEvent] = []
    for record in records:
        try:
            results.append(decoder.decode(record.value, record.family, now_ms=record.arrival_ms))
        except InvalidEvent as exc:
            results.append(exc)
    return results


def within(observed: int, n: int, p: float, sigmas: float = 4.0) -> bool:
    """``observed`` successes of ``n`` draws is within ``sigmas`` binomial sigmas of ``p``."""
    return abs(observed - n * p) <= sigmas * math.sqrt(n * p * (1 - p)) + 1


def test_valid_records_decode_and_junk_fails_with_its_reason(
    records: list[SimRecord], decoded: list[m.Event | InvalidEvent]
) -> None:
    for record, result in zip(records, decoded, strict=True):
        if record.kind is Kind.MALFORMED:
            assert isinstance(result, InvalidEvent), record
            assert result.reason == record.expected_reason, (result, record.value[:300])
            assert record.event_type is None
        else:
            assert isinstance(result, m.Event), (result, record.value)
            assert result.event_type == record.event_type
            assert result.event_time == record.timestamp_ms
            assert record.expected_reason is None


def test_every_bad_input_reason_is_covered(records: list[SimRecord]) -> None:
    reasons = Counter(r.expected_reason for r in records if r.kind is Kind.MALFORMED)
    assert set(reasons) == {reason.value for reason in BAD_INPUT_REASONS}
    assert Reason.TOO_LATE.value not in reasons  # a processing decision, not bad bytes
    # too_deep has no builder yet; processing_error is a bug, not bad bytes
    unbuilt = {Reason.TOO_LATE, Reason.TOO_DEEP, Reason.PROCESSING_ERROR}
    assert set(BAD_INPUT_REASONS) == set(Reason) - unbuilt


def test_every_event_type_of_the_contract_appears(records: list[SimRecord]) -> None:
    seen = {r.event_type for r in records if r.kind is not Kind.MALFORMED}
    assert seen == set(m.EVENT_TYPES)


def test_records_come_in_arrival_order(records: list[SimRecord]) -> None:
    arrivals = [r.arrival_ms for r in records]
    assert arrivals == sorted(arrivals)
    start_ms = int(START.timestamp() * 1000)
    assert start_ms <= arrivals[0]
    assert arrivals[-1] < start_ms + HOURS * HOUR_MS


def test_keys_follow_the_routing_rules(records: list[SimRecord]) -> None:
    for record in records:
        try:
            obj = msgspec.json.decode(record.value)
        except msgspec.DecodeError:
            continue  # not JSON: the key of the event it was made from
        if isinstance(obj, dict):
            assert record.key == key_for(obj, record.family), record


def test_key_rules_are_all_exercised(records: list[SimRecord]) -> None:
    """Orders without a session are keyed by order_id, surveys without a ticket otherwise."""
    prefixes = Counter((r.family, (r.key or "").split("-")[0]) for r in records)
    assert prefixes[m.Family.ORDERS, "s"] > 0
    assert prefixes[m.Family.ORDERS, "o"] > 0
    assert prefixes[m.Family.TICKETS, "t"] > 0
    surveys = [
        r for r in records if r.event_type == "survey_response" and b"ticket_id" not in r.value
    ]
    assert surveys, "post-purchase surveys without a ticket"


@pytest.mark.parametrize(
    ("kind", "shortest_ms", "longest_ms"),
    [
        (Kind.EVENT, 0, 0),
        (Kind.OUT_OF_ORDER, 1 * SECOND_MS, 90 * SECOND_MS),
        (Kind.LATE, 5 * MINUTE_MS, 30 * MINUTE_MS),
        (Kind.TOO_LATE, 2 * HOUR_MS, 3 * HOUR_MS),
        (Kind.MALFORMED, 0, 0),
    ],
)
def test_delayed_kinds_have_their_delays(
    records: list[SimRecord], kind: Kind, shortest_ms: int, longest_ms: int
) -> None:
    delays = [r.arrival_ms - r.timestamp_ms for r in records if r.kind is kind]
    assert len(delays) > 20
    assert shortest_ms <= min(delays)
    assert max(delays) <= longest_ms


def test_duplicates_repeat_an_earlier_record_shortly_after(records: list[SimRecord]) -> None:
    first_seen: dict[bytes, SimRecord] = {}
    duplicates = 0
    for record in records:
        if record.kind is Kind.DUPLICATE:
            original = first_seen[record.value]
            assert (original.family, original.key) == (record.family, record.key)
            assert original.timestamp_ms == record.timestamp_ms
            assert 100 <= record.arrival_ms - original.arrival_ms <= 10 * SECOND_MS
            duplicates += 1
        else:
            assert record.value not in first_seen or record.kind is Kind.MALFORMED
            first_seen.setdefault(record.value, record)
    assert duplicates > 20


def test_event_ids_are_unique_except_duplicates(records: list[SimRecord]) -> None:
    ids = Counter(
        msgspec.json.decode(r.value)["event_id"] for r in records if r.kind is not Kind.MALFORMED
    )
    duplicated = Counter(r.kind for r in records)[Kind.DUPLICATE]
    assert sum(count - 1 for count in ids.values()) == duplicated


def test_idle_gap_holds_no_record(records: list[SimRecord]) -> None:
    start_ms = int(GAP.start.timestamp() * 1000)
    end_ms = int(GAP.end.timestamp() * 1000)
    inside = [
        r
        for r in records
        if start_ms <= r.arrival_ms < end_ms or start_ms <= r.timestamp_ms < end_ms
    ]
    assert inside == []
    assert any(end_ms <= r.arrival_ms < end_ms + MINUTE_MS for r in records), "traffic resumes"
    assert any(start_ms - MINUTE_MS <= r.arrival_ms < start_ms for r in records)


@pytest.mark.parametrize(
    ("kind", "share"),
    [
        (Kind.MALFORMED, ANOMALIES.malformed_share),
        (Kind.DUPLICATE, ANOMALIES.duplicate_share),
        (Kind.OUT_OF_ORDER, ANOMALIES.out_of_order_share),
    ],
)
def test_shares_match_the_config(records: list[SimRecord], kind: Kind, share: float) -> None:
    count = sum(1 for r in records if r.kind is kind)
    assert within(count, len(records), share), (count, len(records) * share)


def test_late_and_too_late_shares_hold_away_from_the_end(records: list[SimRecord]) -> None:
    """A delay that would arrive after the end (or in an idle gap) is not applied, so only
    events well before the end are expected to carry the full share."""
    start_ms = int(START.timestamp() * 1000)
    early = [r for r in records if r.timestamp_ms < start_ms + (HOURS - 4) * HOUR_MS]
    for kind, share in (
        (Kind.LATE, ANOMALIES.late_share),
        (Kind.TOO_LATE, ANOMALIES.too_late_share),
    ):
        count = sum(1 for r in early if r.kind is kind)
        expected = len(early) * share
        assert 0.8 * expected < count < expected + 4 * math.sqrt(expected), (kind, count, expected)


def test_future_time_is_far_ahead_of_arrival(
    records: list[SimRecord], decoded: list[m.Event | InvalidEvent]
) -> None:
    future = [
        r for r in records if r.expected_reason == Reason.FUTURE_TIME and r.kind is Kind.MALFORMED
    ]
    assert future
    decoder = EventDecoder(fx_rates=fx_rates(CONFIG))
    for record in future:
        with pytest.raises(InvalidEvent):
            decoder.decode(record.value, record.family, now_ms=record.arrival_ms + HOUR_MS)
        assert record.timestamp_ms == record.arrival_ms
