"""``streamproc backfill``: the KPI history of a time range of the live input topics.

The records of ``[T1, T2)`` on every partition (``offsets``) are read by ordinary worker
processes under the backfill's own name (``plan``): its own consumer group, Redis namespace,
state changelog and dead-letter topic, so the live pipeline is untouched. Its workers start at the
offsets of T1 and hold every partition's watermark until it is read to the offset of T2, then
decide all windows, sessions and carts (``run``). The aligned windows become a KPI report and
OpenMetrics samples for ``promtool`` (``openmetrics``, ``promtool``).
"""

from streamproc.backfill.plan import Plan, parse_time
from streamproc.backfill.run import Backfill, PartitionProgress, Request, Summary
from streamproc.errors import BackfillError

__all__ = [
    "Backfill",
    "BackfillError",
    "PartitionProgress",
    "Plan",
    "Request",
    "Summary",
    "parse_time",
]
