"""The Kafka security settings: validated together, turned into the options of aiokafka's clients
and Faust's credentials, and never shown with the password."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import faust
import pytest

from streamproc.config import load_settings
from streamproc.connection import KafkaConnection, check
from streamproc.errors import BrokerRefused, ConfigError
from streamproc.worker.app import faust_credentials

SECRET = "sentinel-kafka-pw-5e1d"


def _sasl_ssl(**extra: object) -> dict[str, object]:
    return {
        "kafka_security_protocol": "sasl_ssl",
        "kafka_sasl_mechanism": "scram-sha-512",
        "kafka_sasl_username": "shop",
        "kafka_sasl_password": SECRET,
        **extra,
    }


def test_sasl_ssl_settings_become_aiokafka_options() -> None:
    settings = load_settings(env_file=None, **_sasl_ssl())
    kafka = KafkaConnection.from_settings(settings, "b-1.example:9096,b-2.example:9096")
    options = kafka.client_options()
    assert options["bootstrap_servers"] == "b-1.example:9096,b-2.example:9096"
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (options["sasl_plain_username"], options["sasl_plain_password"]) == ("shop", SECRET)
    context = options["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    assert kafka.hosts() == [("b-1.example", 9096), ("b-2.example", 9096)]


def test_the_password_never_shows() -> None:
    settings = load_settings(env_file=None, **_sasl_ssl())
    kafka = KafkaConnection.from_settings(settings, "b:9096")
    assert SECRET not in repr(kafka) and SECRET not in str(kafka)
    assert SECRET not in repr(settings) and SECRET not in str(settings.model_dump())
    credentials = faust_credentials(kafka)
    assert SECRET not in repr(credentials)


def test_faust_gets_the_same_credentials() -> None:
    settings = load_settings(env_file=None, **_sasl_ssl())
    sasl = faust_credentials(KafkaConnection.from_settings(settings, "b:9096"))
    assert isinstance(sasl, faust.SASLCredentials)
    assert (sasl.protocol.value, sasl.mechanism.value) == ("SASL_SSL", "SCRAM-SHA-512")
    assert (sasl.username, sasl.password) == ("shop", SECRET)
    plain_sasl = KafkaConnection("b:9092", "SASL_PLAINTEXT", "PLAIN", "u", "p")
    credentials = faust_credentials(plain_sasl)
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.protocol.value == "SASL_PLAINTEXT" and credentials.ssl_context is None
    tls = faust_credentials(KafkaConnection("b:9093", "SSL"))
    assert isinstance(tls, faust.SSLCredentials) and tls.protocol.value == "SSL"
    assert faust_credentials(KafkaConnection("b:9092")) is None


@pytest.mark.parametrize(
    ("given", "named"),
    [
        ({"kafka_security_protocol": "SASL_SSL"}, "STREAMPROC_KAFKA_SASL_PASSWORD"),
        ({"kafka_sasl_username": "u"}, "STREAMPROC_KAFKA_SASL_USERNAME set, but"),
        ({"kafka_ssl_cafile": __file__}, "STREAMPROC_KAFKA_SSL_CAFILE set, but"),
        (
            {"kafka_security_protocol": "SSL", "kafka_ssl_keyfile": __file__},
            "STREAMPROC_KAFKA_SSL_KEYFILE needs STREAMPROC_KAFKA_SSL_CERTFILE",
        ),
        ({"kafka_security_protocol": "TLS"}, "STREAMPROC_KAFKA_SECURITY_PROTOCOL"),
        ({"kafka_sasl_mechanism": "GSSAPI"}, "STREAMPROC_KAFKA_SASL_MECHANISM"),
        (
            {"kafka_security_protocol": "SSL", "kafka_ssl_cafile": "/nonexistent/ca.pem"},
            "STREAMPROC_KAFKA_SSL_CAFILE",
        ),
    ],
)
def test_incomplete_or_contradicting_settings_name_the_variables(
    given: dict[str, object], named: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings(env_file=None, **given)
    assert named in str(refused.value)


def test_a_rejected_password_value_is_not_echoed() -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings(env_file=None, **_sasl_ssl(kafka_sasl_mechanism="nope"))
    assert SECRET not in str(refused.value)


def test_an_unusable_ca_file_names_the_setting(tmp_path: Path) -> None:
    bogus = tmp_path / "ca.pem"
    bogus.write_text("not a certificate\n")
    kafka = KafkaConnection("b:9093", "SSL", cafile=bogus)
    with pytest.raises(BrokerRefused, match="STREAMPROC_KAFKA_SSL_CAFILE"):
        kafka.client_options()


def test_check_leaves_an_outage_to_the_clients() -> None:
    """Nobody listens: not a refusal (the clients wait for the broker), and quickly."""
    kafka = KafkaConnection("127.0.0.1:9", "SASL_SSL", "SCRAM-SHA-256", "u", "p")
    asyncio.run(asyncio.wait_for(check(kafka, timeout_s=2.0), 10.0))


def test_secrets_come_from_files_named_after_their_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Docker secrets: /run/secrets/STREAMPROC_KAFKA_SASL_PASSWORD, or STREAMPROC_SECRETS_DIR;
    an environment variable wins over the file."""
    (tmp_path / "STREAMPROC_KAFKA_SASL_PASSWORD").write_text(f"{SECRET}\n")
    monkeypatch.setenv("STREAMPROC_SECRETS_DIR", str(tmp_path))
    given = {key: value for key, value in _sasl_ssl().items() if key != "kafka_sasl_password"}
    settings = load_settings(env_file=None, **given)
    assert settings.kafka_sasl_password is not None
    assert settings.kafka_sasl_password.get_secret_value() == SECRET
    monkeypatch.setenv("STREAMPROC_KAFKA_SASL_PASSWORD", "from-the-environment")
    settings = load_settings(env_file=None, **given)
    assert settings.kafka_sasl_password is not None
    assert settings.kafka_sasl_password.get_secret_value() == "from-the-environment"
    monkeypatch.setenv("STREAMPROC_SECRETS_DIR", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="STREAMPROC_SECRETS_DIR"):
        load_settings(env_file=None)


def test_a_security_protocol_needs_explicit_servers_but_not_for_the_exporter(
    tmp_path: Path,
) -> None:
    """The dev stack's broker is plaintext: with a security protocol the servers must be given;
    the exporter (Redis only) starts without them."""
    from streamproc.cli.common import endpoints

    settings = load_settings(env_file=None, state_dir=tmp_path, **_sasl_ssl())
    with pytest.raises(ConfigError, match="STREAMPROC_BOOTSTRAP_SERVERS"):
        endpoints(settings)
    assert endpoints(settings, kafka=False).redis_url.startswith("redis://")
    explicit = settings.model_copy(update={"bootstrap_servers": "b:9096"})
    assert endpoints(explicit).kafka.protocol == "SASL_SSL"
