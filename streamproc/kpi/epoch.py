"""Minutes and windows: integer epoch milliseconds, UTC, aligned to the epoch."""

from __future__ import annotations

from datetime import UTC, datetime

MINUTE_MS = 60_000


def minute_of(ts_ms: int) -> int:
    """The minute holding ``ts_ms``, as its start in epoch ms."""
    return ts_ms - ts_ms % MINUTE_MS


def aligned_start(ts_ms: int, size_ms: int) -> int:
    """Start of the aligned window of ``size_ms`` holding ``ts_ms`` (1h: 10:00-11:00 UTC)."""
    return ts_ms - ts_ms % size_ms


def window_label(size_ms: int) -> str:
    """60000 -> "1m", 3600000 -> "1h", 86400000 -> "1d"."""
    for unit, ms in (("d", 86_400_000), ("h", 3_600_000), ("m", MINUTE_MS)):
        if size_ms % ms == 0:
            return f"{size_ms // ms}{unit}"
    raise ValueError(f"window of {size_ms} ms is not a whole number of minutes")


def rfc3339(ts_ms: int) -> str:
    """Epoch ms -> ``2026-11-22T10:00:00Z`` (milliseconds shown only when not zero)."""
    moment = datetime.fromtimestamp(ts_ms / 1000, tz=UTC)
    if ts_ms % 1000:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts_ms % 1000:03d}Z"
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
