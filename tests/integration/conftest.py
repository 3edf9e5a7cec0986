"""Integration fixtures: one real dev stack (Tansu + Redis) per session, a namespace per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from streamproc.devstack import DevStack, StackInfo


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackInfo]:
    """A broker and a Redis for the whole session, started the way `streamproc dev up` does.

    It lives in its own temporary state dir, so a developer's own dev stack is never touched.
    The machine's Redis is reused when it answers, else one is started.
    """
    dev = DevStack(tmp_path_factory.mktemp("devstack"))
    info = dev.up()
    try:
        yield info
    finally:
        dev.down()


@pytest.fixture
def namespace() -> str:
    """A unique name for the Kafka topics and the Redis key prefix of one test."""
    return f"t_{uuid.uuid4().hex[:10]}"
