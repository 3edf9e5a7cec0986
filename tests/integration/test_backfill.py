"""`streamproc backfill` against the embedded broker and a real Redis, on three days of simulated
traffic (duplicates, out-of-order, late, too-late and malformed records) already in the topics.

"Restricted to [T1, T2)" means: the records in each partition's offset range, from the first to
just after the last record whose timestamp lies in [T1, T2) (``backfill/offsets.py``), processed
as if they were the whole input. The expected ranges are computed here from the producer's
acknowledgements, and the expected report by the independent reference over exactly those
lines, in file order. Records stamped outside [T1, T2) that lie between are inside. A few records
in the middle of the range are stamped weeks later or years earlier than their event time (a
producer's clock): Kafka's first offset at or after T2 is one of them on most partitions, and
the range must not end there.

The maximum lateness is 4 h here, so the simulator's 2-3 h delayed records are late events that
amend closed windows rather than ``too_late`` dead letters. Whether a record is too late depends
on how far the partition's other topics have been read when it is (docs/semantics.md,
"Watermark"), and in traffic this sparse one batch spans hours of event time: that verdict would
vary from run to run, for replays as much as for backfills, and no exact comparison could hold.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer
from helpers import anomalous_traffic
from procs import StreamprocProcess, drop_keys, free_port
from reference.common import ReferenceSettings
from reference.kpis import reference_report
from reference.report import compare_reports

from streamproc import broker
from streamproc.backfill.offsets import find_ranges
from streamproc.backfill.plan import Plan, TopicPart, consumer_group
from streamproc.devstack import StackInfo
from streamproc.eventfile import FileRecord, read_records
from streamproc.exporter.names import labels_of
from streamproc.kpi.report import Row
from streamproc.store import KpiStore

pytestmark = pytest.mark.integration

DAY = timedelta(days=1)
TODAY = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
START = TODAY - 4 * DAY  # three days of traffic that ended a day ago: everything has closed
T1 = START + DAY - timedelta(hours=4)  # 20:00 on the first day
T2 = START + 2 * DAY + timedelta(hours=6)  # 06:00 on the third day: the second day is inside
WINDOWS = "15m,1h,1d"
MAX_LATENESS_S = 4 * 3600
REFERENCE = ReferenceSettings(
    fx_rates={"EUR": Decimal("1.08")},
    window_sizes_s=(900, 3600, 86400),
    max_lateness_ms=MAX_LATENESS_S * 1000,
)
VISITORS_TOLERANCE = 0.02  # as in test_replay.py (distinct visitors within 2 %)


def rfc(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def sim_lines(*, seed: int, start: datetime, duration: timedelta, rate: float) -> list[bytes]:
    minutes = duration.total_seconds() / 60
    return anomalous_traffic(start=start, minutes=minutes, seed=seed, rate=rate, episodes=False)


Coordinates = tuple[str, int, int, int]  # topic, partition, offset, record timestamp


def skewed(index: int, stamp: int) -> int:
    """A few records of [T1, T2) stamped weeks later or years earlier than their event time."""
    if ms(T1) <= stamp < ms(T2) and index % 401 in (0, 200):
        return stamp + (30 * 86_400_000 if index % 401 == 0 else -3 * 365 * 86_400_000)
    return stamp


async def produce(
    bootstrap: str, topics: dict[str, str], lines: list[bytes], *, skew: bool = False
) -> list[Any]:
    """Send the lines in file order; the (topic, partition, offset, timestamp) of each, or None.
    ``skew``: stamp some records far from their event time (``skewed``)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all")
    await producer.start()
    try:
        pending: list[tuple[int, int, Any]] = []
        for record in read_records(lines):
            if isinstance(record, FileRecord):
                assert record.timestamp_ms is not None  # the simulator stamps every record
                stamp = record.timestamp_ms
                if skew:
                    stamp = skewed(record.line_no - 1, stamp)
                key = record.key.encode() if record.key is not None else None
                future = await producer.send(
                    topics[record.family.value], record.value, key=key, timestamp_ms=stamp
                )
                pending.append((record.line_no - 1, stamp, future))
        coordinates: list[Any] = [None] * len(lines)
        for index, stamp, future in pending:
            meta = await future
            coordinates[index] = (meta.topic, meta.partition, meta.offset, stamp)
        return coordinates
    finally:
        await producer.stop()


