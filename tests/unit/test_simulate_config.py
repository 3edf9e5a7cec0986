"""SimConfig and its parts: sensible defaults, clear errors for bad options."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from streamproc.simulate import (
    Anomalies,
    Funnel,
    SimConfig,
    Support,
    TimeRange,
    Visits,
    fx_rates,
)
from streamproc.simulate.catalog import shop_price
from streamproc.simulate.config import store_ids

START = datetime(2026, 11, 20, 6, tzinfo=UTC)


def test_defaults_are_valid() -> None:
    config = SimConfig(start=START, duration_seconds=None)
    assert config.seed == 0
    assert config.currencies == {}
    assert config.anomalies == Anomalies()
    assert config.funnel.p_add_to_cart + config.visits.p_bounce <= 1


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: SimConfig(start=datetime(2026, 1, 1), duration_seconds=60), "start must be"),  # noqa: DTZ001
        (lambda: SimConfig(start=START, duration_seconds=0), "duration_seconds must be"),
        (lambda: SimConfig(start=START, duration_seconds=None, sessions_per_minute=-1), "sessions"),
        (lambda: SimConfig(start=START, duration_seconds=None, stores=0), "stores must be"),
        (
            lambda: SimConfig(start=START, duration_seconds=None, currencies={"store-09": "EUR"}),
            "currencies key",
        ),
        (
            lambda: SimConfig(start=START, duration_seconds=None, currencies={"store-01": "eur"}),
            "ISO 4217",
        ),
        (
            lambda: SimConfig(
                start=START,
                duration_seconds=None,
                funnel=Funnel(p_add_to_cart=0.7),
                visits=Visits(p_bounce=0.4),
            ),
            r"p_add_to_cart \+ visits.p_bounce",
        ),
        (lambda: Funnel(p_checkout=1.5), "p_checkout must be a probability"),
        (lambda: Funnel(p_order=float("nan")), "p_order"),
        (lambda: Visits(channel_mix={"tv": 1.0}), "channel_mix key"),
        (lambda: Visits(device_mix={"mobile": 0.0}), "positive total weight"),
        (lambda: Visits(mean_pageviews=1), "mean_pageviews"),
        (
            lambda: Support(priority_mix={"other": 1.0}, first_response_median_seconds={"low": 60}),
            r"first_response_median_seconds\['other'\] must be a positive number",
        ),
        (lambda: TimeRange(START, START), "TimeRange.end"),
        (lambda: TimeRange(START, START + timedelta(hours=1), factor=0), "factor"),
        (lambda: Anomalies(malformed_share=0.6, duplicate_share=0.5), "sum"),
        (lambda: Anomalies(idle_gaps=[TimeRange(START, START + timedelta(1))]), "idle_gaps"),  # type: ignore[arg-type]
    ],
)
def test_bad_options_fail_with_a_clear_message(build: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()


def test_mixes_are_frozen_copies() -> None:
    mix = {"mobile": 1.0}
    visits = Visits(device_mix=mix)
    mix["desktop"] = 1.0
    assert dict(visits.device_mix) == {"mobile": 1.0}
    with pytest.raises(TypeError):
        visits.device_mix["tablet"] = 1.0  # type: ignore[index]


def test_store_ids_and_fx_rates() -> None:
    assert store_ids(3) == ["store-01", "store-02", "store-03"]
    assert store_ids(120)[0] == "store-001"
    config = SimConfig(
        start=START, duration_seconds=60, currencies={"store-02": "EUR", "store-03": "JPY"}
    )
    rates = fx_rates(config)
    assert set(rates) == {"EUR", "JPY"}
    assert Decimal("1") < rates["EUR"] < Decimal("1.2")
    assert Decimal("0.005") < rates["JPY"] < Decimal("0.01")


@pytest.mark.parametrize(
    ("minor", "currency", "expected"),
    [(1234, "USD", 1299), (50, "USD", 99), (12345, "KWD", 12990), (1234, "JPY", 1200)],
)
def test_prices_look_like_shop_prices(minor: int, currency: str, expected: int) -> None:
    assert shop_price(minor, currency) == expected
