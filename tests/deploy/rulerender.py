"""Test-only rendering of the production rule files with every duration scaled down.

The end-to-end test cannot wait two hours for a baseline or ten minutes for a ``for:``; it
replays event time faster than the wall clock instead and scales every duration of the rules
by the same factor. Only durations change: range selectors (``[5m]``, ``[2h:1m]``), ``offset``
(also inside annotation templates) and ``for:``. Thresholds, label matchers (``window="15m"``
names an exporter window, which is event time and stays) and expressions stay as they are,
which ``skeleton`` lets a test check.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_DURATION = r"\d+(?:ms|[smhdw])"
_RANGE = re.compile(rf"\[(?P<range>{_DURATION})(?::(?P<step>{_DURATION}))?\]")
_OFFSET = re.compile(rf"\boffset\s+(?P<offset>{_DURATION})\b")
_SPLIT = re.compile(r"^(\d+)(ms|[smhdw])$")


def duration_ms(text: str) -> int:
    """``"15m"`` -> 900000. One unit only: the production files never combine units."""
    match = _SPLIT.match(text)
    if match is None:
        raise ValueError(f"not a single-unit duration: {text!r}")
    return int(match.group(1)) * UNIT_MS[match.group(2)]


def scaled(text: str, factor: float) -> str:
    """A duration times ``factor``, in whole milliseconds (at least 1)."""
    return f"{max(1, round(duration_ms(text) * factor))}ms"


def _sub_durations(text: str, replace: Callable[[str], str]) -> str:
    def in_range(match: re.Match[str]) -> str:
        step = match.group("step")
        inner = replace(match.group("range")) + (f":{replace(step)}" if step else "")
        return f"[{inner}]"

    text = _RANGE.sub(in_range, text)
    return _OFFSET.sub(lambda m: f"offset {replace(m.group('offset'))}", text)


def scale_promql(text: str, factor: float) -> str:
    """Every range and offset duration in a PromQL expression (or template) times ``factor``."""
    return _sub_durations(text, lambda d: scaled(d, factor))


def skeleton(text: str) -> str:
    """The expression with every range and offset duration replaced by ``D``."""
    return _sub_durations(text, lambda _: "D")


def scale_rule(rule: dict[str, Any], factor: float) -> dict[str, Any]:
    out = dict(rule)
    out["expr"] = scale_promql(rule["expr"], factor)
    if "for" in rule:
        out["for"] = scaled(rule["for"], factor)
    if "annotations" in rule:
        out["annotations"] = {k: scale_promql(v, factor) for k, v in rule["annotations"].items()}
    return out


def render_rules(source: Path, target: Path, *, factor: float) -> dict[str, Any]:
    """Write ``source`` (a rule file) to ``target`` with every duration scaled by ``factor``."""
    data = yaml.safe_load(source.read_text())
    for group in data["groups"]:
        if "interval" in group:
            group["interval"] = scaled(group["interval"], factor)
        group["rules"] = [scale_rule(rule, factor) for rule in group["rules"]]
    target.write_text(yaml.safe_dump(data, sort_keys=False, width=1000))
    return dict(data)
