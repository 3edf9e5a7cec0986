"""Backfill without a broker: offset ranges with Kafka's semantics (whatever the broker answers),
times and names, the stored plan, the OpenMetrics text and the advice after promtool."""

from __future__ import annotations

import json
import random
import re
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from streamproc.backfill.offsets import (
    LOOKBACK,
    TAIL,
    FirstAtOrAfter,
    StampAudit,
    answer_holds,
    find_ranges,
)
from streamproc.backfill.openmetrics import exposition
from streamproc.backfill.plan import (
    Plan,
    TopicPart,
    changelog_topic,
    consumer_group,
    default_name,
    parse_time,
)
from streamproc.backfill.promtool import Blocks, next_steps
from streamproc.backfill.run import SEAL_KEY, batch_url
from streamproc.config import Settings, load_settings
from streamproc.errors import BackfillError

NOW = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)

Answer = Callable[[list[int], int], int | None]


def kafka_answer(log: list[int], t: int) -> int | None:
    """What Kafka answers: the first offset where the running maximum timestamp reaches t."""
    highest = -1
    for offset, ts in enumerate(log):
        highest = max(highest, ts)
        if highest >= t:
            return offset
    return None


def first_own(log: list[int], t: int) -> int:
    """The first offset whose own timestamp reaches t (else the end): the expected boundary."""
    return next((offset for offset, ts in enumerate(log) if ts >= t), len(log))


def by_content(log: list[int], t1: int, t2: int) -> tuple[int, int]:
    """The expected range: from the first to just after the last record stamped within
    [t1, t2); empty, at the first record at or after t2, when none is."""
    inside = [offset for offset, ts in enumerate(log) if t1 <= ts < t2]
    if not inside:
        return first_own(log, t2), first_own(log, t2)
    return inside[0], inside[-1] + 1


class FakeIndex:
    """Partitions as lists of record timestamps (offset = position); answers by ``answer``."""

    def __init__(self, logs: Mapping[TopicPart, list[int]], answer: Answer) -> None:
        self.logs = logs
        self.answer = answer
        self.read: dict[TopicPart, int] = dict.fromkeys(logs, 0)  # records read
        self.skipped: set[TopicPart] = set()

    async def beginnings(self, partitions: Iterable[TopicPart]) -> dict[TopicPart, int]:
        return dict.fromkeys(partitions, 0)

    async def highwaters(self, partitions: Iterable[TopicPart]) -> dict[TopicPart, int]:
        return {tp: len(self.logs[tp]) for tp in partitions}

    async def offsets_for_time(
        self, partitions: Iterable[TopicPart], timestamp_ms: int
    ) -> dict[TopicPart, int | None]:
        return {tp: self.answer(self.logs[tp], timestamp_ms) for tp in partitions}

    async def timestamps(
        self, ranges: Mapping[TopicPart, tuple[int, int]]
    ) -> AsyncIterator[tuple[TopicPart, list[tuple[int, int]]]]:
        self.skipped = set()
        positions = {tp: start for tp, (start, _) in ranges.items()}
        while positions:
            for tp in list(positions):
                start, stop = positions[tp], min(positions[tp] + 7, ranges[tp][1])
                if tp in self.skipped or start >= stop:
                    del positions[tp]
                    continue
                self.read[tp] += stop - start
                yield tp, [(o, self.logs[tp][o]) for o in range(start, stop)]
                positions[tp] = stop

    def skip(self, partition: TopicPart) -> None:
        self.skipped.add(partition)


def messy_log(rng: random.Random, size: int) -> list[int]:
    """Record timestamps that mostly grow, with late records up to 50 behind."""
    log, now = [], 1000
    for _ in range(size):
        now += rng.randint(0, 3)
        log.append(now - (rng.randint(1, 50) if rng.random() < 0.1 else 0))
    return log


async def ranges_of(logs: Mapping[TopicPart, list[int]], answer: Answer, t1: int, t2: int) -> Any:
    index = FakeIndex(logs, answer)
    return await find_ranges(index, list(logs), since_ms=t1, until_ms=t2), index


def test_the_first_record_at_or_after_a_time_is_where_the_running_maximum_reaches_it() -> None:
    rng = random.Random(1)
    log = messy_log(rng, 500)
    for t in range(900, max(log) + 5, 13):
        expected = kafka_answer(log, t)
        assert first_own(log, t) == (len(log) if expected is None else expected)
        finder = FirstAtOrAfter([t, t + 40])
        finder.feed(enumerate(log))
        assert finder.result(len(log)) == [first_own(log, t), first_own(log, t + 40)]


