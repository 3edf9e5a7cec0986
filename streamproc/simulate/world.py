"""The state one run shares: its random generator, ids, clock helpers, catalog and emitter."""

from __future__ import annotations

import hashlib
import itertools
import random
from typing import Any

from streamproc.events.models import Family
from streamproc.simulate.catalog import Catalog
from streamproc.simulate.config import SimConfig, TimeRange
from streamproc.simulate.emitter import Emitter
from streamproc.simulate.timeline import Rfc3339, Spans
from streamproc.times import epoch_ms

# Far beyond any run (year ~2255): the end of an unbounded run.
FOREVER_MS = 9_000_000_000_000


def run_id(config: SimConfig) -> str:
    """8 hex digits that identify a config, so that two different runs never share an id."""
    return hashlib.blake2b(repr(config).encode(), digest_size=4).hexdigest()


class World:
    """Everything the traffic model reads and writes during one run."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        self.run_id = run_id(config)
        self.start_ms = epoch_ms(config.start)
        duration = config.duration_seconds
        self.end_ms = FOREVER_MS if duration is None else self.start_ms + round(duration * 1000)
        anomalies = config.anomalies
        self.gaps = Spans(anomalies.idle_gaps)
        self.abandonment_spikes = Spans(anomalies.abandonment_spikes)
        self.conversion_drops = Spans(anomalies.conversion_drops)
        self._outages = [
            (o.store_id, Spans([TimeRange(o.start, o.end)])) for o in anomalies.checkout_outages
        ]
        self.catalog = Catalog(self.rng, config)
        self.rfc3339 = Rfc3339()
        self._ids = itertools.count(1)
        self.emitter = Emitter(
            self.rng, anomalies, end_ms=self.end_ms, gaps=self.gaps, fresh_id=self.event_id
        )

    def checkout_down(self, store_id: str, t_ms: int) -> bool:
        """Whether the store's payments all fail at ``t_ms`` (an outage; draws nothing)."""
        return any(
            store in ("", store_id) and spans.contains(t_ms) for store, spans in self._outages
        )

    def event_id(self) -> str:
        """A fresh ``event_id``: the run id and a counter (unique within and across runs)."""
        return f"{self.run_id}-{next(self._ids)}"

    def new_id(self, prefix: str) -> str:
        """A fresh id for a visitor, session, order, ticket ...: ``o-<run>-<n>``."""
        return f"{prefix}-{self.run_id}-{next(self._ids)}"

    def web_event(self, t_ms: int, event_type: str, base: dict[str, str]) -> dict[str, Any]:
        """A tracker event (RFC 3339 time, like GA4/Snowplow exports) with the session fields."""
        event: dict[str, Any] = {
            "event_id": self.event_id(),
            "event_type": event_type,
            "event_time": self.rfc3339(t_ms),
        }
        event.update(base)
        return event

    def backend_event(self, t_ms: int, event_type: str, store_id: str) -> dict[str, Any]:
        """A shop-backend or helpdesk event (epoch-ms time, like webhooks often send)."""
        return {
            "event_id": self.event_id(),
            "event_type": event_type,
            "event_time": t_ms,
            "store_id": store_id,
        }

    def backend_time(self, t_ms: int) -> int:
        """Backend events due inside an idle gap wait until its end (a queue drains after)."""
        return self.gaps.skip(t_ms) if self.gaps else t_ms

    def emit(self, t_ms: int, family: Family, event: dict[str, Any]) -> bool:
        return self.emitter.emit(t_ms, family, event)
