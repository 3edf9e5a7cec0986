"""KpiStore against a real Redis of its own (``faults.PrivateRedis``) that fails in each way the
store tells apart: killed, frozen, out of memory, a read-only replica (transient:
``StoreUnavailable``), a key of the wrong type (``StoreError``, not retriable); a cancelled call
on a frozen Redis is cancelled, not mapped. Each time redis-py's error is the cause."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
import redis.exceptions
from faults import PrivateRedis

from streamproc.errors import StoreError, StoreUnavailable
from streamproc.store import KpiStore

pytestmark = pytest.mark.integration

ENDS = {("clicks", 0): 5}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[PrivateRedis]:
    with PrivateRedis(tmp_path) as redis_server:
        yield redis_server


@pytest.fixture
async def store(server: PrivateRedis) -> AsyncIterator[KpiStore]:
    kpis = KpiStore.connect(server.url, "errors", timeout_s=0.5)
    try:
        await kpis.set_end_offsets(ENDS)  # it answers
        yield kpis
    finally:
        await kpis.aclose()


async def _command(server: PrivateRedis, *args: str) -> None:
    async with aioredis.Redis.from_url(server.url) as admin:
        await admin.execute_command(*args)


async def test_a_killed_redis_is_unavailable(server: PrivateRedis, store: KpiStore) -> None:
    server.stop()
    with pytest.raises(StoreUnavailable) as raised:
        await store.end_offsets()
    assert raised.value.kind == "ConnectionError" and raised.value.retriable
    assert isinstance(raised.value.__cause__, redis.exceptions.ConnectionError)
    server.start()
    assert await store.end_offsets() == ENDS  # and it answers again, through the same client


async def test_a_frozen_redis_times_out_as_unavailable(
    server: PrivateRedis, store: KpiStore
) -> None:
    server.freeze()
    try:
        with pytest.raises(StoreUnavailable) as raised:
            await store.statuses()
    finally:
        server.thaw()
    assert raised.value.kind == "TimeoutError"
    assert isinstance(raised.value.__cause__, redis.exceptions.TimeoutError)


async def test_a_call_cancelled_while_redis_is_frozen_is_cancelled(
    server: PrivateRedis, store: KpiStore
) -> None:
    server.freeze()
    try:
        call = asyncio.create_task(store.minutes())
        await asyncio.sleep(0.1)  # waiting for the reply
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
    finally:
        server.thaw()


async def test_redis_out_of_memory_is_unavailable(server: PrivateRedis, store: KpiStore) -> None:
    await _command(server, "CONFIG", "SET", "maxmemory", "1")
    with pytest.raises(StoreUnavailable) as raised:
        await store.set_backfill_plan(b"{}")
    assert raised.value.kind == "OutOfMemoryError"
    await _command(server, "CONFIG", "SET", "maxmemory", "0")
    await store.set_backfill_plan(b"{}")


async def test_a_read_only_replica_is_unavailable(server: PrivateRedis, store: KpiStore) -> None:
    await _command(server, "REPLICAOF", "127.0.0.1", "1")  # a master that never answers
    try:
        with pytest.raises(StoreUnavailable) as raised:
            await store.expect_end_offsets()
        assert raised.value.kind == "ReadOnlyError"
        assert await store.end_offsets() == ENDS  # reads still work
    finally:
        await _command(server, "REPLICAOF", "NO", "ONE")


async def test_a_key_of_the_wrong_type_is_a_store_error(
    server: PrivateRedis, store: KpiStore
) -> None:
    await _command(server, "SET", store.key("status"), "not a hash")
    with pytest.raises(StoreError) as raised:
        await store.statuses()
    assert type(raised.value) is StoreError and not raised.value.retriable
    assert raised.value.kind == "ResponseError" and "WRONGTYPE" in str(raised.value)
    assert isinstance(raised.value.__cause__, redis.exceptions.ResponseError)
