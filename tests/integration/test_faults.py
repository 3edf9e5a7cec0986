"""The fault matrix against a real broker (Tansu behind a socat proxy) and a real Redis, each of
the test's own (``faults.py``): outages, freezes, an emptied broker, poison messages, hostile
input, a rebalance and a restart. Every run is checked against the reference: nothing lost,
nothing counted twice, the same final report. Each fault test prints one accounting line
(``FAULT ...``: run pytest with ``-s``, or read the captured output of a failure)."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from faults import (
    PARTITIONS,
    Accounting,
    FaultRun,
    PrivateRedis,
    ProxiedBroker,
    alive,
    differences,
    explained,
    hostile_messages,
    log_text,
    metrics_url,
    poison_messages,
    rebalances,
    sigterm,
    simulated_lines,
    sleep_until,
    split,
)

from streamproc import broker as kafka
from streamproc import metrics
from streamproc.eventfile import routable

pytestmark = pytest.mark.integration

OUTAGE_S = 30.0  # the outage length for Redis and the broker


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[ProxiedBroker]:
    with ProxiedBroker(tmp_path / "broker") as started:
        yield started


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[PrivateRedis]:
    with PrivateRedis(tmp_path / "redis") as started:
        yield started


@pytest.fixture
async def run(
    broker: ProxiedBroker, redis_server: PrivateRedis, tmp_path: Path
) -> AsyncIterator[FaultRun]:
    fault_run = FaultRun(broker, redis_server, tmp_path)
    try:
        yield fault_run
    finally:
        await fault_run.aclose()


def assert_agrees(rows: list[dict[str, Any]], lines: list[bytes]) -> None:
    found = differences(rows, lines)
    assert not found, f"{len(found)} differences from the reference:\n" + "\n".join(found[:40])


# --- 1. Redis down, Redis frozen --------------------------------------------------------------


@pytest.mark.timeout(300)
@pytest.mark.parametrize("fault", ["down", "frozen"])
async def test_redis_outage_mid_stream(
    run: FaultRun, redis_server: PrivateRedis, fault: str
) -> None:
    """Redis killed (connections refused) or stopped (SIGSTOP: connections hang) for 30 s while
    the worker reads, and events keep arriving meanwhile: the worker holds, recovers by itself,
    and the final report equals the reference."""
    lines = simulated_lines()
    first, second = split(lines, 2)
    await run.announce(lines)
    await run.produce(first)
    with run.workers() as workers, explained(run):
        await run.wait_accepting()
        started = time.monotonic()
        redis_server.stop() if fault == "down" else redis_server.freeze()
        await run.produce(second)  # the broker is up: events keep arriving
        await sleep_until(started + OUTAGE_S, alive(workers))
        redis_server.start() if fault == "down" else redis_server.thaw()
        recovery = await run.recovery(time.time(), timeout_s=90, check=alive(workers))
        rows = await run.finish(timeout_s=120, check=alive(workers))
    accounting = await run.accounting(lines, {f"redis {fault}": recovery})
    print(accounting.line(f"redis {fault} {OUTAGE_S:g} s"))
    assert accounting.lost == 0, accounting.line("lost")
    assert_agrees(rows, lines)


# --- 2. Redis down while the worker starts ----------------------------------------------------


@pytest.mark.timeout(240)
async def test_worker_starting_while_redis_is_down(
    run: FaultRun, redis_server: PrivateRedis
) -> None:
    """A worker started while Redis is down (events keep arriving) waits for it: once Redis is
    back ~20 s later the final report equals the reference, so no offset was committed past an
    event that was not processed."""
    lines = simulated_lines()
    first, second = split(lines, 2)
    await run.announce(lines)
    await run.produce(first)
    redis_server.stop()
    with run.workers() as workers, explained(run):
        started = time.monotonic()
        await run.produce(second)
        await sleep_until(started + 20, alive(workers))
        redis_server.start()
        recovery = await run.recovery(time.time(), timeout_s=90, check=alive(workers))
        rows = await run.finish(timeout_s=120, check=alive(workers))
    accounting = await run.accounting(lines, {"redis up": recovery})
    print(accounting.line("redis down at worker start, 20 s"))
    assert accounting.lost == 0, accounting.line("lost")
    assert_agrees(rows, lines)


# --- 3. Broker cut, broker frozen -------------------------------------------------------------


@pytest.mark.timeout(420)
async def test_broker_cut_then_frozen(run: FaultRun, broker: ProxiedBroker) -> None:
    """The proxy cut for 30 s (connections drop, new ones refused; the producer of the next part
    waits for the broker), then Tansu frozen for 30 s (connections hang): the workers ride both
    out, reconnect by themselves, and nothing is lost."""
    lines = simulated_lines()
    first, second, third = split(lines, 3)
    await run.announce(lines)
    await run.produce(first)
    recovery = {}
    with run.workers() as workers, explained(run):
        check = alive(workers)
        await run.wait_accepting()
        started = time.monotonic()
        broker.cut()
        waiting = asyncio.create_task(run.produce_when_reachable(second, timeout_s=OUTAGE_S + 60))
        await sleep_until(started + OUTAGE_S, check)
        broker.restore()
        recovery["cut"] = await run.recovery(time.time(), timeout_s=120, check=check)
        await waiting
        started = time.monotonic()
        broker.freeze()
        await sleep_until(started + OUTAGE_S, check)
        broker.thaw()
        recovery["frozen"] = await run.recovery(time.time(), timeout_s=120, check=check)
        await run.produce(third)
        rows = await run.finish(timeout_s=150, check=check)
    accounting = await run.accounting(lines, recovery)
    print(accounting.line(f"broker cut {OUTAGE_S:g} s, then frozen {OUTAGE_S:g} s"))
    assert accounting.lost == 0, accounting.line("lost")
    assert_agrees(rows, lines)


# --- 4. A broker that comes back empty --------------------------------------------------------

EMPTY_BOUND_S = 60.0
# Tansu creates a topic it is asked about with 4 partitions: with another count, a changelog
# the broker made up is told from one the worker recreated.
EMPTY_PARTITIONS = 3


@pytest.mark.timeout(240)
async def test_broker_back_empty_never_wedges(
    broker: ProxiedBroker, redis_server: PrivateRedis, tmp_path: Path
) -> None:
    """The broker restarts with nothing (memory storage): within a bound the worker has either
    stopped with an error in its log, or recreated what it needs and goes on: its state changelog
    is back with the input's partition count, every partition keeps publishing progress with no
    input (ticks), and new input is read. Both are fine; a worker that neither stops nor works,
    or an internal topic with another partition count (state of one partition restored into
    another), is not."""
    run = FaultRun(broker, redis_server, tmp_path, partitions=EMPTY_PARTITIONS)
    lines = simulated_lines()
    first, second = split(lines, 2)
    try:
        await run.announce(lines)
        await run.produce(first)
        with run.workers() as workers, explained(run):
            proc, log = workers.procs[0]
            await run.wait_accepting()
            await asyncio.sleep(3)
            broker.restart_empty()
            emptied = time.time()
            verdict = await _after_empty(run, proc, Path(log.name), emptied)
            how = "the worker goes on"
            if verdict is not None:  # it stopped: fine, with a non-zero status and an error
                assert proc.returncode != 0, "stopped with status 0 after losing its broker"
                assert "error lines: []" not in verdict, "stopped without an error in its log"
                # ... and the stack is not wedged: a restarted worker (what an orchestrator
                # does) creates what it needs and works
                how = f"{verdict}; a restarted worker works"
                restarted = time.time()
                proc = workers.start(1)
                log = workers.procs[-1][1]
                again = await _after_empty(run, proc, Path(log.name), restarted)
                assert again is None, f"the restarted worker stopped too: {again}"
            present = await kafka.partition_counts(broker.bootstrap, run.settings.input_topics)
            minutes = await run.store.count_keys("cells")
            await run.produce(second)  # creates missing input topics, with the right count
            left = EMPTY_BOUND_S - (time.time() - emptied)
            await run.wait_new_minutes(minutes, timeout_s=max(left, 5))
            print(
                f"FAULT broker back empty: {how}: its changelog is back with "
                f"{run.partitions} partitions, every partition publishes progress, new input "
                f"is read {time.time() - emptied:.1f} s after; input topics: "
                f"{present}; errors logged since: {_error_count(Path(log.name))}"
            )
    finally:
        await run.aclose()


async def _after_empty(
    run: FaultRun, proc: subprocess.Popen[bytes], log: Path, emptied: float
) -> str | None:
    """Watch a worker after its broker came back empty: a description once it has stopped, None
    once it works (its changelog back with the right partition count, every partition publishing
    progress twice, 3 s apart); fails when it does neither within ``EMPTY_BOUND_S``."""
    deadline = time.monotonic() + EMPTY_BOUND_S
    internal = [f"{run.group}-state-changelog", f"{run.group}-ticks"]
    since_ms = (emptied + 5) * 1000  # later than any leftover tick or batch of before
    seen_at: float | None = None
    state = ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            text = log_text(log).splitlines()
            errors = [t for t in text if "[ERROR]" in t or "[CRITICAL]" in t]
            return (
                f"the worker stopped {time.time() - emptied:.1f} s after, status "
                f"{proc.returncode}; last error lines: {errors[-3:]}"
            )
        counts = await kafka.partition_counts(run.broker.bootstrap, internal)  # no auto-create
        wrong = {name: n for name, n in counts.items() if n != run.partitions}
        assert not wrong, (
            f"internal topics back with another partition count than the input's "
            f"{run.partitions}: {wrong}; errors logged: {_error_count(log)}"
        )
        statuses = await run.store.statuses()
        fresh = sorted(p for p, s in statuses.items() if int(s["at"]) > since_ms)
        state = f"internal topics listed {counts}; partitions publishing progress: {fresh}"
        if internal[0] in counts and len(fresh) == run.partitions:
            if seen_at is not None and time.time() - seen_at >= 3:
                return None
            if seen_at is None:
                seen_at = time.time()
                since_ms = seen_at * 1000
        await asyncio.sleep(1)
    raise AssertionError(
        f"{EMPTY_BOUND_S:g} s after the broker came back empty the worker neither stopped nor "
        f"works: {state}; errors logged: {_error_count(log)}"
    )


def _error_count(log: Path) -> Counter[str]:
    """ERROR lines of a log by message, without the varying parts (the top five)."""
    found: Counter[str] = Counter()
    for text in log_text(log).splitlines():
        if "[ERROR]" in text:
            message = text.split("[ERROR]", 1)[1].strip()
            found[message.split(" on partition ")[0].split(":")[0][:80]] += 1
    return Counter(dict(found.most_common(5)))


# --- 5. Poison messages -----------------------------------------------------------------------


@pytest.mark.timeout(240)
async def test_poison_messages_on_a_live_worker(run: FaultRun, broker: ProxiedBroker) -> None:
    """Each poison message once on the clickstream topic among normal traffic: the worker never
    exits, each lands in the dead-letter topic exactly once with a reason, and the report is the
    reference report of the normal traffic."""
    lines = simulated_lines()
    first, second = split(lines, 2)
    topic = run.settings.topic_clickstream
    await _create_big_message_topic(broker.bootstrap, topic)
    poison = poison_messages()
    await run.announce(lines, extra=[(topic, key) for key, _ in poison.values()])
    await run.produce(first)
    with run.workers() as workers, explained(run):
        check = alive(workers)
        await run.wait_accepting()
        producer = AIOKafkaProducer(
            bootstrap_servers=broker.bootstrap, max_request_size=16 * 1024 * 1024, acks="all"
        )
        await producer.start()
        try:
            sent = {}
            for name, (key, value) in poison.items():
                meta = await producer.send_and_wait(topic, value, key=key)
                sent[(meta.partition, meta.offset)] = name
                run.acknowledged(topic, meta.partition, meta.offset)
        finally:
            await producer.stop()
        await run.produce(second)
        rows = await run.finish(timeout_s=120, check=check)
        check()
    letters = await run.dead_letters()
    landed = Counter(
        sent[(d.partition, d.offset)]
        for d in letters
        if d.topic == topic and (d.partition, d.offset) in sent
    )
    reasons = {
        sent[(d.partition, d.offset)]: d.reason
        for d in letters
        if d.topic == topic and (d.partition, d.offset) in sent
    }
    accounting = await run.accounting(lines, {})
    print(accounting.line(f"poison messages {reasons}"))
    assert landed == Counter(dict.fromkeys(poison, 1)), f"dead letters per poison: {landed}"
    assert accounting.lost == 0, accounting.line("lost")
    assert_agrees(rows, lines)


async def _create_big_message_topic(bootstrap: str, topic: str) -> None:
    """The clickstream topic, made before the run makes it, accepting a 10 MB message."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        config = {"max.message.bytes": str(16 * 1024 * 1024)}
        await admin.create_topics([NewTopic(topic, PARTITIONS, 1, topic_configs=config)])
    finally:
        await admin.close()