async def test_correct_broker_answers_are_used_without_scanning() -> None:
    rng = random.Random(2)
    logs = {("a", p): messy_log(rng, 3 * LOOKBACK) for p in range(3)}
    logs[("a", 3)] = []
    t1, t2 = 1000 + 2 * LOOKBACK, 1000 + 4 * LOOKBACK
    ranges, index = await ranges_of(logs, kafka_answer, t1, t2)
    for tp, log in logs.items():
        assert (ranges.starts[tp], ranges.ends[tp]) == by_content(log, t1, t2)
    # late records stamped within the range follow the first one stamped at or after t2
    extended = sum(1 for log in logs.values() if by_content(log, t1, t2)[1] > first_own(log, t2))
    assert ranges.methods == {"broker": 8, "scan": 0, "extended": extended} and extended > 0
    # the look-back before each answer, the first record from t1 on and the tail after t2 are
    # read (a batch of 7 more at most each), never whole partitions
    assert all(read <= 2 * (LOOKBACK + 1) + TAIL + 3 * 7 for read in index.read.values())


async def test_a_broker_that_ignores_record_timestamps_is_caught_and_partitions_are_scanned() -> (
    None
):
    rng = random.Random(3)
    logs = {("a", p): messy_log(rng, 400) for p in range(4)}
    t1 = 1000 + 150
    t2 = 1000 + 450

    def tansu(log: list[int], t: int) -> int | None:
        return 0  # Tansu: offset 0, whatever the time

    ranges, _ = await ranges_of(logs, tansu, t1, t2)
    for tp, log in logs.items():
        assert (ranges.starts[tp], ranges.ends[tp]) == by_content(log, t1, t2)
    assert ranges.methods["broker"] == 0 and ranges.methods["scan"] == 8


async def test_a_time_before_all_records_takes_the_brokers_zero_and_one_after_all_the_end() -> None:
    logs = {("a", 0): [10, 20, 30, 25, 40]}

    def tansu(log: list[int], t: int) -> int | None:
        return 0

    ranges, _ = await ranges_of(logs, tansu, 5, 100)
    assert (ranges.starts[("a", 0)], ranges.ends[("a", 0)]) == (0, 5)
    assert ranges.methods == {"broker": 1, "scan": 1, "extended": 0}


async def test_answers_contradicted_by_nearby_records_are_replaced_by_a_scan() -> None:
    log = [10, 20, 30, 25, 40, 35, 50, 60]
    cases: list[Answer] = [
        lambda log, t: first_own(log, t) + 1,  # one too far: an earlier record is at or after t
        lambda log, t: max(first_own(log, t) - 1, 0),  # one too early: that record is older
        lambda log, t: None,  # "no record at or after t"
        lambda log, t: len(log) + 3,  # beyond the end
    ]
    for answer in cases:
        ranges, _ = await ranges_of({("a", 0): log}, answer, 26, 45)
        assert (ranges.starts[("a", 0)], ranges.ends[("a", 0)]) == (2, 6)
        assert ranges.methods["scan"] == 2


def test_answer_check() -> None:
    records = [(0, 10), (1, 20), (2, 30), (3, 25)]
    assert answer_holds(2, records, 26, end=4)
    assert not answer_holds(3, records, 26, end=4)  # offset 2 is already at or after 26
    assert not answer_holds(1, records, 26, end=4)  # offset 1 is older than 26
    assert answer_holds(4, records, 31, end=4)  # none reaches 31: the end
    assert not answer_holds(4, records, 30, end=4)


async def test_the_scan_stops_reading_a_partition_once_both_boundaries_are_found() -> None:
    log = list(range(1000))

    def tansu(log: list[int], t: int) -> int | None:
        return 0

    index = FakeIndex({("a", 0): log}, tansu)
    ranges = await find_ranges(
        index, [("a", 0)], since_ms=100, until_ms=200, use_broker=False, tail=10
    )
    assert (ranges.starts[("a", 0)], ranges.ends[("a", 0)]) == (100, 200)
    assert index.read[("a", 0)] < 200 + 3 * 7 + 10 + 7  # the scan, the start, the tail of 10


WEEKS = 30 * 86_400_000


