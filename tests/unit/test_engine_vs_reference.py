"""The engine (in-process, as the worker runs it) agrees with the independent reference."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest
from reference.builders import HOUR_12, order, value, web
from reference.common import ReferenceSettings
from reference.kpis import reference_report
from reference.report import compare_reports
from test_engine import DECODER, SETTINGS, sim_lines

from streamproc.offline import OfflinePipeline

REES46 = Path(__file__).resolve().parents[3] / "shared" / "data" / "rees46-2019-10-01-head.jsonl"
MINUTE_MS, HOUR_MS = 60_000, 3_600_000
SIZES_MS = (MINUTE_MS, 15 * MINUTE_MS, HOUR_MS, 24 * HOUR_MS)
REFERENCE = ReferenceSettings(
    fx_rates={"EUR": Decimal("1.08")}, window_sizes_s=tuple(size // 1000 for size in SIZES_MS)
)


def engine_rows(lines: list[bytes], **options: object) -> list[dict[str, object]]:
    return OfflinePipeline(SETTINGS, decoder=DECODER, **options).run(lines).report(SIZES_MS)  # type: ignore[arg-type]


def assert_agree(lines: list[bytes], **options: object) -> None:
    engine = engine_rows(lines, **options)
    differences = compare_reports(engine, reference_report(lines, REFERENCE))
    assert not differences, "\n".join(differences)
    assert len(engine) > 100


@pytest.mark.skipif(not REES46.exists(), reason=f"real-data sample not found at {REES46}")
def test_real_traffic_sample() -> None:
    assert_agree(REES46.read_bytes().splitlines())


@pytest.mark.parametrize(("seed", "partitions"), [(11, 4), (12, 7)])
def test_simulated_traffic_with_every_anomaly(seed: int, partitions: int) -> None:
    lines = sim_lines(
        150,
        seed=seed,
        rate=30,
        duplicate_share=0.02,
        out_of_order_share=0.03,
        late_share=0.01,
        too_late_share=0.005,
        malformed_share=0.01,
    )
    assert_agree(lines, partitions=partitions, batch=150)


def test_days_of_sparse_traffic_with_crashes() -> None:
    """Two days at a low rate (idle stretches at night), several crashes with re-delivery."""
    lines = sim_lines(
        2 * 24 * 60, seed=5, rate=3, duplicate_share=0.01, out_of_order_share=0.02,
        late_share=0.01, too_late_share=0.003, malformed_share=0.01,
    )  # fmt: skip
    crashes = {3: 0, 50: 2, 90: 5, 140: 1}
    assert_agree(lines, partitions=6, batch=400, crash=crashes.get, rewind=300)


def test_a_repeated_event_id_is_a_duplicate_only_within_its_owner() -> None:
    """docs/semantics.md, "duplicate": the same id in another session (or order) is another
    event; both the engine and the reference count it."""
    events = [
        web("page_view", 120, "1", event_id="e-1"),
        web("page_view", 120, "1", event_id="e-1"),  # sent twice: dropped
        web("page_view", 121, "2", event_id="e-1"),  # another session's: counts
        order("o-1", 122, 1000, event_id="e-9"),
        order("o-2", 123, 2000, event_id="e-9"),  # another order's: counts
        order("o-1", 122, 1000, event_id="e-9"),  # sent twice: dropped
    ]
    lines = [json.dumps(event).encode() for event in events]
    expected = reference_report(lines, REFERENCE)
    assert value(expected, "page_views", start=HOUR_12) == 2
    assert value(expected, "orders", start=HOUR_12) == 2
    assert value(expected, "revenue", start=HOUR_12) == 30.0
    differences = compare_reports(engine_rows(lines), expected)
    assert not differences, "\n".join(differences)
