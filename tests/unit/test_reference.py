"""The independent KPI reference (tests/reference): hand-computed cases, then whole files."""

from __future__ import annotations

import base64
import io
import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from reference.accept import accepted_events
from reference.builders import (
    HOUR_10,
    HOUR_11,
    HOUR_12,
    T0,
    at,
    ev,
    find,
    order,
    report,
    value,
    web,
)
from reference.checks import report_problems
from reference.common import ReferenceSettings
from reference.histogram import histogram_quantile
from reference.kpis import KPI_NAMES, reference_report
from reference.report import Row, compare_reports

from streamproc.simulate import Anomalies, Kind, SimConfig, fx_rates, simulate, write_jsonl

REES46 = Path("/work/shared/data/rees46-2019-10-01-head.jsonl")


def test_sessions_bounce_gap_split_and_late_session_start() -> None:
    rows = report(
        [
            # A: session_start, page_view, page_ping -> bounce, 120 s, index 1, email/mobile.
            web(
                "session_start",
                0,
                "a",
                channel_group="email",
                session_index=1,
                device_type="mobile",
            ),
            web("page_view", 1, "a"),
            web("page_ping", 2, "a"),
            # B: 10:00, 10:05, then 31 minutes of silence: B1 (page + product view, 300 s, no
            # bounce, desktop from its first event) and B2 (one page view at 10:36, 0 s, bounce,
            # device other: none of its events has one).
            web("page_view", 0, "b", device_type="desktop"),
            web("product_view", 5, "b"),
            web("page_view", 36, "b"),
            # C: its session_start arrives after its page view and is 5 s later: it still sets
            # the channel (normalised) and the device; one page view -> bounce, 5 s.
            web("page_view", 10, "c", device_type="mobile"),
            web(
                "session_start", 10 + 5 / 60, "c", channel_group="Paid_Search", device_type="tablet"
            ),
        ]
    )
    assert value(rows, "sessions") == 4
    assert value(rows, "bounce_rate") == 3 / 4
    assert (find(rows, "bounce_rate") or {}).get("numerator") == 3
    assert value(rows, "average_session_duration_seconds") == (120 + 300 + 0 + 5) / 4
    assert value(rows, "pageviews_per_session") == 4 / 4
    assert value(rows, "new_visitor_share") == 1.0  # only A has an index
    assert value(rows, "unique_visitors") == 3
    by_channel = {
        "channel_group=email": 1,
        "channel_group=other": 2,
        "channel_group=paid_search": 1,
    }
    by_device = {"device_type=mobile": 1, "device_type=desktop": 1, "device_type=tablet": 1}
    by_device |= {"device_type=other": 1}
    for dimension, n in (by_channel | by_device).items():
        assert value(rows, "sessions", dimension=dimension) == n
    assert value(rows, "page_views", dimension="channel_group=other") == 2
    assert value(rows, "unique_visitors", dimension="device_type=desktop") == 1
    assert find(rows, "bounce_rate", dimension="channel_group=email") is None  # not (ch/dev)


def test_carts_newest_open_cart_timeout_and_tie_breaks() -> None:
    rows = report(
        [
            # s-1: c-a 10:00, c-b 10:02 (checkout, payment failure); an order without cart_id
            # converts c-b, the newest open cart; c-a is abandoned.
            web("add_to_cart", 0, "1", cart_id="c-a"),
            web("add_to_cart", 2, "1", cart_id="c-b"),
            web("checkout_started", 3, "1", cart_id="c-b"),
            web("payment_failed", 3.5, "1", cart_id="c-b"),
            order("o-1", 4, 1000, session_id="1"),
            # s-2: c-c's last event is 10:11; the order naming it comes at 10:45, after the
            # 30-minute timeout: c-c stays abandoned, the order counts and belongs to no session.
            web("add_to_cart", 10, "2", cart_id="c-c"),
            web("checkout_started", 11, "2", cart_id="c-c"),
            order("o-2", 45, 1000, session_id="2", cart_id="c-c"),
            # s-3: two carts created at the same time: the greater cart_id (c-y) converts.
            web("add_to_cart", 20, "3", cart_id="c-x"),
            web("add_to_cart", 20, "3", cart_id="c-y"),
            order("o-3", 25, 1000, session_id="3"),
            # s-4: an order at the same time as the first add_to_cart comes first: no open cart.
            web("add_to_cart", 30, "4", cart_id="c-z"),
            order("o-4", 30, 1000, session_id="4"),
        ]
    )
    assert value(rows, "carts_created") == 6
    row = find(rows, "cart_abandonment_rate")
    assert row is not None
    assert (row["numerator"], row["denominator"]) == (4, 6)  # only c-b and c-y convert
    assert row["value"] == pytest.approx(1 - 2 / 6)
    assert value(rows, "checkout_abandonment_rate") == 1 / 2  # c-b converted, c-c abandoned
    assert value(rows, "payment_failure_rate") == 1 / 2
    assert value(rows, "orders") == 4
    assert value(rows, "add_to_cart_rate") == 4 / 4
    assert value(rows, "session_conversion_rate") == 3 / 4  # o-2 belongs to no session
    assert value(rows, "orders", dimension="channel_group=other") == 4
    assert value(rows, "conversion_rate") == 4 / 4


