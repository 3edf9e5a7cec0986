"""The partition engine: exact whatever the batching, partitioning, crashes and re-deliveries."""

from __future__ import annotations

import io
import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import msgspec
import pytest

from streamproc import offline
from streamproc.events.models import Family
from streamproc.events.parse import EventDecoder
from streamproc.kpi import counters as c
from streamproc.kpi.batch import EngineSettings, Item, Progress
from streamproc.kpi.contrib import NEVER
from streamproc.kpi.engine import PartitionEngine
from streamproc.kpi.records import (
    NONE,
    SCAN_BYTES,
    TOPICS,
    decode_frozen,
    decode_meta,
    encode,
    event_hash,
    first_sight,
    has_seen,
)
from streamproc.offline import MemoryState, OfflinePipeline
from streamproc.simulate import Anomalies, SimConfig, TimeRange, simulate, write_jsonl

START = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)
HOUR_MS = 3_600_000
DECODER = EventDecoder(fx_rates={"EUR": Decimal("1.08")})
SETTINGS = EngineSettings()


def sim_lines(minutes: int, *, seed: int = 3, rate: float = 40, **anomalies: Any) -> list[bytes]:
    config = SimConfig(
        start=START,
        duration_seconds=minutes * 60,
        seed=seed,
        sessions_per_minute=rate,
        stores=3,
        currencies={"store-02": "EUR"},
        anomalies=Anomalies(**anomalies),
    )
    out = io.BytesIO()
    write_jsonl(simulate(config), out)
    return out.getvalue().splitlines()


@pytest.fixture(scope="module")
def messy() -> list[bytes]:
    """Three hours with every anomaly, including a spike and an idle gap."""
    return sim_lines(
        180,
        duplicate_share=0.02,
        out_of_order_share=0.03,
        late_share=0.01,
        too_late_share=0.005,
        malformed_share=0.01,
        abandonment_spikes=(
            TimeRange(START + timedelta(minutes=40), START + timedelta(minutes=60)),
        ),
        idle_gaps=(TimeRange(START + timedelta(minutes=90), START + timedelta(minutes=110)),),
    )


def report(lines: list[bytes], **options: Any) -> list[dict[str, Any]]:
    pipeline = OfflinePipeline(SETTINGS, decoder=DECODER, **options)
    return pipeline.run(lines).report([HOUR_MS, 24 * HOUR_MS])


@pytest.mark.parametrize(("events", "batch"), [(12_000, 97), (None, 1999)])
def test_projection_equals_recomputation_after_every_batch(
    messy: list[bytes], monkeypatch: pytest.MonkeyPatch, events: int | None, batch: int
) -> None:
    """The in-memory partials always equal the contributions recomputed from the store; over
    the three hours, with records evicted too."""
    engines: dict[int, PartitionEngine] = {}
    checked = evicted = 0
    real_init = PartitionEngine.__init__

    def remember(self: PartitionEngine, *args: Any) -> None:
        real_init(self, *args)
        engines[self.partition] = self

    def publish(plan: Any, store: MemoryState, result: Any) -> None:
        nonlocal checked, evicted
        real_publish(plan, store, result)
        evicted += plan.evicted
        engine = engines[plan.partition]
        expected: dict[c.CellKey, c.Counters] = {}
        references: Counter[c.CellKey] = Counter()
        for full in store.scan():
            p, _, key = full.partition("|")
            if int(p) == plan.partition and key.startswith("f:"):
                _, minute, cell_store = key.split(":", 2)
                frozen = decode_frozen(store[full]).counters
                c.add_cells(expected, {(int(minute), cell_store): frozen})
            if int(p) == plan.partition and key[0] in "sotv":
                record = offline_decode(key, store[full])
                watermark = engine.meta.watermark
                c.add_cells(expected, engine.contribution(key, record, watermark).cells)
                references.update(engine.references(key, record, watermark))
        sums = {cell: v for cell, v in engine.projection.sums.items() if v}
        assert sums == {cell: v for cell, v in expected.items() if v}
        # what holds a cell in memory: no leak, and nothing forgotten that a record still holds
        assert {cell: n for cell, n in engine.projection.refs.items() if n} == references
        # nothing due is left but evictions (they come one batch after the deadline), and every
        # scheduled record has a heap entry at or before its time
        for full, when in engine.schedule.when.items():
            if when <= engine.meta.watermark:
                key = full.partition("|")[2]
                assert when == engine.deadline(key, offline_decode(key, store[full]))
        first: dict[str, int] = {}
        for when, full in engine.schedule.heap:
            first[full] = min(when, first.get(full, when))
        assert all(first[full] <= when for full, when in engine.schedule.when.items())
        checked += 1

    from streamproc.kpi.engine import _decode as offline_decode

    real_publish = OfflinePipeline._publish
    monkeypatch.setattr(PartitionEngine, "__init__", remember)
    monkeypatch.setattr(OfflinePipeline, "_publish", staticmethod(publish))
    OfflinePipeline(SETTINGS, decoder=DECODER, batch=batch).run(messy[:events])
    assert checked > 100
    assert evicted > 1000 or events is not None


