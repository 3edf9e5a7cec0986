"""Redis: store labels, the published partials and sketches. The only package that
imports redis: ``client`` (the connection, redis-py's errors mapped to ours), ``scripts`` (Lua),
``contracts`` (what the worker and the exporter ask of it), ``publish`` (a publish's commands),
``kpistore`` (``KpiStore``).

Keys, all under ``{namespace}:``::

    stores                        the store ids that keep their own label (a capped set)
    cells:{minute}                hash "{store}|{partition}" -> msgpack counters of that partition
    changed                       sorted set: minute -> when it was last written (wall ms)
    hll:{minute}:{store}:{dim}    HyperLogLog of visitors ("all" store and "" dim included)
    vis:{minute}:{store}:{dim}    the same visitors as an exact set of 64-bit hashes while small;
                                  {0} once it outgrew its cap (then only the HyperLogLog counts)
    open                          hash partition -> msgpack open-ticket gauge
    status                        hash partition -> msgpack {watermark, max_ts, at, accepted,
                                  duplicates}
    end                           hash "topic:partition" -> end offset (replay and backfill)
    backfill                      a backfill's plan (JSON, ``backfill/plan.py``)

Every write is an absolute value or an idempotent add, so a re-processed batch changes nothing.
The store raises ``streamproc.errors.StoreError`` (``StoreUnavailable`` for an outage) and
``StoreRefused``, never redis-py's errors.
"""

from streamproc.store.contracts import (
    ExactVisitors,
    PartitionStatus,
    PipelineStore,
    ReportStore,
    VisitorKey,
)
from streamproc.store.kpistore import KpiStore
from streamproc.store.publish import visitor_hash

__all__ = [
    "ExactVisitors",
    "KpiStore",
    "PartitionStatus",
    "PipelineStore",
    "ReportStore",
    "VisitorKey",
    "visitor_hash",
]
