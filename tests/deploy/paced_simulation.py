"""The end-to-end test's traffic: the simulator, paced to a fast clock, into Kafka.

``streamproc simulate --no-live`` sends as fast as it can; the worker then reads a backlog and
the exporter's trailing windows jump ahead with the fastest topic. Here the records are released
the way ``--live`` releases them, but by a clock that runs ``--speed`` times faster than the wall
clock from ``--wall-start``, so every topic stays current and event time advances steadily.

During the spike, one store's checkout breaks (``--outage``): its orders stop, its sessions go
on, for the orders-stalled alert.

The scenario (SCENARIO below) is chosen so that the cart-abandonment spike clearly stands out.
With the simulator's default funnel 66 % of carts are abandoned, so even a total spike reaches
only 1.5x that (100 %), and a factor of 4 about 1.4x. Here 80 % of carts reach checkout and
90 % of checkouts order: about 28 % are abandoned in the end, about 40 % in a live 15-minute
window (its newest carts have not ordered yet), and the spike (checkout 4x less likely) takes
the live ratio to 85-95 % (measured), more than 2x and about 6-9 standard deviations.

Run by the test as ``python paced_simulation.py --start ... --wall-start ... --speed ...``; the
Kafka settings come from the STREAMPROC_* environment.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from datetime import datetime, timedelta
from typing import Any

from streamproc import broker
from streamproc.cli.common import ensure_topics
from streamproc.config import load_settings
from streamproc.pacing import paced
from streamproc.simulate import Anomalies, Outage, SimConfig, TimeRange, simulate
from streamproc.simulate.behaviour import Funnel, Support, Visits

SCENARIO: dict[str, Any] = {
    "sessions_per_minute": 10.0,
    "diurnal_amplitude": 0.0,  # a flat day: the 2 h baseline is not a slope
    "stores": 3,
    "seed": 4,
    # few events per cart, so that a loaded worker keeps up: no page pings (a third of all
    # events, none used by a KPI), short visits, most sessions shop
    "visits": Visits(ping_interval_seconds=0.0, mean_pageviews=2.0, p_bounce=0.2),
    "funnel": Funnel(p_add_to_cart=0.6, p_checkout=0.8, p_order=0.9),
    # enough tickets and surveys for every customer-service panel within a few hours
    "support": Support(tickets_per_session=0.05, p_survey=0.9),
}
SPIKE_FACTOR = 4.0


def config(
    start: datetime,
    *,
    minutes: int,
    spike: tuple[int, int] | None,
    outage: tuple[int, int, str] | None = None,
) -> SimConfig:
    spikes: tuple[TimeRange, ...] = ()
    if spike is not None:
        begin, end = (start + timedelta(minutes=m) for m in spike)
        spikes = (TimeRange(begin, end, SPIKE_FACTOR),)
    outages: tuple[Outage, ...] = ()
    if outage is not None:
        begin, end = (start + timedelta(minutes=m) for m in outage[:2])
        outages = (Outage(begin, end, outage[2]),)
    anomalies = Anomalies(
        abandonment_spikes=spikes,
        checkout_outages=outages,
        duplicate_share=0.005,
        malformed_share=0.002,
    )
    return SimConfig(start=start, duration_seconds=minutes * 60, anomalies=anomalies, **SCENARIO)


async def produce(sim: SimConfig, *, wall_start: float, speed: float) -> None:
    settings = load_settings(env_file=None)
    assert settings.bootstrap_servers is not None, "STREAMPROC_BOOTSTRAP_SERVERS is required"
    origin = sim.start.timestamp()

    def clock() -> float:
        return origin + (time.time() - wall_start) * speed

    # The topics exist and fill before the worker starts: a worker that starts on empty
    # partitions finds them idle and moves its watermark to the wall clock, and this traffic,
    # hours old, would then be too late.
    await ensure_topics(settings, settings.bootstrap_servers)
    sys.stdout.write(f"producing from {sim.start.isoformat()}\n")
    sys.stdout.flush()
    async with broker.Producer(settings.bootstrap_servers) as producer:
        records = paced(simulate(sim), clock=clock, speed=speed)
        await broker.publish(records, producer, settings.topics_by_family)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--start", required=True, help="event time of the start, RFC 3339")
    parser.add_argument("--wall-start", type=float, required=True, help="epoch seconds")
    parser.add_argument("--speed", type=float, required=True, help="event seconds per second")
    parser.add_argument("--minutes", type=int, required=True, help="event minutes to send")
    parser.add_argument("--spike", help="abandonment spike, minutes from the start: 210..270")
    parser.add_argument("--outage", help="a store's checkout outage: 215..265@store-01")
    args = parser.parse_args()
    spike = outage = None
    if args.spike:
        begin, end = args.spike.split("..")
        spike = (int(begin), int(end))
    if args.outage:
        span, store = args.outage.split("@")
        begin, end = span.split("..")
        outage = (int(begin), int(end), store)
    start = datetime.fromisoformat(args.start)
    sim = config(start, minutes=args.minutes, spike=spike, outage=outage)
    asyncio.run(produce(sim, wall_start=args.wall_start, speed=args.speed))


if __name__ == "__main__":
    main()
