"""The one parser of times (``streamproc.times``): RFC 3339 as section 5.6 defines it, and the
relative forms of the command line."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from streamproc.times import (
    MissingOffset,
    parse_duration_seconds,
    parse_rfc3339,
    parse_time,
    rfc3339_ms,
)

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
T0_MS = 1_795_342_530_000  # 2026-11-22T10:15:30Z


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-22T10:15:30Z", T0_MS),
        ("2026-11-22T10:15:30.123Z", T0_MS + 123),
        ("2026-11-22T10:15:30.5Z", T0_MS + 500),
        ("2026-11-22T10:15:30.1239Z", T0_MS + 123),  # cut to the millisecond, not rounded
        ("2026-11-22T10:15:30.999999999999Z", T0_MS + 999),  # any number of digits
        ("2026-11-22T12:15:30+02:00", T0_MS),
        ("2026-11-22T05:15:30.123-05:00", T0_MS + 123),
        ("2026-11-22T10:15:30-00:00", T0_MS),  # RFC 3339 4.3: UTC, local offset unknown
        ("2026-11-22t10:15:30z", T0_MS),  # 5.6: T and Z may be lower case
        ("2026-11-22t10:15:30.123+00:00", T0_MS + 123),
        ("2026-11-22T10:15:30.123z", T0_MS + 123),
        ("2026-11-23T09:14:30+22:59", T0_MS),
        ("2000-01-01T00:00:00Z", 946_684_800_000),
        ("1969-12-31T23:59:59.9995Z", -1),  # floored, before the epoch too
    ],
)
def test_rfc3339_forms(text: str, expected: int) -> None:
    assert rfc3339_ms(text) == expected
    assert parse_rfc3339(text).utcoffset() is not None


@pytest.mark.parametrize(
    "text",
    [
        "2026-W47-7T10:15:30Z",  # ISO 8601 week date
        "2026-326T10:15:30Z",  # ordinal date
        "20261122T101530Z",  # basic format
        "2026-11-22T101530Z",
        "20261122T10:15:30Z",
        "2026-11-22T10:15Z",  # no seconds
        "2026-11-22T10Z",  # no minutes
        "2026-11-22T10:15:30,123Z",  # comma before the fraction
        "2026-11-22T10:15:30.Z",  # a point without digits
        "2026-11-22 10:15:30Z",  # a space for T: the RFC's note only, refused here
        "2026-11-22x10:15:30Z",
        "2026-11-22T10:15:30+02",  # offset without minutes
        "2026-11-22T10:15:30+0200",  # offset without a colon
        "2026-11-22T10:15:30+02:00:30",  # offset with seconds
        "2026-11-22T10:15:30 Z",
        "2026-11-22T10:15:30UTC",
        "2026-11-22T10:15:30.123Z ",
        " 2026-11-22T10:15:30.123Z",
        "2026-11-22T10:15:30.123Z\n",
        "+2026-11-22T10:15:30Z",
        "22026-11-22T10:15:30Z",
        "2026-11-22T10:15:30.12\u0663Z",  # a non-ASCII digit
        "\uff12026-11-22T10:15:30.123Z",
        "2026-13-01T00:00:00Z",  # month 13
        "2026-02-29T00:00:00Z",  # not a leap year
        "2026-11-22T24:00:00Z",
        "2026-12-31T23:59:60Z",  # a leap second: refused, see the module docstring
        "2026-11-22T10:15:30+24:00",
        "yesterday",
        "",
    ],
)
def test_not_rfc3339(text: str) -> None:
    with pytest.raises(ValueError, match="not an RFC 3339 time") as caught:
        parse_rfc3339(text)
    assert not isinstance(caught.value, MissingOffset)


@pytest.mark.parametrize(
    "text", ["2026-11-22", "2026-11-22T10:15:30", "2026-11-22T10:15:30.123", "2026-11-22t10:15:30"]
)
def test_missing_offset(text: str) -> None:
    with pytest.raises(MissingOffset, match="time without a UTC offset"):
        parse_rfc3339(text)


def test_fast_path_leaves_no_character_unchecked() -> None:
    """The common form skips the regex: fromisoformat must refuse a non-digit at every digit
    position of it (and did, for each of these characters, in Python 3.11)."""
    base = "2026-11-22T10:15:30.123Z"
    others = [chr(c) for c in range(0x20, 0x7F) if not chr(c).isdigit()]
    others += ["\x00", "\n", "\u0663", "\u00b2", "\uff11", "\u00e9"]
    for position in (i for i, char in enumerate(base) if char.isdigit()):
        for char in others:
            text = base[:position] + char + base[position + 1 :]
            with pytest.raises(ValueError):
                parse_rfc3339(text)


def test_isoformat_round_trip() -> None:
    """isoformat of aware datetimes (with seconds) is RFC 3339: every one parses back."""
    zones = [UTC, timezone(timedelta(hours=23, minutes=59)), timezone(-timedelta(hours=5))]
    for zone in zones:
        for micro in (0, 1, 123_000, 999_999):
            moment = datetime(2026, 11, 22, 10, 15, 30, micro, tzinfo=zone)
            assert parse_rfc3339(moment.isoformat()) == moment


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("now", NOW),
        (" now ", NOW),
        ("-7d", NOW - timedelta(days=7)),
        ("-90m", NOW - timedelta(minutes=90)),
        ("2026-11-01T00:00:00Z", datetime(2026, 11, 1, tzinfo=UTC)),
        ("2026-11-01T02:00:00+02:00", datetime(2026, 11, 1, tzinfo=UTC)),
        ("2026-11-01t00:00:00z", datetime(2026, 11, 1, tzinfo=UTC)),
    ],
)
def test_time(text: str, expected: datetime) -> None:
    moment = parse_time(text, now=NOW)
    assert moment == expected and moment.tzinfo is UTC


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("yesterday", "not a time"),
        ("7d", "not a time"),  # only with unsigned_ago
        ("2026-11-20", "without a UTC offset"),  # only with dates
        ("2026-11-01T00:00:00", "without a UTC offset"),
        ("2026-11-01 00:00:00Z", "not a time"),
        ("2026-W44-7T00:00:00Z", "not a time"),
        ("-7 days", "not a duration"),
        ("-99999999999999w", "between the years 1 and 9999"),
        ("9999-12-31T23:59:59-01:00", "between the years 1 and 9999"),
    ],
)
def test_bad_time(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_time(text, now=NOW)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("7d", NOW - timedelta(days=7)),
        ("36h", NOW - timedelta(hours=36)),
        ("-90m", NOW - timedelta(minutes=90)),
        ("2026-11-20", datetime(2026, 11, 20, tzinfo=UTC)),
        ("2026-11-20T08:00:00+02:00", datetime(2026, 11, 20, 6, tzinfo=UTC)),
    ],
)
def test_time_with_dates_and_unsigned_durations(text: str, expected: datetime) -> None:
    assert parse_time(text, now=NOW, dates=True, unsigned_ago=True) == expected


@pytest.mark.parametrize("text", ["2026-13-20", "2026-W47", "20261120", "2026-324", "7 days"])
def test_bad_dates_and_unsigned_durations(text: str) -> None:
    with pytest.raises(ValueError, match="not a time"):
        parse_time(text, now=NOW, dates=True, unsigned_ago=True)


@pytest.mark.parametrize(("text", "seconds"), [("30s", 30), ("15m", 900), (" 1 h ", 3600)])
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration_seconds(text) == seconds


@pytest.mark.parametrize("text", ["1.5h", "-1h", "1y", "h", ""])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration_seconds(text)
