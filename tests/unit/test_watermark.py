"""``watermark.judge`` against the rule it implements, written out plainly: each event judged
against the watermark as it stands, the watermark moved after every event that moves its topic's
latest time (``judge`` skips the moves that cannot change it)."""

from __future__ import annotations

from types import SimpleNamespace

from hypothesis import given, settings
from hypothesis import strategies as st

from streamproc.kpi.batch import ALL_TOPICS, EngineSettings, Item, Progress
from streamproc.kpi.contrib import NEVER
from streamproc.kpi.epoch import MINUTE_MS
from streamproc.kpi.records import NONE, TOPICS, Meta
from streamproc.kpi.watermark import judge

SETTINGS = EngineSettings(allowed_lateness_ms=2 * MINUTE_MS, max_lateness_ms=10 * MINUTE_MS)
topics = st.frozensets(st.sampled_from(sorted(ALL_TOPICS)))


def plainly(meta: Meta, items: list[Item], progress: Progress) -> tuple[list[int], list[int], int]:
    """Offsets on time, offsets too late, how many late: the rule, one event at a time."""
    on_time, too_late, late = [], [], 0
    for item in items:
        if item.offset <= meta.read_to[item.topic]:
            continue
        meta.read_to[item.topic] = item.offset
        t, wm = item.event.event_time, meta.watermark
        if wm != NONE and t < wm - SETTINGS.max_lateness_ms:
            too_late.append(item.offset)
        else:
            on_time.append(item.offset)
            late += wm != NONE and t - t % MINUTE_MS + MINUTE_MS <= wm
        if t > meta.max_ts[item.topic]:
            meta.max_ts[item.topic] = t
            if progress.ended >= ALL_TOPICS:
                meta.watermark = NEVER
                continue
            held = [meta.max_ts[x] for x in progress.backlog - progress.ended]
            frontier = min([max(meta.max_ts), *held])
            if frontier != NONE:
                meta.watermark = max(meta.watermark, frontier - SETTINGS.allowed_lateness_ms)
    return on_time, too_late, late


@settings(max_examples=400, deadline=None)
@given(
    start=st.lists(
        st.sampled_from([NONE, 0, 5 * MINUTE_MS, 20 * MINUTE_MS]), min_size=4, max_size=4
    ),
    events=st.lists(
        st.tuples(st.integers(0, TOPICS - 1), st.integers(0, 30 * MINUTE_MS)), max_size=60
    ),
    backlog=topics,
    ended=topics,
)
def test_judge_keeps_the_rule(
    start: list[int], events: list[tuple[int, int]], backlog: frozenset[int], ended: frozenset[int]
) -> None:
    items = [
        Item(SimpleNamespace(event_time=t), topic, offset, "s")  # type: ignore[arg-type]
        for offset, (topic, t) in enumerate(events)
    ]
    progress = Progress(backlog=backlog, ended=ended)
    begin = max(start) - SETTINGS.allowed_lateness_ms if max(start) != NONE else NONE
    meta, expected = Meta(list(start), watermark=begin), Meta(list(start), watermark=begin)
    verdicts = judge(meta, SETTINGS, items, progress)
    on_time, too_late, late = plainly(expected, items, progress)
    assert [item.offset for item in verdicts.on_time] == on_time
    assert [item.offset for item in verdicts.too_late] == too_late
    assert verdicts.late == late
    assert meta.watermark == expected.watermark
    assert meta.max_ts == expected.max_ts
