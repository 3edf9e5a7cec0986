"""The Faust floor of ``bench/throughput.py``: a plain agent that only counts events.

    BENCH_BOOTSTRAP=127.0.0.1:9092 BENCH_TOPICS=a,b BENCH_TOTAL=200000 BENCH_OUT=out.json \\
        python bench/faust_counter.py -L uvloop worker -l info

One agent (``concurrency=1``, like the streamproc agents) iterates one stream over all the
``BENCH_TOPICS`` with ``async for event in stream`` and counts; values stay raw bytes and are
JSON-decoded in the agent (msgspec, as the raw-consumer row does), so a malformed message counts
like any other. Same runtime as the streamproc worker: uvloop (``-L uvloop``, a root option of
Faust's command line), ``memory://`` store, the short group timeouts the embedded broker needs.

The agent itself records when its first and last event arrived (wall clock) and its own CPU time
at both, and writes them to ``BENCH_OUT`` as JSON once it has counted ``BENCH_TOTAL`` events
(``"done": true``); a 1-second timer writes the progress before that, so a stuck run says how far
it got. Config comes from the environment because Faust owns the command line.
"""

from __future__ import annotations

import json
import os
import resource
import time
from pathlib import Path

import faust
import msgspec

BOOTSTRAP = os.environ["BENCH_BOOTSTRAP"]
TOPICS = os.environ["BENCH_TOPICS"].split(",")
TOTAL = int(os.environ["BENCH_TOTAL"])
OUT = Path(os.environ["BENCH_OUT"])

app = faust.App(
    os.environ.get("BENCH_APP_ID", "bench-faust-counter"),
    broker=f"kafka://{BOOTSTRAP}",
    store="memory://",
    autodiscover=False,
    web_enabled=False,
    topic_partitions=int(os.environ.get("BENCH_PARTITIONS", "8")),
    consumer_auto_offset_reset="earliest",
    broker_session_timeout=6,
    broker_rebalance_timeout=5,
    broker_heartbeat_interval=1,
    worker_redirect_stdouts=False,
)
source = app.topic(*TOPICS, key_type=bytes, value_type=bytes, value_serializer="raw")

state: dict[str, float | int | bool | None] = {
    "count": 0,
    "undecodable": 0,
    "first_event_at": None,
    "last_event_at": None,
    "cpu_at_first_s": None,
    "cpu_at_last_s": None,
    "done": False,
}


def _write() -> None:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    body = {**state, "total": TOTAL, "max_rss_bytes": usage.ru_maxrss * 1024, "pid": os.getpid()}
    tmp = OUT.with_name(OUT.name + ".tmp")
    tmp.write_text(json.dumps(body), encoding="utf-8")
    tmp.replace(OUT)


@app.agent(source, concurrency=1)
async def count(stream: faust.StreamT[bytes]) -> None:
    decode = msgspec.json.decode
    n = bad = 0
    async for value in stream:
        if n == 0:
            state["first_event_at"] = time.time()
            state["cpu_at_first_s"] = time.process_time()
        try:
            decode(value)
        except msgspec.DecodeError:
            bad += 1
        n += 1
        if n == TOTAL:
            state.update(
                count=n,
                undecodable=bad,
                last_event_at=time.time(),
                cpu_at_last_s=time.process_time(),
                done=True,
            )
            _write()
        elif n % 1000 == 0:
            state.update(count=n, undecodable=bad)


@app.timer(1.0)
async def progress() -> None:
    if not state["done"]:
        _write()


if __name__ == "__main__":
    app.main()