# --- 6. 100 k random messages -----------------------------------------------------------------

RANDOM_MESSAGES = 100_000


@pytest.mark.timeout(330)
async def test_random_messages_are_all_counted(run: FaultRun, broker: ProxiedBroker) -> None:
    """100 k messages, valid simulated events mixed with hostile ones (random bytes, invalid
    UTF-8, NaN, huge numbers and strings, wrong types, deep nesting, edge times): the worker
    never exits, and every message is counted as a valid event or a dead letter.

    The messages are sent first and their ends recorded, as a replay does: the valid events are
    weeks old, and a live worker would take a caught-up topic's latest time for the partition's
    progress and dead-letter the other topics' backlog as too late (slow, and beside the point).
    """
    valid = list(routable(simulated_lines(minutes=400, rate=8), []))
    messages = hostile_messages(valid, total=RANDOM_MESSAGES, topics=run.settings, seed=3)
    await kafka.ensure_topics(
        broker.bootstrap,
        {name: PARTITIONS for name in (*run.settings.input_topics, run.settings.topic_dlq)},
    )
    started = time.monotonic()
    async with kafka.Producer(broker.bootstrap) as producer:
        for topic, key, value, timestamp_ms in messages:  # value None: a tombstone
            await producer.send(topic, key=key, value=value, timestamp_ms=timestamp_ms)  # type: ignore[arg-type]
    produced_s = time.monotonic() - started
    ends = {key: offset + 1 for key, offset in producer.last_offsets.items()}
    await run.store.set_end_offsets({key: ends.get(key, 0) for key in run.input_partitions})
    with run.workers() as workers, explained(run):
        check = alive(workers)
        url = metrics_url(Path(workers.procs[0][1].name))
        started = time.monotonic()
        deadline = started + 240
        counted = (0.0, 0.0, 0.0)
        while time.monotonic() < deadline:
            check()
            page = await asyncio.to_thread(metrics.scrape, url)
            events = page.total("streamproc_events_total")
            letters = page.total("streamproc_dead_letters_total")
            too_late = page.total("streamproc_dead_letters_total", reason="too_late")
            counted = (events, letters, too_late)
            if events + letters - too_late >= len(messages):
                break
            await asyncio.sleep(1)
        took = time.monotonic() - started
        check()
    events, letters, too_late = counted
    total = int(events + letters - too_late)
    print(
        f"FAULT {len(messages)} random messages: events in {len(messages)} / accounted for "
        f"{total} (valid events {events:.0f} + dead letters {letters - too_late:.0f}; too_late "
        f"{too_late:.0f} counted in both) / lost {len(messages) - total} / produced in "
        f"{produced_s:.1f} s, all counted {took:.1f} s after the worker started"
    )
    assert total == len(messages)