def test_the_audit_counts_stamps_outside_the_range_and_jumps_back() -> None:
    audit = StampAudit(100, 200, lateness_ms=30)
    log = [100, 150, 130 + WEEKS, 160, 140 - WEEKS, 199, 120, 175, 100, 210, 95]
    audit.feed((offset + 40, ts) for offset, ts in enumerate(log))
    found = audit.stamps
    assert (found.outside, found.outside_at) == (4, [42, 44, 49, 50])
    # more than 30 behind the record before: after each jump forward, the jump back
    assert (found.backwards, found.backwards_at) == (5, [43, 44, 46, 48, 50])


@pytest.mark.parametrize(
    ("log", "expected"),
    [
        ([90, 100, 120, 150, 199, 200, 230], (1, 5)),  # monotone: Kafka's own answers
        ([100, 120, 130 + WEEKS, 150, 180, 210, 220], (0, 5)),  # one weeks late mid-range
        ([100, 120, 130 - WEEKS, 150, 180, 210, 220], (0, 5)),  # one weeks early mid-range
        ([50 + WEEKS, 100, 120, 250, 260], (1, 3)),  # a late one before the range's first
        ([100, 150, 250, 260, 190, 300, 310], (0, 5)),  # a late event after t2's first
        ([10, 20, 250, 260], (2, 2)),  # all outside: empty, where t2's first is
        ([10, 20, 30], (3, 3)),  # all before: empty at the end
    ],
    ids=[
        "monotone",
        "late-outlier",
        "early-outlier",
        "late-first",
        "late-event",
        "outside",
        "before",
    ],
)
async def test_the_range_runs_from_the_first_to_the_last_record_stamped_within_it(
    log: list[int], expected: tuple[int, int]
) -> None:
    for answer in (kafka_answer, lambda log, t: 0):  # a broker that knows, one that does not
        ranges, _ = await ranges_of({("a", 0): log}, answer, 100, 200)
        assert (
            (ranges.starts[("a", 0)], ranges.ends[("a", 0)])
            == expected
            == by_content(log, 100, 200)
        )


async def test_the_search_past_t2_stops_after_tail_records_stamped_after_the_range() -> None:
    """What the bound misses: a record stamped within the range after a longer run of later ones."""
    log = [100, 150, *([300] * 20), 160, *([300] * 5), 170]
    index = FakeIndex({("a", 0): log}, kafka_answer)
    ranges = await find_ranges(index, [("a", 0)], since_ms=100, until_ms=200, tail=10)
    assert ranges.ends[("a", 0)] == 2  # 160 follows 20 records stamped later: not searched for
    ranges = await find_ranges(index, [("a", 0)], since_ms=100, until_ms=200, tail=25)
    assert ranges.ends[("a", 0)] == len(log)  # both found: the longest run is 20


# --- times, names, plans -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("7d", NOW - timedelta(days=7)),
        ("-36h", NOW - timedelta(hours=36)),
        ("90m", NOW - timedelta(minutes=90)),
        ("now", NOW),
        ("2026-11-20", datetime(2026, 11, 20, tzinfo=UTC)),
        ("2026-11-20T06:00:00Z", datetime(2026, 11, 20, 6, tzinfo=UTC)),
        ("2026-11-20T08:00:00+02:00", datetime(2026, 11, 20, 6, tzinfo=UTC)),
    ],
)
def test_times(text: str, expected: datetime) -> None:
    assert parse_time(text, now=NOW) == expected


@pytest.mark.parametrize("text", ["last week", "2026-11-20T06:00:00", "7 days", ""])
def test_bad_times_name_the_accepted_forms(text: str) -> None:
    with pytest.raises(BackfillError, match="RFC 3339"):
        parse_time(text, now=NOW)


def test_default_names_are_valid_namespaces_and_differ_by_range_and_topics() -> None:
    topics = ("shop.clickstream", "shop.cart", "shop.orders", "shop.tickets")
    t1 = int(datetime(2026, 11, 20, tzinfo=UTC).timestamp() * 1000)
    t2 = int(datetime(2026, 11, 23, 6, 30, tzinfo=UTC).timestamp() * 1000)
    name = default_name(t1, t2, topics, topics)
    assert name.startswith("bf-20261120T000000Z-20261123T063000Z-")
    assert re.fullmatch(Settings.model_fields["namespace"].metadata[0].pattern, name)
    assert name == default_name(t1, t2, topics, topics)
    assert name != default_name(t1, t2 + 1000, topics, topics)
    assert name != default_name(t1, t2, topics, topics[:1])
    assert name != default_name(t1, t2, ["x.clickstream", *topics[1:]], topics)


