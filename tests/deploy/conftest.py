"""Fixtures of the deploy/ tests. The end-to-end test needs the broker and Redis that
tests/integration/conftest.py provides; fixtures there are not visible here, so the same
two fixtures are declared again (a second embedded broker when both directories run)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from streamproc.devstack import DevStack, StackInfo


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackInfo]:
    """A broker and a Redis, started the way `streamproc dev up` does (the machine's Redis is
    reused when it answers)."""
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
