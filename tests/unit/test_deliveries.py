"""Deliveries: each waiter returns only once every message sent before its call is delivered."""

from __future__ import annotations

import asyncio

import pytest

from streamproc.worker.state import Deliveries


async def test_a_waiter_does_not_take_another_waiters_messages() -> None:
    """The ticks and the batch processor share one Deliveries: when the batch's message is not
    delivered yet, a tick's wait must not make the batch's own wait return at once (it would
    ack offsets whose state is not on the broker)."""
    deliveries = Deliveries()
    loop = asyncio.get_running_loop()
    batch_message: asyncio.Future[None] = loop.create_future()
    deliveries.add(batch_message)
    tick = asyncio.create_task(deliveries.wait())
    await asyncio.sleep(0)
    batch = asyncio.create_task(deliveries.wait())
    await asyncio.sleep(0.01)
    assert not tick.done() and not batch.done()
    batch_message.set_result(None)
    await asyncio.wait_for(asyncio.gather(tick, batch), 1)
    assert deliveries.pending == []


async def test_a_failed_delivery_raises_and_is_dropped() -> None:
    deliveries = Deliveries()
    failed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    failed.set_exception(RuntimeError("not delivered"))
    deliveries.add(failed)
    with pytest.raises(RuntimeError, match="not delivered"):
        await deliveries.wait()
    await deliveries.wait()  # raised once, to the waiter that saw it
    assert deliveries.pending == []
