"""The ``streamproc`` command. Each module registers its sub-commands on ``common.app``; the
commands only parse options, load settings and call the library, they hold no logic."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.table import Table

from streamproc import __version__
from streamproc.cli import backfill, demo, dev, exporter, pipeline, replay, simulate  # noqa: F401  (registers the sub-commands)
from streamproc.cli.common import app, err, out
from streamproc.config import describe_settings, settings_markdown
from streamproc.errors import StoreError, StreamprocError


@app.command("settings")
def settings_command(
    markdown: Annotated[bool, typer.Option("--markdown", help="Print a Markdown table.")] = False,
) -> None:
    """List every setting: environment variable, default and meaning."""
    if markdown:
        out.print(settings_markdown(), markup=False, highlight=False, soft_wrap=True)
        return
    table = Table("variable", "default", "meaning")
    for row in describe_settings():
        table.add_row(*row)
    out.print(table)


@app.command("version")
def version_command() -> None:
    """Print the version."""
    out.print(__version__)


def main() -> None:
    try:
        app()
    except StoreError:
        raise  # Redis failed, no setting to fix: its traceback and exit status 1
    except StreamprocError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)  # one line
        sys.exit(2)
