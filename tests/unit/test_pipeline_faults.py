"""What one worker's pipeline does when processing raises: an error one event causes makes that
event a ``processing_error`` dead letter and the rest of the batch goes on; an error that is not
an event's (a Redis outage, a partition that fails without any event) leaves the pipeline, so
the batch is held or the worker stops, and nothing is counted or dead-lettered twice. A run of
several slices (``align.Aligner.next_run``) gives what its slices give one by one."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import pytest
from helpers import T0_MS, Lease, dumps, make_event

from streamproc.config import load_settings
from streamproc.deadletter import DeadLetter
from streamproc.errors import BrokerError, Fenced, StoreUnavailable, TopicsChanged
from streamproc.events.parse import EventDecoder, Reason
from streamproc.ingest import BatchDecoder, Message
from streamproc.worker.contracts import Highwater
from streamproc.worker.pipeline import Pipeline

SETTINGS = load_settings(env_file=None, namespace="unit", partitions=1, max_event_failures=3)
CLICKS = SETTINGS.topic_clickstream
CART = SETTINGS.topic_cart


class Store:
    """The KpiStore calls the pipeline makes, in memory; ``fail`` raises once per entry."""

    def __init__(self) -> None:
        self.fail: list[Exception] = []
        self.published = 0
        self.cells: dict[tuple[int, int, str], dict[str, int]] = {}  # whole values, last ones
        self.presence: set[tuple[int, str, str, str]] = set()

    async def input_ends(self) -> dict[tuple[str, int], int] | None:
        return {}

    async def labels(self, stores: Iterable[str], *, cap: int) -> dict[str, str]:
        return {store: store for store in stores}

    async def publish(self, partition: int, **parts: Any) -> None:
        if self.fail:
            raise self.fail.pop(0)
        self.published += 1
        for (minute, store), counters in parts["cells"].items():
            self.cells[(partition, minute, store)] = counters
        self.presence |= parts["presence"]


class Table(dict[str, bytes]):
    """The state table; writing a record of a session in ``poisoned`` raises."""

    def __init__(self, poisoned: Iterable[str] = ()) -> None:
        super().__init__()
        self.poisoned = set(poisoned)
        self.raised = 0
        self.written: list[str] = []  # every key written, in order

    def scan(self) -> Iterable[str]:
        return list(self)

    async def write(self, writes: list[tuple[str, bytes | None]], partition: int) -> None:
        for key, value in writes:
            if (
                any(key.endswith(f"s:{session}") for session in self.poisoned)
                or "*" in self.poisoned
            ):
                self.raised += 1
                raise OverflowError(f"cannot store {key}")
            self.written.append(key)
            if value is None:
                self.pop(key, None)
            else:
                self[key] = value


def make_pipeline(
    store: Store,
    table: Table,
    letters: list[DeadLetter],
    *,
    highwater: Highwater | None = None,
    delivered: Callable[[], Awaitable[None]] | None = None,
    lease: Lease | None = None,
) -> Pipeline:
    async def dead_letter(message: Message, letter: DeadLetter) -> Awaitable[None] | None:
        letters.append(letter)
        return delivered() if delivered else None

    decoder = EventDecoder()
    return Pipeline(
        SETTINGS,
        store=store,
        table=table,
        decoders={t: BatchDecoder(decoder, f) for f, t in SETTINGS.topics_by_family.items()},
        dead_letter=dead_letter,
        highwater=highwater or (lambda topic, partition: None),
        read_from=lambda topic, partition: None,
        owned=lambda: {0},
        lease=lease or Lease(),
        clock=lambda: T0_MS / 1000 + 60,
    )


def batch(sessions: list[str], *, bad_offset: int | None = None) -> list[Message]:
    found = []
    for offset, session in enumerate(sessions):
        event = make_event("page_view", event_id=f"e{offset}", session_id=session)
        value = b"{not json" if offset == bad_offset else dumps(event)
        found.append(Message(CLICKS, 0, offset, T0_MS, b"k", value))
    return found


async def test_the_event_that_fails_becomes_a_dead_letter_and_the_rest_is_processed() -> None:
    store, table, letters = Store(), Table(poisoned=["s-bad"]), []
    pipe = make_pipeline(store, table, letters)
    counts = await pipe.on_batch(CLICKS, batch(["s1", "s-bad", "s2", "s3"], bad_offset=3))
    assert sorted(letter.reason for letter in letters) == ["not_json", Reason.PROCESSING_ERROR]
    poisoned = next(letter for letter in letters if letter.reason == Reason.PROCESSING_ERROR)
    assert (poisoned.topic, poisoned.partition, poisoned.offset) == (CLICKS, 0, 1)
    assert poisoned.detail.startswith("OverflowError: cannot store")
    assert counts.dead_letters == {"not_json": 1, Reason.PROCESSING_ERROR: 1}
    assert counts.valid == {"page_view": 3}
    # the whole batch once, then the bad event alone max_event_failures times
    assert table.raised == 1 + SETTINGS.max_event_failures
    assert {"0|s:s1", "0|s:s2"} <= set(table)
    assert pipe.positions.processed[(CLICKS, 0)] == 3


def clicks_read(topic: str, partition: int) -> int | None:
    return None if topic == CLICKS else 0  # the other topics are read: clicks drive time


def with_a_too_late_one() -> list[Message]:
    """Three page views: the second moves the watermark three hours on, the last is too late."""
    times = [T0_MS - 3 * 3_600_000, T0_MS, T0_MS - 2 * 3_600_000]
    return [
        Message(
            CLICKS,
            0,
            offset,
            t,
            b"k",
            dumps(
                make_event(
                    "page_view", event_id=f"e{offset}", session_id=f"s{offset}", event_time=t
                )
            ),
        )
        for offset, t in enumerate(times)
    ]


async def test_a_dead_letter_not_delivered_stops_the_run_and_blames_no_event() -> None:
    """A send to the broker that fails is the broker's doing: the run is left undone (the
    worker stops, a restart reads it again); no event becomes a ``processing_error``."""
    store, table, letters = Store(), Table(), []

    async def undelivered() -> None:
        raise RuntimeError("the broker refused it")

    pipe = make_pipeline(store, table, letters, highwater=clicks_read, delivered=undelivered)
    with pytest.raises(BrokerError, match="not delivered"):
        await pipe.on_batch(CLICKS, with_a_too_late_one())
    assert [letter.reason for letter in letters] == [Reason.TOO_LATE]
    assert "0|m" not in table and pipe.engines == {}


async def test_events_read_again_after_a_restart_are_skipped_not_taken_for_too_late() -> None:
    """What a worker read but had not committed is read again after a restart or rebalance, by
    an engine whose watermark those events moved: judged again, the early ones would be too late
    (dead letters for events that were counted). They are skipped; a too-late event's letter is
    delivered before the state that records it as judged, so skipping it loses nothing."""
    store, table, letters = Store(), Table(), []
    delivered_at: list[int] = []

    async def delivered() -> None:
        delivered_at.append(len(table.written))

    sent = with_a_too_late_one()
    first = make_pipeline(store, table, letters, highwater=clicks_read, delivered=delivered)
    counts = await first.on_batch(CLICKS, sent)
    assert [(letter.reason, letter.offset) for letter in letters] == [(Reason.TOO_LATE, 2)]
    assert counts.dead_letters == {Reason.TOO_LATE: 1}
    assert delivered_at == [0] and table.written[-1] == "0|m"  # letter first, then the state
    cells = dict(store.cells)

    restarted = make_pipeline(store, table, letters, highwater=clicks_read, delivered=delivered)
    again = await restarted.on_batch(CLICKS, sent)  # nothing was committed
    assert len(letters) == 1 and again.dead_letters == {} and again.duplicates == 0
    assert store.cells == cells  # (the restarted engine may evict what the first could not)
    later = Message(CLICKS, 0, 3, T0_MS, b"k", dumps(make_event("page_view", event_id="e3")))
    assert (await restarted.on_batch(CLICKS, [later])).valid == {"page_view": 1}
    assert store.cells != cells  # a new event is judged and counted as ever


async def test_an_error_without_any_event_is_not_put_on_an_event() -> None:
    store, table, letters = Store(), Table(poisoned=["*"]), []
    pipe = make_pipeline(store, table, letters)
    with pytest.raises(OverflowError):
        await pipe.on_batch(CLICKS, batch(["s1", "s2"]))
    assert letters == []
    assert pipe.engines == {}  # its memory may be ahead of the table: rebuilt next time


async def test_a_redis_outage_leaves_the_batch_whole_and_its_dead_letters_unsent() -> None:
    store, table, letters = Store(), Table(), []
    pipe = make_pipeline(store, table, letters)
    messages = batch(["s1", "s2", "s3"], bad_offset=1)
    store.fail = [StoreUnavailable("Redis went away", kind="ConnectionError")]
    with pytest.raises(StoreUnavailable):
        await pipe.on_batch(CLICKS, messages)
    assert letters == []  # sent only once the batch is processed
    counts = await pipe.on_batch(CLICKS, messages)  # the retry
    assert [letter.reason for letter in letters] == ["not_json"]
    assert counts.dead_letters == {"not_json": 1}
    assert store.published == 1


@pytest.mark.parametrize("fenced_at", [0, 1], ids=["before-publish", "before-store"])
async def test_a_fenced_batch_writes_nothing_more_and_its_partition_is_rebuilt(
    fenced_at: int,
) -> None:
    """A worker that may have lost its partition (its lease is fenced) writes nothing more of the
    batch: neither Redis, fenced before the publish, nor the state, fenced after it. What it
    kept in memory of the partition is rebuilt from the state table for the next batch."""
    store, table, letters = Store(), Table(), []
    lease = Lease(fence_after=fenced_at)
    pipe = make_pipeline(store, table, letters, lease=lease)
    with pytest.raises(Fenced, match="partition 0's state is dropped"):
        await pipe.on_batch(CLICKS, batch(["s1", "s2"]))
    assert store.published == fenced_at  # the publish comes between the two confirms
    assert table.written == []
    assert 0 not in pipe.engines
    lease.fence_after = None  # held again (a later assignment): the batch is read again
    counts = await pipe.on_batch(CLICKS, batch(["s1", "s2"]))
    assert sum(counts.valid.values()) == 2
    assert lease.confirmed == ["partition 0's state"] * (fenced_at + 2)
    assert table.written


async def test_a_partition_that_ends_before_what_was_read_stops_the_worker() -> None:
    ends = {CLICKS: 4}
    letters: list[DeadLetter] = []
    pipe = make_pipeline(Store(), Table(), letters, highwater=lambda t, p: ends.get(t))
    await pipe.on_batch(CLICKS, batch(["s1", "s2", "s3", "s4"]))
    pipe.check_ends()
    ends[CLICKS] = 1  # the broker came back without the topic's data, and it was written to
    pipe.check_ends()
    pipe.check_ends()
    ends[CLICKS] = 4  # one odd answer: forgotten
    pipe.check_ends()
    ends[CLICKS] = 0
    pipe.forget([0])  # a rebalance: what was read is remembered all the same
    pipe.check_ends()
    pipe.check_ends()
    with pytest.raises(TopicsChanged, match=r"clickstream\[0\] ends at offset 0, but .* 4"):
        pipe.check_ends()


async def test_a_topic_created_again_under_kept_state_stops_before_skipping_its_events() -> None:
    """The state (changelog) judged clicks up to offset 3; the topic was deleted and created
    again, and its new events 0..1 are read: they are not events read again (the partition ends
    before what the state judged), so the worker stops instead of skipping them as such."""
    store, table, letters = Store(), Table(), []
    ends = {CLICKS: 4}
    first = make_pipeline(store, table, letters, highwater=lambda t, p: ends.get(t))
    await first.on_batch(CLICKS, batch(["s1", "s2", "s3", "s4"]))
    assert first.engines[0].meta.read_to[0] == 3
    written, cells = list(table.written), dict(store.cells)

    ends[CLICKS] = 2
    restarted = make_pipeline(store, table, letters, highwater=lambda t, p: ends.get(t))
    with pytest.raises(TopicsChanged, match=r"clickstream\[0\] ends at offset 2, but .* 3"):
        await restarted.on_batch(CLICKS, batch(["n1", "n2"]))
    assert table.written == written and store.cells == cells  # nothing skipped, nothing stored

    idle = make_pipeline(store, table, letters, highwater=lambda t, p: ends.get(t))
    await idle.on_tick(0)  # no event yet: the periodic check finds it
    idle.check_ends()
    idle.check_ends()
    with pytest.raises(TopicsChanged, match=r"clickstream\[0\] ends at offset 2, but .* 4"):
        idle.check_ends()


async def test_one_low_high_watermark_is_not_taken_for_a_topic_created_again() -> None:
    """A new leader's high watermark can lag for a moment: events read again after a restart
    are skipped as such once a second reading shows the partition's real end."""
    store, table, letters = Store(), Table(), []
    readings = iter([2])  # the first reading after the restart lags; then the real end
    first = make_pipeline(store, table, letters, highwater=lambda t, p: 4 if t == CLICKS else 0)
    await first.on_batch(CLICKS, batch(["s1", "s2", "s3", "s4"]))
    cells = dict(store.cells)
    restarted = make_pipeline(
        store, table, letters, highwater=lambda t, p: next(readings, 4) if t == CLICKS else 0
    )
    again = await restarted.on_batch(CLICKS, batch(["s1", "s2", "s3", "s4"]))  # no TopicsChanged
    assert again.dead_letters == {} and again.duplicates == 0 and store.cells == cells


