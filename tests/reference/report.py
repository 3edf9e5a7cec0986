"""KPI report rows (what `replay --report` writes) and comparing two reports."""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

Row = dict[str, Any]
RowKey = tuple[str, str, int | str | None, str, str | None]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MILLISECOND = timedelta(milliseconds=1)
FIELDS = (
    *("kpi", "window", "start", "end", "store_id", "dimension"),
    *("value", "numerator", "denominator", "final"),
)

# Counts and money: every number must be equal.
EXACT_KPIS = frozenset(
    {
        "sessions",
        "page_views",
        "orders",
        "revenue",
        "net_revenue",
        "carts_created",
        "tickets_opened",
        "open_tickets",
    }
)
# Distinct visitors come from sketches in the engine.
VISITOR_KPIS = frozenset({"unique_visitors", "revenue_per_visitor"})


@functools.cache  # a report repeats each window's start and end in all of its rows
def rfc3339(time_ms: int) -> str:
    """``2026-11-22T10:00:00Z``; milliseconds only when there are some (``...:05.250Z``)."""
    moment = EPOCH + time_ms * MILLISECOND
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if time_ms % 1000:
        text += f".{time_ms % 1000:03d}"
    return text + "Z"


@functools.lru_cache(maxsize=65536)
def parse_time_ms(text: Any) -> int | str | None:
    """Epoch ms of an RFC 3339 time (the text itself when it is not one)."""
    if not isinstance(text, str):
        return None
    try:
        return (datetime.fromisoformat(text) - EPOCH) // MILLISECOND
    except (ValueError, TypeError):
        return text


def window_label(size_s: int) -> str:
    """``1m``, ``15m``, ``1h``, ``1d`` ... for a window size in seconds."""
    for unit, seconds in (("d", 86400), ("h", 3600), ("m", 60)):
        if size_s % seconds == 0:
            return f"{size_s // seconds}{unit}"
    return f"{size_s}s"


def make_row(
    kpi: str,
    *,
    window: str,
    span_ms: tuple[int, int],
    store_id: str,
    dimension: str | None,
    values: tuple[float | None, float | None, float | None],
) -> Row:
    value, numerator, denominator = values
    return {
        "kpi": kpi,
        "window": window,
        "start": rfc3339(span_ms[0]),
        "end": rfc3339(span_ms[1]),
        "store_id": store_id,
        "dimension": dimension,
        "value": value,
        "numerator": numerator,
        "denominator": denominator,
        "final": True,
    }


def row_key(row: Mapping[str, Any]) -> RowKey:
    """What identifies a row: (kpi, window, start as epoch ms, store_id, dimension)."""
    start = parse_time_ms(row.get("start"))
    return (
        str(row.get("kpi")),
        str(row.get("window")),
        start,
        str(row.get("store_id")),
        row.get("dimension"),
    )


def compare_reports(
    engine_rows: Iterable[Mapping[str, Any]],
    reference_rows: Iterable[Mapping[str, Any]],
    *,
    ratio_tol: float = 1e-9,
    visitors_rel_tol: float = 0.02,
    visitors_abs_tol: float = 0.0,
    max_lines: int = 50,
) -> list[str]:
    """Human-readable differences between two reports; empty when they agree.

    Counts and money must be equal; ratios and means agree within ``ratio_tol`` (absolute, on
    the value) with equal numerator and denominator; distinct visitors (and what is divided by
    them) within ``visitors_rel_tol`` relative; percentiles exactly.
    """
    engine = {row_key(row): row for row in engine_rows}
    reference = {row_key(row): row for row in reference_rows}
    lines: list[str] = []
    for key in sorted(reference.keys() - engine.keys(), key=repr):
        lines.append(f"missing in engine: {describe(key)} = {reference[key]['value']!r}")
    for key in sorted(engine.keys() - reference.keys(), key=repr):
        lines.append(f"extra in engine: {describe(key)} = {engine[key].get('value')!r}")
    for key in sorted(engine.keys() & reference.keys(), key=repr):
        tolerance = (visitors_rel_tol, visitors_abs_tol)
        for problem in row_differences(engine[key], reference[key], ratio_tol, tolerance):
            lines.append(f"{describe(key)}: {problem}")
    if len(lines) > max_lines:
        rest = len(lines) - max_lines
        lines = [*lines[:max_lines], f"... and {rest} more differences"]
    return lines


def describe(key: RowKey) -> str:
    kpi, window, start, store_id, dimension = key
    where = f"store_id={store_id}" + (f" {dimension}" if dimension else "")
    when = start if isinstance(start, str) or start is None else rfc3339(start)
    return f"{kpi}[{window} {when} {where}]"


def row_differences(
    engine: Mapping[str, Any],
    reference: Mapping[str, Any],
    ratio_tol: float,
    visitors_tol: tuple[float, float],
) -> list[str]:
    """Which fields of two rows with the same key disagree, and how.

    Visitor counts (sketches) agree within ``max(rel * reference, abs)``; revenue per visitor
    must equal the engine's own revenue / visitors.
    """
    kpi = str(reference["kpi"])
    checks: dict[str, Any] = {"value": "abs", "numerator": "exact", "denominator": "exact"}
    if kpi in EXACT_KPIS or kpi.endswith(("_p50", "_p90", "_p99")):
        checks["value"] = "exact"
    if kpi == "unique_visitors":
        checks = {"value": "rel", "numerator": "rel", "denominator": "exact"}
    if kpi == "revenue_per_visitor":
        checks = {"numerator": "exact", "denominator": "rel"}
        value, num, den = engine.get("value"), engine.get("numerator"), engine.get("denominator")
        if value is None or not den or not math.isclose(value, num / den, abs_tol=ratio_tol):
            checks["value"] = "rel"
    problems = [
        f"{name} {engine.get(name)!r} != reference {reference[name]!r}"
        for name, how in checks.items()
        if not agree(engine.get(name), reference[name], how, ratio_tol, visitors_tol)
    ]
    if parse_time_ms(engine.get("end")) != parse_time_ms(reference["end"]):
        problems.append(f"end {engine.get('end')!r} != reference {reference['end']!r}")
    if engine.get("final") != reference["final"]:
        problems.append(f"final {engine.get('final')!r} != reference {reference['final']!r}")
    return problems


def agree(
    engine: Any, reference: Any, how: str, ratio_tol: float, visitors_tol: tuple[float, float]
) -> bool:
    if engine is None or reference is None:
        return engine is None and reference is None
    if how == "exact":
        return bool(engine == reference)
    if how == "abs":
        return math.isclose(engine, reference, rel_tol=0.0, abs_tol=ratio_tol)
    rel_tol, abs_tol = visitors_tol
    return math.isclose(engine, reference, rel_tol=rel_tol, abs_tol=abs_tol)