# --- 7. Rebalance -----------------------------------------------------------------------------


class Rebalanced(NamedTuple):
    rows: list[dict[str, Any]]
    accounting: Accounting
    status: int | None  # the leaving worker's exit status
    logs: tuple[str, str]  # the first worker's, the joining worker's


async def join_then_leave(run: FaultRun, *, leaver: int) -> Rebalanced:
    """A second worker joins mid-stream, then worker ``leaver`` (0: the first, 1: the one that
    joined) leaves with SIGTERM mid-stream; the other one finishes the input."""
    lines = simulated_lines()
    first, second, third = split(lines, 3)
    await run.announce(lines)
    await run.produce(first)
    with run.workers(1) as workers, explained(run):
        await run.wait_accepting()
        workers.start(1)
        log = Path(workers.procs[1][1].name)
        await run.produce(second)
        deadline = time.monotonic() + 60
        while "Worker ready" not in log_text(log):
            alive(workers)()
            assert time.monotonic() < deadline, "the second worker never got ready"
            await asyncio.sleep(0.2)
        await asyncio.sleep(2)
        leaving, staying = workers.procs[leaver][0], workers.procs[1 - leaver][0]
        check = alive(workers, except_for=(leaving,))
        producing = asyncio.create_task(run.produce(third))
        status = sigterm(leaving)
        await producing
        left = time.time()
        recovery = await run.recovery(left, timeout_s=90, check=check)
        rows = await run.finish(timeout_s=120, check=check)
        assert staying.poll() is None
        logs = (log_text(Path(workers.procs[0][1].name)), log_text(log))
    accounting = await run.accounting(lines, {"after the leave": recovery})
    assert status == 0, f"the leaving worker exited with {status}"
    assert accounting.lost == 0, accounting.line("lost")
    assert_agrees(rows, lines)
    return Rebalanced(rows, accounting, status, logs)


