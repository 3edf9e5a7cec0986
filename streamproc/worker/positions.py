"""How far the pipeline has read each input topic partition, against where it ends: what makes a
partition backlogged, read, or ended, its lag, and the check that the broker did not lose what
was read."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Literal

from streamproc.errors import TopicsChanged
from streamproc.kpi.batch import Progress
from streamproc.worker.contracts import Highwater, Owned, ReadFrom

State = Literal["ended", "backlog", "read"]


class InputPositions:
    """The input partitions' read positions and known ends (a replay's or a backfill's)."""

    JUDGED_CHECKS = 3
    JUDGED_RECHECK_S = 0.5

    def __init__(
        self, topics: list[str], *, highwater: Highwater, read_from: ReadFrom, owned: Owned
    ) -> None:
        self.topics = topics  # by topic index
        self.highwater = highwater
        self.read_from = read_from
        self.owned = owned
        self.processed: dict[tuple[str, int], int] = {}  # (topic, partition) -> last offset
        # topic -> partition -> its end, as the decoder takes them (``BatchDecoder.decode``)
        self.ends: dict[str, dict[int, int]] = {}
        self.ends_loaded = False  # a replay's or backfill's known ends hold the watermark back
        self.ends_expected = False  # a replay still producing: every partition has more to come
        self.shrunk: dict[tuple[str, int], int] = {}  # partitions seen ending before what was read
        # the offset after the last message read of each partition, kept when a partition moves
        # (offsets never go back on a broker that keeps its data)
        self.read_max: dict[tuple[str, int], int] = {}

    def set_ends(self, ends: dict[tuple[str, int], int] | None) -> None:
        """The input's known ends; None while they are expected (a replay still producing)."""
        self.ends_expected = ends is None
        self.ends = {}
        for (topic, partition), end in (ends or {}).items():
            self.ends.setdefault(topic, {})[partition] = end
        self.ends_loaded = not self.ends_expected  # else read again with every batch and tick

    def forget(self, partitions: set[int]) -> None:
        """What was read of partitions that moved counts for nothing: Faust re-delivers them
        from the committed offset."""
        for key in [k for k in self.processed if k[1] in partitions]:
            del self.processed[key]

    def processed_up_to(self, topic: str, partition: int, offset: int) -> None:
        key = (topic, partition)
        self.processed[key] = max(self.processed.get(key, -1), offset)

    def read(self, topic: str, last: Mapping[int, int]) -> None:
        """Messages of ``topic`` were read (processed or dead-lettered), up to offset ``last``
        of each partition."""
        for partition, offset in last.items():
            key = (topic, partition)
            self.processed[key] = max(self.processed.get(key, -1), offset)
            self.read_max[key] = max(self.read_max.get(key, 0), offset + 1)

    def progress(self, partition: int, wall_ms: int) -> Progress:
        backlog, ended = set(), set()
        for index, topic in enumerate(self.topics):
            state = self.state(topic, partition)
            if state == "ended":
                ended.add(index)
            elif state == "backlog":
                backlog.add(index)
        return Progress(frozenset(backlog), frozenset(ended), wall_ms)

    def lag(self, topic: str, partition: int) -> int | None:
        """Records of a topic partition not processed yet (as far as the last fetch saw it);
        None before the first fetch response."""
        high = self.highwater(topic, partition)
        return None if high is None else max(0, high - self._done(topic, partition))

    def _done(self, topic: str, partition: int) -> int:
        """The next offset to process."""
        return max(
            self.processed.get((topic, partition), -1) + 1,
            self.read_from(topic, partition) or 0,
        )

    def state(self, topic: str, partition: int) -> State:
        """``ended`` (read to its known end), ``backlog`` (unread input) or ``read``."""
        if self.ends_expected:
            return "backlog"
        done = self._done(topic, partition)
        end = self.ends.get(topic, {}).get(partition)
        if end is not None and done >= end:
            return "ended"
        high = self.highwater(topic, partition)
        # No fetch response yet (None): the consumer may be slow to start; taking the partition
        # for idle would move the watermark to the wall clock past its backlog.
        if high is None or high > done or end is not None:
            return "backlog"
        return "read"

    def check_ends(self, judged: dict[tuple[str, int], int] | None = None) -> None:
        """Raise TopicsChanged when an owned partition ends before what was read of it (or
        ``judged``: the offset after the last one its stored state has judged), in several
        checks in a row (one odd fetch response is not taken for it): the broker lost its data
        (a memory-only broker restarted) or the topic was created again. Its new offsets would
        be taken for ones already absorbed (records skip offsets at or below their markers)."""
        judged = judged or {}
        read = {partition for _, partition in self.read_max}
        for partition in sorted(self.owned() | read):  # owned() is empty during a rebalance
            for topic in self.topics:
                done = max(
                    self.read_max.get((topic, partition), 0),
                    self.read_from(topic, partition) or 0,
                    judged.get((topic, partition), 0),
                )
                self._check_end(topic, partition, self.highwater(topic, partition), done)

    async def check_judged(self, topic: str, partition: int, judged_to: int) -> None:
        """Before events at or below ``judged_to`` (the last offset the stored state judged)
        are skipped as read again: raise TopicsChanged when the partition ends at or before it,
        in ``JUDGED_CHECKS`` readings ``JUDGED_RECHECK_S`` apart (a new leader's high watermark
        can lag for a moment). The state was written for other records than these: the topic
        was deleted and created again (or its broker lost its data) while the state's changelog
        survived."""
        for check in range(self.JUDGED_CHECKS):
            high = self.highwater(topic, partition)
            if high is None or high > judged_to:
                return
            if check < self.JUDGED_CHECKS - 1:
                await asyncio.sleep(self.JUDGED_RECHECK_S)
        raise TopicsChanged(
            f"{topic}[{partition}] ends at offset {high}, but the stored state of partition "
            f"{partition} has judged its events up to offset {judged_to}: the topic was "
            "deleted and created again (or its broker lost its data) while the state's "
            "changelog survived. Stopping rather than skip these events as read before. "
            "To count the new topic from its beginning, delete the state's changelog too "
            "(topic <STREAMPROC_NAMESPACE>-worker-state-changelog) or run under a new "
            "STREAMPROC_NAMESPACE."
        )

    def _check_end(self, topic: str, partition: int, high: int | None, done: int) -> None:
        key = (topic, partition)
        if high is None or high >= done:
            self.shrunk.pop(key, None)
            return
        self.shrunk[key] = seen = self.shrunk.get(key, 0) + 1
        if seen >= 3:
            raise TopicsChanged(
                f"{topic}[{partition}] ends at offset {high}, but this worker has read it up to "
                f"offset {done}: the broker lost the topic's data (a memory-only broker "
                "restarted?) or the topic was deleted and created again. Stopping: this worker's "
                "state no longer matches the topics. A restarted worker creates what is missing "
                "and reads on from the group's committed offsets (from the beginning on a broker "
                "that lost them); what the lost records counted stays in the KPIs."
            )
