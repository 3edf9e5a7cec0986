"""``streamproc replay FILE --report OUT.json``: an events file through the real pipeline."""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Annotated

import typer
from rich.progress import Progress, TaskID

from streamproc import devstack, replay
from streamproc.cli.common import DEFAULT_BOOTSTRAP, app, endpoints, err, out, progress, settings
from streamproc.config import TOPIC_FIELDS, Settings
from streamproc.connection import KafkaConnection
from streamproc.errors import ReplayError
from streamproc.store import KpiStore
from streamproc.times import parse_duration_seconds


@app.command("replay")
def replay_command(
    path: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="Events file.")
    ],
    report: Annotated[Path, typer.Option("--report", "-r", help="Where to write the KPI report.")],
    workers: Annotated[int, typer.Option(help="Worker processes sharing the partitions.")] = 1,
    window: Annotated[
        list[str] | None, typer.Option(help="Window sizes to report (default: STREAMPROC_WINDOWS).")
    ] = None,
    timeout: Annotated[str, typer.Option(help="Give up after this long.")] = "30m",
    keep: Annotated[bool, typer.Option(help="Keep the replay's topics' data in Redis.")] = False,
) -> None:
    """Run an events file through the pipeline (fresh topics, own namespace) to a final report."""
    loaded = settings()
    sizes = [parse_duration_seconds(w) * 1000 for w in (window or loaded.windows)]
    with _broker(loaded) as (kafka, redis_url):
        run = replay.replay_settings(loaded).model_copy(
            update={"bootstrap_servers": kafka.servers, "redis_url": redis_url}
        )
        env = run.env(*TOPIC_FIELDS, "bootstrap_servers", "redis_url")
        job = _Job(
            path=path,
            size=path.stat().st_size,
            settings=run,
            env=env,
            kafka=kafka,
            redis_url=redis_url,
            workers=workers,
            sizes_ms=sizes,
            keep=keep,
            timeout_s=parse_duration_seconds(timeout),
        )
        rows, summary = asyncio.run(_replay(job))
    report.write_text(json.dumps(rows, indent=1) + "\n")
    out.print(f"{summary}; {len(rows):,} report rows in {report}", highlight=False)


class _broker:
    """The configured broker and Redis, else the running dev stack, else a temporary one."""

    def __init__(self, loaded: Settings) -> None:
        self.loaded = loaded
        self.temporary: devstack.DevStack | None = None

    def __enter__(self) -> tuple[KafkaConnection, str]:
        where = endpoints(self.loaded)
        if self.loaded.bootstrap_servers or where.bootstrap_servers != DEFAULT_BOOTSTRAP:
            return where.kafka, where.redis_url
        err.print("no broker configured and no dev stack running: starting a temporary one")
        state = Path(tempfile.mkdtemp(prefix="streamproc-replay-"))
        self.temporary = devstack.DevStack(
            state,
            redis_url=self.loaded.redis_url,
            redis_auth=devstack.RedisAuth.from_settings(self.loaded),
        )
        info = self.temporary.up()
        return KafkaConnection(info.bootstrap_servers), info.redis_url

    def __exit__(self, *exc_info: object) -> None:
        if self.temporary is not None:
            self.temporary.down()


@dataclass(frozen=True)
class _Job:
    path: Path
    size: int
    settings: Settings
    env: dict[str, str]
    kafka: KafkaConnection
    redis_url: str
    workers: int
    sizes_ms: list[int]
    keep: bool
    timeout_s: float


def _tracked(lines: IO[bytes], bar: Progress, task: TaskID) -> Iterator[bytes]:
    """The lines of a file, moving a progress bar as they are read."""
    for number, line in enumerate(lines):
        if number % 20_000 == 0:
            bar.update(task, completed=lines.tell())
        yield line
    bar.update(task, completed=lines.tell())


async def _replay(job: _Job) -> tuple[list[dict[str, object]], str]:
    run = job.settings
    started = time.monotonic()
    store = KpiStore.for_settings(run, job.redis_url)
    try:
        # The workers start (join the group, set up their state) while the file is read for
        # the ends of its partitions and then sent: they process what has arrived meanwhile.
        partitions_of = await replay.create_topics(run, kafka=job.kafka)
        await store.expect_end_offsets()
        log_dir = Path(tempfile.mkdtemp(prefix=f"{run.namespace}-logs-"))
        with replay.Workers(job.env, job.workers, log_dir) as procs:
            with progress() as bar, job.path.open("rb") as lines:
                task = bar.add_task("routing", total=job.size, events=0, rate=0.0)
                planned = replay.planned_ends(_tracked(lines, bar, task), run, partitions_of)
                await store.set_end_offsets(planned)
                lines.seek(0)
                task = bar.add_task("producing", total=job.size, events=0, rate=0.0)

                def sent(count: int) -> None:
                    rate = count / max(time.monotonic() - started, 1e-9)
                    bar.update(task, completed=lines.tell(), events=count, rate=rate)
                    procs.check()

                produced, unroutable, ends = await replay.produce(
                    lines, run, kafka=job.kafka, on_sent=sent
                )
                bar.update(task, completed=job.size, events=produced)
            if ends != planned:
                raise ReplayError(
                    "the topics did not end where the file said they would: were they written "
                    "to by something else meanwhile?"
                )
            partitions = len({p for _, p in ends})
            with progress() as bar:
                task = bar.add_task("processing", total=partitions, events=produced, rate=0.0)
                await replay.wait_until_done(
                    store,
                    partitions,
                    timeout_s=job.timeout_s,
                    on_progress=lambda done, _: bar.update(task, completed=done),
                    check=procs.check,
                )
            rows = await replay.report(store, run, job.sizes_ms)
        elapsed = time.monotonic() - started
        skipped = f", {len(unroutable):,} unroutable lines skipped" if unroutable else ""
        rate = produced / elapsed
        summary = (
            f"replayed {produced:,} messages over {partitions} partitions with {job.workers} "
            f"worker(s) in {elapsed:.1f} s ({rate:,.0f}/s){skipped}; logs in {log_dir}"
        )
        return rows, summary
    finally:
        if not job.keep:
            await store.drop()
        await store.aclose()
