"""The exporter's HTTP server (aiohttp): ``/metrics``, ``/api/kpis``, ``/api/status``, ``/healthz``,
``/readyz``.

``/healthz`` is liveness (the refresh loop runs: restarting would not help a Redis outage) and
``/readyz`` readiness (the served KPIs are fresh); a stale exporter keeps serving its snapshot.

One event loop runs both the refresh and the server. That is safe because the server only reads
the snapshot, which a refresh replaces whole, and the loop is never busy for long: Redis waits are
awaits and the large report computations run in a thread. (The worker serves ``/metrics`` from a
thread instead because its batches keep the loop busy.)
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable

import msgspec
from aiohttp import web

from streamproc.errors import BadQuery, ConfigError, StoreUnavailable
from streamproc.exporter.query import parse_query
from streamproc.exporter.service import Exporter
from streamproc.kpi.epoch import window_label
from streamproc.metrics import ExporterMetrics

logger = logging.getLogger(__name__)

EXPORTER = web.AppKey("exporter", Exporter)
ENDPOINTS = ("/metrics", "/api/kpis", "/api/status", "/healthz", "/readyz")


def _json(value: object, *, status: int = 200) -> web.Response:
    return web.Response(
        body=msgspec.json.encode(value), status=status, content_type="application/json"
    )


async def _kpis(request: web.Request) -> web.Response:
    exporter = request.app[EXPORTER]
    labels = [window_label(s) for s in exporter.config.sizes_ms]
    try:
        query = parse_query(request.query.items(), window_labels=labels)
    except BadQuery as exc:
        return _json({"error": str(exc)}, status=400)
    try:
        found = await exporter.report(query)
    except StoreUnavailable as exc:
        return _json({"error": f"Redis unavailable: {exc.kind}: {exc}"}, status=503)
    return _json(found)


async def _status(request: web.Request) -> web.Response:
    return _json(request.app[EXPORTER].status())


async def _health(request: web.Request) -> web.Response:
    """Alive while the refresh loop runs (a failing Redis is not a reason to restart)."""
    exporter = request.app[EXPORTER]
    body = {"status": "ok" if exporter.running else "refresh loop stopped"}
    return _json(body, status=200 if exporter.running else 503)


async def _ready(request: web.Request) -> web.Response:
    """Ready while the last successful refresh is recent enough; 503 with the reason if not."""
    ready, body = request.app[EXPORTER].readiness()
    return _json(body, status=200 if ready else 503)


async def _index(request: web.Request) -> web.Response:
    return web.Response(text="streamproc exporter: " + " ".join(ENDPOINTS) + "\n")


def create_app(exporter: Exporter, metrics: ExporterMetrics) -> web.Application:
    app = web.Application()
    app[EXPORTER] = exporter
    app.router.add_get("/", _index)
    app.router.add_get("/metrics", metrics.aiohttp_handler())
    app.router.add_get("/api/kpis", _kpis)
    app.router.add_get("/api/status", _status)
    app.router.add_get("/healthz", _health)
    app.router.add_get("/readyz", _ready)
    return app


async def serve(
    exporter: Exporter,
    metrics: ExporterMetrics,
    *,
    bind: str,
    port: int,
    interval_s: float,
    on_started: Callable[[str], None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Refresh and serve until ``stop`` is set (default: SIGINT or SIGTERM); closes the store.

    ``on_started`` gets the base URL once the port is bound (port 0: a free one)."""
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
    runner = web.AppRunner(create_app(exporter, metrics), access_log=None)
    await runner.setup()
    refresher: asyncio.Task[None] | None = None
    try:
        site = web.TCPSite(runner, bind, port)
        await site.start()
        host, bound = runner.addresses[0][:2]
        host = f"[{host}]" if ":" in host else host
        refresher = asyncio.create_task(exporter.run(metrics, interval_s=interval_s))
        if on_started is not None:
            on_started(f"http://{host}:{bound}")
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait([refresher, stopped], return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        failed = _failure(refresher)
        if isinstance(failed, ConfigError):  # a setting to fix (Redis refused the password)
            raise failed
    finally:
        if refresher is not None:
            refresher.cancel()
            await asyncio.wait([refresher], timeout=10)
            failed = _failure(refresher)
            if failed is not None and not isinstance(failed, ConfigError):
                logger.error("refresh loop failed", exc_info=failed)
        await runner.cleanup()
        await exporter.store.aclose()


def _failure(task: asyncio.Task[None]) -> BaseException | None:
    """The error a finished task ended with; None while it runs, once cancelled, or done well."""
    return task.exception() if task.done() and not task.cancelled() else None
