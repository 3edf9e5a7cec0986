"""The engine run in-process over an events file: partitions, batches per topic, store caps.

It behaves like the worker (same engine, same batching per topic and partition, Kafka's default
partitioner) without Kafka, Redis or Faust. Tests compare it with the reference; benchmarks use it
to measure the engine alone.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from aiokafka.partitioner import DefaultPartitioner

from streamproc.errors import InvalidEvent
from streamproc.eventfile import FileRecord, read_records
from streamproc.events.parse import EventDecoder, minor_unit_exponent
from streamproc.kpi import counters as c
from streamproc.kpi.aligned import VisitorKey, group_windows, rows, ticket_rows
from streamproc.kpi.batch import FAMILY_INDEX, EngineSettings, Item, Outcome, Progress
from streamproc.kpi.contrib import NEVER
from streamproc.kpi.engine import PartitionEngine
from streamproc.kpi.report import Row


class MemoryState(dict[str, bytes]):
    """The engine's State protocol over a dict."""

    def scan(self) -> Iterable[str]:
        return list(self.keys())

    def apply(self, writes: Iterable[tuple[str, bytes | None]]) -> None:
        for key, value in writes:
            if value is None:
                self.pop(key, None)
            else:
                self[key] = value


class StoreLabels:
    """The first ``cap`` stores keep their name; later ones become ``other``."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.known: set[str] = set()

    def label(self, store: str) -> str:
        if store in self.known:
            return store
        if len(self.known) < self.cap and store not in ("all", "other"):
            self.known.add(store)
            return store
        return "other"


@dataclass
class OfflineResult:
    cells: dict[c.CellKey, c.Counters]
    visitors: dict[tuple[int, str, str], set[str]]
    open_tickets: dict[tuple[str, str, str], int]
    too_late: int = 0
    late: int = 0  # accepted events that amended an already closed minute
    duplicates: int = 0
    invalid: int = 0
    published: dict[tuple[int, int, str], c.Counters] = field(default_factory=dict)
    latest_ms: int = 0  # the highest event time read

    def report(self, sizes_ms: Iterable[int], money: int = 100) -> list[Row]:
        def count(key: VisitorKey) -> int:
            minutes, store, dim = key
            seen: set[str] = set()
            for minute in minutes:
                seen |= self.visitors.get((minute, store, dim or ""), set())
            return len(seen)

        windows = group_windows(self.cells, sizes_ms)
        found = rows(windows, count, watermark=NEVER, money=money)
        return found + ticket_rows(self.open_tickets, at_ms=self.latest_ms, watermark=NEVER)


def partition_of(key: str | None, partitions: int, counter: Iterator[int]) -> int:
    if key is None:
        return next(counter) % partitions
    return int(DefaultPartitioner()(key.encode(), list(range(partitions)), list(range(partitions))))


Crash = Callable[[int], int | None]  # batch number -> writes to apply before "crashing", or None


class OfflinePipeline:
    """Feed events-file lines through per-partition engines, ``batch`` events per topic at once.

    Topics are read aligned, as the worker reads them: a chunk stops once its event times have
    moved ``align_ms`` past where it started.

    ``crash`` simulates a worker killed mid-batch: only the first N writes of that batch land,
    memory is lost, engines are rebuilt from the store, and delivery resumes ``rewind`` events
    before the crashed batch (at-least-once re-delivery after the last commit).
    """

    def __init__(
        self,
        settings: EngineSettings,
        *,
        decoder: EventDecoder,
        partitions: int = 4,
        batch: int = 200,
        max_stores: int = 50,
        crash: Crash | None = None,
        rewind: int = 0,
        align_ms: int = 300_000,
    ) -> None:
        self.settings = settings
        self.decoder = decoder
        self.partitions = partitions
        self.batch = batch
        self.labels = StoreLabels(max_stores)
        self.money = 10 ** minor_unit_exponent(decoder.reporting_currency)
        self.crash = crash
        self.rewind = rewind
        self.align_ms = align_ms

    def run(self, lines: Iterable[bytes]) -> OfflineResult:
        """Each round takes the next ``batch`` records of every partition in arrival order and
        applies them topic by topic, as a worker whose topics are read at an aligned pace."""
        logs: dict[int, list[tuple[int, FileRecord]]] = defaultdict(list)
        offsets: dict[tuple[int, int], int] = defaultdict(int)
        rr = iter(range(10**12))
        for record in read_records(lines):
            if isinstance(record, FileRecord):
                p = partition_of(record.key, self.partitions, rr)
                topic = FAMILY_INDEX[record.family]
                logs[p].append((offsets[(p, topic)], record))
                offsets[(p, topic)] += 1
        store = MemoryState()
        engines = {p: PartitionEngine(p, self.settings, store) for p in range(self.partitions)}
        result = OfflineResult({}, defaultdict(set), {})
        position = dict.fromkeys(logs, 0)
        number = 0
        while any(position[p] < len(log) for p, log in logs.items()):
            for p, log in sorted(logs.items()):
                start = position[p]
                chunk = _aligned_chunk(log, start, self.batch, self.align_ms)
                position[p] = start + len(chunk)
                # Every topic is read to the same arrival position (aligned reading); within the
                # chunk, the topics not applied yet have a backlog that holds the watermark back.
                left = frozenset(FAMILY_INDEX[r.family] for _, r in log[position[p] :])
                parts = {
                    t: [(o, r) for o, r in chunk if FAMILY_INDEX[r.family] == t] for t in range(4)
                }
                for topic, part in parts.items():
                    if not part:
                        continue
                    waiting = frozenset(t for t in range(topic, 4) if parts[t])  # this one too
                    progress = Progress(backlog=waiting, ended=frozenset(range(4)) - left - waiting)
                    outcome = self._batch(engines[p], topic, part, progress, store, result)
                    number += 1
                    cut = self.crash(number) if self.crash else None
                    if cut is None:
                        self._publish(outcome, store, result)
                        continue
                    # The worker publishes (Redis) before it writes its state, then dies mid-write.
                    self._publish(
                        Outcome(outcome.partition, [], outcome.cells, outcome.presence),
                        store,
                        result,
                    )
                    store.apply(outcome.writes[:cut])
                    engines = {q: PartitionEngine(q, self.settings, store) for q in engines}
                    position[p] = max(0, start - self.rewind)  # re-deliver since the last commit
                    break
        for engine in engines.values():
            ended = Progress(ended=frozenset(range(4)))
            self._publish(engine.apply([], ended, store), store, result)
        result.cells = {}
        for (_, minute, cell_store), counters in result.published.items():
            c.add_cells(result.cells, {(minute, cell_store): counters})
        for engine in engines.values():
            result.latest_ms = max(result.latest_ms, *engine.meta.max_ts)
            for group, count in engine.projection.open_tickets.items():
                result.open_tickets[group] = result.open_tickets.get(group, 0) + count
        return result

    def _batch(
        self,
        engine: PartitionEngine,
        topic: int,
        chunk: list[tuple[int, FileRecord]],
        progress: Progress,
        store: MemoryState,
        result: OfflineResult,
    ) -> Outcome:
        items = []
        for offset, record in chunk:
            produced = record.timestamp_ms if record.timestamp_ms is not None else NEVER
            try:
                event = self.decoder.decode(record.value, record.family, now_ms=produced)
            except InvalidEvent:
                result.invalid += 1
                continue
            items.append(Item(event, topic, offset, self.labels.label(event.store_id)))
        verdicts = engine.read(items, progress)
        result.too_late += len(verdicts.too_late)
        result.late += verdicts.late
        outcome = engine.apply(verdicts.on_time, progress, store)
        result.duplicates += len(outcome.duplicates)
        return outcome

    @staticmethod
    def _publish(outcome: Outcome, store: MemoryState, result: OfflineResult) -> None:
        for minute, cell_store, dim, visitor in outcome.presence:
            result.visitors[(minute, cell_store, dim)].add(visitor)
            result.visitors[(minute, "all", dim)].add(visitor)
        for (minute, cell_store), counters in outcome.cells.items():
            result.published[(outcome.partition, minute, cell_store)] = counters
        store.apply(outcome.writes)


def _aligned_chunk(
    log: list[tuple[int, FileRecord]], start: int, limit: int, align_ms: int
) -> list[tuple[int, FileRecord]]:
    """Up to ``limit`` records in arrival order, spanning at most ``align_ms`` of progress."""
    chunk = []
    first = None
    for entry in log[start : start + limit]:
        t = entry[1].timestamp_ms
        if t is not None:
            if first is None:
                first = t
            elif t > first + align_ms and chunk:
                break
        chunk.append(entry)
    return chunk
