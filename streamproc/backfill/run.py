"""Running a backfill: make (or resume) its plan, run workers until every partition is read to
the end of its range, then read what they published.

Start and end: the plan's start offsets are committed for the backfill's consumer group before
its workers first start, so Faust begins there; the end offsets go to Redis (``end``), where the
workers' pipeline holds each partition's watermark until all of its topics are read to their
ends, drops what lies beyond, and then decides every window, session and cart. While it runs,
the committed offsets show how far each partition got. A worker that starts at or past a
partition's end (an empty range, a topic not read, a resume) counts its committed start as read
(``Pipeline(read_from=)``), so that partition is read to its end at once.

Resume: the namespace keeps everything a restart needs: the plan and the partials in Redis, the
committed offsets of the group and the state changelog in Kafka. The workers restart where the
group committed, and their state makes re-read messages change nothing.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import logging
import signal
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from streamproc import broker, replay, times
from streamproc.backfill.offsets import Stamps, audit_stamps, find_ranges
from streamproc.backfill.plan import (
    Plan,
    TopicPart,
    changelog_topic,
    consumer_group,
    dead_letter_topic,
    default_name,
    worker_env,
)
from streamproc.config import Settings
from streamproc.connection import KafkaConnection
from streamproc.errors import BackfillError
from streamproc.kpi.contrib import NEVER
from streamproc.kpi.report import Row
from streamproc.kpi.selection import ReportQuery
from streamproc.reporting import aligned_report
from streamproc.store import KpiStore

logger = logging.getLogger(__name__)

POLL_SECONDS = 1.0
# Key of the tombstones that end the workers' state changelog before a resume: a table key (JSON
# string, as the worker's Faust table serializes its keys) that no partition engine reads.
SEAL_KEY = json.dumps("backfill-resume").encode()


@dataclass(frozen=True)
class Request:
    """What the user asked for. ``read``: the input topics to read (None: all four)."""

    since: datetime | None
    until: datetime | None
    name: str | None = None
    read: tuple[str, ...] | None = None
    resume: bool = False
    use_broker: bool = True


@dataclass(frozen=True)
class PartitionProgress:
    partition: int
    done: int  # records of the range read and committed
    total: int  # records in the range
    event_time_ms: int | None  # highest event time read
    finished: bool  # read to the end: every value of the partition is final


@dataclass(frozen=True)
class Summary:
    """What a finished backfill did. Counts cover its whole range, across resumes."""

    events: int  # records in the ranges
    dead_letters: dict[str, int] = field(default_factory=dict)  # reason -> messages
    duplicates: int = 0
    accepted: int = 0  # distinct event ids counted
    stamps: dict[TopicPart, Stamps] = field(default_factory=dict)  # partitions that look wrong

    @property
    def late(self) -> int:
        return self.dead_letters.get("too_late", 0)

    @property
    def dead_lettered(self) -> int:
        return sum(self.dead_letters.values())


class Backfill:
    """One backfill against one broker and Redis."""

    def __init__(self, settings: Settings, *, kafka: KafkaConnection | str, redis_url: str) -> None:
        self.settings = settings
        self.kafka = KafkaConnection.of(kafka)
        self.redis_url = redis_url

    def store(self, name: str) -> KpiStore:
        named = self.settings.model_copy(update={"namespace": name})
        return KpiStore.for_settings(named, batch_url(self.redis_url))

    # --- plan -------------------------------------------------------------------------------

    async def plan(self, request: Request) -> Plan:
        """The plan to run: a new one (offsets looked up, start offsets committed) or, with
        ``resume``, the stored one."""
        name = self._name(request)
        store = self.store(name)
        try:
            raw = await store.backfill_plan()
            if request.resume:
                return await self._resume(name, raw, request, store)
            if raw is not None:
                state = "complete" if Plan.from_json(raw).finished_ms else "unfinished"
                raise BackfillError(
                    f"a backfill named {name} already exists ({state}): continue it with --resume "
                    "(which also rewrites the outputs of a complete one), or choose another --name"
                )
            await self._check_unused(name, store)
            plan = await self._new_plan(name, request)
            await store.set_backfill_plan(plan.to_json())
            async with broker.OffsetReader(self.kafka, group=consumer_group(name)) as reader:
                await reader.commit(plan.starts)
            await store.set_end_offsets(dict(plan.ends))
            return plan
        finally:
            await store.aclose()

    async def _resume(
        self, name: str, raw: bytes | None, request: Request, store: KpiStore
    ) -> Plan:
        if raw is None:
            raise BackfillError(
                f"no backfill named {name} to resume (times like 7d move with the clock: "
                "pass the --name the interrupted run printed)"
            )
        plan = Plan.from_json(raw)
        _check_same(plan, request)
        await self._restore_offsets(plan, store)
        # Faust's table recovery reads the changelog up to ListOffsets LATEST; on a broker that
        # answers it with the last batch's base offset + 1 (Tansu) the rest of that batch, the
        # state written last before the interruption, would be lost.
        await broker.seal(self.kafka, changelog_topic(name), key=SEAL_KEY)
        return plan

    def _name(self, request: Request) -> str:
        if request.name:
            name = request.name
        elif request.since is None or request.until is None:
            raise BackfillError("--since and --until are required (or --resume with --name)")
        else:
            read = request.read or self.settings.input_topics
            since, until = times.epoch_ms(request.since), times.epoch_ms(request.until)
            name = default_name(since, until, self.settings.input_topics, read)
        if name == self.settings.namespace:
            raise BackfillError(f"{name} is the live namespace: a backfill needs its own --name")
        return name

    async def _check_unused(self, name: str, store: KpiStore) -> None:
        """Refuse a namespace that holds data of something else (or of a lost plan)."""
        if await store.statuses() or await store.end_offsets() or await store.minutes():
            raise BackfillError(
                f"Redis namespace {name} holds data but no backfill plan (a live namespace, or "
                "a backfill whose plan was deleted): choose another --name"
            )
        group = consumer_group(name)
        leftovers = [changelog_topic(name), f"{group}-ticks", dead_letter_topic(name)]
        found = await broker.partition_counts(self.kafka, leftovers)
        if found:
            raise BackfillError(
                f"Kafka still holds topics of an earlier run named {name} ({', '.join(found)}); "
                "delete them or choose another --name"
            )

    async def _new_plan(self, name: str, request: Request) -> Plan:
        assert request.since is not None and request.until is not None
        since_ms, until_ms = times.epoch_ms(request.since), times.epoch_ms(request.until)
        if since_ms >= until_ms:
            raise BackfillError(
                f"--since ({request.since}) must be before --until ({request.until})"
            )
        topics = self.settings.input_topics
        read = tuple(t for t in topics if request.read is None or t in request.read)
        counts = await broker.partition_counts(self.kafka, topics)
        missing = [t for t in topics if t not in counts]
        if missing:
            raise BackfillError(f"input topics not found on {self.kafka}: {', '.join(missing)}")
        if len(set(counts.values())) != 1:
            raise BackfillError(f"input topics must have the same partition count: {counts}")
        partitions = counts[topics[0]]
        async with broker.OffsetReader(self.kafka) as reader:
            reading = [(t, p) for t in read for p in range(partitions)]
            ranges = await find_ranges(
                reader, reading, since_ms=since_ms, until_ms=until_ms, use_broker=request.use_broker
            )
            skipped = [(t, p) for t in topics if t not in read for p in range(partitions)]
            ends = await reader.highwaters(skipped) if skipped else {}
        starts = {**ranges.starts, **ends}  # a topic not read: an empty range at its end
        return Plan(
            name=name,
            since_ms=since_ms,
            until_ms=until_ms,
            topics=topics,
            read=read,
            partitions=partitions,
            starts=starts,
            ends={**ranges.ends, **ends},
            lookup={k: v for k, v in ranges.methods.items() if v},
            created_ms=int(time.time() * 1000),
        )

    async def _restore_offsets(self, plan: Plan, store: KpiStore) -> None:
        """Before workers restart: start offsets committed where none is (a run killed before its
        first commit), and the ends as far as the committed offsets show."""
        group = consumer_group(plan.name)
        async with broker.OffsetReader(self.kafka, group=group) as reader:
            committed = await reader.committed(plan.starts)
            never = {tp: plan.starts[tp] for tp, offset in committed.items() if offset is None}
            if never:
                await reader.commit(never)
                committed.update(never)
        await store.set_end_offsets(dict(plan.ends))

    # --- run --------------------------------------------------------------------------------

    async def run(
        self,
        plan: Plan,
        *,
        workers: int,
        log_dir: Path,
        timeout_s: float,
        on_progress: Callable[[list[PartitionProgress]], None],
    ) -> Plan:
        """Run worker processes until every partition is read to its end; the finished plan."""
        store = self.store(plan.name)
        try:
            if not _all_finished(await store.statuses(), plan.partitions):
                env = worker_env(
                    self.settings, plan.name, bootstrap=self.kafka.servers, redis_url=self.redis_url
                )
                die = _die_with_parent if sys.platform == "linux" else None
                with replay.Workers(env, workers, log_dir, preexec_fn=die) as procs:
                    await self._watch(plan, store, on_progress, procs.check, timeout_s)
            on_progress(
                _progress(plan, {tp: plan.ends[tp] for tp in plan.ends}, await store.statuses())
            )
            finished = plan if plan.finished_ms else plan.finished(int(time.time() * 1000))
            await store.set_backfill_plan(finished.to_json())
            return finished
        finally:
            await store.aclose()

    async def _watch(
        self,
        plan: Plan,
        store: KpiStore,
        on_progress: Callable[[list[PartitionProgress]], None],
        check: Callable[[], None],
        timeout_s: float,
    ) -> None:
        deadline = time.monotonic() + timeout_s
        async with broker.OffsetReader(self.kafka, group=consumer_group(plan.name)) as reader:
            while True:
                committed = await reader.committed(plan.starts)
                statuses = await store.statuses()
                on_progress(_progress(plan, committed, statuses))
                if _all_finished(statuses, plan.partitions):
                    return
                check()
                if time.monotonic() > deadline:
                    raise BackfillError(
                        f"not finished after {timeout_s:g} s; resume it with --resume"
                    )
                await asyncio.sleep(POLL_SECONDS)

    # --- results ----------------------------------------------------------------------------

    async def report(
        self, plan: Plan, *, sizes_ms: Iterable[int], stores: Iterable[str] = ()
    ) -> list[Row]:
        """The KPI report of every aligned window (``stores``: only these ``store_id`` s)."""
        store = self.store(plan.name)
        try:
            return await aligned_report(
                store,
                sizes_ms=sizes_ms,
                reporting_currency=self.settings.reporting_currency,
                largest_ms=max(self.settings.window_seconds) * 1000,
                query=ReportQuery(stores=frozenset(stores) or None),
            )
        finally:
            await store.aclose()

    async def summary(self, plan: Plan) -> Summary:
        """Events, dead letters by reason and duplicates of the whole range, from what lasts
        across restarts: the dead-letter topic (each source message once) and the partitions'
        statuses (their state's count of accepted events)."""
        async with broker.OffsetReader(self.kafka) as reader:
            letters = await reader.dead_letters(dead_letter_topic(plan.name))
            stamps = await audit_stamps(
                reader,
                {tp: (start, plan.ends[tp]) for tp, start in plan.starts.items()},
                since_ms=plan.since_ms,
                until_ms=plan.until_ms,
                lateness_ms=self.settings.max_lateness_seconds * 1000,
            )
        reasons: dict[str, int] = {}
        seen: set[tuple[str, int, int]] = set()
        for letter in letters:
            source = (letter.topic, letter.partition, letter.offset)
            if source not in seen:
                seen.add(source)
                reasons[letter.reason] = reasons.get(letter.reason, 0) + 1
        store = self.store(plan.name)
        try:
            accepted, _ = await store.judged()
        finally:
            await store.aclose()
        duplicates = plan.records - len(seen) - accepted
        return Summary(plan.records, reasons, duplicates, accepted, stamps)


def batch_url(url: str, *, timeout_s: int = 600) -> str:
    """The Redis URL with a long socket timeout (unless it sets one). A report over days of
    windows sends tens of thousands of visitor counts in one pipeline; Redis takes longer than
    redis-py's default 5 s to read it all while it runs them."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query)
    if any(key == "socket_timeout" for key, _ in query):
        return url
    return urlunsplit(parts._replace(query=urlencode([*query, ("socket_timeout", timeout_s)])))


def _check_same(plan: Plan, request: Request) -> None:
    """A resume must not silently change what the stored plan reads."""
    problems = []
    if request.since is not None and times.epoch_ms(request.since) != plan.since_ms:
        problems.append("--since")
    if request.until is not None and times.epoch_ms(request.until) != plan.until_ms:
        problems.append("--until")
    if request.read is not None and set(request.read) != set(plan.read):
        problems.append("--topic")
    if problems:
        raise BackfillError(
            f"backfill {plan.name} was started with other {', '.join(problems)}; resume it with "
            "the same options, or only --resume --name"
        )


def _all_finished(statuses: Mapping[int, Mapping[str, Any]], partitions: int) -> bool:
    return all(int(statuses.get(p, {}).get("watermark", -1)) >= NEVER for p in range(partitions))


def _progress(
    plan: Plan,
    committed: Mapping[TopicPart, int | None],
    statuses: Mapping[int, Mapping[str, Any]],
) -> list[PartitionProgress]:
    found = []
    for partition in range(plan.partitions):
        status = statuses.get(partition, {})
        finished = int(status.get("watermark", -1)) >= NEVER
        done = 0
        for tp, start in plan.starts.items():
            if tp[1] == partition:
                position = committed.get(tp)
                position = start if position is None else position
                done += max(0, min(position, plan.ends[tp]) - start)
        total = plan.partition_records(partition)
        latest = max(status.get("max_ts") or [-1])
        found.append(
            PartitionProgress(
                partition,
                total if finished else done,
                total,
                int(latest) if latest > 0 else None,
                finished,
            )
        )
    return found


def _die_with_parent() -> None:
    """In a worker before exec: SIGKILL it when the backfill process dies (Linux), so a killed
    backfill never leaves workers running on its namespace."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
