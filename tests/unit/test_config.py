"""Settings: typed, validated, documented."""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path

import pytest

from streamproc.config import load_settings, retired_settings
from streamproc.errors import ConfigError
from streamproc.times import parse_duration_seconds


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("STREAMPROC_") or name == "REDIS_URL":
            monkeypatch.delenv(name)


def test_defaults() -> None:
    settings = load_settings(env_file=None)
    assert settings.topic_clickstream == "shop.clickstream"
    assert settings.window_seconds == (60, 300, 900, 3600, 86400)
    assert settings.fx_rates == {}
    assert settings.bootstrap_servers is None


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMPROC_PARTITIONS", "12")
    monkeypatch.setenv("STREAMPROC_FX_RATES", "eur=1.08, GBP=1.27")
    monkeypatch.setenv("STREAMPROC_WINDOWS", "1m,1h")
    monkeypatch.setenv("REDIS_URL", "redis://example:6379/1")
    settings = load_settings(env_file=None)
    assert settings.partitions == 12
    assert settings.fx_rates == {"EUR": Decimal("1.08"), "GBP": Decimal("1.27")}
    assert settings.window_seconds == (60, 3600)
    assert settings.redis_url == "redis://example:6379/1"


def test_env_file(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("STREAMPROC_NAMESPACE=from-file\nSTREAMPROC_MAX_STORES=7\n")
    settings = load_settings(env_file=env_file)
    assert (settings.namespace, settings.max_stores) == ("from-file", 7)


def test_a_retired_setting_is_named_with_why(tmp_path: Path) -> None:
    name = "STREAMPROC_DEDUP_HORIZON_SECONDS"
    assert retired_settings({"STREAMPROC_NAMESPACE": "x"}, env_file=None) == []
    (warning,) = retired_settings({name: "3600"}, env_file=None)
    assert warning.startswith(f"{name} is set but no longer used: duplicates are dropped")
    env_file = tmp_path / ".env"
    env_file.write_text(f"{name}=3600\n")
    assert len(retired_settings({}, env_file=env_file)) == 1
    assert load_settings(env_file=env_file).namespace  # still starts


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("STREAMPROC_PARTITIONS", "many", "valid integer"),
        ("STREAMPROC_PARTITIONS", "0", "greater than or equal to 1"),
        ("STREAMPROC_WINDOWS", "90s", "whole number of minutes"),
        ("STREAMPROC_WINDOWS", "1 fortnight", "not a duration"),
        ("STREAMPROC_FX_RATES", "EUR", "CODE=RATE"),
        ("STREAMPROC_FX_RATES", "EUR=-1", "positive"),
        ("STREAMPROC_FX_RATES", "EURO=1", "ISO 4217"),
        ("STREAMPROC_REPORTING_CURRENCY", "usd", "pattern"),
        ("STREAMPROC_NAMESPACE", "has space", "pattern"),
        ("STREAMPROC_LOG_LEVEL", "loud", "debug"),
        ("STREAMPROC_GROUP_HEARTBEAT_INTERVAL_SECONDS", "5", "less than half"),
    ],
)
def test_errors_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        load_settings(env_file=None)
    assert name in str(info.value)
    assert message in str(info.value)


def test_settings_are_frozen() -> None:
    settings = load_settings(env_file=None)
    with pytest.raises(ValueError, match="frozen"):
        settings.partitions = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "seconds"), [("30s", 30), ("15m", 900), ("2h", 7200), ("1d", 86400), ("1w", 604800)]
)
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration_seconds(text) == seconds


def test_settings_as_a_child_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """What ``env`` writes, a child reading its environment reads back: the same values."""
    settings = load_settings(
        env_file=None,
        windows=["5m", "1h"],
        fx_rates={"EUR": Decimal("1.08")},
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="PLAIN",
        kafka_sasl_username="u",
        kafka_sasl_password="p",
    ).with_namespace("bf-x", topics=False)
    fields = ("namespace", "topic_dlq", "topic_cart", "windows", "fx_rates", "state_dir")
    fields += ("kafka_security_protocol", "kafka_sasl_mechanism", "kafka_sasl_username")
    fields += ("kafka_sasl_password", "partitions")
    env = settings.env(*fields, "bootstrap_servers")  # unset: left out
    assert env["STREAMPROC_NAMESPACE"] == "bf-x" and env["STREAMPROC_TOPIC_DLQ"] == "bf-x.dlq"
    assert env["STREAMPROC_TOPIC_CART"] == "shop.cart"  # topics=False: the input stays
    assert "STREAMPROC_BOOTSTRAP_SERVERS" not in env
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    child = load_settings(env_file=None)
    for name in fields:
        assert getattr(child, name) == getattr(settings, name), name
    replayed = settings.with_namespace("replay-1", topics=True)
    assert replayed.input_topics == tuple(
        f"replay-1.{family}" for family in ("clickstream", "cart", "orders", "tickets")
    )
