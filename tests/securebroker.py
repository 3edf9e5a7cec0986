"""Kafka over TLS and over SASL for integration tests: a real Tansu broker with a real stunnel in
front of it, never a mock.

Tansu's own TLS (``--cert``/``--key``) does not work with aiokafka (the connection closes with
"early eof"), so TLS is terminated by stunnel (Debian package ``stunnel4``): Tansu listens in
plaintext on a private port and advertises stunnel's port, so every client connection, after the
bootstrap too, goes through TLS::

    client --TLS--> stunnel (bootstrap, advertised) --TCP--> tansu (broker_port, private)

``TlsBroker``
    SSL. ``bootstrap`` is the TLS port; ``ca`` signed the server certificate (for 127.0.0.1 and
    localhost), ``untrusted_ca`` did not. With ``require_client_cert=True`` (mutual TLS) stunnel
    asks for a client certificate that ``ca`` signed (``verifyChain = yes``), such as
    ``client_cert``/``client_key``.

``SaslBroker``
    SASL_PLAINTEXT and SASL_SSL: Tansu with ``--authentication``, stunnel in front. It has no
    users and cannot have any: Tansu creates SCRAM users only over the Kafka API
    (AlterUserScramCredentials, ``tansu user create``), which it refuses to an unauthenticated
    client, and this build stores them in memory only (no postgres storage). So it is good for
    refusals only; what aiokafka 0.14 gets from it (measured on this machine, each within ~30 ms,
    the same on SASL_PLAINTEXT and SASL_SSL; see ``SaslBroker``):

    ============================  ==========================================================
    SCRAM-SHA-256, SCRAM-SHA-512  ``KeyError('v')``, from ``create_conn`` and raw out of
                                  ``AIOKafkaProducer.start()`` (not wrapped in a Kafka error)
    PLAIN                         ``KafkaConnectionError`` (Tansu offers only SCRAM and closes)
    no SASL (PLAINTEXT / SSL)     ``KafkaConnectionError`` (Tansu closes: NotAuthenticated)
    ============================  ==========================================================

Servers run in sessions of their own (``faults._Server``), their logs and stunnel's config in the
broker's work dir, and are killed by ``close()`` (the context managers and fixtures call it).
``require_tool`` skips a test when stunnel or openssl is missing, and fails it when CI is set
(scripts/test installs both).
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import struct
from pathlib import Path

import pytest
from aiokafka.helpers import create_ssl_context
from certs import make_certs, make_client_cert, make_untrusted_ca
from faults import HOST, _Server, _wait_until, stable_port

from streamproc.devstack import find_broker_binary, tansu_command

STUNNEL = ("stunnel4", "stunnel")  # Debian's name, then upstream's


def in_ci() -> bool:
    """CI is set (to anything but empty, 0 or false): missing tools fail instead of skipping."""
    return os.environ.get("CI", "").lower() not in ("", "0", "false")


def require_tool(*names: str, package: str) -> str:
    """The path of the first of ``names`` on PATH; skips the test when there is none, or fails
    it in CI (scripts/test installs ``package``)."""
    for name in names:
        found = shutil.which(name)
        if found is not None:
            return found
    message = f"{names[0]} is not installed (apt-get install {package})"
    if in_ci():
        pytest.fail(f"{message}; scripts/test installs it in CI")
    pytest.skip(message)


def stunnel_binary() -> str:
    for name in STUNNEL:
        found = shutil.which(name)
        if found is not None:
            return found
    raise RuntimeError("stunnel is not installed (Debian package stunnel4; scripts/test)")


def kafka_answers(port: int, *, tls: ssl.SSLContext | None = None, timeout: float = 1.0) -> bool:
    """True when an ApiVersions (v0) request to ``HOST:port`` gets a reply without an error.

    ApiVersions is the one request Tansu answers before SASL authentication, so this also probes
    a ``--authentication`` broker, and, with ``tls``, the whole way through stunnel.
    """
    client_id = b"streamproc-test"
    request = struct.pack(">hhih", 18, 0, 7, len(client_id)) + client_id
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as raw:
            sock = tls.wrap_socket(raw, server_hostname=HOST) if tls is not None else raw
            with sock:
                sock.sendall(struct.pack(">i", len(request)) + request)
                head = b""
                while len(head) < 10:
                    chunk = sock.recv(10 - len(head))
                    if not chunk:
                        return False
                    head += chunk
    except OSError:  # ssl.SSLError included
        return False
    size, correlation_id, error_code = struct.unpack(">iih", head)
    return bool(size >= 6 and correlation_id == 7 and error_code == 0)


class _StunnelledTansu:
    """A memory-only Tansu on a private port, advertising the port of a stunnel in front."""

    def __init__(self, workdir: Path, *, authentication: bool, require_client_cert: bool) -> None:
        self.workdir = workdir
        self.authentication = authentication
        self.require_client_cert = require_client_cert
        self.binary = find_broker_binary()
        self.stunnel = stunnel_binary()
        certs = workdir / "certs"
        self.ca, self.cert, self.key = make_certs(certs)
        self.client_cert, self.client_key = make_client_cert(certs, self.ca)
        self.untrusted_ca = make_untrusted_ca(certs)
        self.broker_port = stable_port()
        self.tls_port = stable_port()
        while self.tls_port == self.broker_port:
            self.tls_port = stable_port()
        self._tansu: _Server | None = None
        self._stunnel: _Server | None = None

    @property
    def tls_bootstrap(self) -> str:
        """stunnel's TLS port, the one Tansu advertises."""
        return f"{HOST}:{self.tls_port}"

    def ssl_context(self, ca: Path | None = None, *, client_cert: bool = True) -> ssl.SSLContext:
        """A client context (aiokafka's ``create_ssl_context``) trusting ``ca`` (default: the CA
        that signed the server), presenting ``client_cert`` unless told not to."""
        cert, key = (self.client_cert, self.client_key) if client_cert else (None, None)
        context: ssl.SSLContext = create_ssl_context(
            cafile=ca or self.ca, certfile=cert, keyfile=key
        )
        return context

    def start(self, timeout: float = 20.0) -> None:
        try:
            self._start_tansu(timeout)
            self._start_stunnel(timeout)
        except BaseException:
            self.close()
            raise

    def _start_tansu(self, timeout: float) -> None:
        argv, env = tansu_command(
            self.binary,
            listen=f"tcp://{HOST}:{self.broker_port}",
            advertise=f"tcp://{HOST}:{self.tls_port}",
            authentication=self.authentication,
        )
        self._tansu = _Server("tansu", argv, self.workdir / "tansu.log", env)
        self._tansu.start()
        _wait_until(lambda: kafka_answers(self.broker_port), self._tansu, timeout)

    def _start_stunnel(self, timeout: float) -> None:
        conf = self.workdir / "stunnel.conf"
        lines = ["foreground = yes", "pid =", "syslog = no", "", "[kafka]"]
        lines += [f"accept = {HOST}:{self.tls_port}", f"connect = {HOST}:{self.broker_port}"]
        lines += [f"cert = {self.cert}", f"key = {self.key}"]
        if self.require_client_cert:
            lines += [f"CAfile = {self.ca}", "verifyChain = yes", "requireCert = yes"]
        conf.write_text("\n".join(lines) + "\n")
        # foreground = yes: stunnel logs to stderr, which _Server appends to stunnel.log
        log = self.workdir / "stunnel.log"
        self._stunnel = _Server("stunnel", [self.stunnel, str(conf)], log, dict(os.environ))
        self._stunnel.start()
        tls = self.ssl_context()
        _wait_until(lambda: kafka_answers(self.tls_port, tls=tls), self._stunnel, timeout)

    def logs(self, lines: int = 20) -> str:
        """The tails of the Tansu and stunnel logs, for assertion messages."""
        return "\n".join(
            f"--- {server.log.name}\n{server.tail(lines)}"
            for server in (self._tansu, self._stunnel)
            if server is not None
        )

    def close(self) -> None:
        for server in (self._stunnel, self._tansu):
            if server is not None:
                server.kill()


