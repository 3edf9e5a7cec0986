"""The exporter: one per deployment, it reads what the workers published in Redis, sums the
partitions and serves every KPI (``docs/metrics.md``).

- ``windows``: the trailing-window rule and the running sums (pure)
- ``names``: report rows -> metric families, the one table of metric names (pure)
- ``query``: ``/api/kpis`` parameters, parsed into a ``kpi.selection.ReportQuery`` (pure)
- ``service``: the refresh from Redis into an immutable snapshot
- ``web``: the aiohttp server
"""

from streamproc.exporter.service import Exporter, ExporterConfig
from streamproc.exporter.web import create_app, serve

__all__ = ["Exporter", "ExporterConfig", "create_app", "serve"]
