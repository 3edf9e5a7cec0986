"""The ``streamproc`` command: sub-commands, logging set-up and settings loading; no logic."""

from __future__ import annotations

import logging
import sys

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from streamproc import __version__
from streamproc.config import Settings, describe_settings, load_settings
from streamproc.errors import StreamprocError

app = typer.Typer(
    name="streamproc",
    help="Real-time e-commerce KPIs from Kafka event streams.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
err = Console(stderr=True)
out = Console()


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(name)s: %(message)s",
        handlers=[RichHandler(console=err, show_path=False, rich_tracebacks=False)],
        force=True,
    )


def settings() -> Settings:
    loaded = load_settings()
    configure_logging(loaded.log_level)
    return loaded


@app.command("settings")
def settings_command(
    markdown: bool = typer.Option(False, "--markdown", help="Print a Markdown table."),
) -> None:
    """List every setting: environment variable, default and meaning."""
    rows = describe_settings()
    if markdown:
        lines = ["| variable | default | meaning |", "|---|---|---|"]
        lines += [f"| `{name}` | `{default}` | {text} |" for name, default, text in rows]
        out.print("\n".join(lines), markup=False, highlight=False, soft_wrap=True)
        return
    table = Table("variable", "default", "meaning")
    for row in rows:
        table.add_row(*row)
    out.print(table)


@app.command("version")
def version_command() -> None:
    """Print the version."""
    out.print(__version__)


def main() -> None:
    try:
        app()
    except StreamprocError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False)
        sys.exit(2)
