"""`streamproc produce` and `streamproc simulate` against the embedded broker: every message lands
on its topic with the key docs/events.md prescribes, checked by consuming everything back."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from procs import settings_env

pytestmark = pytest.mark.integration
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

TOPIC_OF_TYPE = {
    **dict.fromkeys(("session_start", "page_view", "product_view", "page_ping"), "clickstream"),
    **dict.fromkeys(
        ("add_to_cart", "remove_from_cart", "checkout_started", "payment_failed"), "cart"
    ),
    **dict.fromkeys(("order_placed", "order_refunded", "order_cancelled"), "orders"),
    **dict.fromkeys(
        (
            "ticket_opened",
            "message_added",
            "ticket_escalated",
            "ticket_resolved",
            "ticket_reopened",
            "survey_response",
        ),
        "tickets",
    ),
}


def expected_message(line: bytes, ns: str) -> tuple[str, bytes | None, bytes, int | None]:
    """(topic, key, value, timestamp) for one file line, by the rules of docs/events.md."""
    obj: dict[str, Any] = json.loads(line)
    if "__raw__" in obj or "__raw_b64__" in obj:
        value = (
            obj["__raw__"].encode() if "__raw__" in obj else base64.b64decode(obj["__raw_b64__"])
        )
        key = obj.get("__key__")
        return (f"{ns}.{obj['__family__']}", key and key.encode(), value, obj.get("__timestamp__"))
    family = TOPIC_OF_TYPE[obj["event_type"]]
    if family in ("clickstream", "cart"):
        key = obj.get("session_id")
    elif family == "orders":
        key = obj.get("session_id") or obj.get("order_id")
    else:
        key = obj.get("ticket_id") or obj.get("customer_id") or obj["event_id"]
    event_time = obj["event_time"]
    if isinstance(event_time, str):
        event_time = (datetime.fromisoformat(event_time) - EPOCH) // timedelta(milliseconds=1)
    return (f"{ns}.{family}", key and key.encode(), line, event_time)


async def consume_all(bootstrap: str, topics: list[str], count: int) -> list[Any]:
    consumer = AIOKafkaConsumer(
        *topics, bootstrap_servers=bootstrap, auto_offset_reset="earliest", fetch_max_bytes=8 << 20
    )
    await consumer.start()
    records: list[Any] = []
    deadline = time.monotonic() + 60
    try:
        while len(records) < count and time.monotonic() < deadline:
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                records.extend(batch)
    finally:
        await consumer.stop()
    return records


def run_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "streamproc", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done


async def test_produce_puts_every_event_on_its_topic_with_its_key(
    stack: Any, namespace: str, tmp_path: Path
) -> None:
    env = settings_env(namespace, bootstrap=stack.bootstrap_servers, redis_url=stack.redis_url)
    path = tmp_path / "events.jsonl"
    anomalies = ["--duplicates", "0.01", "--out-of-order", "0.01", "--malformed", "0.02"]
    sim = ["simulate", "-o", str(path), "--duration", "20m", "--rate", "60", "--seed", "7"]
    run_cli([*sim, *anomalies], env)
    lines = path.read_bytes().splitlines()
    expected = Counter(expected_message(line, namespace) for line in lines)
    done = run_cli(["produce", str(path)], env)
    assert f"{len(lines):,} messages" in done.stdout

    topics = [f"{namespace}.{f}" for f in ("clickstream", "cart", "orders", "tickets")]
    records = await consume_all(stack.bootstrap_servers, topics, len(lines))
    got = Counter((r.topic, r.key, r.value, r.timestamp) for r in records)
    assert got == expected
    assert sum(1 for r in records if r.topic.endswith(".orders")) > 0
    # same key -> same partition (the default murmur2 partitioner)
    partitions: dict[tuple[str, bytes], set[int]] = {}
    for r in records:
        if r.key is not None:
            partitions.setdefault((r.topic, r.key), set()).add(r.partition)
    assert all(len(found) == 1 for found in partitions.values())


async def test_produce_stamps_a_line_without_event_time_with_the_time_before_it(
    stack: Any, namespace: str, tmp_path: Path
) -> None:
    """Not with the wall clock, weeks after the data: a backfill finds its range by timestamp."""
    env = settings_env(namespace, bootstrap=stack.bootstrap_servers, redis_url=stack.redis_url)
    t0 = 1_780_000_000_000
    times: list[Any] = ["garbled", t0, "2026-13-45T99:00:00Z", t0 + 60_000, None]
    lines = []
    for i, t in enumerate(times):
        event = {"event_id": f"e{i}", "event_type": "page_view", "event_time": t}
        event |= {"session_id": "s1", "visitor_id": "v1", "store_id": "st"}
        lines.append(json.dumps(event).encode())
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    done = run_cli(["produce", str(path)], env)
    said = " ".join(done.stdout.split())  # the terminal wraps it
    assert "3 messages without a valid event_time" in said and "(lines 1, 3, 5)" in said, said
    records = await consume_all(stack.bootstrap_servers, [f"{namespace}.clickstream"], 5)
    by_id = {json.loads(r.value)["event_id"]: r.timestamp for r in records}
    assert by_id == {"e0": t0, "e1": t0, "e2": t0, "e3": t0 + 60_000, "e4": t0 + 60_000}


async def test_simulate_sends_to_kafka(stack: Any, namespace: str) -> None:
    env = settings_env(namespace, bootstrap=stack.bootstrap_servers, redis_url=stack.redis_url)
    done = run_cli(["simulate", "--start", "-30m", "--duration", "10m", "--rate", "30"], env)
    assert "records to Kafka" in done.stdout
    sent = int(done.stdout.split(" records")[0].replace(",", "").split()[-1])
    topics = [f"{namespace}.{f}" for f in ("clickstream", "cart", "orders", "tickets")]
    records = await consume_all(stack.bootstrap_servers, topics, sent)
    assert len(records) == sent > 100
    assert {r.topic for r in records} >= {f"{namespace}.clickstream", f"{namespace}.cart"}
