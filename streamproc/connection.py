"""How streamproc reaches Kafka: the bootstrap servers and the security settings
(``STREAMPROC_KAFKA_*``, docs/settings.md), one value handed to every client: the producers,
consumers and admin clients of ``broker`` and Faust's (``worker.app``).

A refused password, a mechanism the broker does not offer or an untrusted certificate is a
setting to fix, not an outage to wait out, but aiokafka's clients report it as any connection
error (a SCRAM user the broker does not know even as a KeyError). ``check`` opens one
connection with the settings and tells them apart: it raises ``BrokerRefused`` naming the
setting, within seconds.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streamproc.errors import BrokerRefused

if TYPE_CHECKING:
    from streamproc.config import Settings

TLS_PROTOCOLS = frozenset({"SSL", "SASL_SSL"})
SASL_PROTOCOLS = frozenset({"SASL_PLAINTEXT", "SASL_SSL"})


@dataclass(frozen=True, slots=True)
class KafkaConnection:
    """Where Kafka is and how to log in: what every client of the project is given.

    ``str()`` is the servers alone, for messages: the password never shows (``repr`` leaves it
    out too).
    """

    servers: str
    protocol: str = "PLAINTEXT"  # PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL
    mechanism: str | None = None  # PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    cafile: Path | None = None
    certfile: Path | None = None
    keyfile: Path | None = None

    @classmethod
    def of(cls, where: KafkaConnection | str) -> KafkaConnection:
        """A connection as given, or plaintext to the given servers."""
        return where if isinstance(where, KafkaConnection) else cls(where)

    @classmethod
    def from_settings(cls, settings: Settings, servers: str) -> KafkaConnection:
        from streamproc.config import secret_of

        return cls(
            servers,
            protocol=settings.kafka_security_protocol,
            mechanism=settings.kafka_sasl_mechanism,
            username=settings.kafka_sasl_username,
            password=secret_of(settings.kafka_sasl_password),
            cafile=settings.kafka_ssl_cafile,
            certfile=settings.kafka_ssl_certfile,
            keyfile=settings.kafka_ssl_keyfile,
        )

    def __str__(self) -> str:
        return self.servers

    @property
    def tls(self) -> bool:
        return self.protocol in TLS_PROTOCOLS

    @property
    def sasl(self) -> bool:
        return self.protocol in SASL_PROTOCOLS

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context of SSL and SASL_SSL (None otherwise): the CA file's CAs (else the
        system's), host names checked, the client certificate when one is set."""
        if not self.tls:
            return None
        try:
            context = ssl.create_default_context(cafile=self.cafile)
        except (OSError, ssl.SSLError) as exc:
            raise BrokerRefused(
                f"STREAMPROC_KAFKA_SSL_CAFILE: cannot use {self.cafile}: {exc}"
            ) from exc
        if self.certfile is not None:
            try:
                context.load_cert_chain(self.certfile, self.keyfile)
            except (OSError, ssl.SSLError) as exc:
                raise BrokerRefused(
                    "STREAMPROC_KAFKA_SSL_CERTFILE/STREAMPROC_KAFKA_SSL_KEYFILE: cannot use "
                    f"{self.certfile} (key {self.keyfile or 'in the same file'}): {exc}"
                ) from exc
        return context

    def security_options(self) -> dict[str, Any]:
        """The keyword arguments of aiokafka's clients (and ``create_conn``) that say how to log
        in; ``client_options`` adds the servers."""
        options: dict[str, Any] = {"security_protocol": self.protocol}
        if self.tls:
            options["ssl_context"] = self.ssl_context()
        if self.sasl:
            options.update(
                sasl_mechanism=self.mechanism,
                sasl_plain_username=self.username,
                sasl_plain_password=self.password,
            )
        return options

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments for AIOKafkaProducer, AIOKafkaConsumer and AIOKafkaAdminClient."""
        return {"bootstrap_servers": self.servers, **self.security_options()}

    def hosts(self) -> list[tuple[str, int]]:
        """(host, port) of each bootstrap server (9092 when none is given)."""
        found = []
        for item in self.servers.split(","):
            host, _, port = item.strip().rpartition(":")
            if not host:  # no port
                host, port = item.strip(), "9092"
            found.append((host.strip("[]"), int(port)))
        return found


async def check(where: KafkaConnection | str, *, timeout_s: float = 10.0) -> None:
    """Raise ``BrokerRefused`` when the first bootstrap server that answers refuses the
    settings (credentials, mechanism, certificate, TLS on one side only). Return when one
    accepts them, or when none answers: an outage, which the clients wait out themselves."""
    from aiokafka.conn import create_conn
    from aiokafka.errors import (
        AuthenticationFailedError,
        IllegalSaslStateError,
        KafkaError,
        SaslAuthenticationFailed,
        UnsupportedSaslMechanismError,
    )

    conn = KafkaConnection.of(where)
    if conn.protocol == "PLAINTEXT":
        return  # nothing to refuse
    options = conn.security_options()
    for host, port in conn.hosts():
        at = f"Kafka at {host}:{port}"
        try:
            opened = await asyncio.wait_for(
                create_conn(host, port, request_timeout_ms=int(timeout_s * 1000), **options),
                timeout_s,
            )
        except ssl.SSLCertVerificationError as exc:
            raise BrokerRefused(
                f"{at}: its TLS certificate is not trusted ({exc.verify_message}): set "
                "STREAMPROC_KAFKA_SSL_CAFILE to the CA that signed it"
            ) from None
        except ssl.SSLError as exc:
            raise BrokerRefused(
                f"{at}: the TLS handshake failed ({exc.reason or exc}): does it speak TLS on "
                f"this port (STREAMPROC_KAFKA_SECURITY_PROTOCOL={conn.protocol})?"
            ) from None
        except UnsupportedSaslMechanismError as exc:
            raise BrokerRefused(
                f"{at} does not offer STREAMPROC_KAFKA_SASL_MECHANISM={conn.mechanism} ({exc})"
            ) from None
        except (
            SaslAuthenticationFailed,
            AuthenticationFailedError,
            IllegalSaslStateError,
            KeyError,
        ):
            # aiokafka 0.14 reads a SCRAM server's answer without looking for its error
            # (``e=unknown-user``): a KeyError for the missing ``v=``
            raise BrokerRefused(
                f"{at} refused the credentials (STREAMPROC_KAFKA_SASL_USERNAME="
                f"{conn.username}, STREAMPROC_KAFKA_SASL_PASSWORD, mechanism {conn.mechanism})"
            ) from None
        except (OSError, TimeoutError, KafkaError):
            continue  # not reachable (or not now): the next server, else an outage
        opened.close()
        return
