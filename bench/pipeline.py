"""The worker's pipeline without Faust and Kafka: decode, judge, absorb (duplicates dropped),
publish to a real Redis, store; CPU per event, in-process.

    python bench/pipeline.py [--events 200000] [--partitions 8] [--repeat 3] [--profile]
                             [--redis-url redis://127.0.0.1:6379/0]

Simulator traffic (``harness.write_traffic``: 5 stores, 1 % duplicates, 2 % out of order, 0.5 %
malformed) becomes the messages of each topic partition, cut into the runs a worker processes
(``worker/align.py``) and handed to ``Pipeline.on_slices`` one run after the other. The state is
a dict (no changelog is sent); Redis is real, in a namespace of its own that is dropped after
each repeat. What this leaves out of a worker is the consumer (fetching, Faust) and the
changelog producer: ``bench/throughput.py`` measures those. Fewer moving parts make it steadier
than the whole worker: for comparing two versions of the code, run it alternately against each
(``PYTHONPATH``), and compare the CPU figures, best of ``--repeat``.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import logging
import pstats
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable
from typing import NamedTuple

import harness

from streamproc.cli.pipeline import tune_gc
from streamproc.config import Settings
from streamproc.deadletter import DeadLetter
from streamproc.eventfile import FileRecord, read_records
from streamproc.events.parse import EventDecoder
from streamproc.ingest import BatchDecoder, Message
from streamproc.offline import MemoryState, partition_of
from streamproc.store import KpiStore
from streamproc.worker.align import Aligner
from streamproc.worker.pipeline import Pipeline

Run = list[tuple[str, list[Message]]]  # a run's slices: (topic, messages)


class _TP(NamedTuple):
    topic: str
    partition: int


class _Fetched(NamedTuple):
    tp: _TP
    records: list[Message]
    generation: int = 1


class DictTable(MemoryState):
    """The pipeline's state table over a dict: writes stored, no changelog."""

    async def write(self, writes: list[tuple[str, bytes | None]], partition: int) -> None:
        self.apply(writes)


def runs(settings: Settings, events: int, partitions: int) -> tuple[list[Run], int]:
    """The traffic's messages, cut into the runs a worker processes; and how many there are."""
    out = io.BytesIO()
    harness.write_traffic(out, events)
    logs: dict[_TP, list[Message]] = defaultdict(list)
    counter = iter(range(10**12))
    total = 0
    for record in read_records(out.getvalue().splitlines()):
        if not isinstance(record, FileRecord):
            continue
        partition = partition_of(record.key, partitions, counter)
        tp = _TP(settings.topics_by_family[record.family], partition)
        offset, produced = len(logs[tp]), record.timestamp_ms or 0
        key = record.key.encode() if record.key is not None else None
        logs[tp].append(Message(tp.topic, tp.partition, offset, produced, key, record.value))
        total += 1
    aligner = Aligner(sorted(settings.topics_by_family.values()), lambda topic, partition: False)
    for tp, records in logs.items():
        aligner.add(_Fetched(tp, records))  # type: ignore[arg-type]
    found: list[Run] = []
    while run := aligner.next_run(settings.run_max_events):
        found.append([(piece.tp.topic, piece.records) for piece in run])
    return found, total


def pipeline(settings: Settings, store: KpiStore, partitions: int) -> Pipeline:
    async def dead_letter(message: Message, letter: DeadLetter) -> None:
        return None

    decoder = EventDecoder(fx_rates=harness.FX_RATES)
    return Pipeline(
        settings,
        store=store,
        table=DictTable(),
        decoders={t: BatchDecoder(decoder, f) for f, t in settings.topics_by_family.items()},
        dead_letter=dead_letter,
        highwater=lambda topic, partition: None,
        read_from=lambda topic, partition: None,
        owned=lambda: set(range(partitions)),
        lease=Held(),
        clock=lambda: 1_893_456_000.0,  # 2030: every event of the traffic is in the past
    )


class Held:
    """A group membership that never lapses: one process, no group (``worker/membership.py``
    costs a worker two attribute reads and a clock read per confirm)."""

    def generation(self) -> int:
        return 1

    async def confirm(self, what: str, generation: int) -> None:
        return None


async def once(work: Iterable[Run], redis_url: str, partitions: int) -> tuple[float, float]:
    """One pass over the runs in a fresh namespace: (CPU seconds, wall seconds)."""
    settings = Settings(namespace=f"bench-pipeline-{uuid.uuid4().hex[:8]}")
    store = KpiStore.for_settings(settings, redis_url)
    try:
        processing = pipeline(settings, store, partitions)
        cpu, wall = time.process_time(), time.perf_counter()
        for run in work:
            await processing.on_slices(run)
        return time.process_time() - cpu, time.perf_counter() - wall
    finally:
        await store.drop()
        await store.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--profile", action="store_true", help="cProfile one pass, print the top")
    args = parser.parse_args()
    settings = Settings()
    tune_gc(settings.gc_gen0_threshold)
    logging.getLogger("streamproc").setLevel(logging.ERROR)  # the traffic's first dead letters
    work, total = runs(settings, args.events, args.partitions)
    print(f"{total:,} messages in {len(work):,} runs, {args.partitions} partitions")
    if args.profile:
        profiler = cProfile.Profile()
        profiler.runcall(asyncio.run, once(work, args.redis_url, args.partitions))
        pstats.Stats(profiler).sort_stats("tottime").print_stats(30)
        return
    passes = [asyncio.run(once(work, args.redis_url, args.partitions)) for _ in range(args.repeat)]
    cpu, wall = min(p[0] for p in passes), min(p[1] for p in passes)
    print(
        f"pipeline: {total / wall:,.0f} messages/s, {cpu / total * 1e6:.2f} µs of CPU a message "
        f"(best of {args.repeat})"
    )


if __name__ == "__main__":
    main()
