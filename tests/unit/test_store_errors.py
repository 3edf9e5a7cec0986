"""redis-py's errors become ours at the store's boundary (``store.client.redis_errors``): a
transient one is ``StoreUnavailable`` (retriable), any other ``StoreError``, each with redis-py's
error as its cause and name; a cancellation, our own timeout and ``StoreRefused`` pass as they
are. Every public method of ``KpiStore`` does it, shown on a client of a closed port (no server
needed: the connection is refused at once)."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable

import pytest
import redis.exceptions

from streamproc.errors import StoreError, StoreRefused, StoreUnavailable
from streamproc.store import KpiStore
from streamproc.store.client import TRANSIENT, mapped, redis_errors

CLOSED = "redis://127.0.0.1:1/0"  # port 1: nothing listens, the connect is refused


@pytest.mark.parametrize("error", TRANSIENT, ids=lambda error: error.__name__)
def test_a_transient_redis_error_is_unavailable(error: type[Exception]) -> None:
    cause = error("it went away")
    with pytest.raises(StoreUnavailable) as raised, redis_errors():
        raise cause
    assert raised.value.retriable and isinstance(raised.value, StoreError)
    assert raised.value.__cause__ is cause
    assert (raised.value.kind, str(raised.value)) == (error.__name__, "it went away")


@pytest.mark.parametrize(
    "cause",
    [
        redis.exceptions.ResponseError("WRONGTYPE Operation against a key"),
        redis.exceptions.NoScriptError("NOSCRIPT No matching script"),
        redis.exceptions.DataError("Invalid input of type: 'dict'"),
        redis.exceptions.RedisError("anything else"),
    ],
    ids=lambda cause: type(cause).__name__,
)
def test_any_other_redis_error_is_a_store_error_not_retriable(cause: Exception) -> None:
    with pytest.raises(StoreError) as raised, redis_errors():
        raise cause
    assert type(raised.value) is StoreError and not raised.value.retriable
    assert raised.value.__cause__ is cause and raised.value.kind == type(cause).__name__


@pytest.mark.parametrize(
    "error",
    [
        asyncio.CancelledError(),
        TimeoutError(),  # asyncio.timeout's, around a store call: not the store's to map
        StoreRefused("Redis refused the credentials"),  # raised by the connection itself
        ValueError("not Redis"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_other_errors_pass_as_they_are(error: BaseException) -> None:
    with pytest.raises(type(error)) as raised, redis_errors():
        raise error
    assert raised.value is error


async def test_mapped_keeps_the_method_and_maps_what_it_raises() -> None:
    async def read(key: str, *, default: int = 0) -> int:
        """Docstring kept."""
        raise redis.exceptions.ConnectionError(f"no {key}")

    wrapped = mapped(read)
    assert (wrapped.__name__, wrapped.__doc__) == ("read", "Docstring kept.")
    with pytest.raises(StoreUnavailable, match="no cells"):
        await wrapped("cells", default=1)


def _calls(store: KpiStore) -> dict[str, Callable[[], Awaitable[object]]]:
    """One call of every public async method of KpiStore."""
    return {
        "labels": lambda: store.labels(["s1"], cap=10),
        "publish": lambda: store.publish(
            0, cells={}, presence=[], open_tickets={("s1", "web", "p1"): 1}, status=None
        ),
        "end_offsets": store.end_offsets,
        "input_ends": store.input_ends,
        "expect_end_offsets": store.expect_end_offsets,
        "set_end_offsets": lambda: store.set_end_offsets({("clicks", 0): 5}),
        "cells": lambda: store.cells([1]),
        "minutes": store.minutes,
        "visitors": lambda: store.visitors([1], "all", None),
        "visitor_counts": lambda: store.visitor_counts([((1,), "all", None)]),
        "open_tickets": store.open_tickets,
        "drop": store.drop,
        "statuses": store.statuses,
        "judged": store.judged,
        "backfill_plan": store.backfill_plan,
        "set_backfill_plan": lambda: store.set_backfill_plan(b"{}"),
        "count_keys": lambda: store.count_keys("cells"),
    }


def test_every_public_async_method_is_called_below() -> None:
    public = {
        name
        for name, method in inspect.getmembers(KpiStore, inspect.iscoroutinefunction)
        if not name.startswith("_")
    }
    assert public - {"aclose"} == set(_calls(KpiStore.connect(CLOSED, "unit")))


async def test_every_method_raises_unavailable_on_a_closed_port() -> None:
    store = KpiStore.connect(CLOSED, "unit", timeout_s=1.0)
    try:
        for name, call in _calls(store).items():
            with pytest.raises(StoreUnavailable) as raised:
                await call()
            assert raised.value.kind == "ConnectionError", name
            assert isinstance(raised.value.__cause__, redis.exceptions.ConnectionError), name
            assert "127.0.0.1:1" in str(raised.value), name
    finally:
        await store.aclose()
