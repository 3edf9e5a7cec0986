"""`streamproc replay` through the real pipeline (embedded broker, Faust workers, Redis) agrees
with the independent reference, with one worker, two workers, and workers killed at random."""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import signal
import subprocess
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from faults import PrivateRedis
from helpers import anomalous_traffic, until
from reference.common import ReferenceSettings
from reference.kpis import reference_report
from reference.report import compare_reports

from streamproc import replay
from streamproc.config import TOPIC_FIELDS, load_settings
from streamproc.store import KpiStore

pytestmark = pytest.mark.integration

REES46 = Path(__file__).resolve().parents[3] / "shared" / "data" / "rees46-2019-10-01-head.jsonl"
WINDOWS = ("15m", "1h", "1d")
REFERENCE = ReferenceSettings(fx_rates={"EUR": Decimal("1.08")}, window_sizes_s=(900, 3600, 86400))
START = datetime(2026, 11, 3, 9, 0, tzinfo=UTC)


def sim_file(path: Path, *, minutes: int, seed: int, rate: float) -> list[bytes]:
    """A simulated stretch with every anomaly, three stores and two currencies, written to
    ``path``."""
    lines = anomalous_traffic(start=START, minutes=minutes, seed=seed, rate=rate)
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return lines


def env_for(stack: Any, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "STREAMPROC_BOOTSTRAP_SERVERS": stack.bootstrap_servers,
        "STREAMPROC_REDIS_URL": stack.redis_url,
        "STREAMPROC_PARTITIONS": "4",
        "STREAMPROC_FX_RATES": "EUR=1.08",
    }
    env.update(extra)
    return env


def run_replay(path: Path, out: Path, stack: Any, *, workers: int = 1) -> list[dict[str, Any]]:
    windows = [arg for w in WINDOWS for arg in ("--window", w)]
    command = [sys.executable, "-m", "streamproc", "replay", str(path), "--report", str(out)]
    done = subprocess.run(
        [*command, "--workers", str(workers), "--timeout", "4m", *windows],
        env=env_for(stack),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return list(json.loads(out.read_text()))


# Unique visitors: the bound, 2 % per value, and no absolute slack. Counts up to the
# exact-set limits (every window of these files) are exact; test_store_visitors covers the
# HyperLogLog beyond them.
VISITORS_TOLERANCE = 0.02
VISITORS_SLACK = 0


def agree(engine: list[dict[str, Any]], lines: list[bytes], logs: Path | None = None) -> None:
    """The engine's report is the reference's; a disagreement says what the workers whose logs
    are under ``logs`` went through (``worker_story``)."""
    differences = compare_reports(
        engine,
        reference_report(lines, REFERENCE),
        visitors_rel_tol=VISITORS_TOLERANCE,
        visitors_abs_tol=VISITORS_SLACK,
    )
    story = [worker_story(logs)] if differences and logs is not None else []
    assert not differences, "\n".join(differences + story)


# What a worker log says about ownership and verdicts: enough to tell a lost partition, a
# rebalance at the wrong moment or events judged too late apart, when a report disagrees.
_STORY = re.compile(
    r"\[(WARNING|ERROR|CRITICAL)\]|assigned|revoked|rebalanc|state loaded|dropped|judged|"
    r"too_late|heartbeat|every value is final|Signal received",
    re.IGNORECASE,
)


def worker_story(logs: Path, per_log: int = 80) -> str:
    """The lines of each worker log under ``logs`` that ``_STORY`` picks, the last
    ``per_log`` of each."""
    parts = []
    for path in sorted(logs.glob("*.log")):
        picked = [
            line for line in path.read_text(errors="replace").splitlines() if _STORY.search(line)
        ]
        parts.append(
            f"--- {path.name} ({len(picked)} lines picked)\n" + "\n".join(picked[-per_log:])
        )
    return "\n".join(parts)


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[bytes]]:
    path = tmp_path_factory.mktemp("replay") / "events.jsonl"
    return path, sim_file(path, minutes=150, seed=21, rate=20)


def test_replay_of_simulated_traffic_matches_the_reference(
    simulated: tuple[Path, list[bytes]], stack: Any, tmp_path: Path
) -> None:
    path, lines = simulated
    agree(run_replay(path, tmp_path / "report.json", stack), lines)


def test_two_workers_sharing_the_partitions(
    simulated: tuple[Path, list[bytes]], stack: Any, tmp_path: Path
) -> None:
    path, lines = simulated
    agree(run_replay(path, tmp_path / "report.json", stack, workers=2), lines)


@pytest.mark.skipif(not REES46.exists(), reason=f"real-data sample not found at {REES46}")
def test_replay_of_real_traffic(stack: Any, tmp_path: Path) -> None:
    rows = run_replay(REES46, tmp_path / "report.json", stack)
    agree(rows, REES46.read_bytes().splitlines())


