"""Fixtures shared by all tests: one real dev stack (Tansu + Redis) per session, started only when
a test asks for it, and a namespace per test whose Redis keys are deleted after it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from procs import drop_keys

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
def namespace(request: pytest.FixtureRequest) -> Iterator[str]:
    """A unique name for the Kafka topics and the Redis key prefix of one test.

    Afterwards every Redis key starting with it is deleted (names derived from it, such as a
    backfill's ``{namespace}-bf``, included): the machine's Redis is shared and outlives the run.
    """
    name = f"t_{uuid.uuid4().hex[:10]}"
    info = request.getfixturevalue("stack") if "stack" in request.fixturenames else None
    yield name
    if info is not None:
        drop_keys(info.redis_url, name)
