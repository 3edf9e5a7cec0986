"""Command-line forms of simulator options, and live pacing."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from streamproc.pacing import paced
from streamproc.simulate.options import parse_range, parse_start

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("now", NOW),
        ("-7d", NOW - timedelta(days=7)),
        ("-90m", NOW - timedelta(minutes=90)),
        ("2026-11-01T00:00:00Z", datetime(2026, 11, 1, tzinfo=UTC)),
        ("2026-11-01T02:00:00+02:00", datetime(2026, 11, 1, tzinfo=UTC)),
    ],
)
def test_start(text: str, expected: datetime) -> None:
    assert parse_start(text, now=NOW) == expected


@pytest.mark.parametrize("text", ["yesterday", "2026-11-01T00:00:00", "-7 days"])
def test_bad_start(text: str) -> None:
    with pytest.raises(ValueError):
        parse_start(text, now=NOW)


def test_ranges() -> None:
    spike = parse_range("30m..45m*4", start=NOW)
    assert (spike.start, spike.end, spike.factor) == (
        NOW + timedelta(minutes=30),
        NOW + timedelta(minutes=45),
        4.0,
    )
    gap = parse_range("+1h..2026-11-22T14:00:00Z", start=NOW)
    assert (gap.start, gap.end, gap.factor) == (
        NOW + timedelta(hours=1),
        NOW + timedelta(hours=2),
        3.0,
    )
    for bad in ("30m-45m", "45m..30m", "30m..45m*x"):
        with pytest.raises(ValueError):
            parse_range(bad, start=NOW)


@dataclass
class Rec:
    arrival_ms: int


async def test_paced_releases_records_at_their_time() -> None:
    now = [1000.0]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(round(seconds, 3))
        now[0] += seconds

    records = [Rec(999_000), Rec(1_000_000), Rec(1_000_010), Rec(1_002_500)]
    out = [r async for r in paced(records, clock=lambda: now[0], sleep=sleep)]
    assert out == records
    assert slept == [2.5]  # due records go at once; 10 ms is under the granularity


async def test_paced_sleeps_wall_seconds_when_its_clock_runs_faster() -> None:
    """A clock at 120x: a gap of 60 clock seconds is half a wall second, not a minute (the
    end-to-end test's simulator once paused for up to two minutes at its first gap)."""
    speed, wall = 120.0, [0.0]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(round(seconds, 3))
        wall[0] += seconds

    def clock() -> float:
        return 1000.0 + wall[0] * speed

    records = [Rec(1_000_000), Rec(1_060_000), Rec(1_060_001)]
    out = [r async for r in paced(records, clock=clock, sleep=sleep, speed=speed)]
    assert out == records
    assert slept == [0.5]