@pytest.mark.timeout(300)
async def test_rebalance_join_then_leave(run: FaultRun) -> None:
    """A second worker joins mid-stream, then the first leaves (SIGTERM) mid-stream: the final
    report equals the reference. Prints the joining worker's state recovery times."""
    done = await join_then_leave(run, leaver=0)
    assignments = ", ".join(str(r) for r in rebalances(done.logs[1]))
    print(
        done.accounting.line(
            f"rebalance (join, then SIGTERM leave with status {done.status}); the joining "
            f"worker's assignments, revocation to ready: {assignments}"
        )
    )


@pytest.mark.timeout(300)
async def test_rebalance_partitions_come_back_to_a_worker_that_dropped_their_state(
    run: FaultRun,
) -> None:
    """A second worker joins mid-stream and leaves again (SIGTERM) mid-stream: the first one
    dropped the state of the partitions it lost, and reads their whole changelog (with what the
    second wrote) when they come back. The final report equals the reference."""
    done = await join_then_leave(run, leaver=1)
    print(done.accounting.line(f"rebalance (join, then the joiner leaves, {done.status})"))
    assert "state of partitions moved to other workers dropped" in done.logs[0]


# --- 8. SIGTERM, then restart -----------------------------------------------------------------


@pytest.mark.timeout(240)
async def test_restart_after_sigterm_reprocesses_nothing(run: FaultRun) -> None:
    """A worker that has read everything is stopped (SIGTERM) and started again with no new
    input: its committed offsets are the ends, and it processes no event again."""
    lines = simulated_lines()
    await run.announce(lines)
    await run.produce(lines)
    with run.workers(1) as workers, explained(run):
        first, _ = workers.procs[0]
        rows = await run.finish(timeout_s=120, check=alive(workers))
        status = sigterm(first)
        async with kafka.OffsetReader(run.broker.bootstrap, group=run.group) as reader:
            committed = await reader.committed(run.input_partitions)
        behind = {
            f"{t}[{p}]": (committed[(t, p)], end)
            for (t, p), end in run.ends.items()
            if end and committed[(t, p)] != end
        }
        restarted = workers.start(1)
        check = alive(workers, except_for=(first,))
        url = metrics_url(Path(workers.procs[1][1].name))
        back = time.time()
        recovery = await run.recovery(back + 3, timeout_s=90, check=check)
        await asyncio.sleep(3)  # time to read whatever it was placed before
        page = await asyncio.to_thread(metrics.scrape, url)
        check()
        assert restarted.poll() is None
    again = {
        name: page.total(name)
        for name in (
            "streamproc_events_total",
            "streamproc_dead_letters_total",
            "streamproc_duplicates_total",
        )
    }
    accounting = await run.accounting(lines, {"restart": recovery})
    print(
        accounting.line(
            f"SIGTERM (status {status}) and restart: committed offsets behind the ends "
            f"{behind or 'none'}; counted again after the restart {again}"
        )
    )
    assert status == 0
    assert not behind, f"committed offsets (committed, end) behind the ends: {behind}"
    assert set(again.values()) == {0.0}, f"re-processed after the restart: {again}"
    assert accounting.lost == 0, accounting.line("lost")
    assert_agrees(rows, lines)
