"""Determinism, laziness, the events-file (JSONL) form of records, and run statistics."""

from __future__ import annotations

import base64
import hashlib
import io
import itertools
import os
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime

import msgspec
import pytest

from streamproc.events import models as m
from streamproc.events.routing import RAW_FAMILY, RAW_KEY, RAW_PAYLOAD, RAW_PAYLOAD_B64, family_of
from streamproc.simulate import Anomalies, Kind, SimConfig, SimRecord, simulate, write_jsonl

START = datetime(2026, 11, 20, 6, tzinfo=UTC)
MESSY = Anomalies(
    duplicate_share=0.02,
    out_of_order_share=0.02,
    late_share=0.01,
    too_late_share=0.01,
    malformed_share=0.05,
)


def small(seed: int = 3, **overrides: object) -> SimConfig:
    fields: dict[str, object] = {
        "start": START,
        "duration_seconds": 3 * 3600,
        "seed": seed,
        "sessions_per_minute": 5,
        "currencies": {"store-02": "EUR"},
        "anomalies": MESSY,
    }
    return SimConfig(**(fields | overrides))  # type: ignore[arg-type]


def jsonl(config: SimConfig) -> bytes:
    out = io.BytesIO()
    write_jsonl(simulate(config), out)
    return out.getvalue()


@pytest.fixture(scope="module")
def records() -> list[SimRecord]:
    return list(simulate(small()))


@pytest.fixture(scope="module")
def lines() -> bytes:
    return jsonl(small())


def test_same_seed_gives_byte_identical_output(lines: bytes) -> None:
    assert jsonl(small()) == lines


def test_other_seed_gives_other_output_and_other_ids(lines: bytes) -> None:
    assert jsonl(small(seed=4)) != lines
    assert event_ids(small(seed=3)).isdisjoint(event_ids(small(seed=4)))
    assert event_ids(small(seed=3)).isdisjoint(event_ids(small(seed=3, stores=2)))


def event_ids(config: SimConfig) -> set[str]:
    """Ids of the first valid events of a run."""
    head = itertools.islice(simulate(config), 2000)
    return {msgspec.json.decode(r.value)["event_id"] for r in head if r.kind is not Kind.MALFORMED}


def test_output_does_not_depend_on_hash_seeds(lines: bytes) -> None:
    code = (
        "import hashlib, io, sys; sys.path.insert(0, sys.argv[1]); "
        "from test_simulate_output import jsonl, small; "
        "print(hashlib.sha256(jsonl(small())).hexdigest())"
    )
    here = os.path.dirname(__file__)
    digests = set()
    for hash_seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=hash_seed)
        done = subprocess.run(
            [sys.executable, "-c", code, here], env=env, capture_output=True, check=True
        )
        digests.add(done.stdout.decode().strip())
    assert digests == {hashlib.sha256(lines).hexdigest()}


def test_unbounded_run_is_lazy() -> None:
    config = small(duration_seconds=None, sessions_per_minute=600)
    first = list(itertools.islice(simulate(config), 20_000))
    assert len(first) == 20_000
    arrivals = [r.arrival_ms for r in first]
    assert arrivals == sorted(arrivals)


def test_one_line_per_record_and_lines_read_back(records: list[SimRecord], lines: bytes) -> None:
    """Each line, read with the events-file rules, gives back the record's family, key and value."""
    split = lines.split(b"\n")
    assert split[-1] == b""
    assert len(split) - 1 == len(records)
    wrapped = 0
    for record, line in zip(records, split, strict=False):
        obj = msgspec.json.decode(line)
        assert isinstance(obj, dict)
        if RAW_PAYLOAD in obj or RAW_PAYLOAD_B64 in obj:
            wrapped += 1
            assert record.kind is Kind.MALFORMED
            value = (
                obj[RAW_PAYLOAD].encode()
                if RAW_PAYLOAD in obj
                else base64.b64decode(obj[RAW_PAYLOAD_B64])
            )
            assert (m.Family(obj[RAW_FAMILY]), obj.get(RAW_KEY), value) == (
                record.family,
                record.key,
                record.value,
            )
        else:
            assert line == record.value
            assert family_of(obj) is record.family
    assert 0 < wrapped < sum(1 for r in records if r.kind is Kind.MALFORMED)


def test_stats_count_what_was_written(records: list[SimRecord]) -> None:
    stats = write_jsonl(records, io.BytesIO())
    assert stats.records == len(records)
    assert stats.bytes == sum(len(r.value) for r in records)
    assert stats.kinds == Counter(r.kind.value for r in records)
    assert stats.families == Counter(r.family.value for r in records)
    originals = [r for r in records if r.kind not in (Kind.DUPLICATE, Kind.MALFORMED)]
    assert stats.event_types == Counter(r.event_type for r in originals)
    assert stats.reasons == Counter(r.expected_reason for r in records if r.expected_reason)
    cart_ids = {
        msgspec.json.decode(r.value)["cart_id"] for r in originals if r.event_type == "add_to_cart"
    }
    assert stats.carts == len(cart_ids) > 0
    assert stats.sessions == stats.event_types["session_start"] > 0
    assert stats.orders == stats.event_types["order_placed"] > 0
    assert (stats.first_arrival_ms, stats.last_arrival_ms) == (
        records[0].arrival_ms,
        records[-1].arrival_ms,
    )
