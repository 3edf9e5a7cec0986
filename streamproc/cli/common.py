"""Shared by the sub-commands: consoles, logging, settings, endpoints and progress display."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable, Mapping
from typing import NamedTuple

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from streamproc import devstack, logs
from streamproc.config import Settings, load_settings, retired_settings
from streamproc.connection import KafkaConnection
from streamproc.errors import ConfigError

app = typer.Typer(
    name="streamproc",
    help="Real-time e-commerce KPIs from Kafka event streams.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
err = Console(stderr=True)
out = Console()
log = logging.getLogger("streamproc.cli")

LOG_FORMAT = "[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s"


def configure_logging(level: str) -> None:
    """Rich output on a terminal; plain lines (the format Faust's worker logs use) otherwise.

    Repeated third-party lines (a client retrying a gone broker) are rate-limited: see ``logs``.
    """
    if err.is_terminal:
        handler: logging.Handler = RichHandler(console=err, show_path=False)
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    logs.install()


def settings() -> Settings:
    loaded = load_settings()
    configure_logging(loaded.log_level)
    for warning in retired_settings(os.environ):
        log.warning("%s", warning)
    return loaded


DEFAULT_BOOTSTRAP = "127.0.0.1:9092"


class Endpoints(NamedTuple):
    kafka: KafkaConnection
    redis_url: str

    @property
    def bootstrap_servers(self) -> str:
        return self.kafka.servers


def endpoints(loaded: Settings, *, kafka: bool = True) -> Endpoints:
    """Explicit settings first, then the running `streamproc dev` stack, then localhost.
    ``kafka=False``: for a command that does not talk to Kafka (the exporter)."""
    if kafka and loaded.bootstrap_servers is None and loaded.kafka_security_protocol != "PLAINTEXT":
        raise ConfigError(
            f"STREAMPROC_KAFKA_SECURITY_PROTOCOL={loaded.kafka_security_protocol} needs "
            "STREAMPROC_BOOTSTRAP_SERVERS (the dev stack's broker is plaintext)"
        )
    stack = None
    if loaded.bootstrap_servers is None or loaded.redis_url is None:
        stack = devstack.running_stack(
            loaded.state_dir, redis_auth=devstack.RedisAuth.from_settings(loaded)
        )
        if stack is not None:
            log.info("using the dev stack in %s", loaded.state_dir)
    servers = loaded.bootstrap_servers or (stack.bootstrap_servers if stack else DEFAULT_BOOTSTRAP)
    return Endpoints(
        KafkaConnection.from_settings(loaded, servers),
        loaded.redis_url or (stack.redis_url if stack else devstack.DEFAULT_REDIS_URL),
    )


def kafka_of(loaded: Settings) -> KafkaConnection:
    """The Kafka of the settings, else the dev stack's."""
    return endpoints(loaded).kafka


def input_topics(loaded: Settings) -> dict[str, int]:
    topics = {name: loaded.partitions for name in loaded.input_topics}
    topics[loaded.topic_dlq] = loaded.partitions
    return topics


async def ensure_topics(loaded: Settings, kafka: KafkaConnection) -> int:
    """Create missing topics; returns the (shared) partition count of the input topics."""
    from streamproc import broker

    counts = await broker.ensure_topics(
        kafka,
        input_topics(loaded),
        replication_factor=loaded.replication_factor,
        co_partitioned=loaded.input_topics,
    )
    return counts[loaded.topic_clickstream]


def progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[events]:>10,} events"),
        TextColumn("{task.fields[rate]:>8,.0f}/s"),
        TimeRemainingColumn(),
        console=err,
    )


def first_few(shown: Iterable[object], total: int) -> str:
    """``"3, 9, 12, ..."``: the first items of a longer list, for a summary line."""
    listed = [str(item) for item in shown]
    return ", ".join(listed) + (", ..." if total > len(listed) else "")


def summary(title: str, sent: Mapping[str, int], elapsed: float, extra: str = "") -> None:
    out.print(f"[bold]{title}[/]")
    table = Table(show_footer=True)
    total = sum(sent.values())
    table.add_column("topic", footer="total")
    table.add_column("messages", justify="right", footer=f"{total:,}")
    for topic, count in sorted(sent.items()):
        table.add_row(topic, f"{count:,}")
    out.print(table)
    rate = total / elapsed if elapsed > 0 else 0.0
    out.print(f"{total:,} messages in {elapsed:.1f} s ({rate:,.0f}/s){extra}")