def test_results_do_not_depend_on_batching_or_partitioning(messy: list[bytes]) -> None:
    baseline = report(messy, partitions=4, batch=200)
    assert len(baseline) > 500
    assert report(messy, partitions=4, batch=13) == baseline
    assert report(messy, partitions=1, batch=1000) == baseline
    assert report(messy, partitions=7, batch=61) == baseline


@pytest.mark.parametrize("rewind", [0, 500])
def test_crashes_mid_batch_change_nothing(messy: list[bytes], rewind: int) -> None:
    """Writes cut at every position, memory lost, events re-delivered: the same report."""
    baseline = report(messy, batch=100)
    cuts = {5: 0, 40: 1, 77: 3, 120: 7, 200: 10_000, 333: 2}
    assert report(messy, batch=100, crash=cuts.get, rewind=rewind) == baseline


def test_every_input_event_type_reaches_a_kpi() -> None:
    rows = report(sim_lines(12 * 60, rate=8, late_share=0.01))  # surveys follow resolutions
    kpis = {row["kpi"] for row in rows}
    assert {"sessions", "orders", "net_revenue", "cart_abandonment_rate", "bounce_rate"} <= kpis
    assert {"first_response_seconds_p90", "resolution_seconds_mean", "nps", "csat_score"} <= kpis
    assert {"escalation_rate", "payment_failure_rate", "open_tickets"} <= kpis
    assert all(row["final"] for row in rows if row["window"] != "now")


def _event(kind: str, t: int, eid: str, **fields: Any) -> Any:
    body = {"event_id": eid, "event_type": kind, "event_time": t, "visitor_id": "v1"}
    body.update({"session_id": "s1", "store_id": "store-01"}, **fields)
    family = Family.CART if kind == "add_to_cart" else Family.CLICKSTREAM
    return DECODER.decode(json.dumps(body).encode(), family, now_ms=t + 1)


T0 = 1_790_000_000_000


def _feed(engine: PartitionEngine, store: MemoryState, items: list[Item]) -> Any:
    """Judge and apply ``items`` as one batch, and store the outcome's writes; the outcome."""
    engine.read(items, Progress())
    outcome = engine.apply(items, Progress(), store)
    store.apply(outcome.writes)
    return outcome


def test_sessions_and_carts_close_when_traffic_stops() -> None:
    store = MemoryState()
    engine = PartitionEngine(0, SETTINGS, store)
    items = [
        Item(_event("page_view", T0, "e1"), 0, 0, "store-01"),
        Item(_event("add_to_cart", T0 + 1000, "e2", cart_id="c1", quantity=1), 1, 0, "store-01"),
    ]
    engine.read(items, Progress(wall_ms=T0), wall_ms=T0)
    store.apply(engine.apply(items, Progress(wall_ms=T0), store).writes)
    assert engine.projection.sums[(T0 - T0 % 60_000, "store-01")][c.SESSIONS_OPEN] == 1
    # no further event: only the wall clock moves on past idle timeout + session timeout
    later = (
        T0 + SETTINGS.idle_timeout_ms + SETTINGS.session_timeout_ms + SETTINGS.allowed_lateness_ms
    )
    plan = engine.apply([], Progress(wall_ms=later + 1000), store)
    cell = plan.cells[(T0 - T0 % 60_000, "store-01")]
    assert cell.get(c.SESSIONS_OPEN, 0) == 0 and cell[c.SESSIONS_CLOSED] == 1
    assert cell[c.CARTS_ABANDONED] == 1 and cell.get(c.CARTS_UNDECIDED, 0) == 0


