"""Deliveries: each waiter returns only once every message sent before its call is delivered."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.errors import UnknownError

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


class Sends:
    """A message the broker refuses ``refusals`` times before it takes it."""

    def __init__(self, refusals: int) -> None:
        self.refusals = refusals
        self.sent = 0

    async def send(self) -> asyncio.Future[str]:
        self.sent += 1
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        if self.sent <= self.refusals:
            future.set_exception(UnknownError("refused"))
        else:
            future.set_result("delivered")
        return future


@pytest.fixture
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Deliveries, "FIRST_DELAY_S", 0.001)
    monkeypatch.setattr(Deliveries, "MAX_DELAY_S", 0.001)


@pytest.mark.usefixtures("quick")
async def test_a_refused_send_is_sent_again_until_delivered() -> None:
    deliveries, message = Deliveries(), Sends(refusals=3)
    deliveries.add(await message.send(), message.send)
    await asyncio.wait_for(deliveries.wait(), 1)
    assert message.sent == 4
    assert deliveries.pending == []


@pytest.mark.usefixtures("quick")
async def test_a_send_refused_every_time_raises_after_the_resends() -> None:
    deliveries, message = Deliveries(), Sends(refusals=100)
    deliveries.add(await message.send(), message.send)
    with pytest.raises(UnknownError):
        await asyncio.wait_for(deliveries.wait(), 1)
    assert message.sent == Deliveries.RESENDS + 1


@pytest.mark.usefixtures("quick")
async def test_an_error_that_is_not_kafkas_is_not_resent() -> None:
    deliveries = Deliveries()
    sent = 0

    async def send() -> asyncio.Future[None]:
        nonlocal sent
        sent += 1
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.set_exception(ValueError("a bug"))
        return future

    deliveries.add(await send(), send)
    with pytest.raises(ValueError, match="a bug"):
        await deliveries.wait()
    assert sent == 1
