"""Internal consistency of a KPI report (the reference's or the engine's): what must hold
whatever the input."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from reference.report import FIELDS, parse_time_ms, rfc3339

# Sums over stores and over the values of one breakdown give the whole.
ADDITIVE = frozenset(
    "sessions page_views orders revenue net_revenue carts_created tickets_opened "
    "open_tickets".split()
)
# Values between 0 and 1.
SHARES = frozenset(
    "session_conversion_rate add_to_cart_rate bounce_rate new_visitor_share "
    "new_customer_order_share cart_abandonment_rate checkout_abandonment_rate "
    "csat_positive_share".split()
)
Cell = tuple[str, str, str, str, str | None]  # kpi, window, start, store_id, dimension


def report_problems(rows: Iterable[Mapping[str, Any]]) -> list[str]:
    """Every violated invariant, as readable lines (empty when the report is consistent)."""
    cells: dict[Cell, Mapping[str, Any]] = {}
    problems: list[str] = []
    for row in rows:
        key = (row["kpi"], row["window"], row["start"], row["store_id"], row["dimension"])
        if tuple(row) != FIELDS or row["final"] is not True:
            problems.append(f"malformed row {dict(row)}")
        if not isinstance(parse_time_ms(row["start"]), int):
            problems.append(f"start is not RFC 3339: {dict(row)}")
        if key in cells:
            problems.append(f"two rows for {key}")
        cells[key] = row
    return problems + sum_problems(cells) + rollup_problems(cells) + ratio_problems(cells)


def sum_problems(cells: dict[Cell, Mapping[str, Any]]) -> list[str]:
    """Additive KPIs: stores sum to ``all``; a breakdown's values sum to the row without one."""
    parts: dict[tuple[Cell, str], float] = defaultdict(float)  # (whole, split by) -> sum
    for (kpi, window, start, store_id, dimension), row in cells.items():
        if kpi not in ADDITIVE:
            continue
        if store_id != "all":
            parts[((kpi, window, start, "all", dimension), "stores")] += row["value"]
        if dimension is not None:
            breakdown = dimension.split("=")[0]
            parts[((kpi, window, start, store_id, None), breakdown)] += row["value"]
    return mismatches(cells, parts)


def rollup_problems(cells: dict[Cell, Mapping[str, Any]]) -> list[str]:
    """Additive KPIs: the windows inside a larger window sum to it (1h windows to their day)."""
    sizes = {window: window_seconds(window) for (_, window, *_) in cells if window != "now"}
    parts: dict[tuple[Cell, str], float] = defaultdict(float)
    for (kpi, window, start, store_id, dimension), row in cells.items():
        if kpi not in ADDITIVE or window == "now":
            continue
        start_ms = int(parse_time_ms(start) or 0)
        for larger, size_s in sizes.items():
            if size_s > sizes[window] and size_s % sizes[window] == 0:
                larger_start = rfc3339(start_ms - start_ms % (size_s * 1000))
                parts[((kpi, larger, larger_start, store_id, dimension), window)] += row["value"]
    return mismatches(cells, parts)


def mismatches(
    cells: dict[Cell, Mapping[str, Any]], parts: dict[tuple[Cell, str], float]
) -> list[str]:
    problems = []
    for (whole_key, split_by), total in parts.items():
        whole = cells.get(whole_key)
        if whole is None or not math.isclose(total, whole["value"], abs_tol=1e-6):
            where = " ".join(str(part) for part in whole_key)
            problems.append(f"{where}: its {split_by} rows sum to {total}")
    return problems


def window_seconds(label: str) -> int:
    """``15m`` -> 900."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    return int(label[:-1]) * units[label[-1]]


def ratio_problems(cells: dict[Cell, Mapping[str, Any]]) -> list[str]:
    """A ratio or mean is numerator / denominator (x 100 for nps); shares lie in [0, 1];
    p50 <= p90 <= p99."""
    problems = []
    for (kpi, window, start, store_id, dimension), row in cells.items():
        where = f"{kpi} {window} {start} {store_id} {dimension}"
        value, numerator, denominator = row["value"], row["numerator"], row["denominator"]
        if numerator is not None and denominator:
            expected = numerator / denominator * (100 if kpi == "nps" else 1)
            if not math.isclose(value, expected, rel_tol=1e-9, abs_tol=1e-12):
                problems.append(f"{where}: {value} is not {numerator} / {denominator}")
        if kpi in SHARES and not 0 <= value <= 1:
            problems.append(f"{where}: {value} is not a share")
        for low, high in (("_p50", "_p90"), ("_p90", "_p99")):
            upper = cells.get((kpi.replace(low, high), window, start, store_id, dimension))
            if kpi.endswith(low) and (upper is None or value > upper["value"]):
                problems.append(f"{where}: above {high}")
    return problems