def test_once_the_input_has_ended_records_are_not_looked_at_again() -> None:
    # Each tick of a finished partition re-evaluated every record it held, starving the others.
    store = MemoryState()
    engine = PartitionEngine(0, SETTINGS, store)
    items = [
        Item(_event("page_view", T0 + n * 1000, f"e{n}", session_id=f"s{n}"), 0, n, "store-01")
        for n in range(5)
    ]
    _feed(engine, store, items)
    ended = Progress(ended=frozenset(range(4)))
    final = engine.apply([], ended, store)
    store.apply(final.writes)
    assert final.watermark == NEVER and final.cells
    assert not engine.schedule.when
    again = engine.apply([], ended, store)
    assert again.writes == [(engine.prefix + "m", encode(engine.meta))] and not again.cells


def test_superseded_schedule_entries_do_not_pile_up() -> None:
    # Each batch that touches a session schedules it again (its end moved on); the entries it
    # replaced stayed in the heap until their time, ~170 bytes each, more than the live ones.
    store = MemoryState()
    engine = PartitionEngine(0, SETTINGS, store)
    sessions, batches = 200, 40
    for b in range(batches):
        items = [
            Item(_event("page_view", T0 + b * 1000, f"e{b}-{s}", session_id=f"s{s}"), 0, o, "x")
            for s, o in enumerate(range(b * sessions, (b + 1) * sessions))
        ]
        _feed(engine, store, items)
        # each is scheduled later than before: its first entry stands for it
        assert len(engine.schedule.heap) == len(engine.schedule.when)
    assert len(engine.schedule.when) == sessions
    assert {key for _, key in engine.schedule.heap} == set(engine.schedule.when)  # none lost


def test_a_new_engine_is_not_idle_before_an_idle_timeout_has_passed() -> None:
    # A worker's first tick can come before its first fetch: no backlog is known yet, and a
    # backlog of old events must not be judged against a wall-clock watermark.
    old = T0 - 3 * HOUR_MS
    engine = PartitionEngine(0, SETTINGS, MemoryState(), wall_ms=T0)
    engine.apply([], Progress(wall_ms=T0 + 1000), MemoryState())
    verdicts = engine.read([Item(_event("page_view", old, "a"), 0, 0, "store-01")], Progress())
    assert verdicts.too_late == [] and len(verdicts.on_time) == 1
    quiet = PartitionEngine(1, SETTINGS, MemoryState(), wall_ms=T0)
    quiet.apply([], Progress(wall_ms=T0 + SETTINGS.idle_timeout_ms), MemoryState())
    refused = quiet.read([Item(_event("page_view", old, "b"), 0, 0, "store-01")], Progress())
    assert len(refused.too_late) == 1  # truly idle for a timeout: the wall clock counts


def test_a_record_only_due_is_re_evaluated_but_not_written_again() -> None:
    """A session closing changes its cells, not its record: the state holds it as it is."""
    store = MemoryState()
    engine = PartitionEngine(0, SETTINGS, store)
    _feed(engine, store, [Item(_event("page_view", T0, "a"), 0, 0, "store-01")])
    written = store.get(f"{engine.prefix}s:s1")
    assert written is not None
    ahead = T0 + SETTINGS.session_timeout_ms + SETTINGS.allowed_lateness_ms + 60_000
    later = [Item(_event("page_view", ahead, "b", session_id="s2"), 0, 1, "store-01")]
    plan = _feed(engine, store, later)
    assert plan.cells[(T0 - T0 % 60_000, "store-01")][c.SESSIONS_CLOSED] == 1
    keys = [key for key, _ in plan.writes]
    assert f"{engine.prefix}s:s2" in keys and f"{engine.prefix}s:s1" not in keys
    assert store.get(f"{engine.prefix}s:s1") == written


def test_late_event_amends_a_closed_window_and_too_late_is_refused() -> None:
    store = MemoryState()
    engine = PartitionEngine(0, SETTINGS, store)
    _feed(engine, store, [Item(_event("page_view", T0, "a"), 0, 0, "store-01")])
    ahead = [Item(_event("page_view", T0 + 2 * HOUR_MS, "b", session_id="s2"), 0, 1, "store-01")]
    _feed(engine, store, ahead)
    _feed(engine, store, [])  # evictions come one plan later
    minute = T0 - T0 % 60_000
    late = Item(
        _event("page_view", T0 + HOUR_MS + 10 * 60_000, "c", session_id="s3"), 0, 2, "store-01"
    )
    too_late = Item(_event("page_view", T0 + 30 * 60_000, "d", session_id="s4"), 0, 3, "store-01")
    verdicts = engine.read([late, too_late], Progress())
    assert verdicts.on_time == [late] and verdicts.too_late == [too_late]
    assert verdicts.late == 1
    on_time = verdicts.on_time
    before = engine.projection.sums.get(
        (late.event.event_time - late.event.event_time % 60_000, "store-01")
    )
    plan = engine.apply(on_time, Progress(), store)
    after = plan.cells[(late.event.event_time - late.event.event_time % 60_000, "store-01")]
    assert before is None and after[c.SESSIONS] == 1 and after[c.PAGE_VIEWS] == 1
    assert (minute, "store-01") not in plan.cells


