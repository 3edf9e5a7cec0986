"""``streamproc exporter``."""

from __future__ import annotations

import asyncio

from streamproc.cli.common import app, endpoints, log, settings
from streamproc.errors import ConfigError


@app.command("exporter")
def exporter_command() -> None:
    """Serve the KPIs from Redis: /metrics (trailing windows), /api/kpis (aligned windows);
    /healthz (alive) and /readyz (the KPIs are fresh)."""
    from prometheus_client import CollectorRegistry

    from streamproc import exporter, metrics
    from streamproc.store import KpiStore

    loaded = settings()
    if loaded.exporter_stale_seconds < 2 * loaded.exporter_refresh_seconds:
        log.warning(
            "STREAMPROC_EXPORTER_STALE_SECONDS=%d is less than twice "
            "STREAMPROC_EXPORTER_REFRESH_SECONDS=%d: /readyz will flap to 503 between refreshes",
            loaded.exporter_stale_seconds,
            loaded.exporter_refresh_seconds,
        )
    where = endpoints(loaded, kafka=False)  # Redis only
    store = KpiStore.for_settings(loaded, where.redis_url)
    service = exporter.Exporter(store, exporter.ExporterConfig.from_settings(loaded))
    exporter_metrics = metrics.ExporterMetrics.create(
        CollectorRegistry(), exposition=service.exposition
    )

    def started(url: str) -> None:
        log.info(
            "exporter for namespace %s on %s: %s",
            loaded.namespace,
            url,
            " ".join(exporter.web.ENDPOINTS),
        )

    try:
        asyncio.run(
            exporter.serve(
                service,
                exporter_metrics,
                bind=loaded.bind,
                port=loaded.exporter_port,
                interval_s=loaded.exporter_refresh_seconds,
                on_started=started,
            )
        )
    except OSError as exc:  # the port is taken, the address is not ours
        address = f"{loaded.bind}:{loaded.exporter_port}"
        raise ConfigError(f"exporter: cannot serve on {address}: {exc}") from exc