@pytest.mark.parametrize(
    ("workers", "static"), [(1, False), (2, False), (1, True)], ids=["one", "two", "one-static"]
)
async def test_workers_killed_at_random_and_restarted(
    simulated: tuple[Path, list[bytes]], stack: Any, tmp_path: Path, workers: int, static: bool
) -> None:
    """SIGKILL at random moments (several times), restart: the same final report. With one worker
    the restarted one shares the group with the killed one's membership until it expires, so it is
    revoked and assigned its partitions again on the way; with static membership
    (``STREAMPROC_GROUP_INSTANCE_ID``) it takes the killed one's place in the group at once."""
    path, lines = simulated
    settings = load_settings(env_file=None, partitions=4, fx_rates={"EUR": Decimal("1.08")})
    run = replay.replay_settings(settings)
    namespace, env = run.namespace, run.env(*TOPIC_FIELDS)
    env.update(env_for(stack), **env)
    if static:
        env["STREAMPROC_GROUP_INSTANCE_ID"] = "worker-0"
    store = KpiStore.connect(stack.redis_url, namespace)
    rng = random.Random(7)
    try:
        with path.open("rb") as file:
            _, _, ends = await replay.produce(
                file, run, kafka=stack.bootstrap_servers, on_sent=lambda _: None
            )
        await store.set_end_offsets(ends)
        with replay.Workers(env, workers, tmp_path / "logs") as running:
            for _ in range(4):
                await asyncio.sleep(rng.uniform(2.0, 9.0))
                victim, _ = rng.choice([p for p in running.procs if p[0].poll() is None])
                os.killpg(victim.pid, signal.SIGKILL)
                victim.wait()
                running.start(len(running.procs))
            await replay.wait_until_done(
                store, 4, timeout_s=240, on_progress=lambda *_: None, check=running.check
            )
            rows = await replay.report(store, run, [900_000, 3_600_000, 86_400_000])
        agree(rows, lines, tmp_path / "logs")  # failed once, under load: with the story
        if static:  # aiokafka names a static member after its instance id
            assert _logged(tmp_path / "logs", "with member_id worker-0-")
    finally:
        await store.drop()
        await store.aclose()


async def test_a_worker_stalled_past_its_session_writes_nothing_over_the_new_owner(
    simulated: tuple[Path, list[bytes]], stack: Any, tmp_path: Path
) -> None:
    """A worker stalls (SIGSTOP) with a batch in hand past its group session: its Redis is
    frozen first, so the batch is caught waiting on it. A second worker takes the partitions
    over and processes the rest of the input to its end. Then the first goes on (SIGCONT): it
    must not write its stale state over the new owner's, in Redis or in the changelog
    (``worker/membership.py``), and the report agrees with the reference."""
    _, lines = simulated
    settings = load_settings(env_file=None, partitions=4, fx_rates={"EUR": Decimal("1.08")})
    run = replay.replay_settings(settings)
    with PrivateRedis(tmp_path / "redis") as redis_server:
        env = run.env(*TOPIC_FIELDS)
        env.update(env_for(stack, STREAMPROC_REDIS_URL=redis_server.url), **env)
        store = KpiStore.connect(redis_server.url, run.namespace)
        half = len(lines) // 2
        ends: dict[tuple[str, int], int] = {}

        async def produce(part: list[bytes]) -> None:
            _, _, sent = await replay.produce(
                part, run, kafka=stack.bootstrap_servers, on_sent=lambda _: None
            )
            for tp, end in sent.items():
                ends[tp] = max(ends.get(tp, 0), end)

        try:
            await produce(lines[:half])
            with replay.Workers(env, 1, tmp_path / "logs") as running:
                stalled = running.procs[0].proc
                await until(
                    lambda: _logged(tmp_path / "logs", "state loaded") >= 4,
                    timeout_s=60,
                    poll_s=0.1,
                )
                await asyncio.sleep(2)  # the first half is processed
                redis_server.freeze()
                await produce(lines[half:])
                await asyncio.sleep(3)  # the worker waits on Redis with the second half's batch
                os.killpg(stalled.pid, signal.SIGSTOP)
                redis_server.thaw()
                await store.set_end_offsets(ends)
                running.start(1)  # takes the partitions once the stalled one's session ends
                await replay.wait_until_done(
                    store, 4, timeout_s=120, on_progress=lambda *_: None, check=running.check
                )
                os.killpg(stalled.pid, signal.SIGCONT)
                await until(
                    lambda: _logged(tmp_path / "logs", "not recognized") >= 1,
                    timeout_s=30,
                    poll_s=0.1,
                )
                await asyncio.sleep(5)  # what the woken worker does, it has done
                await replay.wait_until_done(
                    store, 4, timeout_s=120, on_progress=lambda *_: None, check=running.check
                )
                rows = await replay.report(store, run, [900_000, 3_600_000, 86_400_000])
            agree(rows, lines, tmp_path / "logs")
        finally:
            await store.aclose()


def _logged(logs: Path, text: str) -> int:
    return sum(p.read_text(errors="replace").count(text) for p in logs.glob("*.log"))
