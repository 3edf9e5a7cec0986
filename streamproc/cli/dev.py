"""``streamproc dev up | down | status``: the embedded broker and Redis."""

from __future__ import annotations

from collections.abc import Mapping

import typer
from rich.table import Table

from streamproc import devstack
from streamproc.cli.common import app, out, settings
from streamproc.config import Settings

dev_app = typer.Typer(
    help="The embedded dev stack: a Tansu broker and a Redis.", no_args_is_help=True
)
app.add_typer(dev_app, name="dev")


def _dev_stack(loaded: Settings) -> devstack.DevStack:
    return devstack.DevStack(
        loaded.state_dir,
        broker_port=loaded.dev_broker_port,
        redis_url=loaded.redis_url,
        redis_auth=devstack.RedisAuth.from_settings(loaded),
    )


def _print_stack(info: devstack.StackInfo, problems: Mapping[str, str] | None = None) -> None:
    table = Table("component", "address", "process", "state", "log")
    problems = problems or {}
    redis_process = f"pid {info.redis_pid}" if info.redis_pid else "reused"
    table.add_row(
        "broker (tansu)",
        info.bootstrap_servers,
        f"pid {info.broker_pid}",
        problems.get("broker", "[green]up[/]"),
        str(info.logs.get("broker", "")),
    )
    table.add_row(
        f"redis ({info.redis_source})",
        devstack.redact(info.redis_url),
        redis_process,
        problems.get("redis", "[green]up[/]"),
        str(info.logs.get("redis", "")),
    )
    out.print(table)


@dev_app.command("up")
def dev_up_command() -> None:
    """Start the embedded broker and Redis (harmless when they already run)."""
    loaded = settings()
    info = _dev_stack(loaded).up()
    _print_stack(info)
    out.print(
        f"streamproc commands run from here use this stack (state in {loaded.state_dir}/dev).\n"
        f"Other tools: export STREAMPROC_BOOTSTRAP_SERVERS={info.bootstrap_servers} "
        f"STREAMPROC_REDIS_URL={devstack.redact(info.redis_url)}",
        highlight=False,
    )


@dev_app.command("down")
def dev_down_command() -> None:
    """Stop what `dev up` started (a reused Redis is left running)."""
    loaded = settings()
    stopped = _dev_stack(loaded).down()
    out.print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


@dev_app.command("status")
def dev_status_command() -> None:
    """Show the dev stack; exit status 1 when it is not running or unhealthy."""
    loaded = settings()
    status = _dev_stack(loaded).status()
    if status is None:
        out.print(f"no dev stack in {loaded.state_dir}; start one with: streamproc dev up")
        raise typer.Exit(1)
    _print_stack(status.info, status.problems)
    if not status.healthy:
        raise typer.Exit(1)