@dataclass
class Topics:
    stack: StackInfo
    namespace: str
    lines: list[bytes]
    coordinates: list[Coordinates | None]
    env: dict[str, str]

    @property
    def names(self) -> dict[str, str]:
        return {f: self.env[f"STREAMPROC_TOPIC_{f.upper()}"] for f in FAMILIES}

    def expected_offsets(self, at: datetime) -> dict[TopicPart, int]:
        """Per partition: the first offset with a record timestamp at or after ``at``."""
        found: dict[TopicPart, int] = {}
        ends: dict[TopicPart, int] = {}
        for coords in sorted(c for c in self.coordinates if c is not None):
            topic, partition, offset, stamp = coords
            ends[(topic, partition)] = offset + 1
            if stamp >= ms(at) and (topic, partition) not in found:
                found[(topic, partition)] = offset
        every = {(t, p) for t in self.names.values() for p in range(4)}
        return {tp: found.get(tp, ends.get(tp, 0)) for tp in every}

    def expected_ranges(
        self, since: datetime, until: datetime
    ) -> tuple[dict[TopicPart, int], dict[TopicPart, int]]:
        """Per partition: from the first to just after the last offset whose record timestamp
        lies in [since, until); where none does, empty at the first at or after ``until``."""
        inside: dict[TopicPart, list[int]] = {}
        for coords in sorted(c for c in self.coordinates if c is not None):
            topic, partition, offset, stamp = coords
            if ms(since) <= stamp < ms(until):
                inside.setdefault((topic, partition), []).append(offset)
        empty = self.expected_offsets(until)
        starts = {tp: inside[tp][0] if tp in inside else at for tp, at in empty.items()}
        ends = {tp: inside[tp][-1] + 1 if tp in inside else at for tp, at in empty.items()}
        return starts, ends

    def restricted(
        self,
        starts: dict[TopicPart, int],
        ends: dict[TopicPart, int],
        *,
        without: Collection[int] = (),
    ) -> list[bytes]:
        """The lines whose records lie in the offset ranges, in file order (but for the lines
        numbered ``without``, from 0)."""
        kept = []
        for index, (line, coords) in enumerate(zip(self.lines, self.coordinates, strict=True)):
            if coords is not None and index not in without:
                topic, partition, offset, _ = coords
                if starts[(topic, partition)] <= offset < ends[(topic, partition)]:
                    kept.append(line)
        return kept


FAMILIES = ("clickstream", "cart", "orders", "tickets")


@pytest.fixture(scope="module")
def topics(stack: StackInfo) -> Iterator[Topics]:
    namespace = f"t_bf_{os.getpid()}_{int(time.time())}"
    names = {f: f"{namespace}.{f}" for f in FAMILIES}
    env = {
        **os.environ,
        "STREAMPROC_BOOTSTRAP_SERVERS": stack.bootstrap_servers,
        "STREAMPROC_REDIS_URL": stack.redis_url,
        "STREAMPROC_NAMESPACE": namespace,
        "STREAMPROC_PARTITIONS": "4",
        "STREAMPROC_FX_RATES": "EUR=1.08",
        "STREAMPROC_WINDOWS": WINDOWS,
        "STREAMPROC_MAX_LATENESS_SECONDS": str(MAX_LATENESS_S),
        "STREAMPROC_TOPIC_DLQ": f"{namespace}.dlq",
        "COLUMNS": "400",  # rich wraps at 80 columns when not on a terminal
        **{f"STREAMPROC_TOPIC_{f.upper()}": name for f, name in names.items()},
    }
    lines = sim_lines(seed=11, start=START, duration=3 * DAY, rate=0.4)

    async def setup() -> list[Any]:
        await broker.ensure_topics(
            stack.bootstrap_servers,
            {**{name: 4 for name in names.values()}, f"{namespace}.dlq": 4},
            co_partitioned=names.values(),
        )
        return await produce(stack.bootstrap_servers, names, lines, skew=True)

    coordinates = asyncio.run(setup())
    yield Topics(stack, namespace, lines, coordinates, env)
    drop_keys(stack.redis_url, namespace)


