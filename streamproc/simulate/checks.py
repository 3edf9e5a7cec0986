"""Validation helpers of the config classes: each failure is a ValueError naming the option."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from types import MappingProxyType


def check(ok: bool, name: str, rule: str, value: object) -> None:
    """Raise ``ValueError("<name> must be <rule>, got <value>")`` unless ``ok``."""
    if not ok:
        raise ValueError(f"{name} must be {rule}, got {value!r}")


def is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def check_probability(name: str, value: float) -> None:
    check(is_number(value) and 0 <= value <= 1, name, "a probability between 0 and 1", value)


def check_positive(name: str, value: float) -> None:
    check(is_number(value) and value > 0, name, "a number > 0", value)


def check_non_negative(name: str, value: float) -> None:
    check(is_number(value) and value >= 0, name, "a number >= 0", value)


def check_int(name: str, value: int, *, low: int | None = None, high: int | None = None) -> None:
    ok = isinstance(value, int) and not isinstance(value, bool)
    ok = ok and (low is None or value >= low) and (high is None or value <= high)
    rule = "an int"
    if low is not None:
        rule += f" between {low} and {high}" if high is not None else f" >= {low}"
    check(ok, name, rule, value)


def check_aware(name: str, value: datetime) -> None:
    ok = isinstance(value, datetime) and value.utcoffset() is not None
    check(ok, name, "a timezone-aware datetime", value)


def frozen_mix(name: str, mix: Mapping[str, float], allowed: frozenset[str]) -> Mapping[str, float]:
    """Validate a weight table (values of a contract enum -> weight) and freeze a copy of it."""
    for key, weight in mix.items():
        check(key in allowed, f"{name} key", f"one of {sorted(allowed)}", key)
        check_non_negative(f"{name}[{key!r}]", weight)
    check(sum(mix.values()) > 0, name, "a mapping with a positive total weight", dict(mix))
    return MappingProxyType(dict(mix))


def freeze(obj: object, name: str, value: object) -> None:
    """Set a field of a frozen dataclass from its ``__post_init__``."""
    object.__setattr__(obj, name, value)