def test_duplicates_and_too_late_events() -> None:
    rows = report(
        [
            web("page_view", 120, "1", event_id="e-1"),
            web("page_view", 120, "1", event_id="e-1"),  # duplicate: dropped
            web("page_view", 57, "1", event_id="e-2"),  # 63 min behind 12:00 > 62: too late
            web("page_view", 59, "1", event_id="e-3"),  # 61 min behind: late, still counts
            web("page_view", 121, "1", event_id="e-2"),  # e-2 was never accepted: counts
        ]
    )
    assert value(rows, "page_views", start=HOUR_12) == 2
    assert value(rows, "page_views", start=HOUR_10) == 1
    assert value(rows, "page_views", window="1d", start="2026-11-20T00:00:00Z") == 3


def test_refunds_and_cancellations() -> None:
    rows = report(
        [
            order("o-1", 10, 10000, session_id="s"),
            order("o-2", 15, 5000, session_id="s"),
            ev(
                "order_refunded",
                20,
                order_id="o-1",
                refund_minor=3000,
                currency="USD",
                session_id="s",
            ),
            ev("order_cancelled", 30, order_id="o-2", session_id="s"),  # -50.00
            ev("order_cancelled", 35, order_id="o-2", session_id="s"),  # not the earliest
            ev("order_cancelled", 36, order_id="o-9"),  # unknown order
            order("o-3", 40, 2000),  # keyed by order_id ...
            ev("order_cancelled", 41, order_id="o-3", session_id="x"),  # ... this by "x": unknown
            order("o-1", 50, 99900, session_id="s"),  # same order_id again: ignored
        ]
    )
    assert value(rows, "orders") == 3
    assert value(rows, "revenue") == 170.0
    assert value(rows, "net_revenue") == 170.0 - 30.0 - 50.0
    assert value(rows, "refund_rate") == 1 / 3
    assert value(rows, "average_order_value") == pytest.approx(170 / 3)


def test_tickets_percentiles_open_tickets_and_surveys() -> None:
    def tk(kind: str, minutes: float, ticket: str, **fields: Any) -> dict[str, Any]:
        return ev(kind, minutes, ticket_id=ticket, **fields)

    rows = report(
        [
            tk("ticket_opened", 0, "t-1", channel="chat", priority="high"),
            tk("message_added", 0.5, "t-1", author_type="customer"),
            tk("message_added", 4, "t-1", author_type="agent"),  # first response: 240 s
            tk("ticket_escalated", 10, "t-1"),
            tk("ticket_escalated", 20, "t-1"),  # counted once
            tk("ticket_opened", 0, "t-2", channel="email", priority="normal"),
            tk("message_added", 10 / 60, "t-2", author_type="Agent"),  # 10 s; stays open
            # No ticket_opened: opening time from opened_at (10:29:30), response after 30 s.
            tk("message_added", 30, "t-3", author_type="agent", opened_at=at(29.5)),
            tk("ticket_reopened", 40, "t-3"),
            tk("ticket_resolved", 90, "t-1"),  # resolution: 5400 s, at 11:30
            *(ev("survey_response", 50, survey_type="csat", score=s) for s in (5, 3)),
            *(ev("survey_response", 50, survey_type="nps", score=s) for s in (10, 6, 8)),
            ev("survey_response", 50, survey_type="ces", score=1),  # other: counts nowhere
        ]
    )
    # First responses 10 s, 30 s, 240 s; cumulative buckets le15: 1, le30: 2, le300: 3.
    assert value(rows, "first_response_seconds_p50") == 15 + 15 * (1.5 - 1)  # 22.5
    assert value(rows, "first_response_seconds_p90") == pytest.approx(120 + 180 * 0.7)
    assert value(rows, "first_response_seconds_p99") == pytest.approx(120 + 180 * 0.97)
    mean = find(rows, "first_response_seconds_mean")
    assert mean is not None
    assert (mean["numerator"], mean["denominator"]) == (280.0, 3)
    assert value(rows, "resolution_seconds_p50", start=HOUR_11) == 3600 + 3600 * 0.5
    assert find(rows, "resolution_seconds_p50") is None
    assert value(rows, "tickets_opened") == 2
    assert value(rows, "tickets_opened", dimension="channel=chat") == 1
    assert value(rows, "escalation_rate") == 1 / 2
    assert value(rows, "csat_score") == 4.0
    assert value(rows, "csat_positive_share") == 0.5
    nps = find(rows, "nps")
    assert nps is not None
    assert (nps["value"], nps["numerator"], nps["denominator"]) == (0.0, 0, 3)
    now = "2026-11-20T11:30:00Z"
    assert value(rows, "open_tickets", window="now", start=now) == 2  # t-2, t-3
    for dimension in ("channel=email", "channel=other", "priority=normal", "priority=other"):
        assert value(rows, "open_tickets", window="now", start=now, dimension=dimension) == 1


