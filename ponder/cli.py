"""`ponder`: the command line (typer + rich). It sits on top: nothing imports it."""

from __future__ import annotations

import sys

import typer
from rich.console import Console

import ponder
from ponder.config import ConfigurationError
from ponder.models import ModelCallError

app = typer.Typer(
    name="ponder",
    help="Asynchronous agent orchestration on LangGraph: profile, memory, planning, action.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console()
errors = Console(stderr=True)

# User mistakes and failures outside our control: a message, never a traceback.
_USER_ERRORS = (ConfigurationError, ModelCallError, FileNotFoundError)


def _version(value: bool) -> None:
    if value:
        console.print(f"ponder {ponder.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Show the version and exit."),
) -> None:
    pass


@app.command()
def demo() -> None:
    """Run the example agent end to end (offline when no model is configured)."""
    console.print("ponder demo: the model layer and test kit are ready; the agent comes next.")


def main() -> None:
    try:
        app()  # standalone: typer reports usage errors and exits by itself
    except _USER_ERRORS as exc:
        errors.print(f"[bold red]error:[/] {exc}", highlight=False)
        sys.exit(2)
