"""Command-line forms of simulator options: times, durations and anomaly ranges."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from streamproc.simulate.config import Outage, TimeRange
from streamproc.times import parse_duration_seconds, parse_time

_OFFSET = re.compile(r"^\+?\d+\s*[smhdw]$")
_RANGE = re.compile(r"^(?P<start>[^.]+)\.\.(?P<end>[^*]+)(?:\*(?P<factor>[0-9.]+))?$")


def parse_start(text: str, *, now: datetime) -> datetime:
    """``now``, a relative time in the past (``-7d``, ``-90m``) or an RFC 3339 time."""
    return parse_time(text, now=now)


def _point(text: str, start: datetime) -> datetime:
    """An offset from the run's start (``30m``, ``+2h``) or an RFC 3339 time."""
    text = text.strip()
    if _OFFSET.match(text):
        return start + timedelta(seconds=parse_duration_seconds(text.lstrip("+")))
    return parse_start(text, now=start)


def parse_outage(text: str, *, start: datetime) -> Outage:
    """``30m..45m`` (every store) or ``30m..45m@store-02``: a checkout outage."""
    span, _, store = text.strip().partition("@")
    if "*" in span:
        raise ValueError(f"an outage has no factor: {text!r}")
    found = parse_range(span, start=start)
    return Outage(found.start, found.end, store.strip())


def parse_range(text: str, *, start: datetime) -> TimeRange:
    """``30m..45m`` or ``30m..45m*4`` (offsets from ``start``, or RFC 3339 times)."""
    match = _RANGE.match(text.strip())
    if match is None:
        raise ValueError(f"not a range like 30m..45m or 30m..45m*4: {text!r}")
    begin, end = _point(match.group("start"), start), _point(match.group("end"), start)
    factor = match.group("factor")
    return TimeRange(begin, end, float(factor)) if factor else TimeRange(begin, end)
