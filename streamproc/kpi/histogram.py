"""Fixed duration buckets that add across partitions and windows, and their quantiles."""

from __future__ import annotations

from collections.abc import Sequence

# Upper bounds in seconds: 15 s, 30 s, 1, 2, 5, 10, 15, 30 min, 1, 2, 4, 8, 24, 48, 96 h; then +Inf.
BOUNDS_S: tuple[int, ...] = (
    15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 28800, 86400, 172800, 345600,
)  # fmt: skip
BUCKETS = len(BOUNDS_S) + 1  # the last one is +Inf


def bucket_of(duration_ms: int) -> int:
    """Index of the bucket holding a duration (le semantics: a bound belongs to its bucket)."""
    for index, bound in enumerate(BOUNDS_S):
        if duration_ms <= bound * 1000:
            return index
    return len(BOUNDS_S)


def quantile(q: float, counts: Sequence[int]) -> float | None:
    """Bucket-interpolated quantile, as Prometheus' ``histogram_quantile``; None when empty."""
    total = sum(counts)
    if total == 0:
        return None
    rank = q * total
    cumulative = 0
    for index, count in enumerate(counts):
        if cumulative + count >= rank and count > 0:
            if index == len(BOUNDS_S):
                return float(BOUNDS_S[-1])
            lower = 0.0 if index == 0 else float(BOUNDS_S[index - 1])
            upper = float(BOUNDS_S[index])
            return lower + (upper - lower) * ((rank - cumulative) / count)  # as Prometheus
        cumulative += count
    return float(BOUNDS_S[-1])
