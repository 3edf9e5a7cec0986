"""Distinct visitors in a real Redis: exact sets while small, the HyperLogLog beyond.

HyperLogLog alone (Redis: 2^14 registers) misses a visitor in about 1 % of windows of 20 (two
hashes in one register) and has ~0.8 % standard error at large counts, so "within 2 %" cannot
hold per value. The exact sets make every count up to the limits exact; only beyond them is the
sketch used.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from streamproc.devstack import StackInfo
from streamproc.store import ExactVisitors, KpiStore, kpistore, visitor_hash

pytestmark = pytest.mark.integration

MINUTE = 29_833_334  # any minute number


@pytest.fixture
async def store(stack: StackInfo, namespace: str) -> AsyncIterator[KpiStore]:
    kpi_store = KpiStore.connect(
        stack.redis_url, namespace, exact_visitors=ExactVisitors(per_minute=300, union=1000)
    )
    try:
        yield kpi_store
    finally:
        await kpi_store.drop()
        await kpi_store.aclose()


async def publish(store: KpiStore, minute: int, visitors: range, partition: int = 0) -> None:
    presence = {(minute, "s1", "", f"visitor-{n}") for n in visitors}
    await store.publish(partition, cells={}, presence=presence, open_tickets=None, status=None)


async def count(store: KpiStore, *minutes: int, store_id: str = "all") -> int:
    return await store.visitors(minutes, store_id, None)


async def test_small_counts_are_exact_where_the_sketch_alone_is_not(store: KpiStore) -> None:
    # 200 windows of 20 visitors each: the HyperLogLog alone gets some of them wrong.
    minutes = [MINUTE + i for i in range(200)]
    for i, minute in enumerate(minutes):
        await publish(store, minute, range(i * 20, i * 20 + 20), partition=i % 4)
    exact = [await count(store, m) for m in minutes]
    assert exact == [20] * 200
    sketch_only = KpiStore(store.client, store.ns, exact_visitors=ExactVisitors(0, 0))
    assert {await count(sketch_only, m) for m in minutes} != {20}, "the sketch was exact anyway"


async def test_sets_from_several_partitions_and_minutes_union_exactly(store: KpiStore) -> None:
    await publish(store, MINUTE, range(0, 250), partition=0)
    await publish(store, MINUTE, range(200, 280), partition=1)  # 50 new, 30 seen on partition 0
    await publish(store, MINUTE + 1, range(250, 500), partition=2)
    await publish(store, MINUTE, range(0, 250), partition=0)  # a re-processed batch
    assert await count(store, MINUTE) == 280
    assert await count(store, MINUTE + 1) == 250
    assert await count(store, MINUTE, MINUTE + 1) == 500
    assert await count(store, MINUTE, MINUTE + 1, store_id="s1") == 500


async def test_an_outgrown_set_gives_way_to_the_sketch(store: KpiStore) -> None:
    await publish(store, MINUTE, range(0, 301))  # over the per-minute cap of 300
    members = await store.client.smembers(store.key("vis", MINUTE, "all", ""))
    assert members == {b"0"}, "the outgrown set keeps only its marker"
    assert abs(await count(store, MINUTE) - 301) <= 301 * 0.02
    await publish(store, MINUTE, range(301, 310))  # later visitors: still the sketch only
    assert await store.client.smembers(store.key("vis", MINUTE, "all", "")) == {b"0"}


async def test_a_set_that_outgrows_its_cap_later_keeps_its_retention(store: KpiStore) -> None:
    """The second publish to a minute sets no retention (the first did, within the hour), yet
    the set it makes anew as outgrown gets one."""
    await publish(store, MINUTE, range(0, 200))
    await publish(store, MINUTE, range(200, 301))  # over the cap of 300 now
    key = store.key("vis", MINUTE, "all", "")
    assert await store.client.smembers(key) == {b"0"}
    assert 0 < await store.client.ttl(key) <= store.retention_s


async def test_unions_beyond_the_limit_are_counted_by_the_sketch(store: KpiStore) -> None:
    minutes = [MINUTE + i for i in range(5)]
    for i, minute in enumerate(minutes):
        await publish(store, minute, range(i * 250, i * 250 + 250))
    assert await count(store, *minutes[:4]) == 1000  # at the union limit: exact
    total = await count(store, *minutes)  # 1250 members > 1000: the HyperLogLog union
    assert abs(total - 1250) <= 1250 * 0.02


async def test_one_publish_of_many_sketches_adds_every_visitor(store: KpiStore) -> None:
    """A publish adds all its sketches in one script call, in chunks of 1000 arguments: every
    visitor of every sketch lands, exact set and HyperLogLog alike."""
    big = KpiStore(store.client, store.ns, exact_visitors=ExactVisitors(5000, 10_000))
    presence = {(MINUTE, "s1", "", f"visitor-{n}") for n in range(2500)}
    presence |= {(MINUTE + 1, "s2", "device_type=mobile", f"visitor-{n}") for n in range(7)}
    presence |= {(MINUTE + 2, "s1", "", f"visitor-{n}") for n in range(1000, 2001)}
    await big.publish(0, cells={}, presence=presence, open_tickets=None, status=None)
    assert await count(big, MINUTE) == 2500
    assert await big.visitors([MINUTE + 1], "s2", "device_type=mobile") == 7
    assert await count(big, MINUTE + 2, store_id="s1") == 1001
    assert await count(big, MINUTE, MINUTE + 1, MINUTE + 2) == 2500
    for minute, store_id, visitors in (
        (MINUTE, "s1", range(2500)),
        (MINUTE + 2, "all", range(1000, 2001)),
    ):
        # the same registers as one PFADD of the visitors: not one of them was left out
        whole = store.key("whole", minute)
        await store.client.pfadd(whole, *(f"visitor-{n}" for n in visitors))
        sketch = store.key("hll", minute, store_id, "")
        assert await store.client.pfcount(sketch) == await store.client.pfcount(whole)


async def test_exact_sets_hold_every_bit_of_the_hashes_as_compact_integers(store: KpiStore) -> None:
    """The hashes reach Redis through Lua, whose numbers hold 53 bits: they go as text, so every
    bit arrives, and Redis keeps the set as an intset (8 bytes a member)."""
    await publish(store, MINUTE, range(50))
    for store_id in ("s1", "all"):
        key = store.key("vis", MINUTE, store_id, "")
        members = await store.client.smembers(key)
        assert members == {str(visitor_hash(f"visitor-{n}")).encode() for n in range(50)}
        assert await store.client.object("encoding", key) in (b"intset", "intset")


def test_visitor_hash_is_stable_signed_64_bit_and_never_the_marker() -> None:
    assert visitor_hash("visitor-1") == visitor_hash("visitor-1")
    values = {visitor_hash(f"v{n}") for n in range(10_000)}
    assert len(values) == 10_000
    assert all(-(2**63) <= v < 2**63 and v != 0 for v in values)
    assert any(v < 0 for v in values)


async def test_every_published_key_keeps_its_retention(store: KpiStore) -> None:
    """Retention is set once per key (not at every write), yet no key is left without it."""
    cells = {(MINUTE, "s1"): {"sessions": 1}, (MINUTE, "s2"): {"sessions": 2}}
    for partition in (0, 1, 0):  # the same keys written again: one EXPIRE each was enough
        await store.publish(
            partition,
            cells=cells,
            presence={(MINUTE, "s1", "", "v-1")},
            open_tickets=None,
            status=None,
        )
    keys = [key async for key in store.client.scan_iter(match=store.key("*"), count=10_000)]
    published = [key for key in keys if b":cells:" in key or b":hll:" in key or b":vis:" in key]
    assert len(published) >= 4
    for key in published:
        assert 0 < await store.client.ttl(key) <= store.retention_s, key
    rows = await store.cells([MINUTE])
    assert rows == {(MINUTE, "s1"): {"sessions": 2}, (MINUTE, "s2"): {"sessions": 4}}


async def test_a_redis_that_forgot_the_scripts_gets_them_again(store: KpiStore) -> None:
    """Scripts run by SHA inside pipelines; a restarted Redis has none: they are loaded again."""
    await publish(store, MINUTE, range(10))
    await store.client.script_flush()
    await publish(store, MINUTE, range(5, 20))
    assert await count(store, MINUTE) == 20
    await store.client.script_flush()
    assert await count(store, MINUTE, store_id="s1") == 20


async def test_many_unions_are_counted_in_round_trips_of_bounded_size(
    store: KpiStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A report of days of data asks for hundreds of thousands of unions: they go in round trips
    of at most ``UNION_MINUTES_PER_TRIP`` minutes (a larger union alone), and count the same."""
    minutes = [MINUTE + i for i in range(12)]
    for i, minute in enumerate(minutes):
        await publish(store, minute, range(i * 10, i * 10 + 15))  # 5 shared with the next
    keys = [(tuple(minutes[i : i + size]), "all", None) for size in (1, 3, 12) for i in range(12)]
    one_trip = await store.visitor_counts(keys)
    trips: list[int] = []
    run = store._run

    async def counted_run(commands: Any) -> list[Any]:
        trips.append(1)
        return await run(commands)

    monkeypatch.setattr(kpistore, "UNION_MINUTES_PER_TRIP", 5)
    monkeypatch.setattr(store, "_run", counted_run)
    assert await store.visitor_counts(keys) == one_trip
    assert one_trip[((MINUTE,), "all", None)] == 15
    assert one_trip[(tuple(minutes), "all", None)] == 125
    assert len(trips) == len(list(kpistore._by_minutes(keys, 5))) > 1