def plan(**changes: Any) -> Plan:
    values: dict[str, Any] = {
        "name": "bf-x",
        "since_ms": 1000,
        "until_ms": 2000,
        "topics": ("a", "b"),
        "read": ("a",),
        "partitions": 2,
        "starts": {("a", 0): 5, ("a", 1): 7, ("b", 0): 3, ("b", 1): 3},
        "ends": {("a", 0): 9, ("a", 1): 7, ("b", 0): 3, ("b", 1): 3},
        "lookup": {"scan": 4},
        "created_ms": 123,
    }
    return Plan(**{**values, **changes})


def test_plans_survive_their_json() -> None:
    original = plan()
    assert Plan.from_json(original.to_json()) == original
    done = original.finished(456)
    assert Plan.from_json(done.to_json()).finished_ms == 456
    assert original.records == 4
    assert (original.partition_records(0), original.partition_records(1)) == (4, 0)


# --- OpenMetrics -------------------------------------------------------------------------------


def row(kpi: str, window: str, start: str, end: str, value: float | None, **extra: Any) -> Any:
    return {
        "kpi": kpi,
        "window": window,
        "start": start,
        "end": end,
        "store_id": extra.get("store_id", "all"),
        "dimension": extra.get("dimension"),
        "value": value,
        "numerator": value,
        "denominator": None,
        "final": True,
    }


SINCE_MS = int(datetime(2026, 11, 20, tzinfo=UTC).timestamp() * 1000)
UNTIL_MS = int(datetime(2026, 11, 21, tzinfo=UTC).timestamp() * 1000)


def test_openmetrics_text() -> None:
    rows = [
        row("orders", "1h", "2026-11-20T01:00:00Z", "2026-11-20T02:00:00Z", 7),
        row("orders", "1h", "2026-11-20T00:00:00Z", "2026-11-20T01:00:00Z", 5),
        row("orders", "1h", "2026-11-20T00:00:00Z", "2026-11-20T01:00:00Z", 2,
            dimension="channel_group=email", store_id='st"1\\'),
        row("orders", "1h", "2026-11-19T23:00:00Z", "2026-11-20T00:00:00Z", 9),  # before
        row("orders", "1d", "2026-11-20T00:00:00Z", "2026-11-21T00:00:00Z", 12),
        row("orders", "1d", "2026-11-21T00:00:00Z", "2026-11-22T00:00:00Z", 1),  # after
        row("revenue", "1h", "2026-11-20T00:00:00Z", "2026-11-20T01:00:00Z", 12.345),
        row("first_response_seconds_p90", "1h", "2026-11-20T00:00:00Z",
            "2026-11-20T01:00:00Z", 1800.0),
        row("conversion_rate", "1h", "2026-11-20T00:00:00Z", "2026-11-20T01:00:00Z", None),
        row("open_tickets", "", "2026-11-20T00:00:00Z", "2026-11-20T01:00:00Z", 4,
            dimension="channel=chat"),
    ]  # fmt: skip
    expo = exposition(rows, currency="USD", since_ms=SINCE_MS, until_ms=UNTIL_MS)
    lines = expo.text.splitlines()
    assert lines[-1] == "# EOF" and expo.text.endswith("# EOF\n")
    h = SINCE_MS // 1000
    orders = [line for line in lines if line.startswith("shop_orders{")]
    assert orders == [
        'shop_orders{window="1d",store_id="all",channel_group="all",device_type="all",'
        f'source="backfill"}} 12.0 {h + 86400}',
        'shop_orders{window="1h",store_id="all",channel_group="all",device_type="all",'
        f'source="backfill"}} 5.0 {h + 3600}',
        'shop_orders{window="1h",store_id="all",channel_group="all",device_type="all",'
        f'source="backfill"}} 7.0 {h + 7200}',
        'shop_orders{window="1h",store_id="st\\"1\\\\",channel_group="email",device_type="all",'
        f'source="backfill"}} 2.0 {h + 3600}',
    ]
    assert lines[:2] == [
        "# HELP shop_orders Orders placed in the window. 0 when none but the store had events"
        " (docs/metrics.md: Zero is a value).",
        "# TYPE shop_orders gauge",
    ]
    assert (
        'shop_revenue{window="1h",store_id="all",channel_group="all",device_type="all",'
        f'currency="USD",source="backfill"}} 12.345 {h + 3600}'
    ) in lines
    assert "# TYPE shop_first_response_seconds summary" in lines
    assert (
        f'shop_first_response_seconds{{window="1h",store_id="all",quantile="0.9",'
        f'source="backfill"}} 1800.0 {h + 3600}'
    ) in lines
    assert not any("open_tickets" in line or "conversion" in line for line in lines)
    assert (expo.series, expo.samples, expo.left_out) == (5, 6, 2)
    assert (expo.first_s, expo.last_s) == (h + 3600, h + 86400)


