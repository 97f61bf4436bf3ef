"""What every command shares: the typer app, the consoles, the options declared once, and the
check of the database URL."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape

import ponder
from ponder.config import ConfigurationError
from ponder.db.url import parse_url

app = typer.Typer(
    name="ponder",
    help="Asynchronous agent orchestration on LangGraph: profile, memory, planning, action.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
# Lines are not wrapped: output that is piped or captured keeps one message per line.
console = Console(soft_wrap=True)
errors = Console(stderr=True, soft_wrap=True)


def _version(value: bool) -> None:
    if value:
        console.print(f"ponder {ponder.__version__}")
        raise typer.Exit()


# Commands whose data must outlive the command (threads, run records, schedules, keys, the
# knowledge base, memories), so PONDER_DATABASE_URL cannot be memory:// for them.
_DATABASE_COMMANDS = frozenset({"run", "chat", "serve", "mcp", "worker", "runs", "schedule",
                                "keys", "kb", "memory"})


@app.callback()
def _root(
    ctx: typer.Context,
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Show the version and exit."),
) -> None:
    if ctx.invoked_subcommand in _DATABASE_COMMANDS:
        parse_url().require(("sqlite", "postgres"), f"ponder {ctx.invoked_subcommand}")


TARGET_HELP = "An agent or graph: module:attr, path/to/file.py:attr, or agent.yaml."

# --json: one JSON object, or one per line for lists.
JSON = typer.Option(False, "--json", help="Print one JSON object.")
JSON_LINES = typer.Option(False, "--json", help="Print JSON lines.")


def stored(store_class: type, method: str, *args: Any, **kwargs: Any) -> Any:
    """Call one method of one of ponder's stores (keys, run records), then close it."""

    async def call():
        store = store_class()
        try:
            return await getattr(store, method)(*args, **kwargs)
        finally:
            await store.aclose()

    return asyncio.run(call())


def check_mode(mode: str) -> None:
    """Refuse a --mode that is not a search mode (ConfigurationError)."""
    if mode not in ("sparse", "dense", "hybrid"):
        raise ConfigurationError(f"--mode {mode!r}: use sparse, dense or hybrid")


def fail(message: str) -> None:
    """Print ``message`` as the one line of an error on stderr and exit with code 2."""
    errors.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    sys.exit(2)
