"""Synthetic shop traffic: a pure, seeded generator of Kafka records for the four input topics.

``simulate(config)`` lazily yields :class:`SimRecord` s in arrival order; ``write_jsonl`` turns
them into an events file. No Kafka, network, files or wall clock here: the CLI paces and sends.

The model, briefly:

* **Sessions** arrive as a Poisson process (``sessions_per_minute``, optional day/night swing)
  over stores with Zipf-skewed traffic. A visitor is new or returning (same ``visitor_id``,
  growing ``session_index``, same device); a session starts with ``session_start`` (channel,
  referrer/UTM, country) and then either bounces (one page view), browses (page views with
  log-normal dwell times, ``page_ping`` heart-beats, product views with prices) or shops.
* **Shopping** sessions add products to a cart, sometimes remove one, reach checkout
  (``p_checkout``) and order (``p_order``), with payment failures and retries on the way. Orders
  itemise quantities and prices consistently with ``total_minor`` (discount, shipping, tax) in
  the store's currency; customers get ``customer_order_index``; some orders omit ``cart_id``;
  phone orders have no session. Some orders are cancelled or refunded minutes to hours later.
* **Support tickets** open at ``tickets_per_session``; the customer writes, a bot may answer, an
  agent answers after a priority-dependent log-normal delay, some tickets escalate, resolution
  comes hours later, some reopen; CSAT/NPS surveys follow resolutions (and some orders).
* **Anomalies** (off by default): abandonment spikes, conversion drops, idle gaps, duplicates,
  out-of-order/late/too-late delays, and junk messages covering every bad-input reason code.

Determinism: one ``random.Random(seed)`` per run and insertion-ordered tables only; ids are the
run id (a digest of the config, seed included) plus a counter: runs of different configs never
share ids, while the same config reproduces the same ids.
"""

from streamproc.simulate.behaviour import Funnel, Support, Visits
from streamproc.simulate.catalog import fx_rates
from streamproc.simulate.config import REPORTING_CURRENCY, Anomalies, Outage, SimConfig, TimeRange
from streamproc.simulate.malformed import BAD_INPUT_REASONS
from streamproc.simulate.output import SimStats, write_jsonl
from streamproc.simulate.record import Kind, SimRecord
from streamproc.simulate.traffic import simulate

__all__ = [
    "BAD_INPUT_REASONS",
    "REPORTING_CURRENCY",
    "Anomalies",
    "Funnel",
    "Kind",
    "Outage",
    "SimConfig",
    "SimRecord",
    "SimStats",
    "Support",
    "TimeRange",
    "Visits",
    "fx_rates",
    "simulate",
    "write_jsonl",
]