def backfill_args(name: str, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "streamproc",
        "backfill",
        "--name",
        name,
        "--report",
        str(out / f"{name}.json"),
        "--openmetrics",
        str(out / f"{name}.om"),
        "--timeout",
        "4m",
        *extra,
    ]


async def stored_plan(url: str, name: str) -> Plan | None:
    store = KpiStore.connect(url, name)
    try:
        raw = await store.backfill_plan()
    finally:
        await store.aclose()
    return Plan.from_json(raw) if raw is not None else None


class Backfill(subprocess.Popen[bytes]):
    """A backfill command with its output in ``{base}.out`` and ``{base}.err``; killed on exit."""

    def __init__(self, args: list[str], env: dict[str, str], base: Path) -> None:
        self.base = base
        with base.with_suffix(".out").open("wb") as out, base.with_suffix(".err").open("wb") as err:
            super().__init__(args, env=env, stdout=out, stderr=err)

    @property
    def output(self) -> str:
        return "".join(
            self.base.with_suffix(suffix).read_text(errors="replace")[-3000:]
            for suffix in (".out", ".err")
        )

    def __exit__(self, *exc_info: Any) -> None:
        if self.poll() is None:
            self.kill()
        super().__exit__(*exc_info)


def wait_for_plan(topics: Topics, name: str, proc: Backfill) -> Plan:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        plan = asyncio.run(stored_plan(topics.stack.redis_url, name))
        if plan is not None:
            return plan
        assert proc.poll() is None, proc.output
        time.sleep(0.2)
    raise AssertionError("the backfill stored no plan within 60 s")


@dataclass
class Run:
    name: str
    plan: Plan
    rows: list[Row]
    stdout: str
    openmetrics: Path
    blocks: Path | None
    committed: dict[TopicPart, int | None]


def committed(topics: Topics, name: str, plan: Plan) -> dict[TopicPart, int | None]:
    async def read() -> dict[TopicPart, int | None]:
        bootstrap = topics.stack.bootstrap_servers
        async with broker.OffsetReader(bootstrap, group=consumer_group(name)) as reader:
            return await reader.committed(plan.starts)

    return asyncio.run(read())


@pytest.fixture(scope="module")
def first_run(topics: Topics, tmp_path_factory: pytest.TempPathFactory) -> Run:
    """One backfill of [T1, T2); while it starts, more traffic arrives on the live topics (after
    T2's offsets): it must be ignored."""
    out = tmp_path_factory.mktemp("backfill")
    name = f"{topics.namespace}-bf1"
    blocks = out / "blocks" if shutil.which("promtool") else None
    extra = ["--prometheus-data-dir", str(blocks)] if blocks else []
    args = backfill_args(name, out, "--since", rfc(T1), "--until", rfc(T2), *extra)
    with Backfill(args, topics.env, out / "first") as proc:
        plan = wait_for_plan(topics, name, proc)
        more = sim_lines(seed=12, start=T2, duration=timedelta(hours=6), rate=1)
        asyncio.run(produce(topics.stack.bootstrap_servers, topics.names, more))
        proc.wait(240)
    assert proc.returncode == 0, proc.output
    rows = json.loads((out / f"{name}.json").read_text())
    stdout = (out / "first.out").read_text()
    return Run(name, plan, rows, stdout, out / f"{name}.om", blocks, committed(topics, name, plan))


def agree(rows: list[Row], lines: list[bytes]) -> None:
    differences = compare_reports(
        rows,
        reference_report(lines, REFERENCE),
        visitors_rel_tol=VISITORS_TOLERANCE,
    )
    assert not differences, "\n".join(differences)