def test_openmetrics_families_are_contiguous_and_each_series_in_time_order() -> None:
    rng = random.Random(4)
    rows = []
    for hour in rng.sample(range(24), 24):
        start = datetime(2026, 11, 20, hour, tzinfo=UTC)
        for kpi in ("sessions", "orders", "page_views"):
            end = (start + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
            rows.append(row(kpi, "1h", start.strftime("%Y-%m-%dT%H:%M:%SZ"), end, hour))
    expo = exposition(rows, currency="USD", since_ms=SINCE_MS, until_ms=UNTIL_MS)
    names = [line.split("{")[0] for line in expo.text.splitlines() if not line.startswith("#")]
    assert names == sorted(names, key=["shop_sessions", "shop_page_views", "shop_orders"].index)
    for name in set(names):
        stamps = [int(line.rsplit(" ", 1)[1]) for line in expo.text.splitlines()
                  if line.startswith(name + "{")]  # fmt: skip
        assert stamps == sorted(stamps) and len(set(stamps)) == 24


# --- after promtool ----------------------------------------------------------------------------


def test_next_steps_give_the_move_and_warn_about_retention_and_the_head_block() -> None:
    blocks = Blocks(Path("/tmp/b"), ["01KAAA1", "01KAAB2"])
    now = NOW.timestamp()
    calm = next_steps(blocks, first_s=int(now) - 3 * 86400, last_s=int(now) - 86400, now_s=now)
    text = "\n".join(calm)
    assert "mv /tmp/b/01KAA* <data dir>/" in text
    assert "more than 3d" in text and "Warning" not in text
    old = next_steps(blocks, first_s=int(now) - 40 * 86400, last_s=int(now) - 3600, now_s=now)
    warnings = [line for line in old if line.startswith("Warning")]
    assert len(warnings) == 2
    assert "retention" in warnings[0] and "3 hours" in warnings[1]


def test_reports_read_redis_with_a_long_socket_timeout_unless_the_url_sets_one() -> None:
    assert batch_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0?socket_timeout=600"
    assert (
        batch_url("redis://:pw@h:1/2?ssl=true") == "redis://:pw@h:1/2?ssl=true&socket_timeout=600"
    )
    assert batch_url("redis://h/0?socket_timeout=3") == "redis://h/0?socket_timeout=3"


def test_the_names_a_backfill_derives_are_the_ones_its_workers_use(tmp_path: Path) -> None:
    """Group and changelog names are committed to and sealed by the backfill before its workers
    start: they must be what ``app.create_app`` makes of the namespace."""
    from prometheus_client import CollectorRegistry

    from streamproc.events.parse import EventDecoder
    from streamproc.metrics import WorkerMetrics
    from streamproc.worker import app as worker_app

    settings = load_settings(env_file=None, namespace="bf-x")
    metrics = WorkerMetrics.create(
        CollectorRegistry(), topics=settings.topics_by_family, dlq_reasons=[]
    )
    app = worker_app.create_app(
        settings,
        kafka="127.0.0.1:1",
        partitions=2,
        decoder=EventDecoder(),
        store=None,  # type: ignore[arg-type]  # not used to build the app
        metrics=metrics,
        datadir=tmp_path,
    )
    assert app.conf.id == consumer_group("bf-x")
    assert app.tables["state"].changelog_topic.get_topic_name() == changelog_topic("bf-x")
    # the resume's tombstones use a table key (JSON, as Faust serializes str keys) that no
    # partition engine reads: theirs are "{partition}|..."
    assert not re.match(r"\d+\|", json.loads(SEAL_KEY))