def shop_minutes() -> list[tuple[str, list[Message]]]:
    """Three minutes of two sessions' page views and cart events, one slice per topic and
    minute (as the aligner cuts them), a malformed cart message in the middle."""
    slices: list[tuple[str, list[Message]]] = []
    offsets = {CLICKS: 0, CART: 0}
    for minute in range(3):
        for topic, kind in ((CLICKS, "page_view"), (CART, "add_to_cart")):
            found = []
            for session in ("s1", "s2"):
                t_ms = T0_MS + minute * 60_000 + 1000 * len(found)
                event = make_event(
                    kind,
                    event_id=f"{kind}-{minute}-{session}",
                    session_id=session,
                    cart_id=f"c-{session}" if topic == CART else None,
                    event_time=datetime.fromtimestamp(t_ms / 1000, UTC).isoformat(),
                )
                bad = topic == CART and minute == 1 and session == "s2"
                value = b"{not json" if bad else dumps(event)
                found.append(Message(topic, 0, offsets[topic], t_ms, b"k", value))
                offsets[topic] += 1
            slices.append((topic, found))
    return slices


async def test_a_run_gives_what_its_slices_give_one_by_one_and_writes_each_record_once() -> None:
    by_slice, by_run = Store(), Store()
    tables = Table(), Table()
    letters: tuple[list[DeadLetter], list[DeadLetter]] = ([], [])
    one = make_pipeline(by_slice, tables[0], letters[0])
    for topic, messages in shop_minutes():
        await one.on_batch(topic, messages)
    run = make_pipeline(by_run, tables[1], letters[1])
    counts = await run.on_slices(shop_minutes())

    assert by_run.cells == by_slice.cells and by_run.presence == by_slice.presence
    assert dict(tables[1]) == dict(tables[0])
    assert letters[1] == letters[0] and [letter.reason for letter in letters[1]] == ["not_json"]
    assert [c.topic for c in counts] == [CLICKS, CART] * 3
    assert [sum(c.valid.values()) for c in counts] == [2, 2, 2, 1, 2, 2]
    assert counts[3].dead_letters == {"not_json": 1}
    assert by_run.published == 1 and by_slice.published == 6
    assert tables[1].written.count("0|s:s1") == 1 and tables[0].written.count("0|s:s1") == 6
    assert run.positions.processed == one.positions.processed == {(CLICKS, 0): 5, (CART, 0): 5}


async def test_an_event_that_fails_in_a_run_becomes_a_dead_letter_of_its_own_slice() -> None:
    store, table, letters = Store(), Table(poisoned=["s2"]), []
    pipe = make_pipeline(store, table, letters)
    counts = await pipe.on_slices(shop_minutes())
    failed = [letter for letter in letters if letter.reason == Reason.PROCESSING_ERROR]
    assert [(letter.topic, letter.offset) for letter in failed] == [
        (CLICKS, 1), (CART, 1), (CLICKS, 3), (CLICKS, 5), (CART, 5),
    ]  # fmt: skip
    assert [c.dead_letters for c in counts] == [
        {Reason.PROCESSING_ERROR: 1},
        {Reason.PROCESSING_ERROR: 1},
        {Reason.PROCESSING_ERROR: 1},
        {"not_json": 1},
        {Reason.PROCESSING_ERROR: 1},
        {Reason.PROCESSING_ERROR: 1},
    ]
    assert "0|s:s1" in table and "0|s:s2" not in table
