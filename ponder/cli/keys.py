"""`ponder keys`: API keys for `ponder serve`."""

from __future__ import annotations

import time

import typer
from rich.markup import escape

from ponder.cli.common import (
    app,
    console,
    errors,
    stored,
)

keys_app = typer.Typer(help="API keys for ponder serve (stored hashed in the database).",
                       no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@keys_app.command("create")
def keys_create(
    name: str = typer.Argument(..., help="What the key is for, e.g. mobile-app."),
    rpm: int | None = typer.Option(None, "--rpm", min=1, help="Requests per minute."),
    tpm: int | None = typer.Option(None, "--tpm", min=1, help="Tokens per minute."),
    usd_per_day: float | None = typer.Option(
        None, "--usd-per-day", help="US dollars of model calls per UTC day (priced by "
                                    "genai-prices); then 429 until the next day."),
) -> None:
    """Make a key. It is printed once: store it now."""
    from ponder.server.keys import KeyStore

    key, secret = stored(KeyStore, "create", name, requests_per_minute=rpm,
                          tokens_per_minute=tpm, usd_per_day=usd_per_day)
    console.print(f"{key.id}  {escape(key.name)}")
    print(secret)
    errors.print("[dim]shown once: the database keeps only its hash[/]")


@keys_app.command("list")
def keys_list() -> None:
    """The keys, with their limits; revoked ones marked."""
    from rich.table import Table as RichTable

    from ponder.server.keys import KeyStore

    table = RichTable("id", "name", "created", "limits", "status")
    for key in stored(KeyStore, "list"):
        limits = ", ".join(f"{v} {k}" for k, v in (("rpm", key.requests_per_minute),
                                                   ("tpm", key.tokens_per_minute)) if v)
        if key.usd_per_day is not None:
            limits = ", ".join(filter(None, [limits, f"${key.usd_per_day:g}/day"]))
        created = time.strftime("%Y-%m-%d %H:%M", time.localtime(key.created_at))
        table.add_row(key.id, key.name, created, limits or "-",
                      "revoked" if key.revoked_at else "active")
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: str = typer.Argument(..., help="The id from ponder keys list.")) -> None:
    """Revoke a key: it stops working within seconds."""
    from ponder.server.keys import KeyStore

    stored(KeyStore, "revoke", key_id)
    console.print(f"revoked {key_id}")
