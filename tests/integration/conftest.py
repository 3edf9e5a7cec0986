"""Integration tests share ``stack`` and ``namespace`` from tests/conftest.py, and the secured
brokers of tests/securebroker.py: ``tls_broker``, ``mtls_broker`` and ``sasl_broker``, one per
test module (a test names its topics after ``namespace``). Each skips its tests when stunnel or
openssl is missing, and fails them when CI is set (scripts/test installs both)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from securebroker import STUNNEL, SaslBroker, TlsBroker, require_tool


def _require_tools() -> None:
    require_tool("openssl", package="openssl")
    require_tool(*STUNNEL, package="stunnel4")


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsBroker]:
    """Kafka over TLS (security protocol SSL): Tansu behind stunnel."""
    _require_tools()
    with TlsBroker(tmp_path_factory.mktemp("tls-broker")) as server:
        yield server


@pytest.fixture(scope="module")
def mtls_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsBroker]:
    """Kafka over mutual TLS: stunnel wants a client certificate its CA signed
    (``client_cert``/``client_key``)."""
    _require_tools()
    with TlsBroker(tmp_path_factory.mktemp("mtls-broker"), require_client_cert=True) as server:
        yield server


@pytest.fixture(scope="module")
def sasl_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SaslBroker]:
    """Tansu requiring SASL (SCRAM, no users: every credential is refused), SASL_PLAINTEXT at
    ``bootstrap`` and SASL_SSL at ``tls_bootstrap``."""
    _require_tools()
    with SaslBroker(tmp_path_factory.mktemp("sasl-broker")) as server:
        yield server
