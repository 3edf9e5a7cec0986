"""The worker processes each partition's topics in step: a minute of event time at a time, the
topic with the earliest record first, waiting (a bounded time) for a topic that has a backlog
but nothing fetched."""

from __future__ import annotations

from typing import NamedTuple

from streamproc.worker.align import Aligner, Slice

MINUTE = 60_000


class TP(NamedTuple):
    topic: str
    partition: int


class Record(NamedTuple):
    offset: int
    timestamp_ms: int


class Batch(NamedTuple):
    tp: TP
    records: list[Record]
    generation: int = 1


def records(times_s: list[float], first_offset: int = 0) -> list[Record]:
    return [Record(first_offset + n, int(t * 1000)) for n, t in enumerate(times_s)]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def drain(aligner: Aligner) -> list[tuple[str, list[int]]]:
    found: list[tuple[str, list[int]]] = []
    while (piece := aligner.next_slice()) is not None:
        found.append((piece.tp.topic, [r.offset for r in piece.records]))
    return found


def test_the_topics_of_a_partition_go_a_minute_at_a_time_earliest_first() -> None:
    aligner = Aligner(["click", "cart"], lambda topic, partition: False)
    aligner.add(Batch(TP("click", 0), records([10, 50, 70, 130, 150])))
    aligner.add(Batch(TP("cart", 0), records([65, 80, 200])))
    assert drain(aligner) == [
        ("click", [0, 1]),  # minute 0
        ("cart", [0, 1]),  # minute 1: the cart's head (65 s) is before the click's (70 s)
        ("click", [2]),
        ("click", [3, 4]),  # minute 2
        ("cart", [2]),  # minute 3
    ]
    assert aligner.records == 0


def test_a_partition_waits_for_a_backlogged_topic_with_nothing_fetched() -> None:
    clock, backlog = Clock(), {("cart", 0), ("cart", 1)}
    aligner = Aligner(
        ["click", "cart"], lambda topic, p: (topic, p) in backlog, wait_s=1.0, clock=clock
    )
    aligner.add(Batch(TP("click", 0), records([10, 20])))
    aligner.add(Batch(TP("click", 1), records([10])))
    assert drain(aligner) == []  # both partitions wait for their cart topic
    assert aligner.wait_left() == 1.0
    aligner.add(Batch(TP("cart", 0), records([5])))
    assert drain(aligner) == [("cart", [0])]  # then partition 0 waits for more of it
    backlog.discard(("cart", 0))  # its cart topic is read to its end
    assert drain(aligner) == [("click", [0, 1])]
    clock.now += 1.0  # partition 1 gives up waiting
    assert aligner.wait_left() == 0.0
    assert drain(aligner) == [("click", [0])]


def test_a_record_after_the_minute_ends_the_slice_and_acks_cover_the_gaps() -> None:
    aligner = Aligner(["click"], lambda topic, partition: False)
    fetched = [Record(3, 10_000), Record(5, 90_000), Record(6, 20_000), Record(9, 95_000)]
    aligner.add(Batch(TP("click", 0), fetched))
    first = aligner.next_slice()
    second = aligner.next_slice()
    assert first == Slice(TP("click", 0), fetched[:1], 3, 3)
    # the out-of-order record (20 s) waits for the slice of the record before it
    assert second == Slice(TP("click", 0), fetched[1:], 4, 9)
    assert aligner.next_slice() is None


def test_batches_of_a_new_generation_replace_the_old_ones() -> None:
    aligner = Aligner(["click"], lambda topic, partition: False)
    aligner.add(Batch(TP("click", 0), records([10, 20]), generation=1))
    aligner.add(Batch(TP("click", 1), records([10]), generation=2))  # a rebalance came between
    assert drain(aligner) == [("click", [0])]
    assert aligner.generation == 2


def test_a_run_is_one_partitions_slices_in_order_up_to_its_size() -> None:
    backlog = {("cart", 1)}
    aligner = Aligner(["click", "cart"], lambda topic, p: (topic, p) in backlog)
    aligner.add(Batch(TP("click", 0), records([10, 70, 130, 190])))
    aligner.add(Batch(TP("cart", 0), records([65, 135])))
    aligner.add(Batch(TP("click", 1), records([10, 20])))

    def run(max_records: int) -> list[tuple[str, int, list[int]]]:
        taken = aligner.next_run(max_records)
        return [(s.tp.topic, s.tp.partition, [r.offset for r in s.records]) for s in taken]

    # the slices of partition 0 in their order, until they hold 3 records
    assert run(3) == [("click", 0, [0]), ("cart", 0, [0]), ("click", 0, [1])]
    # partition 1 waits for its cart topic: the rest of partition 0
    assert run(3) == [("click", 0, [2]), ("cart", 0, [1]), ("click", 0, [3])]
    assert run(3) == []
    backlog.clear()
    assert run(1) == [("click", 1, [0, 1])]  # a slice is never cut
    assert aligner.next_run(100) == [] and aligner.records == 0


def test_a_slice_ends_at_the_first_record_of_a_later_minute_not_at_the_last_in_time() -> None:
    """Timestamps need not grow with offsets (a producer's clock, retries): a slice is cut at
    the first record of a later minute in offset order; records without a time (None or -1) are
    taken as the earliest."""
    stamps = [1_000, None, 2_000, MINUTE + 5, 500, -1, 2 * MINUTE]
    fetched = [Record(n, t) for n, t in enumerate(stamps)]  # type: ignore[arg-type]
    aligner = Aligner(["a"], backlogged=lambda topic, partition: False)
    aligner.add(Batch(TP("a", 0), fetched))
    cuts = []
    while (piece := aligner.next_slice()) is not None:
        cuts.append([r.offset for r in piece.records])
    assert cuts == [[0, 1, 2], [3, 4, 5], [6]]
