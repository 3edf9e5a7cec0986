"""``streamproc demo``: the whole pipeline on one machine, started and stopped as one.

A dedicated embedded stack (in ``state_dir/demo``), a worker, the exporter and the live simulator
run as child processes with their logs in ``state_dir/demo/logs``; :class:`Demo` starts them,
reports their health and stops everything, including the stack, when the demo ends. The simulator
starts ``history`` in the past and catches up at once, so the KPI panels have data right away.
Each demo has its own Redis namespace (the machine's Redis may be shared and outlives the demo's
broker), deleted when the demo stops.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from streamproc import children, devstack
from streamproc.config import Settings
from streamproc.errors import DemoError
from streamproc.store import KpiStore

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoOptions:
    sessions_per_minute: float = 120.0
    malformed_share: float = 0.005
    duplicate_share: float = 0.005
    out_of_order_share: float = 0.01
    history_seconds: int = 45 * 60  # > session timeout: closed-session KPIs show at once


def _inherited() -> dict[str, str]:
    """This process's environment without the Kafka security settings, which are for the
    user's Kafka: the demo's children talk to the demo's broker, in plaintext."""
    return {k: v for k, v in os.environ.items() if not k.startswith("STREAMPROC_KAFKA_")}


class Demo:
    """Start the stack and the processes; ``stop()`` ends them all (idempotent)."""

    def __init__(self, settings: Settings, options: DemoOptions) -> None:
        self.settings = settings
        self.options = options
        self.dir = Path(settings.state_dir).absolute() / "demo"
        self.redis_auth = devstack.RedisAuth.from_settings(settings)
        self.stack = devstack.DevStack(
            self.dir, redis_url=settings.redis_url, redis_auth=self.redis_auth, keep_port=False
        )
        self.children: list[children.Child] = []
        self.info: devstack.StackInfo | None = None
        self.worker_port = children.free_port(settings.worker_port, host=settings.bind)
        self.exporter_port = children.free_port(settings.exporter_port, host=settings.bind)
        self.namespace = f"demo-{uuid.uuid4().hex[:8]}"

    @property
    def worker_metrics_url(self) -> str:
        return f"http://{self.settings.bind}:{self.worker_port}/metrics"

    @property
    def exporter_url(self) -> str:
        return f"http://{self.settings.bind}:{self.exporter_port}"

    def env(self) -> dict[str, str]:
        assert self.info is not None
        update = {
            "bootstrap_servers": self.info.bootstrap_servers,
            "kafka_security_protocol": "PLAINTEXT",  # the demo's own broker
            "redis_url": self.info.redis_url,
            "state_dir": self.dir,
            "namespace": self.namespace,
            "worker_port": self.worker_port,
            "exporter_port": self.exporter_port,
            "exporter_refresh_seconds": 2,
        }
        return self.settings.model_copy(update=update).env(*update)

    def start(self) -> None:
        self.info = self.stack.up()
        options = self.options
        self._spawn("worker", ["worker"])
        self._spawn("exporter", ["exporter"])
        self._spawn(
            "simulator",
            [
                "simulate",
                "--live",
                f"--start=-{options.history_seconds}s"
                if options.history_seconds
                else "--start=now",
                "--rate",
                str(options.sessions_per_minute),
                "--malformed",
                str(options.malformed_share),
                "--duplicates",
                str(options.duplicate_share),
                "--out-of-order",
                str(options.out_of_order_share),
            ],
        )

    def _spawn(self, name: str, args: list[str]) -> None:
        child = children.spawn(
            [sys.executable, "-m", "streamproc", *args],
            env={**_inherited(), **self.env(), "PYTHONUNBUFFERED": "1"},
            log=self.dir / "logs" / f"{name}.log",
        )
        self.children.append(child)
        logger.info("started %s (pid %d), log %s", name, child.proc.pid, child.log_path)

    def check(self) -> None:
        """Raise DemoError with the log tail when a child has died."""
        child = children.exited(self.children)
        if child is not None:
            raise DemoError(
                f"the {child.name} exited with status {child.proc.returncode}; last lines of "
                f"{child.log_path}:\n{children.tail(child.log_path, 15)}"
            )

    def stop(self, timeout: float = 20.0) -> None:
        children.stop(self.children[::-1], timeout=timeout)  # the simulator first
        self.children.clear()
        if self.info is not None:
            try:
                asyncio.run(_drop(self.info.redis_url, self.namespace, self.redis_auth))
            except Exception as exc:  # the stack is stopped anyway; say what is left behind
                logger.warning("could not delete Redis namespace %s: %s", self.namespace, exc)
        self.stack.down()


async def _drop(redis_url: str, namespace: str, auth: devstack.RedisAuth) -> None:
    store = KpiStore.connect(redis_url, namespace, password=auth.password, cafile=auth.cafile)
    try:
        await store.drop()
    finally:
        await store.aclose()


@contextmanager
def running(settings: Settings, options: DemoOptions) -> Iterator[Demo]:
    demo = Demo(settings, options)
    try:
        demo.start()
        yield demo
    finally:
        demo.stop()


def rate(previous: float, current: float, seconds: float) -> float:
    """Per-second increase of a counter between two scrapes (0 after a reset)."""
    return max(current - previous, 0.0) / seconds if seconds > 0 else 0.0