def test_backfill_report_equals_the_reference_of_its_offset_range(
    topics: Topics, first_run: Run
) -> None:
    plan = first_run.plan
    assert (plan.starts, plan.ends) == topics.expected_ranges(T1, T2)
    # Kafka's rule (the first offset stamped at or after T2) would have cut most partitions short
    cut = [tp for tp, end in topics.expected_offsets(T2).items() if end < plan.ends[tp]]
    assert len(cut) >= 4 and plan.lookup["extended"] == len(cut)
    assert "are read to the last of them" in " ".join(first_run.stdout.split())
    assert plan.lookup.get("scan")  # Tansu's ListOffsets-by-time answers were caught
    # the workers read past the ends (the traffic produced meanwhile) and ignored it
    assert any((first_run.committed[tp] or 0) > end for tp, end in plan.ends.items())
    lines = topics.restricted(plan.starts, plan.ends)
    assert {row["window"] for row in first_run.rows} >= {"15m", "1h", "1d"}
    # An event stamped years before its event_time is a dead letter (future_time: its time is
    # too far after the record's): the reference, which sees no record timestamps, leaves it out.
    early = {i for i, c in enumerate(topics.coordinates) if c and c[3] < ms(START)}
    assert len(early) >= 10
    agree(first_run.rows, topics.restricted(plan.starts, plan.ends, without=early))
    # the summary says, per partition, what looks wrong in the record timestamps of its range
    said = " ".join(first_run.stdout.split())
    for tp, start in plan.starts.items():
        stamps = sorted(
            (c[2], c[3])
            for c in topics.coordinates
            if c and (c[0], c[1]) == tp and start <= c[2] < plan.ends[tp]
        )
        outside = [o for o, t in stamps if not ms(T1) <= t < ms(T2)]
        back = [b[0] for a, b in itertools.pairwise(stamps) if b[1] < a[1] - MAX_LATENESS_S * 1000]
        said_of = rf"record timestamps of {re.escape(tp[0])}\[{tp[1]}\]: "
        line = re.search(said_of + r"(.*?)(?= record timestamps of |$)", said)
        if not (outside or back):
            assert line is None
            continue
        assert line is not None, said
        if outside:
            shown = ", ".join(map(str, outside[:5])) + (", ..." if len(outside) > 5 else "")
            assert f"{len(outside):,} outside the range (offsets {shown})" in line[1]
        if back:
            assert f"{len(back):,} more than STREAMPROC_MAX_LATENESS_SECONDS behind" in line[1]
    assert "outside the range" in said
    summary = re.search(r"events ([\d,]+): accepted ([\d,]+)", first_run.stdout)
    assert summary is not None, first_run.stdout
    assert int(summary[1].replace(",", "")) == plan.records == len(lines)


def test_offset_lookup_on_tansu_verified_broker_answers_and_scans(topics: Topics) -> None:
    parts = list(topics.expected_offsets(T1))
    early, late = START - timedelta(hours=5), TODAY + timedelta(hours=1)

    async def lookup(since: datetime, until: datetime, *, use_broker: bool) -> Any:
        async with broker.OffsetReader(topics.stack.bootstrap_servers) as reader:
            return await find_ranges(
                reader, parts, since_ms=ms(since), until_ms=ms(until), use_broker=use_broker
            )

    for use_broker in (True, False):
        found = asyncio.run(lookup(T1, T2, use_broker=use_broker))
        assert (found.starts, found.ends) == topics.expected_ranges(T1, T2)
        # Tansu answers offset 0 whatever the time: kept only where 0 is right (empty partitions)
        zeros = [o for at in (T1, T2) for o in topics.expected_offsets(at).values() if o == 0]
        assert found.methods["broker"] == (len(zeros) if use_broker else 0)
        assert found.methods["scan"] == 2 * len(parts) - found.methods["broker"]
    # before every record, Tansu's 0 is right (and kept); after every record: the high watermark
    found = asyncio.run(lookup(early, late, use_broker=True))
    # ... and past the records stamped weeks later than the rest, to the last one stamped within
    # (at least: other tests of this module append traffic to the topics meanwhile)
    _, ends = topics.expected_ranges(early, late)
    assert found.starts == dict.fromkeys(parts, 0)
    assert all(ends[tp] <= found.ends[tp] <= found.highwaters[tp] for tp in parts)
    extended = sum(1 for tp, end in topics.expected_offsets(late).items() if end < ends[tp])
    assert extended > 0 and found.methods["extended"] >= extended
    assert (found.methods["broker"], found.methods["scan"]) == (len(parts), len(parts))


async def partition_statuses(url: str, name: str) -> dict[int, dict[str, Any]]:
    store = KpiStore.connect(url, name)
    try:
        return await store.statuses()
    finally:
        await store.aclose()


def canonical(row: Row) -> str:
    return json.dumps(row, sort_keys=True)


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


