"""ChangelogWriter: a changelog partition holds, at every moment, a prefix of the state's writes.

The writer is given the producer's send as a function; here that function is a partition log
that appends what it accepts, answers when told to, and refuses the sends it is told to refuse.
"""

from __future__ import annotations

import asyncio
import random

import pytest
from aiokafka.errors import UnknownError
from hypothesis import given, settings
from hypothesis import strategies as st

from streamproc.errors import BrokerError, Fenced
from streamproc.worker.changelog import ChangelogWriter, Record, record_size


class Log:
    """A changelog partition: batches arrive whole; ``refuse`` lists the sends refused (1-based);
    with ``manual``, a send is answered only when ``answer()`` is called."""

    def __init__(self, refuse: set[int] | None = None, *, manual: bool = False) -> None:
        self.refuse = refuse or set()
        self.manual = manual
        self.sends = 0
        self.batches: list[list[Record]] = []
        self.waiting: list[tuple[asyncio.Future[None], list[Record], bool]] = []

    async def send(self, partition: int, records: list[Record]) -> asyncio.Future[None]:
        self.sends += 1
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiting.append((future, list(records), self.sends in self.refuse))
        if not self.manual:
            self.answer()
        return future

    def answer(self) -> None:
        for future, records, refused in self.waiting:
            if refused:
                future.set_exception(UnknownError("refused"))
            else:
                self.batches.append(records)
                future.set_result(None)
        self.waiting = []

    def state(self, upto: int | None = None) -> dict[bytes, bytes]:
        """What recovery rebuilds from the first ``upto`` batches (all by default)."""
        state: dict[bytes, bytes] = {}
        for batch in self.batches[:upto]:
            for key, value in batch:
                if value is None:
                    state.pop(key, None)
                else:
                    state[key] = value
        return state


@pytest.fixture(autouse=True)
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ChangelogWriter, "FIRST_DELAY_S", 0.001)
    monkeypatch.setattr(ChangelogWriter, "MAX_DELAY_S", 0.001)


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_writes_queued_behind_a_batch_go_as_one_batch_each_key_with_its_last_value() -> None:
    log = Log(manual=True)
    writer = ChangelogWriter(log.send, batch_bytes=1 << 20)
    first = writer.write(0, [(b"a", b"1"), (b"m", b"1")])
    await settle()
    second = writer.write(0, [(b"a", b"2"), (b"b", b"1"), (b"m", b"2")])
    third = writer.write(0, [(b"b", None), (b"m", b"3")])
    await settle()
    assert log.sends == 1, "nothing goes while a batch of the partition is on its way"
    log.answer()
    await settle()
    assert first.done() and not second.done() and not third.done()
    assert log.sends == 2
    log.answer()
    await asyncio.wait_for(asyncio.gather(second, third), 1)
    assert log.batches == [[(b"a", b"1"), (b"m", b"1")], [(b"a", b"2"), (b"b", None), (b"m", b"3")]]
    assert log.state() == {b"a": b"2", b"m": b"3"}


async def test_a_refused_batch_is_sent_again_before_anything_after_it() -> None:
    """The meta record of a later write must never reach the changelog before the records of
    an earlier one: a worker killed in between would skip the events those records hold."""
    log = Log(refuse={1, 2})
    writer = ChangelogWriter(log.send, batch_bytes=1 << 20)
    first = writer.write(0, [(b"session", b"1"), (b"meta", b"1")])
    await settle()
    second = writer.write(0, [(b"meta", b"2")])
    await asyncio.wait_for(asyncio.gather(first, second), 1)
    assert log.sends == 4
    assert log.batches == [[(b"session", b"1"), (b"meta", b"1")], [(b"meta", b"2")]]


async def test_a_batch_refused_every_time_fails_its_writes_and_all_after_it() -> None:
    log = Log(refuse=set(range(1, 100)))
    writer = ChangelogWriter(log.send, batch_bytes=1 << 20)
    first = writer.write(0, [(b"a", b"1")])
    await settle()
    second = writer.write(0, [(b"a", b"2")])
    with pytest.raises(UnknownError):
        await asyncio.wait_for(first, 1)
    with pytest.raises(UnknownError):
        await second
    with pytest.raises(UnknownError):
        await writer.write(0, [(b"a", b"3")])  # the partition takes nothing more
    assert log.sends == ChangelogWriter.RESENDS + 1
    assert log.batches == []
    other = Log()
    writer.send = other.send
    await asyncio.wait_for(writer.write(1, [(b"x", b"1")]), 1)  # other partitions go on
    assert other.batches == [[(b"x", b"1")]]


async def test_a_write_larger_than_a_batch_is_cut_in_order() -> None:
    log = Log()
    value = b"v" * 100
    per_batch = 3
    writer = ChangelogWriter(log.send, batch_bytes=61 + per_batch * record_size(b"k0", value))
    records = [(f"k{i}".encode(), value) for i in range(8)]
    await asyncio.wait_for(writer.write(0, records), 1)
    assert [len(batch) for batch in log.batches] == [3, 3, 2]
    assert [record for batch in log.batches for record in batch] == records


