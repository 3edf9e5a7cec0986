"""The partition engine alone: events/s of ``read`` + ``apply`` (+ the state writes), in-process.

    python bench/engine.py [--events 200000] [--partitions 8] [--repeat 3] [--profile]
                           [--traffic {bench,live}] [--run-max N]

Simulator traffic (as ``bench/throughput.py`` makes it: 5 stores, 1 % duplicates, 2 % out of
order, 0.5 % malformed; with ``--traffic live``, the live-shaped traffic of ``--freshness``, where
nearly every event touches another session than the one before it) is decoded and cut up first
into the runs a worker processes (per partition, slices of a minute of event time of one topic,
judged one by one and absorbed together: ``worker/align.py``; a slice longer than ``--run-max``
events comes in runs of that many, as fetches would bring it). Only the engine's work is timed:
judging, dropping duplicates, absorbing, re-evaluating and evicting, and storing each plan's
writes in a dict; the end of the input (every record closed and evicted) is reported apart too.
The garbage collector is set as in a worker (``STREAMPROC_GC_GEN0_THRESHOLD``'s default).
``--profile`` prints the functions taking the most time under cProfile (slower; for finding
where time goes, not for the figure). The machine is shared and noisy: compare ratios in one
run, best of ``--repeat``.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import time
from collections import defaultdict
from typing import NamedTuple

import harness

from streamproc.cli.pipeline import tune_gc
from streamproc.config import Settings
from streamproc.errors import InvalidEvent
from streamproc.eventfile import FileRecord, read_records
from streamproc.events.models import Family
from streamproc.events.parse import EventDecoder
from streamproc.kpi.batch import FAMILY_INDEX, EngineSettings, Item, Progress
from streamproc.kpi.engine import PartitionEngine
from streamproc.offline import MemoryState, partition_of
from streamproc.worker.align import Aligner

Slice = tuple[int, list[Item], Progress]  # topic, items, progress
Run = tuple[int, list[Slice]]  # partition, its slices


def lines(events: int, traffic: str) -> list[bytes]:
    out = io.BytesIO()
    if traffic == "live":
        harness.write_live_traffic(out, events, harness.LIVE_RATE)
    else:
        harness.write_traffic(out, events)
    return out.getvalue().splitlines()


class _Record(NamedTuple):
    offset: int
    timestamp_ms: int
    item: Item


class _TP(NamedTuple):
    topic: str
    partition: int


class _Fetched(NamedTuple):
    tp: _TP
    records: list[_Record]
    generation: int = 1


def runs(raw: list[bytes], partitions: int, run_max: int) -> tuple[list[Run], int]:
    """Decoded events cut into the runs a worker processes (``worker/align.py``); and how many
    events they hold."""
    decoder = EventDecoder(fx_rates=harness.FX_RATES)
    logs: dict[_TP, list[_Record]] = defaultdict(list)
    counter = iter(range(10**12))
    for record in read_records(raw):
        if not isinstance(record, FileRecord):
            continue
        p = partition_of(record.key, partitions, counter)
        tp = _TP(record.family.value, p)
        offset = len(logs[tp])
        produced = record.timestamp_ms or 0
        try:
            event = decoder.decode(record.value, record.family, now_ms=produced + 86_400_000)
        except InvalidEvent:
            continue
        item = Item(event, FAMILY_INDEX[record.family], offset, event.store_id)
        logs[tp].append(_Record(offset, produced, item))
    topics = sorted({tp.topic for tp in logs})
    aligner = Aligner(topics, lambda topic, partition: False)
    for tp, records in logs.items():
        aligner.add(_Fetched(tp, records))
    out: list[Run] = []
    total = 0
    while run := aligner.next_run(run_max):
        p = run[0].tp.partition
        slices: list[Slice] = []
        for piece in run:
            items = [r.item for r in piece.records]
            topic = items[0].topic
            pending = [tp for tp in aligner.pending if tp.partition == p]
            waiting = {FAMILY_INDEX[Family(tp.topic)] for tp in pending}
            progress = Progress(backlog=frozenset(waiting | {topic}))
            total += len(items)
            if len(items) <= run_max:
                slices.append((topic, items, progress))
                continue
            # A slice longer than a run (a minute of one topic) comes in fetches: runs of its own,
            # after the slices before it.
            if slices:
                out.append((p, slices))
                slices = []
            for at in range(0, len(items), run_max):
                out.append((p, [(topic, items[at : at + run_max], progress)]))
        if slices:
            out.append((p, slices))
    return out, total


def run(work: list[Run], partitions: int) -> tuple[float, float]:
    """Seconds the runs took, and then the end of the input (every record closed, evicted)."""
    store = MemoryState()
    settings = EngineSettings()
    engines = {p: PartitionEngine(p, settings, store) for p in range(partitions)}
    started = time.perf_counter()
    for p, slices in work:
        engine = engines[p]
        on_time = []
        for _, items, progress in slices:
            on_time += engine.read(items, progress).on_time
        store.apply(engine.apply(on_time, progress, store).writes)
    ran = time.perf_counter()
    for engine in engines.values():
        store.apply(engine.apply([], Progress(ended=frozenset(range(4))), store).writes)
    return ran - started, time.perf_counter() - ran


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="cProfile one run, print the top")
    parser.add_argument("--traffic", choices=["bench", "live"], default="bench")
    parser.add_argument(
        "--run-max",
        type=int,
        default=Settings.model_fields["run_max_events"].default,
        help="events in a run at most (a live worker's runs are what one fetch brings: fewer)",
    )
    args = parser.parse_args()
    tune_gc(Settings.model_fields["gc_gen0_threshold"].default)

    work, total = runs(lines(args.events, args.traffic), args.partitions, args.run_max)
    sizes = sorted(sum(len(items) for _, items, _ in slices) for _, slices in work)
    print(
        f"{total:,} valid events in {len(work):,} runs "
        f"(median {sizes[len(sizes) // 2]} events), {args.partitions} partitions"
    )
    if args.profile:
        profiler = cProfile.Profile()
        profiler.runcall(run, work, args.partitions)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
        return
    best, best_runs, best_end = float("inf"), float("inf"), float("inf")
    for _ in range(args.repeat):
        runs_s, end_s = run(work, args.partitions)
        best = min(best, runs_s + end_s)
        best_runs, best_end = min(best_runs, runs_s), min(best_end, end_s)
    print(
        f"engine: {total / best:,.0f} events/s, {total / best_runs:,.0f} without the end of the "
        f"input (that took {best_end:.2f} s; best of {args.repeat} each)"
    )


if __name__ == "__main__":
    main()
