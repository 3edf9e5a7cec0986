"""What a run of input slices is cut into on its way through the pipeline, and what each part
did: counts for the worker's metrics, and dead letters to send."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from streamproc.deadletter import DeadLetter
from streamproc.errors import StreamprocError
from streamproc.ingest import Decoded, DecodedBatch, Message


@dataclass
class BatchCounts:
    """What one batch did, for the worker's metrics."""

    topic: str
    valid: dict[str, int] = field(default_factory=dict)  # event_type -> count
    dead_letters: dict[str, int] = field(default_factory=dict)  # reason -> count
    duplicates: int = 0
    late: int = 0  # accepted events that amended an already closed window
    evicted: int = 0

    def dead_letter(self, reason: str, n: int = 1) -> None:
        self.dead_letters[reason] = self.dead_letters.get(reason, 0) + n

    def add(self, other: BatchCounts) -> None:
        """Add what one partition's part of the slice did."""
        for reason, n in other.dead_letters.items():
            self.dead_letter(reason, n)
        self.duplicates += other.duplicates
        self.late += other.late
        self.evicted += other.evicted


Letters = list[tuple[int, Message, DeadLetter]]  # (slice index, message, letter)


@dataclass(frozen=True)
class Part:
    """Where one partition's part of a run goes."""

    partition: int
    labels: dict[str, str]
    wall_ms: int
    generation: int  # the consumer-group generation the run began in


@dataclass(frozen=True)
class Piece:
    """One slice's valid events of one partition."""

    index: int  # of the slice in its run
    topic: str
    events: list[Decoded]


@dataclass
class Done:
    """What one partition's part of a run did (by slice), merged into the run's once it
    succeeded."""

    counts: dict[int, BatchCounts] = field(default_factory=dict)
    again: int = 0  # events skipped: judged before a restart or rebalance

    def of(self, piece: Piece) -> BatchCounts:
        return self.counts.setdefault(piece.index, BatchCounts(piece.topic))

    def add(self, other: Done) -> None:
        for index, counts in other.counts.items():
            self.counts.setdefault(index, BatchCounts(counts.topic)).add(counts)
        self.again += other.again


def event_error(exc: BaseException) -> bool:
    """Whether an error may be the event's doing: not one of ours (a Redis error, ``StoreError``:
    an outage holds the batch, any other stops the worker; one about the topics), not a
    cancellation or exit."""
    return isinstance(exc, Exception) and not isinstance(exc, StreamprocError)


def make_letter(
    message: Message, reason: str, detail: str, *, field: str | None = "$.event_time"
) -> DeadLetter:
    return DeadLetter(
        reason=reason,
        detail=detail,
        field=field,
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        timestamp_ms=message.timestamp_ms,
    )


@dataclass
class Run:
    """A run of input slices, decoded and cut into each partition's pieces."""

    counts: list[BatchCounts]  # by slice
    letters: Letters  # the slices' bad input
    pieces: dict[int, list[Piece]]  # partition -> its pieces, in slice order
    read: list[tuple[str, dict[int, int]]]  # each slice's last offset read by owned partition
    stores: set[str] = field(default_factory=set)  # the store ids of the valid events


def cut(
    slices: Sequence[tuple[str, list[Message]]],
    *,
    owned: set[int],
    decode: Callable[[str, list[Message]], DecodedBatch],
) -> Run:
    """Events fetched before a rebalance took their partition away are left out: its new owner
    reads them again from the committed offset, and writing them here would put state into a
    changelog partition that another worker owns."""
    run = Run([BatchCounts(topic) for topic, _ in slices], [], defaultdict(list), [])
    for index, (topic, messages) in enumerate(slices):
        mine = [m for m in messages if m.partition in owned]
        batch = decode(topic, mine)
        run.read.append((topic, batch.last))
        run.letters += [(index, message, letter) for message, letter in batch.dead_letters]
        valid = run.counts[index].valid
        for kind, n in batch.kinds.items():
            name: str = kind.__struct_config__.tag  # type: ignore[assignment]  # event_type
            valid[name] = valid.get(name, 0) + n
        run.stores |= batch.stores
        for partition, group in batch.parts.items():
            run.pieces[partition].append(Piece(index, topic, group))
    return run
