"""Kafka over TLS (and mutual TLS) end to end, and refusals of SASL credentials and certificates,
against real servers: Tansu behind stunnel (tests/securebroker.py).

Every client of the project takes one ``KafkaConnection``: the topic set-up, the producers of
``produce``, ``simulate`` and ``replay``, the offset look-ups of ``backfill`` and the worker's
Faust clients. A replay over TLS equals the reference; a wrong password, an unknown user or an
untrusted certificate stops each command within seconds with one line naming the setting, and
the password shows nowhere, not even at DEBUG. (Tansu can hold no SASL user here, see
tests/securebroker.py: SASL is proven by its refusals.)
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from helpers import anomalous_traffic
from reference.common import ReferenceSettings
from reference.kpis import reference_report
from reference.report import compare_reports
from securebroker import SaslBroker, TlsBroker

from streamproc import broker
from streamproc.connection import KafkaConnection
from streamproc.devstack import StackInfo

pytestmark = pytest.mark.integration

SECRET = "kafka-sentinel-pw-3b9e"  # must never appear in any output
START = datetime(2026, 11, 3, 9, tzinfo=UTC)


def _events(tmp_path: Path, *, minutes: int, seed: int) -> tuple[list[bytes], Path]:
    lines = anomalous_traffic(start=START, minutes=minutes, seed=seed, rate=10)
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return lines, path


def _tls_env(tls: TlsBroker, *, ca: Path | None = None) -> dict[str, str]:
    return {
        "STREAMPROC_BOOTSTRAP_SERVERS": tls.bootstrap,
        "STREAMPROC_KAFKA_SECURITY_PROTOCOL": "SSL",
        "STREAMPROC_KAFKA_SSL_CAFILE": str(ca or tls.ca),
    }


def _run(args: list[str], env: dict[str, str], timeout_s: float) -> tuple[int, str, float]:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "streamproc", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    return done.returncode, done.stdout + done.stderr, time.monotonic() - started


async def _round_trip(kafka: KafkaConnection, topic: str) -> dict[str, object]:
    """Every entry point of ``broker`` once: topics, a producer, offsets, a seal, a delete."""
    counts = await broker.ensure_topics(kafka, {topic: 2})
    async with broker.Producer(kafka) as producer:
        for n in range(5):
            await producer.send(topic, key=b"k", value=b"v%d" % n, timestamp_ms=1_000 + n)
    parts = [(topic, 0), (topic, 1)]
    async with broker.OffsetReader(kafka) as reader:
        ends = await reader.highwaters(parts)
        stamps = [s async for _, batch in reader.timestamps({p: (0, ends[p]) for p in parts})
                  for s in batch]  # fmt: skip
    sealed = await broker.seal(kafka, topic, key=b"seal")
    listed = await broker.partition_counts(kafka, [topic])
    deleted = await broker.delete_topics(kafka, [topic])
    return {
        "counts": counts,
        "records": sum(ends.values()),
        "stamps": sorted(ts for _, ts in stamps),
        "sealed": sealed,
        "listed": listed,
        "deleted": deleted,
    }


def test_every_broker_client_works_over_tls_and_mutual_tls(
    tls_broker: TlsBroker, mtls_broker: TlsBroker, namespace: str
) -> None:
    expected = {
        "counts": {f"{namespace}.t": 2},
        "records": 5,
        "stamps": [1000, 1001, 1002, 1003, 1004],
        "sealed": 2,
        "listed": {f"{namespace}.t": 2},
        "deleted": [f"{namespace}.t"],
    }
    tls = KafkaConnection(tls_broker.bootstrap, "SSL", cafile=tls_broker.ca)
    assert asyncio.run(_round_trip(tls, f"{namespace}.t")) == expected
    mutual = KafkaConnection(
        mtls_broker.bootstrap,
        "SSL",
        cafile=mtls_broker.ca,
        certfile=mtls_broker.client_cert,
        keyfile=mtls_broker.client_key,
    )
    assert asyncio.run(_round_trip(mutual, f"{namespace}.t")) == expected


def test_a_replay_over_tls_matches_the_reference(
    tls_broker: TlsBroker, stack: StackInfo, tmp_path: Path
) -> None:
    """The topic set-up, the replay's producer and the workers' Faust consumer, producer and
    changelog all go through TLS (the workers inherit the settings); the report is the
    reference's."""
    lines, events = _events(tmp_path, minutes=45, seed=11)
    env = _tls_env(tls_broker) | {
        "STREAMPROC_REDIS_URL": stack.redis_url,
        "STREAMPROC_PARTITIONS": "4",
        "STREAMPROC_FX_RATES": "EUR=1.08",
    }
    out = tmp_path / "report.json"
    args = ["replay", str(events), "--report", str(out), "--window", "15m", "--window", "1h"]
    code, output, _ = _run(args, env, 300)
    assert code == 0, output[-3000:]
    expected = reference_report(
        lines, ReferenceSettings(fx_rates={"EUR": Decimal("1.08")}, window_sizes_s=(900, 3600))
    )
    assert not compare_reports(json.loads(out.read_text()), expected, visitors_rel_tol=0.02)