class TlsBroker(_StunnelledTansu):
    """Tansu behind stunnel: Kafka over TLS (security protocol SSL) at ``bootstrap``.

    Attributes: ``bootstrap`` ("127.0.0.1:<tls port>"), ``ca`` (the CA that signed the server's
    certificate), ``cert``/``key`` (the server's), ``untrusted_ca`` (a CA that signed nothing
    here), ``client_cert``/``client_key`` (signed by ``ca``; required when
    ``require_client_cert``), ``broker_port`` (Tansu's plaintext port: it advertises the TLS one,
    so a plaintext client gets only as far as the metadata), ``workdir`` (certs and logs).

    What aiokafka gets: the right CA works; ``untrusted_ca`` makes ``create_conn`` raise
    ``ssl.SSLCertVerificationError`` at once (``AIOKafkaProducer.start()``: a generic
    ``KafkaConnectionError``), in milliseconds; with ``require_client_cert``, a client without a
    certificate gets ``KafkaConnectionError`` ("Connection at ... closed") from ``create_conn``
    too, not an ``ssl.SSLError``: with TLS 1.3 the client's handshake is over before stunnel
    checks, and stunnel closes (its log: "peer did not return a certificate").
    """

    def __init__(self, workdir: Path, *, require_client_cert: bool = False) -> None:
        super().__init__(workdir, authentication=False, require_client_cert=require_client_cert)

    @property
    def bootstrap(self) -> str:
        return self.tls_bootstrap

    def __enter__(self) -> TlsBroker:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class SaslBroker(_StunnelledTansu):
    """Tansu with ``--authentication`` (SASL, mechanisms SCRAM-SHA-256 and SCRAM-SHA-512, no
    users: every credential is refused), plaintext at ``bootstrap`` (SASL_PLAINTEXT) and behind
    stunnel at ``tls_bootstrap`` (SASL_SSL; ``ca`` signed its certificate, ``untrusted_ca``
    did not).

    Tansu advertises one address only, stunnel's, so that SASL_SSL works all the way. The plain
    ``bootstrap`` is good for SASL_PLAINTEXT refusals: authentication happens on the bootstrap
    connection, before any metadata, so a client is refused there (had it been let in, it would
    go on in plaintext to the advertised TLS port and fail there).

    What aiokafka 0.14.0 gets from it, SASL_PLAINTEXT and SASL_SSL alike, each within ~30 ms
    (measured with ``create_conn`` and ``AIOKafkaProducer.start()``; Tansu logs the reason):

    - SCRAM-SHA-256 / SCRAM-SHA-512, any user: ``KeyError('v')``. Tansu answers the client's
      final SCRAM message with error_code 0 and the RFC 5802 server error ``e=unknown-user``;
      aiokafka's ``ScramAuthenticator.process_server_final_message`` reads only ``v=`` and
      raises ``KeyError``, which ``AIOKafkaProducer.start()`` (and a consumer's, an admin
      client's) lets out as is: not a ``SaslAuthenticationFailed``, not a ``KafkaError``.
    - PLAIN: ``KafkaConnectionError`` ("Connection at ... closed"; ``start()``: "Unable to
      bootstrap from ..."). Tansu offers only SCRAM and closes the connection (its log:
      ``Auth(Sasl(NoSharedMechanism))``) instead of answering the SaslHandshake with an
      UnsupportedSaslMechanism error.
    - no SASL at all (PLAINTEXT or SSL): ``KafkaConnectionError``; Tansu closes on the first
      request other than ApiVersions (its log: ``KafkaProtocol(NotAuthenticated)``).
    """

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir, authentication=True, require_client_cert=False)

    @property
    def bootstrap(self) -> str:
        """Tansu's own port: SASL_PLAINTEXT (see the class docstring for what it is good for)."""
        return f"{HOST}:{self.broker_port}"

    def __enter__(self) -> SaslBroker:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
