"""`ponder memory`: long-term memories of users."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import typer
from rich.markup import escape

from ponder.cli.common import (
    JSON_LINES,
    app,
    console,
)

memory_app = typer.Typer(help="Long-term memories agents keep about users.",
                         no_args_is_help=True)
app.add_typer(memory_app, name="memory")
USER = typer.Option(..., "--user", help="Whose memories.")
MEMORY_NAME = typer.Option("default", "--name", help="The long-term memory's name.")
MEMORY_EMBEDDINGS = typer.Option(None, "--embeddings", help="provider:model or local (default "
                                 "PONDER_EMBEDDINGS): the model the memories were stored with.")


def _on_memory(name: str, embeddings: str | None, work) -> Any:
    from ponder.memory.longterm import LongTermMemory

    async def call():
        memory = LongTermMemory(name=name, embeddings=embeddings)
        try:
            return await work(memory)
        finally:
            await memory.aclose()

    return asyncio.run(call())


def _print_memories(memories, as_json: bool) -> None:
    for m in memories:
        if as_json:
            print(json.dumps({"key": m.key, **m.value(), "score": m.score}))
        else:
            score = f", score {m.score:.2f}" if m.score is not None else ""
            state = "" if m.status == "active" else f", {m.status} {m.valid_to}"
            console.print(f"[bold]{m.key}[/] [dim]({m.kind}, importance {m.importance:g}"
                          f"{score}{state})[/]\n   {escape(m.text)}")
    if not memories and not as_json:
        console.print("no memories")


@memory_app.command("list")
def memory_list(user: str = USER, name: str = MEMORY_NAME,
                embeddings: str | None = MEMORY_EMBEDDINGS,
                everything: bool = typer.Option(False, "--all", help="Superseded versions too."),
                as_json: bool = JSON_LINES) -> None:
    """A user's memories, oldest first."""
    memories = _on_memory(name, embeddings, lambda m: m.list(user, include_superseded=everything))
    _print_memories(memories, as_json)


@memory_app.command("search")
def memory_search(query: str = typer.Argument(..., help="What to look for."),
                  user: str = USER, k: int = typer.Option(5, "-k", "--k", min=1),
                  name: str = MEMORY_NAME, embeddings: str | None = MEMORY_EMBEDDINGS,
                  as_json: bool = JSON_LINES
                  ) -> None:
    """A user's best memories for a query (recency + importance + relevance)."""
    _print_memories(_on_memory(name, embeddings, lambda m: m.search(user, query, k)), as_json)


@memory_app.command("delete")
def memory_delete(key: str = typer.Argument(..., help="A key from ponder memory list."),
                  user: str = USER, name: str = MEMORY_NAME,
                  embeddings: str | None = MEMORY_EMBEDDINGS) -> None:
    """Forget one memory of a user for good."""
    _on_memory(name, embeddings, lambda m: m.delete(user, key))
    console.print(f"deleted {key}")