@pytest.mark.parametrize("workers", [1, 2])
def test_killed_backfill_resumes_to_the_identical_report(
    topics: Topics, first_run: Run, tmp_path: Path, workers: int
) -> None:
    name = f"{topics.namespace}-bf2w{workers}"
    args = backfill_args(name, tmp_path, "--since", rfc(T1), "--until", rfc(T2))
    args += ["--workers", str(workers)]
    # Small batches: the range takes several commit intervals (Faust's: 2.8 s) to read, so the
    # kill below (at the first committed progress) lands while the backfill is under way; with
    # batches of 50 a worker read the whole range within the first interval.
    env = {**topics.env, "STREAMPROC_BATCH_MAX_EVENTS": "10", "STREAMPROC_RUN_MAX_EVENTS": "10"}
    with Backfill(args, env, tmp_path / "killed") as proc:
        plan = wait_for_plan(topics, name, proc)
        assert (plan.starts, plan.ends) == (first_run.plan.starts, first_run.plan.ends)
        deadline = time.monotonic() + 120
        while True:  # kill once a part of the range is committed, or being processed
            positions = committed(topics, name, plan)
            done = sum(min(positions[tp] or s, plan.ends[tp]) - s for tp, s in plan.starts.items())
            statuses = asyncio.run(partition_statuses(topics.stack.redis_url, name))
            marks = [int(status["watermark"]) for status in statuses.values()]
            if done > 0 or (marks and min(marks) < 2**62):
                break
            assert time.monotonic() < deadline and proc.poll() is None, proc.output
            time.sleep(0.2)
        pids = children(proc.pid)
        assert len(pids) == workers
        for pid in pids:
            os.killpg(pid, signal.SIGKILL)  # each worker runs in its own session
        proc.kill()
        proc.wait()
    statuses = asyncio.run(partition_statuses(topics.stack.redis_url, name))
    assert len(statuses) < 4 or min(int(s["watermark"]) for s in statuses.values()) < 2**62
    resume = backfill_args(name, tmp_path, "--resume", "--workers", str(workers))
    with Backfill(resume, env, tmp_path / "again") as again:
        again.wait(240)
    assert again.returncode == 0, again.output
    assert "resuming" in (tmp_path / "again.out").read_text()
    rows = json.loads((tmp_path / f"{name}.json").read_text())
    differences = compare_reports(rows, first_run.rows, ratio_tol=0.0, visitors_rel_tol=0.0)
    assert not differences, "\n".join(differences)
    assert sorted(rows, key=canonical) == sorted(first_run.rows, key=canonical)
    assert (tmp_path / f"{name}.om").read_text() == first_run.openmetrics.read_text()


def test_a_fresh_run_refuses_an_existing_backfill(
    topics: Topics, first_run: Run, tmp_path: Path
) -> None:
    args = backfill_args(first_run.name, tmp_path, "--since", rfc(T1), "--until", rfc(T2))
    done = subprocess.run(args, env=topics.env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert f"a backfill named {first_run.name} already exists (complete)" in done.stderr
    assert "--resume" in done.stderr


# --- Prometheus ----------------------------------------------------------------------------------

PROMETHEUS = shutil.which("prometheus")
HAVE_PROMETHEUS = shutil.which("promtool") is not None and PROMETHEUS is not None


def tsdb_samples(blocks: Path) -> int:
    """Samples in the blocks, from ``promtool tsdb list`` (NUM SAMPLES column)."""
    listing = subprocess.run(
        ["promtool", "tsdb", "list", str(blocks)], capture_output=True, text=True, check=True
    )
    lines = listing.stdout.splitlines()
    assert lines[0].split()[:9] == "BLOCK ULID MIN TIME MAX TIME DURATION NUM SAMPLES".split()
    return sum(int(line.split()[4]) for line in lines[1:] if line.strip())


def query(port: int, promql: str, at_s: int) -> list[dict[str, Any]]:
    params = urllib.parse.urlencode({"query": promql, "time": str(at_s)})
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/query?{params}", timeout=10) as r:
        body = json.loads(r.read())
    assert body["status"] == "success", body
    return list(body["data"]["result"])


def selector(row: Row) -> str:
    metric, values = labels_of(row, currency="USD")
    labels = dict(zip(metric.label_names, values, strict=True)) | {"source": "backfill"}
    return metric.name + "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"


@pytest.fixture
def prometheus(first_run: Run, tmp_path: Path) -> Iterator[int]:
    """A real Prometheus on the backfill's blocks (loopback, temporary config, free port)."""
    assert first_run.blocks is not None and PROMETHEUS is not None
    config = tmp_path / "prometheus.yml"
    config.write_text("global:\n  scrape_interval: 1h\n")
    port = free_port()
    with (tmp_path / "prometheus.log").open("wb") as log:
        proc = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={config}",
                f"--storage.tsdb.path={first_run.blocks}",
                "--storage.tsdb.retention.time=3650d",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=1):
                        break
                except OSError:
                    assert proc.poll() is None, (tmp_path / "prometheus.log").read_text()
                    assert time.monotonic() < deadline, "Prometheus not ready in 30 s"
                    time.sleep(0.1)
            yield port
        finally:
            proc.terminate()
            proc.wait(10)


