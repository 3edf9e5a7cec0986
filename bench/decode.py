"""Decoder throughput: events/s of decode + validation + normalisation alone, on simulator output.

    python bench/decode.py [--events 300000] [--repeat 5]

Prints the streamproc decoder next to two baselines measured in the same run on the same bytes:
msgspec decoding to plain dicts (no validation) and the stdlib json module. The machine is shared
and noisy: compare the ratios, and take the best of --repeat runs.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import msgspec

from streamproc.events.models import Family
from streamproc.events.parse import EventDecoder
from streamproc.simulate import SimConfig, simulate


def sample(events: int) -> list[tuple[bytes, Family]]:
    start = datetime(2026, 11, 1, tzinfo=UTC)
    config = SimConfig(
        start=start,
        duration_seconds=timedelta(days=30).total_seconds(),
        sessions_per_minute=200,
        stores=5,
        currencies={"store-02": "EUR", "store-03": "GBP"},
    )
    records = []
    for record in simulate(config):
        records.append((record.value, record.family))
        if len(records) == events:
            break
    return records


def best_rate(run: Callable[[], None], count: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return count / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    records = sample(args.events)
    decoder = EventDecoder(fx_rates={"EUR": Decimal("1.08"), "GBP": Decimal("1.27")})
    now_ms = int(time.time() * 1000)
    raw_decode = msgspec.json.Decoder().decode

    def streamproc_decoder() -> None:
        decode = decoder.decode
        for value, family in records:
            decode(value, family, now_ms=now_ms)

    def msgspec_to_dict() -> None:
        for value, _ in records:
            raw_decode(value)

    def stdlib_json() -> None:
        loads = json.loads
        for value, _ in records:
            loads(value)

    size = sum(len(value) for value, _ in records) / len(records)
    print(f"{len(records):,} simulator events, {size:.0f} bytes on average, best of {args.repeat}")
    baseline = best_rate(msgspec_to_dict, len(records), args.repeat)
    for name, run in (
        ("streamproc EventDecoder (validate + normalise)", streamproc_decoder),
        ("msgspec -> dict, no validation (baseline)", msgspec_to_dict),
        ("stdlib json.loads, no validation", stdlib_json),
    ):
        rate = baseline if run is msgspec_to_dict else best_rate(run, len(records), args.repeat)
        print(f"  {name:50} {rate:>12,.0f} events/s  {rate / baseline:5.2f}x baseline")


if __name__ == "__main__":
    main()
