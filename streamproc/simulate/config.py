"""What a simulation run produces: a frozen, validated :class:`SimConfig`.

The model knobs are grouped by what they shape (``behaviour.py``): :class:`Visits` (who comes
and how they browse), :class:`Funnel` (carts, checkouts, orders, refunds), :class:`Support`
(tickets and surveys); :class:`Anomalies` here is everything a KPI pipeline must survive. Every
value is checked when the object is built, so a bad option fails with a ``ValueError`` naming
it, before any record exists.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType

from streamproc.simulate.behaviour import Funnel, Support, Visits
from streamproc.simulate.checks import (
    check,
    check_aware,
    check_int,
    check_non_negative,
    check_positive,
    check_probability,
    freeze,
)

REPORTING_CURRENCY = "USD"


@dataclass(frozen=True)
class TimeRange:
    """A half-open span of time ``[start, end)`` with a strength.

    Attributes:
        start: tz-aware start (inclusive).
        end: tz-aware end (exclusive), after ``start``.
        factor: how strong an abandonment spike or a conversion drop is (a probability is
            divided by it, see :class:`Anomalies`); ignored for idle gaps.
    """

    start: datetime
    end: datetime
    factor: float = 3.0

    def __post_init__(self) -> None:
        check_aware("TimeRange.start", self.start)
        check_aware("TimeRange.end", self.end)
        check(self.end > self.start, "TimeRange.end", f"after start {self.start}", self.end)
        check_positive("TimeRange.factor", self.factor)


@dataclass(frozen=True)
class Outage:
    """A broken checkout: from ``start`` (inclusive) to ``end`` (exclusive) every payment of the
    store ``store_id`` (every store when empty) fails, so no order is placed (web, phone or
    marketplace) while sessions, carts and checkouts go on."""

    start: datetime
    end: datetime
    store_id: str = ""

    def __post_init__(self) -> None:
        check_aware("Outage.start", self.start)
        check_aware("Outage.end", self.end)
        check(self.end > self.start, "Outage.end", f"after start {self.start}", self.end)


@dataclass(frozen=True)
class Anomalies:
    """Trouble to inject. All off by default: a clean stream unless asked for.

    Each ``*_share`` is the expected fraction of *all* records of that kind.

    Attributes:
        abandonment_spikes: carts created in a range reach checkout ``factor`` times less often.
        conversion_drops: sessions starting in a range create a cart ``factor`` times less often.
        checkout_outages: checkouts in a range end without an order (:class:`Outage`).
        idle_gaps: no record at all (by event time and by arrival time) in a range: sessions
            end at its start, backend events (refunds, tickets) wait until its end.
        duplicate_share: an event re-sent unchanged 0.1-10 s after the original.
        out_of_order_share: events arriving 1-90 s after their event time (within the
            default 2-minute allowed lateness).
        late_share: events arriving 5-30 minutes late (late, within the 1-hour max lateness).
        too_late_share: events arriving 2-3 hours late (dead-lettered as ``too_late``).
        malformed_share: extra messages that break the contract, one decoder reason each,
            evenly spread over every bad-input reason.
    """

    abandonment_spikes: tuple[TimeRange, ...] = ()
    conversion_drops: tuple[TimeRange, ...] = ()
    checkout_outages: tuple[Outage, ...] = ()
    idle_gaps: tuple[TimeRange, ...] = ()
    duplicate_share: float = 0.0
    out_of_order_share: float = 0.0
    late_share: float = 0.0
    too_late_share: float = 0.0
    malformed_share: float = 0.0

    def __post_init__(self) -> None:
        for name in ("abandonment_spikes", "conversion_drops", "idle_gaps"):
            ranges = getattr(self, name)
            ok = isinstance(ranges, tuple) and all(isinstance(r, TimeRange) for r in ranges)
            check(ok, name, "a tuple of TimeRange", ranges)
        outages = self.checkout_outages
        ok = isinstance(outages, tuple) and all(isinstance(o, Outage) for o in outages)
        check(ok, "checkout_outages", "a tuple of Outage", outages)
        shares = [getattr(self, name) for name in _SHARES]
        for name, share in zip(_SHARES, shares, strict=True):
            check_probability(name, share)
        check(sum(shares) < 1, "the sum of the *_share values", "< 1", sum(shares))


_SHARES = (
    "duplicate_share",
    "out_of_order_share",
    "late_share",
    "too_late_share",
    "malformed_share",
)
_CURRENCY = re.compile(r"^[A-Z]{3}$")


def store_ids(stores: int) -> list[str]:
    """``store-01`` ... (zero-padded to at least two digits)."""
    width = max(2, len(str(stores)))
    return [f"store-{number:0{width}d}" for number in range(1, stores + 1)]


@dataclass(frozen=True)
class SimConfig:
    """One simulation run. Same config (seed included) -> byte-identical output.

    Attributes:
        start: tz-aware event time of the beginning of the run.
        duration_seconds: length of the run in arrival time (records arriving later are not
            produced); None = unbounded (the live demo).
        seed: seed of the run's one random generator; also part of every id.
        sessions_per_minute: mean rate of new web sessions (Poisson arrivals; the daily mean
            when ``diurnal_amplitude`` > 0).
        diurnal_amplitude: day/night swing of the rate, 0 (flat) to 1; the peak is 20:00 UTC.
        stores: number of stores ``store-01`` ...; traffic share ~ 1 / rank ** store_skew.
        store_skew: Zipf exponent of the traffic share of stores (0 = even).
        currencies: store_id -> ISO 4217 currency of its prices and orders; stores not listed
            use the reporting currency (USD).
        visits, funnel, support, anomalies: see those classes.
    """

    start: datetime
    duration_seconds: float | None
    seed: int = 0
    sessions_per_minute: float = 60.0
    diurnal_amplitude: float = 0.3
    stores: int = 3
    store_skew: float = 1.2
    currencies: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    visits: Visits = field(default_factory=Visits)
    funnel: Funnel = field(default_factory=Funnel)
    support: Support = field(default_factory=Support)
    anomalies: Anomalies = field(default_factory=Anomalies)

    def __post_init__(self) -> None:
        check_aware("start", self.start)
        if self.duration_seconds is not None:
            check_positive("duration_seconds", self.duration_seconds)
        check_int("seed", self.seed)
        check_positive("sessions_per_minute", self.sessions_per_minute)
        check_probability("diurnal_amplitude", self.diurnal_amplitude)
        check_int("stores", self.stores, low=1, high=999)
        check_non_negative("store_skew", self.store_skew)
        freeze(self, "currencies", _store_currencies(self.currencies, self.stores))
        for name, kind in PARTS:
            part = getattr(self, name)
            check(isinstance(part, kind), name, f"a {kind.__name__}", part)
        p_both = self.funnel.p_add_to_cart + self.visits.p_bounce
        check(p_both <= 1, "funnel.p_add_to_cart + visits.p_bounce", "<= 1", p_both)


PARTS = (("visits", Visits), ("funnel", Funnel), ("support", Support), ("anomalies", Anomalies))


def _store_currencies(currencies: Mapping[str, str], stores: int) -> Mapping[str, str]:
    known = store_ids(stores)
    for store, code in currencies.items():
        check(store in known, "currencies key", f"a store id {known[0]} ... {known[-1]}", store)
        ok = isinstance(code, str) and bool(_CURRENCY.match(code))
        check(ok, f"currencies[{store!r}]", "an ISO 4217 code like EUR", code)
    return MappingProxyType(dict(currencies))