def test_a_crash_that_keeps_a_plans_deletes_but_not_its_watermark_counts_nothing_twice() -> None:
    """A kill can cut a plan's changelog writes short. Were the eviction of a session in the
    changelog and the watermark that allowed it (written last) not, the restarted engine would
    take the session's re-delivered events as on time and count the session a second time."""
    store = MemoryState()
    engine = PartitionEngine(0, SETTINGS, store)
    first = [Item(_event("page_view", T0, "a"), 0, 0, "store-01")]
    ahead = [Item(_event("page_view", T0 + 2 * HOUR_MS, "b", session_id="s2"), 0, 1, "store-01")]
    evicted = 0
    for items in (first, ahead, [], []):
        engine.read(items, Progress())
        plan = engine.apply(items, Progress(), store)
        if plan.evicted:  # the crash: everything of this plan but its watermark is written
            evicted = plan.evicted
            store.apply([w for w in plan.writes if w[0] != f"{engine.prefix}m"])
            break
        store.apply(plan.writes)
    assert evicted == 1
    restarted = PartitionEngine(0, SETTINGS, store)
    verdicts = restarted.read(first + ahead, Progress())  # nothing was committed: all again
    # judged before the crash (the meta that was written records them): not counted again
    assert verdicts.again == 2 and verdicts.on_time == verdicts.too_late == []
    # the same with a meta from before ``read_to``: too late, counted in the frozen sums only
    restarted.meta.read_to = [NONE] * TOPICS
    verdicts = restarted.read(first + ahead, Progress())
    assert verdicts.too_late == first
    plan = restarted.apply(verdicts.on_time, Progress(), store)
    assert all(minute > T0 for minute, _ in plan.cells)


def test_a_meta_written_before_read_to_decodes_with_nothing_judged() -> None:
    old = msgspec.msgpack.encode([[T0, NONE, NONE, NONE], T0 - 120_000, NONE, ""])
    meta = decode_meta(old)
    assert meta.watermark == T0 - 120_000 and meta.read_to == [NONE] * TOPICS
    assert meta.accepted == meta.duplicates == 0


def _views(engine: PartitionEngine) -> int:
    return sum(counters.get(c.PAGE_VIEWS, 0) for counters in engine.projection.sums.values())


def test_a_repeated_event_id_is_dropped_in_its_batch_and_in_later_ones() -> None:
    store = MemoryState()
    engine = PartitionEngine(0, SETTINGS, store)
    first = [
        Item(_event("page_view", T0, "e1"), 0, 0, "store-01"),
        Item(_event("page_view", T0, "e1"), 0, 1, "store-01"),  # sent twice by its tracker
        Item(_event("page_view", T0 + 1000, "e2"), 0, 2, "store-01"),
    ]
    plan = engine.apply(engine.read(first, Progress()).on_time, Progress(), store)
    store.apply(plan.writes)
    assert plan.duplicates == [first[1]] and _views(engine) == 2
    # later, out of order and on another topic's offsets: still the same events
    again = [
        Item(_event("page_view", T0, "e2"), 0, 7, "store-01"),
        Item(_event("add_to_cart", T0, "e1", cart_id="c1", quantity=1), 1, 1, "store-01"),
        Item(_event("page_view", T0 + 2000, "e3"), 0, 8, "store-01"),
    ]
    plan = engine.apply(engine.read(again, Progress()).on_time, Progress(), store)
    assert plan.duplicates == again[:2] and _views(engine) == 3
    assert (engine.meta.accepted, engine.meta.duplicates) == (3, 3)