def test_histogram_quantile_edges() -> None:
    assert histogram_quantile(0.5, [240_000]) == 120 + 180 * 0.5
    assert histogram_quantile(0.5, [15_000]) == 7.5  # a bound belongs to its bucket (le)
    assert histogram_quantile(0.99, [5 * 86_400_000]) == 345_600  # +Inf: highest bound


def test_currency_conversion() -> None:
    rates = {"EUR": Decimal("1.08"), "JPY": Decimal("0.0067"), "KWD": Decimal("3.25")}
    rates |= {"GBP": Decimal("0.5")}
    rows = report(
        [
            order("o-1", 1, 1000, currency="EUR"),  # 10.80 USD
            order("o-2", 2, 1234, currency="JPY"),  # 1234 * 0.0067 * 100 = 826.78 -> 827
            order("o-3", 3, 1001, currency="KWD"),  # 1001 * 3.25 / 10 = 325.325 -> 325
            order("o-4", 4, 5, currency="gbp"),  # 2.5 -> 2 (half to even)
            order("o-5", 5, 15, currency="GBP"),  # 7.5 -> 8
            order("o-6", 6, 100, currency="CHF"),  # no rate: a bad event
            ev("order_refunded", 7, order_id="o-1", refund_minor=500, currency="EUR"),  # 5.40
        ],
        fx_rates=rates,
    )
    assert value(rows, "orders") == 5
    assert value(rows, "revenue") == (1080 + 827 + 325 + 2 + 8) / 100
    assert value(rows, "net_revenue") == (1080 + 827 + 325 + 2 + 8 - 540) / 100
    in_yen = report(
        [order("o-1", 1, 1999), order("o-2", 2, 500, currency="JPY")],
        reporting_currency="JPY",
        fx_rates={"USD": Decimal("150")},
    )
    assert value(in_yen, "revenue") == 2998 + 500  # 19.99 USD = 2998.5 yen -> 2998


def test_raw_lines_count_only_when_the_decoder_accepts_them() -> None:
    payload = json.dumps(web("page_view", 0, "r"))
    future = json.dumps(web("page_view", 60 * 24, "r"))
    stamp = int(T0.timestamp() * 1000)
    lines = [
        {"__raw__": payload, "__family__": "clickstream", "__key__": "r", "__timestamp__": stamp},
        {"__raw__": future, "__family__": "clickstream", "__key__": "r", "__timestamp__": stamp},
        {"__raw__": payload[:20], "__family__": "clickstream", "__timestamp__": stamp},
        {"__raw_b64__": base64.b64encode(b"\x00\x8f").decode(), "__family__": "cart"},
        {"__raw__": payload, "__family__": "orders", "__timestamp__": stamp},  # wrong topic
    ]
    events = accepted_events([json.dumps(x).encode() for x in lines], ReferenceSettings())
    assert [e["event_type"] for e in events] == ["page_view"]


