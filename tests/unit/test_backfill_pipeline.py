"""The pipeline ignores what lies at or beyond a partition's known end (a backfill's live input
keeps growing past it), yet counts the partition as read to there."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from helpers import T0_MS, Lease, dumps, make_event

from streamproc.config import load_settings
from streamproc.deadletter import DeadLetter
from streamproc.events.models import Family
from streamproc.events.parse import EventDecoder
from streamproc.ingest import BatchDecoder, Message
from streamproc.kpi.batch import FAMILY_INDEX
from streamproc.kpi.contrib import NEVER
from streamproc.worker.contracts import Highwater, ReadFrom
from streamproc.worker.pipeline import Pipeline

SETTINGS = load_settings(env_file=None, namespace="unit", partitions=1)
CLICKS = SETTINGS.topic_clickstream


class FakeStore:
    """The KpiStore calls the pipeline makes, in memory."""

    def __init__(self, ends: dict[tuple[str, int], int] | None) -> None:
        self.ends = ends  # None: expected (a replay still sending its input)
        self.watermarks: list[int] = []
        self.accepted: list[int] = []

    async def input_ends(self) -> dict[tuple[str, int], int] | None:
        return None if self.ends is None else dict(self.ends)

    async def labels(self, stores: Iterable[str], *, cap: int) -> dict[str, str]:
        return {store: store for store in stores}

    async def publish(self, partition: int, **parts: Any) -> None:
        self.watermarks.append(parts["status"].watermark)
        self.accepted.append(parts["status"].accepted)


class Table(dict[str, bytes]):
    def scan(self) -> Iterable[str]:
        return list(self)

    async def write(self, writes: list[tuple[str, bytes | None]], partition: int) -> None:
        for key, value in writes:
            if value is None:
                self.pop(key, None)
            else:
                self[key] = value


def pipeline(
    store: FakeStore,
    letters: list[DeadLetter],
    *,
    highwater: Highwater = lambda topic, partition: None,
    read_from: ReadFrom = lambda topic, partition: None,
) -> Pipeline:
    async def dead_letter(message: Message, letter: DeadLetter) -> None:
        letters.append(letter)

    decoder = EventDecoder()
    return Pipeline(
        SETTINGS,
        store=store,
        table=Table(),
        decoders={t: BatchDecoder(decoder, f) for f, t in SETTINGS.topics_by_family.items()},
        dead_letter=dead_letter,
        highwater=highwater,
        read_from=read_from,
        owned=lambda: {0},
        lease=Lease(),
        clock=lambda: T0_MS / 1000 + 60,
    )


def messages(offsets: range, *, bad: int | None = None) -> list[Message]:
    found = []
    for offset in offsets:
        value = dumps(make_event("page_view", event_id=f"e{offset}", session_id=f"s{offset}"))
        found.append(
            Message(CLICKS, 0, offset, T0_MS, b"k", b"not json" if offset == bad else value)
        )
    return found


async def test_messages_at_or_past_the_end_count_nowhere_but_the_partition_is_read() -> None:
    ends = {(t, 0): 0 for t in SETTINGS.input_topics} | {(CLICKS, 0): 3}
    store, letters = FakeStore(ends), []
    pipe = pipeline(store, letters)
    counts = await pipe.on_batch(CLICKS, messages(range(6), bad=4))
    assert store.accepted == [3]  # only these reached the engine
    assert counts.valid == {"page_view": 3}
    assert letters == [] and counts.dead_letters == {}  # the bad message lies beyond the end
    assert pipe.positions.processed[(CLICKS, 0)] == 5
    progress = pipe.positions.progress(0, T0_MS)
    assert FAMILY_INDEX[Family.CLICKSTREAM] in progress.ended and not progress.backlog
    await pipe.on_tick(0)  # every topic read to its end: all values are final
    assert store.watermarks[-1] >= NEVER


async def test_a_batch_wholly_past_the_end_still_ends_the_topic() -> None:
    ends = {(t, 0): 0 for t in SETTINGS.input_topics} | {(CLICKS, 0): 3}
    store, letters = FakeStore(ends), []
    pipe = pipeline(store, letters)
    await pipe.on_batch(CLICKS, messages(range(2)))
    await pipe.on_tick(0)
    assert store.watermarks[-1] < NEVER  # offset 2 is still to be read
    await pipe.on_batch(CLICKS, messages(range(7, 9)))  # the live topic went on
    assert store.accepted[-1] == 2  # e0 and e1 only
    await pipe.on_tick(0)
    assert store.watermarks[-1] >= NEVER


async def test_without_known_ends_every_message_counts() -> None:
    store, letters = FakeStore({}), []
    pipe = pipeline(store, letters)
    counts = await pipe.on_batch(CLICKS, messages(range(6), bad=4))
    assert store.accepted == [5]  # all but the bad e4
    assert [letter.reason for letter in letters] == ["not_json"]
    assert counts.valid == {"page_view": 5}


async def test_a_partition_assigned_again_is_read_again_before_it_counts_as_ended() -> None:
    """Revoked and assigned again (a rebalance, or a killed worker's old membership expiring):
    Faust re-delivers from the committed offset, so what this worker read before must not count.
    Else the watermark jumps to the end at once and every re-delivered event is dead-lettered as
    too late (seen as missing rows after SIGKILLs)."""
    ends = {(t, 0): 0 for t in SETTINGS.input_topics} | {(CLICKS, 0): 3}
    store, letters = FakeStore(ends), []
    pipe = pipeline(store, letters)
    await pipe.on_batch(CLICKS, messages(range(3)))
    assert store.watermarks[-1] >= NEVER
    pipe.forget([0])
    table = pipe.table
    assert isinstance(table, Table)
    table.clear()  # the state this worker finds: nothing of it reached the changelog
    await pipe.on_tick(0)
    assert store.watermarks[-1] < NEVER  # offsets 0-2 are to be read again
    counts = await pipe.on_batch(CLICKS, messages(range(3)))
    assert counts.valid == {"page_view": 3}
    assert letters == []  # none of them too late
    assert store.watermarks[-1] >= NEVER


async def test_a_live_partition_is_not_idle_before_its_first_fetch_response() -> None:
    """A live worker whose consumer has not fetched yet knows nothing of its backlog: the idle
    advance would move the watermark to the wall clock and dead-letter that backlog as too
    late. Once every topic had a fetch response (here: empty), quiet is idle."""
    idle_s = SETTINGS.idle_timeout_seconds
    for high, advances in ((None, False), (0, True)):
        wall = [T0_MS / 1000]
        pipe = pipeline(FakeStore({}), [], highwater=lambda topic, partition, h=high: h)
        pipe.clock = lambda wall=wall: wall[0]
        await pipe.on_tick(0)  # the engine starts
        wall[0] += idle_s + 3600  # an hour past the idle timeout, no event
        await pipe.on_tick(0)
        watermark = pipe.engines[0].meta.watermark
        assert (watermark >= T0_MS) is advances, (high, watermark)


async def test_a_topic_an_earlier_owner_read_to_its_end_counts_as_ended() -> None:
    """Assigned a partition whose earlier owner (killed, or moved by a rebalance) committed one
    topic up to its end: Faust re-delivers nothing of that topic, so this worker reads nothing of
    it. The consumer's committed start is the proof it was read; without it the partition waited
    for that topic for ever (seen as a replay with two workers that never finished)."""
    ends = {(t, 0): 0 for t in SETTINGS.input_topics} | {(CLICKS, 0): 3}
    for start, final in ((None, False), (3, True)):
        store = FakeStore(ends)
        pipe = pipeline(store, [], read_from=lambda topic, partition, s=start: s)
        await pipe.on_tick(0)
        assert (store.watermarks[-1] >= NEVER) is final, start


async def test_events_of_a_partition_this_worker_no_longer_owns_change_nothing() -> None:
    """Fetched before a rebalance moved their partition: the new owner reads them again."""
    store, letters = FakeStore({}), []
    pipe = pipeline(store, letters)
    pipe.owned = lambda: set()
    counts = await pipe.on_batch(CLICKS, messages(range(3), bad=1))
    assert store.accepted == [] and letters == [] and counts.valid == {}
    assert not pipe.engines and not pipe.positions.processed and not pipe.table.scan()


async def test_while_the_ends_are_expected_every_topic_has_more_to_come() -> None:
    """A replay sends its file while the workers run: a topic read to what has arrived so far
    (or with nothing yet) holds the watermark, idle or not, until the ends are known."""
    store, letters = FakeStore(None), []
    pipe = pipeline(store, letters, highwater=lambda topic, partition: 2)
    await pipe.on_batch(CLICKS, messages(range(2)))  # all that has arrived
    progress = pipe.positions.progress(0, T0_MS + 3_600_000)  # an hour later: idle by the clock
    assert progress.backlog == frozenset(range(4)) and not progress.ended
    await pipe.on_tick(0)
    assert store.watermarks[-1] < T0_MS  # neither the wall clock nor the clickstream moved it
    store.ends = {(t, 0): 0 for t in SETTINGS.input_topics} | {(CLICKS, 0): 2}
    await pipe.on_tick(0)  # the ends are read again with every tick until they are known
    assert store.watermarks[-1] >= NEVER


async def test_lag_is_what_the_last_fetch_saw_beyond_what_was_processed() -> None:
    store, letters = FakeStore({}), []
    pipe = pipeline(store, letters, highwater=lambda topic, partition: 5)
    assert pipe.lag(CLICKS, 0) == 5
    await pipe.on_batch(CLICKS, messages(range(2)))
    assert pipe.lag(CLICKS, 0) == 3
    assert pipeline(store, letters).lag(CLICKS, 0) is None  # no fetch response yet
