"""A partition's event-time watermark: events judged against it, and it moved on.

The watermark is the earliest of the input topics' latest event times (a topic with unread
messages holds it back; one read to its known end does not), less the allowed lateness; once every
topic has ended it is ``NEVER``, and a partition idle for the idle timeout of wall-clock time moves
it with the wall clock (``advance``). It is in the partition's meta, which the changelog holds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from streamproc.kpi.batch import ALL_TOPICS, EngineSettings, Item, Progress, Verdicts
from streamproc.kpi.contrib import NEVER
from streamproc.kpi.epoch import MINUTE_MS
from streamproc.kpi.records import NONE, Meta


def judge(
    meta: Meta, settings: EngineSettings, items: Iterable[Item], progress: Progress
) -> Verdicts:
    """Judge valid events read: on time (late ones included) or too late, in order.

    Each event is judged against the watermark as it stands, then moves its topic's progress and
    the watermark on, so the verdicts do not depend on batch sizes. An event judged before a
    restart or rebalance (``Meta.read_to``) is skipped: what its verdict called for is done,
    provided its dead letter (if it was too late) was delivered before the meta that records it
    (``Pipeline``).
    """
    verdicts = Verdicts([], [])
    on_time, too_late = verdicts.on_time, verdicts.too_late
    max_lateness = settings.max_lateness_ms
    max_ts, (frontier, move) = meta.max_ts, _mover(meta, settings, progress)
    wm, late, read_to = meta.watermark, 0, meta.read_to
    for item in items:
        if item.offset <= read_to[item.topic]:
            verdicts.again += 1
            continue
        read_to[item.topic] = item.offset
        t = item.event.event_time
        if wm != NONE and t < wm - max_lateness:
            too_late.append(item)
        else:
            on_time.append(item)
            if wm != NONE and t - t % MINUTE_MS + MINUTE_MS <= wm:
                late += 1  # its minute is closed: it amends it
        latest = max_ts[item.topic]
        if t > latest:
            max_ts[item.topic] = int(t)
            # A topic whose latest time was past the frontier did not hold it (_mover).
            if latest <= frontier:
                frontier = move()
                wm = meta.watermark
    verdicts.late = late
    return verdicts


def _mover(
    meta: Meta, settings: EngineSettings, progress: Progress
) -> tuple[int, Callable[[], int]]:
    """``advance`` without the wall clock (an event was just read), for the events of one
    ``judge``, with what depends only on ``progress`` worked out once: the frontier (the time
    the watermark trails by the allowed lateness) as the topics' latest times stand, and a
    function that moves the watermark to the frontier they make now and returns that frontier.

    The frontier is the earliest latest time of the held topics (those with unread messages),
    or with none held the latest time of all. A topic whose latest time was past the frontier
    was not the earliest held one, and the frontier with none held is at least its time: its
    moving on leaves the frontier where it was, and ``judge`` does not run ``move`` for it.
    """
    allowed, max_ts, ended = settings.allowed_lateness_ms, meta.max_ts, progress.ended
    if ended.issuperset(ALL_TOPICS):

        def move_to_end() -> int:
            meta.watermark = NEVER
            return NEVER

        return NEVER, move_to_end
    held = tuple(topic for topic in progress.backlog if topic not in ended)

    def frontier() -> int:
        earliest = max(max_ts)
        for topic in held:  # a topic with unread messages holds the watermark back
            if max_ts[topic] < earliest:
                earliest = max_ts[topic]
        return earliest

    def move() -> int:
        earliest = frontier()
        if earliest != NONE and earliest - allowed > meta.watermark:
            meta.watermark = earliest - allowed
        return earliest

    return frontier(), move


def advance(
    meta: Meta, settings: EngineSettings, progress: Progress, last_event_wall_ms: int
) -> int:
    """Move the watermark on from the topics' progress, and with the wall clock when the
    partition has no backlog and had no event for the idle timeout; the watermark."""
    s, ended, max_ts = settings, progress.ended, meta.max_ts
    if ended.issuperset(ALL_TOPICS):
        frontier = NEVER
    else:
        frontier = max(max_ts)
        for topic in progress.backlog:
            if topic not in ended and max_ts[topic] < frontier:
                frontier = max_ts[topic]
        quiet = progress.wall_ms - last_event_wall_ms >= s.idle_timeout_ms
        if not progress.backlog and quiet and progress.wall_ms:
            frontier = max(frontier, progress.wall_ms - s.idle_timeout_ms)
    if frontier == NONE:
        return meta.watermark
    candidate = NEVER if frontier == NEVER else frontier - s.allowed_lateness_ms
    meta.watermark = max(meta.watermark, candidate)
    return meta.watermark