def test_compare_reports() -> None:
    rows = report([web("page_view", 0, "1"), web("page_view", 1, "2"), order("o", 2, 100)])
    assert compare_reports(rows, rows) == []
    engine = [dict(r) for r in rows]
    visitors = next(r for r in engine if r["kpi"] == "unique_visitors")
    visitors["value"] = visitors["numerator"] = visitors["value"] * 1.01  # within 2 %
    assert compare_reports(engine, rows) == []
    page_views = next(r for r in engine if r["kpi"] == "page_views" and r["window"] == "1h")
    page_views["value"] = 3
    dropped = engine.pop()
    problems = compare_reports([*engine, dict(dropped, window="15m")], rows)
    assert len(problems) == 3
    assert any(
        p.startswith("page_views[1h 2026-11-20T10:00:00Z store_id=all]: value 3") for p in problems
    )
    assert any(p.startswith(f"missing in engine: {dropped['kpi']}[") for p in problems)
    assert any(p.startswith(f"extra in engine: {dropped['kpi']}[15m") for p in problems)
    assert compare_reports([], rows, max_lines=2)[-1] == f"... and {len(rows) - 2} more differences"


# --- whole files -------------------------------------------------------------------------------

SIM = SimConfig(
    start=datetime(2026, 11, 20, 6, tzinfo=UTC),
    duration_seconds=3 * 3600,
    seed=5,
    sessions_per_minute=8,
    stores=3,
    currencies={"store-02": "EUR", "store-03": "JPY"},
    anomalies=Anomalies(
        duplicate_share=0.02,
        out_of_order_share=0.02,
        late_share=0.02,
        too_late_share=0.01,
        malformed_share=0.02,
    ),
)


@pytest.fixture(scope="module")
def simulated() -> tuple[list[bytes], list[Any], list[Row]]:
    records = list(simulate(SIM))
    out = io.BytesIO()
    write_jsonl(records, out)
    lines = out.getvalue().splitlines()
    return lines, records, reference_report(lines, ReferenceSettings(fx_rates=fx_rates(SIM)))


def test_simulated_file_accepts_exactly_the_intended_events(
    simulated: tuple[list[bytes], list[Any], list[Row]],
) -> None:
    lines, records, _ = simulated
    events = accepted_events(lines, ReferenceSettings(fx_rates=fx_rates(SIM)))
    kept = (Kind.EVENT, Kind.OUT_OF_ORDER, Kind.LATE)
    intended = [json.loads(r.value)["event_id"] for r in records if r.kind in kept]
    assert {r.kind for r in records} == set(Kind)  # every anomaly is there
    assert sorted(e["event_id"] for e in events) == sorted(intended)


def test_simulated_report_is_well_formed_and_consistent(
    simulated: tuple[list[bytes], list[Any], list[Row]],
) -> None:
    rows = simulated[2]
    assert {r["kpi"] for r in rows} == set(KPI_NAMES)
    assert {r["window"] for r in rows} == {"1h", "1d", "now"}
    assert {r["store_id"] for r in rows} == {"all", "store-01", "store-02", "store-03"}
    assert report_problems(rows) == []


def test_consistency_checks_catch_a_broken_report(
    simulated: tuple[list[bytes], list[Any], list[Row]],
) -> None:
    rows = [dict(r) for r in simulated[2]]
    store_row = next(r for r in rows if r["kpi"] == "orders" and r["store_id"] == "store-02")
    store_row["value"] += 1
    share = next(r for r in rows if r["kpi"] == "bounce_rate")
    share["value"] = 1.5
    problems = report_problems(rows)
    # The stores no longer sum to all, nor the windows to the day; store-02's breakdowns by
    # channel and by device no longer sum to it; 1.5 is neither numerator / denominator nor a
    # share.
    assert len(problems) == 6, problems
    assert sum("rows sum to" in p for p in problems) == 4
    assert any("is not a share" in p for p in problems)


def test_rees46_sample_by_independent_counting() -> None:
    objects = [json.loads(line) for line in REES46.read_text().splitlines()]
    web_sessions = {o["session_id"] for o in objects if o["event_type"] != "order_placed"}
    totals = [o["total_minor"] for o in objects if o["event_type"] == "order_placed"]
    rows = reference_report(REES46.read_bytes().splitlines(), ReferenceSettings())
    hour = {"start": "2019-10-01T00:00:00Z"}
    assert value(rows, "page_views", **hour) == 987
    assert value(rows, "orders", **hour) == len({o.get("order_id") for o in objects} - {None}) == 10
    assert value(rows, "revenue", **hour) == sum(totals) / 100
    assert value(rows, "carts_created", **hour) == 3
    assert value(rows, "sessions", **hour) == len(web_sessions) == 372  # 17 minutes: no splits
    assert value(rows, "unique_visitors", **hour) == len({o["visitor_id"] for o in objects})
    assert value(rows, "page_views", window="1d", start="2019-10-01T00:00:00Z") == 987
    assert compare_reports(rows, rows) == []
