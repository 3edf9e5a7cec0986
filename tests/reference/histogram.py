"""Percentiles from the fixed duration buckets, interpolated as Prometheus' histogram_quantile."""

from __future__ import annotations

MINUTE_S = 60
HOUR_S = 3600
# Upper bounds in seconds (docs/semantics.md); the last bucket, +Inf, is implicit.
BOUNDS_S = (
    15,
    30,
    1 * MINUTE_S,
    2 * MINUTE_S,
    5 * MINUTE_S,
    10 * MINUTE_S,
    15 * MINUTE_S,
    30 * MINUTE_S,
    1 * HOUR_S,
    2 * HOUR_S,
    4 * HOUR_S,
    8 * HOUR_S,
    24 * HOUR_S,
    48 * HOUR_S,
    96 * HOUR_S,
)


def cumulative_counts(samples_ms: list[int]) -> list[int]:
    """Prometheus ``le`` buckets: how many samples are at or below each bound, then +Inf."""
    counts = [sum(1 for ms in samples_ms if ms <= bound * 1000) for bound in BOUNDS_S]
    return [*counts, len(samples_ms)]


def histogram_quantile(q: float, samples_ms: list[int]) -> float:
    """The q-quantile in seconds, as ``histogram_quantile`` computes it from the buckets.

    rank = q * count; the first bucket whose cumulative count reaches the rank holds it; the
    value is interpolated linearly between the bucket's lower bound (0 for the first) and its
    upper bound. A quantile in the +Inf bucket is the highest finite bound.
    """
    cumulative = cumulative_counts(samples_ms)
    rank = q * cumulative[-1]
    for i, upper in enumerate(BOUNDS_S):
        if cumulative[i] >= rank:
            lower = 0 if i == 0 else BOUNDS_S[i - 1]
            below = 0 if i == 0 else cumulative[i - 1]
            return lower + (upper - lower) * ((rank - below) / (cumulative[i] - below))
    return float(BOUNDS_S[-1])