def _commands(events: Path) -> dict[str, list[str]]:
    return {
        "produce": ["produce", str(events)],
        "simulate": ["simulate", "--start", "-2h", "--duration", "5m"],
        "worker": ["worker"],
        "replay": ["replay", str(events), "--report", str(events.with_suffix(".json"))],
        "backfill": ["backfill", "--since", "2026-11-03T09:00:00Z", "--until", "1h"],
    }


@pytest.mark.parametrize("command", ["produce", "simulate", "worker", "replay", "backfill"])
@pytest.mark.parametrize("case", ["unknown SCRAM user over SASL_SSL", "untrusted certificate"])
def test_a_refusal_stops_each_command_with_one_line(
    tls_broker: TlsBroker,
    sasl_broker: SaslBroker,
    stack: StackInfo,
    namespace: str,
    tmp_path: Path,
    command: str,
    case: str,
) -> None:
    """Exit status 2 within seconds, one ``error:`` line naming the setting, no traceback, and
    the password nowhere though every logger prints at DEBUG."""
    _, events = _events(tmp_path, minutes=5, seed=3)
    env = {
        "STREAMPROC_REDIS_URL": stack.redis_url,
        "STREAMPROC_NAMESPACE": namespace,
        "STREAMPROC_STATE_DIR": str(tmp_path / "state"),
        "STREAMPROC_WORKER_PORT": "0",
        "STREAMPROC_LOG_LEVEL": "debug",
    }
    if case == "untrusted certificate":
        env |= _tls_env(tls_broker, ca=tls_broker.untrusted_ca)
        setting = "STREAMPROC_KAFKA_SSL_CAFILE"
    else:
        env |= {
            "STREAMPROC_BOOTSTRAP_SERVERS": sasl_broker.tls_bootstrap,
            "STREAMPROC_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "STREAMPROC_KAFKA_SSL_CAFILE": str(sasl_broker.ca),
            "STREAMPROC_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "STREAMPROC_KAFKA_SASL_USERNAME": "shop",
            "STREAMPROC_KAFKA_SASL_PASSWORD": SECRET,
        }
        setting = "STREAMPROC_KAFKA_SASL_PASSWORD"
    code, output, took = _run(_commands(events)[command], env, 120)
    assert code == 2, output[-3000:]
    assert took < 20, (took, output[-3000:])
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and setting in errors[0], output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    assert SECRET not in output


def test_a_scram_refusal_over_sasl_plaintext_and_plain_not_offered(
    sasl_broker: SaslBroker, stack: StackInfo, tmp_path: Path
) -> None:
    """SASL_PLAINTEXT refuses the same way; a mechanism the broker does not offer (Tansu offers
    SCRAM only, and closes the connection on PLAIN) stops the command too."""
    _, events = _events(tmp_path, minutes=5, seed=4)
    env = {
        "STREAMPROC_BOOTSTRAP_SERVERS": sasl_broker.bootstrap,
        "STREAMPROC_REDIS_URL": stack.redis_url,
        "STREAMPROC_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "STREAMPROC_KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
        "STREAMPROC_KAFKA_SASL_USERNAME": "shop",
        "STREAMPROC_KAFKA_SASL_PASSWORD": SECRET,
    }
    code, output, took = _run(["produce", str(events)], env, 60)
    assert code == 2 and took < 20, output[-3000:]
    assert "STREAMPROC_KAFKA_SASL_PASSWORD" in output and SECRET not in output, output[-3000:]
    env["STREAMPROC_KAFKA_SASL_MECHANISM"] = "PLAIN"
    code, output, took = _run(["produce", str(events)], env, 60)
    assert code == 2 and took < 20, output[-3000:]
    assert "cannot connect to Kafka" in output and "Traceback" not in output, output[-3000:]
    assert SECRET not in output


def test_settings_never_print_the_kafka_password() -> None:
    env = {
        "STREAMPROC_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "STREAMPROC_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "STREAMPROC_KAFKA_SASL_USERNAME": "shop",
        "STREAMPROC_KAFKA_SASL_PASSWORD": SECRET,
        "STREAMPROC_LOG_LEVEL": "debug",
    }
    for args in (["settings"], ["settings", "--markdown"]):
        code, output, _ = _run(args, env, 60)
        assert code == 0 and SECRET not in output, output[-3000:]
    code, output, _ = _run(["produce", "/nonexistent"], env, 60)  # no servers: a config error
    assert SECRET not in output
