"""A real worker on the embedded broker: every kind of bad input lands in the dead-letter topic
with its reason and source coordinates, counted in /metrics, and the worker keeps consuming."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from helpers import EXAMPLES, dumps, family, invalid_variants, make_event
from procs import StreamprocProcess, free_port, settings_env

from streamproc.deadletter import DeadLetter

pytestmark = pytest.mark.integration


async def _send_all(bootstrap: str, messages: list[tuple[str, bytes, bytes]]) -> list[Any]:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_request_size=1_048_576)
    await producer.start()
    try:
        futures = [await producer.send(t, value=v, key=k) for t, k, v in messages]
        return list(await asyncio.gather(*futures))
    finally:
        await producer.stop()


async def _consume(bootstrap: str, topic: str, count: int, within_s: float) -> list[Any]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", fetch_max_bytes=4_194_304
    )
    await consumer.start()
    records: list[Any] = []
    deadline = time.monotonic() + within_s
    try:
        while len(records) < count and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for batch in batches.values():
                records.extend(batch)
    finally:
        await consumer.stop()
    return records


def _metrics(port: int) -> list[tuple[str, dict[str, str], float]]:
    """(name, labels, value) of every streamproc_ sample the worker exposes."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    samples = []
    for line in text.splitlines():
        if line.startswith("streamproc_") and "{" in line:
            name, rest = line.split("{", 1)
            body, value = rest.rsplit("} ", 1)
            labels = dict(part.split("=", 1) for part in body.split(","))
            samples.append((name, {k: v.strip('"') for k, v in labels.items()}, float(value)))
    return samples


def _total(port: int, name: str, **match: str) -> float:
    return sum(
        value
        for metric, labels, value in _metrics(port)
        if metric == name and all(labels.get(k) == v for k, v in match.items())
    )


def _wait_for(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


async def test_bad_input_is_dead_lettered_and_the_worker_keeps_consuming(
    stack: Any, namespace: str, tmp_path: Path
) -> None:
    env = settings_env(
        namespace,
        bootstrap=stack.bootstrap_servers,
        redis_url=stack.redis_url,
        worker_port=free_port(),
    )
    topic = {f: env[f"STREAMPROC_TOPIC_{f.value.upper()}"] for f in {family(t) for t in EXAMPLES}}
    future_ms = int(time.time() * 1000) + 86_400_000

    # Per event type: a valid event, every bad variant, then another valid event.
    messages: list[tuple[str, bytes, bytes]] = []
    expected_bad: list[tuple[str, str]] = []  # (label, reason), in send order
    valid = Counter[tuple[str, str]]()
    for kind in sorted(EXAMPLES):
        name = topic[family(kind)]
        key = f"key-{kind}".encode()
        messages.append((name, key, dumps(make_event(kind, event_id=f"{kind}-first"))))
        valid[(name, kind)] += 1
        for label, raw, reason in invalid_variants(kind, future_ms=future_ms):
            messages.append((name, key, raw))
            expected_bad.append((label, reason))
        messages.append((name, key, dumps(make_event(kind, event_id=f"{kind}-last"))))
        valid[(name, kind)] += 1
    metadata = await _send_all(stack.bootstrap_servers, messages)
    sent_at = {
        (name, md.partition, md.offset): (raw, key)
        for (name, key, raw), md in zip(messages, metadata, strict=True)
    }

    port = int(env["STREAMPROC_WORKER_PORT"])
    with StreamprocProcess(["worker"], env, tmp_path / "worker.log") as worker:
        letters = await _consume(
            stack.bootstrap_servers, env["STREAMPROC_TOPIC_DLQ"], len(expected_bad), within_s=90
        )
        assert len(letters) == len(expected_bad), worker.log[-3000:]

        reasons = Counter[str]()
        for record in letters:
            letter = DeadLetter.from_headers(record.headers)
            raw, key = sent_at[(letter.topic, letter.partition, letter.offset)]
            assert (record.value, record.key) == (raw, key), letter  # original bytes and key
            assert letter.timestamp_ms is not None and letter.detail
            reasons[letter.reason] += 1
        assert reasons == Counter(reason for _, reason in expected_bad)

        # Every valid event, including those sent after the poison messages, was consumed.
        def all_counted() -> bool:
            return all(
                _total(port, "streamproc_events_total", topic=name, event_type=kind) == count
                for (name, kind), count in valid.items()
            )

        _wait_for(all_counted, 30, "every valid event in streamproc_events_total")
        for reason, count in reasons.items():
            assert _total(port, "streamproc_dead_letters_total", reason=reason) == count, reason
        assert worker.stop() == 0, worker.log[-3000:]
