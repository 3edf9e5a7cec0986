"""The run loop: Poisson session arrivals drive everything; records come out by arrival time.

Each new session is generated whole when it starts (its events lie in the future), together with
any ticket or phone order started at that moment; the emitter holds them in a queue ordered by
arrival time and releases those due before the next session starts. Memory is bounded by what is
still in the future (sessions in flight, open tickets, pending refunds), so runs can be unbounded.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

from streamproc.simulate.config import SimConfig
from streamproc.simulate.orders import place_offline_order
from streamproc.simulate.record import SimRecord
from streamproc.simulate.sampling import between_ms, geometric
from streamproc.simulate.shopping import shop
from streamproc.simulate.tickets import open_ticket
from streamproc.simulate.timeline import DAY_MS, HOUR_MS, MINUTE_MS
from streamproc.simulate.visits import LANDING_PAGES, NEXT_PAGES, Visitors, open_session, view_page
from streamproc.simulate.world import World

PEAK_HOUR_UTC = 20


def simulate(config: SimConfig) -> Iterator[SimRecord]:
    """Generate the run's records lazily, in non-decreasing ``arrival_ms`` order.

    Deterministic: the same config (seed included) gives the same records. Nothing here reads
    the wall clock or does I/O; pacing and sending are the caller's business.
    """
    world = World(config)
    return _records(world, Visitors(config.visits))


def _records(world: World, visitors: Visitors) -> Iterator[SimRecord]:
    emitter = world.emitter
    t_ms = world.start_ms
    while True:
        t_ms = _next_arrival(world, t_ms)
        if t_ms >= world.end_ms:
            break
        yield from emitter.pop_until(t_ms)
        _start_session(world, visitors, t_ms)
    yield from emitter.pop_until(world.end_ms)


def _next_arrival(world: World, t_ms: int) -> int:
    """The next session start: exponential gap at the (diurnal) rate; idle gaps are skipped."""
    config = world.config
    hour = (t_ms % DAY_MS) / HOUR_MS
    swing = config.diurnal_amplitude * math.cos(2 * math.pi * (hour - PEAK_HOUR_UTC) / 24)
    per_ms = config.sessions_per_minute * (1 + swing) / MINUTE_MS
    gap = world.rng.expovariate(per_ms) if per_ms > 0 else float(HOUR_MS)
    return world.backend_time(t_ms + 1 + int(min(gap, DAY_MS)))


def _start_session(world: World, visitors: Visitors, t_ms: int) -> None:
    """One web session, and maybe a ticket and a phone order started at the same moment."""
    rng = world.rng
    config = world.config
    session = open_session(world, visitors, t_ms)
    t_page = t_ms + rng.randrange(20, 500)
    p_cart = config.funnel.p_add_to_cart
    draw = rng.random()
    if draw < p_cart / world.conversion_drops.factor(t_ms):
        shop(world, session, t_page)
    elif p_cart <= draw < p_cart + config.visits.p_bounce:
        view_page(world, session, t_page, LANDING_PAGES(rng))
    else:
        t_page = view_page(world, session, t_page, LANDING_PAGES(rng))
        for _ in range(1 + geometric(rng, config.visits.mean_pageviews - 2)):
            t_page = view_page(world, session, t_page, NEXT_PAGES(rng))
    if rng.random() < config.support.tickets_per_session:
        open_ticket(world, visitors, t_ms + between_ms(rng, 0, 30))
    if rng.random() < config.funnel.offline_orders_per_session:
        place_offline_order(world, visitors, t_ms + between_ms(rng, 0, 30))
