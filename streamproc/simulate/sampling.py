"""Small random draws used throughout the model, all from the run's one ``random.Random``."""

from __future__ import annotations

import bisect
import itertools
import math
import random
from collections.abc import Mapping, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")


class Weighted(Generic[T]):
    """Draws values with fixed relative weights (insertion order, never hash order)."""

    __slots__ = ("_cum", "_total", "_values")

    def __init__(self, weights: Mapping[T, float] | Sequence[tuple[T, float]]) -> None:
        pairs = list(weights.items()) if isinstance(weights, Mapping) else list(weights)
        pairs = [(value, weight) for value, weight in pairs if weight > 0]
        self._values = [value for value, _ in pairs]
        self._cum = list(itertools.accumulate(weight for _, weight in pairs))
        self._total = self._cum[-1]

    def __call__(self, rng: random.Random) -> T:
        index = bisect.bisect_right(self._cum, rng.random() * self._total)
        return self._values[min(index, len(self._values) - 1)]


def geometric(rng: random.Random, mean: float) -> int:
    """A count >= 0 with the given mean (geometric distribution)."""
    if mean <= 0:
        return 0
    q = mean / (1 + mean)  # chance of one more
    return int(math.log(1.0 - rng.random()) / math.log(q))


def lognormal_ms(rng: random.Random, median_seconds: float, sigma: float) -> int:
    """A log-normal duration in ms with the given median."""
    return int(1000 * median_seconds * math.exp(sigma * rng.gauss()))


def between_ms(rng: random.Random, low_seconds: float, high_seconds: float) -> int:
    """A uniform duration in ms."""
    return int(1000 * (low_seconds + (high_seconds - low_seconds) * rng.random()))
