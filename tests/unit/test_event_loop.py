"""The worker's event loop (``STREAMPROC_EVENT_LOOP``): uvloop's unless asked otherwise."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import uvloop

from streamproc.cli.pipeline import use_event_loop
from streamproc.config import Settings


@pytest.fixture(autouse=True)
def _policy() -> Iterator[None]:
    before = asyncio.get_event_loop_policy()
    asyncio.set_event_loop_policy(None)
    try:
        yield
    finally:
        asyncio.set_event_loop_policy(before)


def _new_loop_type() -> type:
    loop = asyncio.new_event_loop()
    try:
        return type(loop)
    finally:
        loop.close()


def test_a_worker_runs_on_uvloop_by_default() -> None:
    assert Settings.model_fields["event_loop"].default == "uvloop"
    use_event_loop("uvloop")
    assert issubclass(_new_loop_type(), uvloop.Loop)


def test_asyncio_leaves_python_s_own_loop() -> None:
    use_event_loop("asyncio")
    assert not issubclass(_new_loop_type(), uvloop.Loop)
