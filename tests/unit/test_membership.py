"""Membership: a worker writes state only while its consumer-group membership is known to hold.

The coordinator here is aiokafka's interface as ``Membership.watch`` uses it: a ``generation``
and ``_send_req``, answering real heartbeat and sync responses with the error codes a broker
gives."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.protocol.group import (
    HeartbeatRequest,
    HeartbeatResponse_v1,
    SyncGroupRequest,
    SyncGroupResponse_v1,
)

from streamproc.errors import Fenced
from streamproc.worker.membership import Membership

NO_ERROR, UNKNOWN_MEMBER, REBALANCING = 0, 25, 27


class Coordinator:
    """What ``watch`` wraps: requests answered with the error code ``answer`` holds."""

    def __init__(self) -> None:
        self.generation = 3
        self.answer = NO_ERROR

    async def _send_req(self, request: Any) -> Any:
        if request.API_KEY == 14:
            return SyncGroupResponse_v1(0, self.answer, b"")
        return HeartbeatResponse_v1(0, self.answer)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def membership(clock: Clock, assigned: list[int]) -> tuple[Membership, Coordinator]:
    lease = Membership(
        session_timeout_s=10,
        rebalance_timeout_s=20,
        heartbeat_interval_s=1,
        generation=lambda: assigned[0],
        clock=clock,
    )
    coordinator = Coordinator()
    lease.watch(coordinator)
    return lease, coordinator


async def heartbeat(coordinator: Any) -> None:
    await coordinator._send_req(HeartbeatRequest("group", coordinator.generation, "member"))


async def held(lease: Membership, generation: int = 3) -> bool:
    """Whether a confirm returns at once (it waits while the membership is not known)."""
    try:
        await asyncio.wait_for(lease.confirm("a write", generation), 0.2)
    except TimeoutError:
        return False
    return True


async def test_a_write_goes_only_while_an_accepted_heartbeat_is_recent() -> None:
    clock = Clock()
    lease, coordinator = membership(clock, [3])
    assert lease.margin_s == 3.0  # the smaller of 3 s and half of (10 s - 1 s)
    assert not await held(lease)  # no heartbeat accepted yet
    await heartbeat(coordinator)
    assert await held(lease)
    clock.now += 10 - 3 - 0.01  # the session (the smaller timeout) less the margin
    assert await held(lease)
    clock.now += 0.02
    assert not await held(lease)


@pytest.mark.parametrize("error", [UNKNOWN_MEMBER, REBALANCING])
async def test_a_heartbeat_answered_with_an_error_renews_nothing(error: int) -> None:
    """A member told that the group rebalances may be dropped from it a rebalance timeout after
    the rebalance began, which is not known: only accepted heartbeats count."""
    clock = Clock()
    lease, coordinator = membership(clock, [3])
    await heartbeat(coordinator)
    clock.now += 8
    coordinator.answer = error
    await heartbeat(coordinator)
    assert not await held(lease)


async def test_a_waiting_write_goes_on_once_a_heartbeat_is_accepted_again() -> None:
    clock = Clock()
    lease, coordinator = membership(clock, [3])
    await heartbeat(coordinator)
    clock.now += 30  # stalled
    waiting = asyncio.ensure_future(lease.confirm("a write", 3))
    await asyncio.sleep(0.1)
    assert not waiting.done()
    await heartbeat(coordinator)
    await asyncio.wait_for(waiting, 1)


async def test_a_write_is_fenced_once_the_group_moved_on() -> None:
    """The coordinator resets its generation when the broker no longer knows the member; a
    write of the generation before a new assignment is fenced too, even with heartbeats."""
    clock = Clock()
    assigned = [3]
    lease, coordinator = membership(clock, assigned)
    await heartbeat(coordinator)
    clock.now += 30
    waiting = asyncio.ensure_future(lease.confirm("a write", 3))
    await asyncio.sleep(0.1)
    coordinator.generation = -1  # aiokafka's reset_generation
    with pytest.raises(Fenced, match="a write is dropped: the group is at generation -1"):
        await asyncio.wait_for(waiting, 1)
    coordinator.generation = assigned[0] = 4  # joined again, assigned anew
    await heartbeat(coordinator)
    assert await held(lease, 4)
    with pytest.raises(Fenced, match="assigned again"):
        await lease.confirm("a write", 3)


async def test_a_group_sync_renews_the_lease_of_its_generation() -> None:
    clock = Clock()
    lease, coordinator = membership(clock, [3])
    request = SyncGroupRequest("group", 3, "member", None, [])
    await coordinator._send_req(request)
    assert lease.renewed_generation == 3
    assert await held(lease)