@pytest.mark.skipif(
    not HAVE_PROMETHEUS and not os.environ.get("CI"),
    reason="promtool/prometheus not installed (apt-get install prometheus); required in CI",
)
def test_prometheus_answers_past_queries_with_the_backfilled_values(
    first_run: Run, prometheus: int
) -> None:
    assert first_run.blocks is not None
    text = first_run.openmetrics.read_text()
    written = sum(1 for line in text.splitlines() if not line.startswith("#"))
    assert tsdb_samples(first_run.blocks) == written  # promtool dropped nothing
    inside = [
        row
        for row in first_run.rows
        if row["store_id"] == "all"
        and row["dimension"] is None
        and row["value"] is not None
        and row["start"] >= rfc(T1)
        and row["end"] <= rfc(T2)
    ]
    checked = 0
    for kpi in ("sessions", "orders", "revenue", "conversion_rate", "first_response_seconds_p90"):
        for window in ("15m", "1h", "1d"):
            found = sorted((r for r in inside if (r["kpi"], r["window"]) == (kpi, window)),
                           key=lambda r: str(r["start"]))  # fmt: skip
            for row in found[:: max(1, len(found) // 3)][:3]:
                at_s = ms(datetime.fromisoformat(row["end"])) // 1000
                result = query(prometheus, selector(row), at_s)
                assert len(result) == 1, (row, result)
                assert float(result[0]["value"][1]) == pytest.approx(row["value"], rel=1e-12)
                checked += 1
    assert checked >= 20
    # the same series an hour after T2: no sample within the look-back, nothing invented
    last = max(inside, key=lambda r: str(r["end"]))
    assert query(prometheus, selector(last), ms(T2) // 1000 + 3600) == []


# --- beside a live worker ------------------------------------------------------------------------


async def snapshot(url: str, namespace: str) -> dict[bytes, bytes]:
    """Every key of a namespace and its value (DUMP), except the partitions' status, which
    carries the wall clock of the worker's last tick."""
    client = aioredis.Redis.from_url(url)
    try:
        keys = sorted(
            [k async for k in client.scan_iter(match=f"{namespace}:*", count=2000)
             if k != f"{namespace}:status".encode()]
        )  # fmt: skip
        values: dict[bytes, bytes] = {}
        for chunk in range(0, len(keys), 2000):
            pipe = client.pipeline(transaction=False)
            for key in keys[chunk : chunk + 2000]:
                pipe.dump(key)
            values.update(zip(keys[chunk : chunk + 2000], await pipe.execute(), strict=True))
        return values
    finally:
        await client.aclose()


async def group_and_ends(
    topics: Topics,
) -> tuple[dict[TopicPart, int | None], dict[TopicPart, int]]:
    parts = [(t, p) for t in [*topics.names.values(), f"{topics.namespace}.dlq"] for p in range(4)]
    bootstrap = topics.stack.bootstrap_servers
    async with broker.OffsetReader(bootstrap, group=f"{topics.namespace}-worker") as reader:
        return await reader.committed(parts), await reader.highwaters(parts)


def test_backfill_beside_a_live_worker_changes_nothing_live(
    topics: Topics, first_run: Run, tmp_path: Path
) -> None:
    env = topics.env | {"STREAMPROC_IDLE_TIMEOUT_SECONDS": "1", "STREAMPROC_WORKER_PORT": "0"}
    url = topics.stack.redis_url
    with StreamprocProcess(["worker"], env, tmp_path / "live.log") as live:
        deadline = time.monotonic() + 150
        while True:  # the live worker has read every input record and closed everything
            positions, ends = asyncio.run(group_and_ends(topics))
            statuses = asyncio.run(partition_statuses(url, topics.namespace))
            read = all(positions[tp] == ends[tp] for tp in ends if not tp[0].endswith(".dlq"))
            idle = len(statuses) == 4 and all(
                int(s["watermark"]) > ms(TODAY) for s in statuses.values()
            )
            if read and idle:
                break
            assert time.monotonic() < deadline, live.log[-3000:]
            time.sleep(1)
        before = asyncio.run(snapshot(url, topics.namespace))
        while True:  # settled: the plan after the last one may still publish (evictions)
            time.sleep(3)
            now = asyncio.run(snapshot(url, topics.namespace))
            if now == before:
                break
            assert time.monotonic() < deadline, "the live namespace keeps changing"
            before = now
        name = f"{topics.namespace}-bf3"
        since, until = T1 + timedelta(hours=6), T1 + timedelta(hours=12)
        args = backfill_args(name, tmp_path, "--since", rfc(since), "--until", rfc(until))
        done = subprocess.run(args, env=topics.env, capture_output=True, text=True, timeout=240)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert json.loads((tmp_path / f"{name}.json").read_text())  # it did compute something
        after = asyncio.run(snapshot(url, topics.namespace))
        assert after.keys() == before.keys()
        assert after == before
        assert asyncio.run(group_and_ends(topics)) == (positions, ends)  # live offsets, live DLQ
        assert "Traceback" not in live.log


def test_resuming_a_complete_backfill_rewrites_its_outputs_for_other_windows_and_stores(
    topics: Topics, first_run: Run, tmp_path: Path
) -> None:
    args = backfill_args(
        first_run.name, tmp_path, "--resume", "--window", "1h", "--store", "store-01"
    )
    with Backfill(args, topics.env, tmp_path / "again") as again:
        again.wait(120)
    assert again.returncode == 0, again.output
    rows = json.loads((tmp_path / f"{first_run.name}.json").read_text())
    wanted = [
        r
        for r in first_run.rows
        if r["window"] in ("1h", "now") and r["store_id"] == "store-01"  # now: open_tickets
    ]
    assert rows and sorted(rows, key=canonical) == sorted(wanted, key=canonical)
    assert "worker logs" not in (tmp_path / "again.out").read_text()  # nothing left to read


def test_a_topic_subset_reads_only_those_topics(topics: Topics, tmp_path: Path) -> None:
    name = f"{topics.namespace}-bf4"
    orders = topics.names["orders"]
    args = backfill_args(
        name,
        tmp_path,
        "--since",
        rfc(T1),
        "--until",
        rfc(T2),
        "--topic",
        "orders",
        "--workers",
        "2",
    )
    with Backfill(args, topics.env, tmp_path / "orders") as proc:
        proc.wait(240)
    assert proc.returncode == 0, proc.output
    plan = asyncio.run(stored_plan(topics.stack.redis_url, name))
    assert plan is not None and plan.read == (orders,)
    starts, ends = topics.expected_offsets(T1), topics.expected_offsets(T2)
    for tp in plan.starts:
        if tp[0] == orders:
            assert (plan.starts[tp], plan.ends[tp]) == (starts[tp], ends[tp])
        else:
            assert plan.starts[tp] == plan.ends[tp]  # an empty range at the end of the topic
    # the reference over the orders records of the range only
    lines = topics.restricted(
        {tp: o if tp[0] == orders else 0 for tp, o in starts.items()},
        {tp: o if tp[0] == orders else 0 for tp, o in ends.items()},
    )
    rows = json.loads((tmp_path / f"{name}.json").read_text())
    assert {r["kpi"] for r in rows} >= {"orders", "revenue", "net_revenue"}
    # sessions, page views, carts: 0 where the stores had orders events (zero is a value)
    assert all(r["value"] == 0 for r in rows if r["kpi"] in ("sessions", "page_views"))
    agree(rows, lines)