async def test_drain_waits_for_the_partitions_writes_and_forgets_them() -> None:
    log = Log(manual=True)
    writer = ChangelogWriter(log.send, batch_bytes=1 << 20)
    written = writer.write(3, [(b"a", b"1")])
    drained = asyncio.ensure_future(writer.drain([3, 4]))
    await settle()
    assert not drained.done()
    log.answer()
    await asyncio.wait_for(drained, 1)
    assert written.done() and 3 not in writer.lanes


@settings(max_examples=60, deadline=None)
@given(
    writes=st.lists(
        st.lists(
            st.tuples(st.sampled_from([b"a", b"b", b"c"]), st.none() | st.binary(max_size=40)),
            min_size=1,
            max_size=6,
        ),
        min_size=1,
        max_size=12,
    ),
    seed=st.integers(0, 1000),
)
def test_the_changelog_is_always_the_state_after_some_prefix_of_the_records(
    writes: list[list[Record]], seed: int
) -> None:
    """Whatever is refused and however writes are merged and cut, recovery at any moment (after
    any number of delivered batches) finds the state after some prefix of the written records."""
    rng = random.Random(seed)
    log = Log(refuse={n for n in range(1, 200) if rng.random() < 0.3})

    async def run() -> None:
        writer = ChangelogWriter(log.send, batch_bytes=61 + 3 * record_size(b"a", b"x" * 40))
        done = []
        for records in writes:
            done.append(writer.write(0, records))
            for _ in range(rng.randrange(3)):
                await asyncio.sleep(0)
        await asyncio.wait_for(asyncio.gather(*done), 5)

    asyncio.run(run())
    flat = [record for records in writes for record in records]
    prefixes = []
    state: dict[bytes, bytes] = {}
    for key, value in [(b"", b""), *flat]:
        if key:
            if value is None:
                state.pop(key, None)
            else:
                state[key] = value
        prefixes.append(dict(state))
    for upto in range(len(log.batches) + 1):
        assert log.state(upto) in prefixes
    assert log.state() == prefixes[-1]


async def test_a_cancelled_drain_leaves_the_sends_going() -> None:
    log = Log(manual=True)
    writer = ChangelogWriter(log.send, batch_bytes=1 << 20)
    written = writer.write(0, [(b"a", b"1")])
    drained = asyncio.ensure_future(writer.drain([0]))
    await settle()
    drained.cancel()
    await settle()
    log.answer()
    await asyncio.wait_for(written, 1)
    assert log.batches == [[(b"a", b"1")]]


async def test_a_writer_stopped_mid_send_fails_what_waits_and_takes_nothing_more() -> None:
    """A cancellation (a shutdown) must not let later writes go after a gap, and must reach the
    waiters as an error they stop on (``Holding`` stops on an Exception, not a cancellation)."""
    log = Log(manual=True)
    writer = ChangelogWriter(log.send, batch_bytes=1 << 20)
    first = writer.write(0, [(b"a", b"1")])
    await settle()
    second = writer.write(0, [(b"a", b"2")])
    task = writer.lanes[0].task
    assert task is not None
    task.cancel()
    await settle()
    for future in (first, second, writer.write(0, [(b"a", b"3")])):
        with pytest.raises(BrokerError, match="stopped"):
            await future
    await writer.drain([0])
    assert 0 in writer.lanes  # a failed lane is kept: it takes nothing more


async def test_a_writer_cancelled_before_it_began_starts_again_with_the_next_write() -> None:
    log = Log()
    writer = ChangelogWriter(log.send, batch_bytes=1 << 20)
    first = writer.write(0, [(b"a", b"1")])
    task = writer.lanes[0].task
    assert task is not None
    task.cancel()  # before its first step: it never ran
    await settle()
    second = writer.write(0, [(b"a", b"2")])
    await asyncio.wait_for(asyncio.gather(first, second), 1)
    assert log.batches == [[(b"a", b"2")]]


async def test_fenced_writes_are_dropped_and_the_lane_takes_a_later_assignment() -> None:
    """A send refused by the lease (the worker may have lost the partition) drops what waits
    on the partition, says which partition, and does not stop the lane for good."""
    log, fenced = Log(), True

    async def send(partition: int, records: list[Record]) -> asyncio.Future[None]:
        if fenced:
            raise Fenced("the group moved on")
        return await log.send(partition, records)

    writer = ChangelogWriter(send, batch_bytes=1 << 20)
    dropped = [writer.write(1, [(b"a", b"1")]), writer.write(1, [(b"a", b"2")])]
    for future in dropped:
        with pytest.raises(Fenced):
            await future
    await writer.drain([1])
    assert writer.take_fenced() == {1}
    assert writer.take_fenced() == set()
    assert 1 not in writer.lanes  # forgotten with the drain, unlike a failed lane
    fenced = False
    await writer.write(1, [(b"a", b"3")])
    assert log.batches == [[(b"a", b"3")]]