def test_a_message_read_again_after_a_lost_meta_is_not_its_own_duplicate() -> None:
    """A kill after a plan's records reached the changelog but not its meta: the restarted
    engine judges the batch again. Each message is recognised as itself (counted accepted once
    more, since the count was in the lost meta), the repeat as a duplicate again."""
    store = MemoryState()
    engine = PartitionEngine(0, SETTINGS, store)
    items = [
        Item(_event("page_view", T0, "e1"), 0, 0, "store-01"),
        Item(_event("page_view", T0, "e1"), 0, 1, "store-01"),
        Item(_event("page_view", T0 + 1000, "e2"), 0, 2, "store-01"),  # absorbed past the repeat
    ]
    plan = engine.apply(engine.read(items, Progress()).on_time, Progress(), store)
    store.apply([w for w in plan.writes if w[0] != f"{engine.prefix}m"])
    restarted = PartitionEngine(0, SETTINGS, store)
    verdicts = restarted.read(items, Progress())
    assert verdicts.again == 0 and verdicts.on_time == items
    plan = restarted.apply(verdicts.on_time, Progress(), store)
    assert plan.duplicates == [items[1]] and _views(restarted) == 2
    assert (restarted.meta.accepted, restarted.meta.duplicates) == (2, 1)


def test_a_record_written_before_seen_decodes_and_keeps_skipping_what_it_absorbed() -> None:
    store = MemoryState()
    engine = PartitionEngine(0, SETTINGS, store)
    item = Item(_event("page_view", T0, "e1"), 0, 0, "store-01")
    store.apply(engine.apply(engine.read([item], Progress()).on_time, Progress(), store).writes)
    key = f"{engine.prefix}s:s1"
    written = msgspec.msgpack.decode(store[key])
    assert written[-2:] == [event_hash("e1"), []]  # ``seen`` and ``repeats`` come last
    store[key] = msgspec.msgpack.encode(written[:-2])  # as written before they were
    restarted = PartitionEngine(0, SETTINGS, store)
    restarted.meta.read_to = [NONE] * TOPICS  # a meta lost as well: the event is judged again
    plan = restarted.apply(restarted.read([item], Progress()).on_time, Progress(), store)
    assert plan.duplicates == [] and _views(restarted) == 1  # absorbed already (``off``)


def test_an_event_hash_is_found_only_where_one_was_packed() -> None:
    first, second = event_hash("e1"), event_hash("e2")
    seen = first + second
    assert has_seen(seen, first) and has_seen(seen, second)
    straddling = first[4:] + second[:4]
    assert not has_seen(seen, straddling)  # in the bytes, but across two hashes
    assert has_seen(seen + straddling, straddling)  # found past the straddling match
    assert not has_seen(b"", first) and not has_seen(seen, event_hash("e3"))


@pytest.mark.parametrize("events", [3, SCAN_BYTES // 8 - 1, SCAN_BYTES // 8, 3 * SCAN_BYTES])
def test_first_sight_packs_each_hash_once_whatever_the_records_size(events: int) -> None:
    seen, sets = bytearray(), {}
    ids = [f"e{n}" for n in range(events)]
    assert all(first_sight(seen, event_id, sets) for event_id in ids)
    assert len(seen) == 8 * events and bytes(seen[-8:]) == event_hash(ids[-1])
    assert not any(first_sight(seen, event_id, sets) for event_id in (ids[0], ids[-1]))
    assert first_sight(seen, "new", sets) and len(seen) == 8 * events + 8
    assert not first_sight(seen, "new", sets)
    assert bool(sets) == (len(seen) >= SCAN_BYTES)  # big records are looked up in a set


def test_first_sight_is_not_fooled_by_a_hash_across_two_others() -> None:
    straddled = bytearray(4) + event_hash("x") + bytearray(4)  # its bytes, but not as a hash
    assert first_sight(straddled, "x", {}) and straddled[16:] == event_hash("x")
    assert not first_sight(straddled, "x", {})


def test_store_label_cap_folds_later_stores_into_other() -> None:
    lines = sim_lines(30, rate=60)
    capped = OfflinePipeline(SETTINGS, decoder=DECODER, max_stores=2).run(lines)
    free = OfflinePipeline(SETTINGS, decoder=DECODER).run(lines)
    stores = {store for _, store in capped.cells}
    assert len(stores - {"other"}) == 2 and "other" in stores
    total = c.sum_counters(capped.cells.values())
    assert total == c.sum_counters(free.cells.values())


def test_offline_module_has_no_hidden_state() -> None:
    assert offline.StoreLabels(1).label("all") == "other"
