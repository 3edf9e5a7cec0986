"""Certificates for the TLS tests, made with the ``openssl`` command (scripts/test installs it):
a CA and a server certificate for 127.0.0.1 it signed, a client certificate the same CA signed
(for servers that require one), and a CA of its own that signed nothing the servers present (for
"untrusted certificate" cases). Valid for two days; unencrypted ECDSA P-256 keys (an RSA 2048
key takes up to half a second to make, one of these a few milliseconds)."""

from __future__ import annotations

import subprocess
from pathlib import Path

_KEY = ("ec", "-pkeyopt", "ec_paramgen_curve:prime256v1")


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca(where: Path, name: str = "ca", *, subject: str = "/CN=streamproc test CA") -> Path:
    """A self-signed CA: ``where/<name>.crt`` (returned) and its key ``where/<name>.key``."""
    where.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-newkey", *_KEY, "-nodes", "-keyout", f"{name}.key", "-out",
             f"{name}.crt", "-days", "2", "-subj", subject, cwd=where)  # fmt: skip
    return where / f"{name}.crt"


def _sign(where: Path, ca: Path, name: str, *, subject: str, extensions: str) -> tuple[Path, Path]:
    """A key and a certificate ``ca`` (with its key beside it, ``<ca>.key``) signed."""
    _openssl("req", "-newkey", *_KEY, "-nodes", "-keyout", f"{name}.key", "-out",
             f"{name}.csr", "-subj", subject, cwd=where)  # fmt: skip
    (where / f"{name}.cnf").write_text(extensions)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", str(ca), "-CAkey",
             str(ca.with_suffix(".key")), "-CAcreateserial", "-out", f"{name}.crt", "-days", "2",
             "-extfile", f"{name}.cnf", cwd=where)  # fmt: skip
    return where / f"{name}.crt", where / f"{name}.key"


def make_certs(where: Path) -> tuple[Path, Path, Path]:
    """A CA, and a server certificate for 127.0.0.1 it signed: (ca, cert, key)."""
    ca = make_ca(where)
    cert, key = _sign(
        where, ca, "server", subject="/CN=127.0.0.1",
        extensions="subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )  # fmt: skip
    return ca, cert, key


def make_client_cert(where: Path, ca: Path) -> tuple[Path, Path]:
    """A client certificate (extendedKeyUsage clientAuth) signed by ``ca``, a CA of
    ``make_certs`` or ``make_ca`` (its key beside it): (cert, key) in ``where``."""
    where.mkdir(parents=True, exist_ok=True)
    return _sign(
        where, ca, "client", subject="/CN=streamproc test client",
        extensions="extendedKeyUsage=clientAuth\n",
    )  # fmt: skip


def make_untrusted_ca(where: Path) -> Path:
    """A CA that signed none of the certificates above: a client that trusts only it must refuse
    the servers ("unable to get local issuer certificate"): ``where/untrusted-ca.crt``."""
    return make_ca(where, "untrusted-ca", subject="/CN=streamproc untrusted test CA")
