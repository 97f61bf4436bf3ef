"""`ponder kb`: the knowledge base from the command line."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import typer
from rich.markup import escape

from ponder.cli.common import (
    JSON,
    JSON_LINES,
    app,
    check_mode,
    console,
    errors,
)
from ponder.config import ConfigurationError, Settings

kb_app = typer.Typer(help="The knowledge base: documents agents recall from (RAG).",
                     no_args_is_help=True)
app.add_typer(kb_app, name="kb")
KB_NAME = typer.Option("default", "--name", help="Which knowledge base in the database.")
KB_EMBEDDINGS = typer.Option(None, "--embeddings", help="provider:model or local; default "
                             "PONDER_EMBEDDINGS, else the model the knowledge base was built "
                             "with, else none (word search only).")


def _knowledge_base(name: str, embeddings: str | None, **options: Any):
    """The knowledge base ``name``, embedding with the model it was built with by default."""
    from ponder.memory.knowledge import KnowledgeBase
    from ponder.memory.knowledge.base import open_store

    spec = embeddings or Settings.from_env().embeddings
    if spec is None:
        async def stored_model():
            store = open_store(Settings.from_env().database_url, name)
            try:
                return await store.embedding_model()
            finally:
                await store.aclose()

        found = asyncio.run(stored_model())
        spec = found[0] if found and ":" in found[0] else None
    return KnowledgeBase(name=name, embeddings=spec, **options)


def _on_knowledge_base(kb, work) -> Any:
    async def call():
        try:
            return await work(kb)
        finally:
            await kb.aclose()

    return asyncio.run(call())


def _filter(text: str | None) -> dict | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigurationError(f"--filter is not JSON ({exc.msg}): write e.g. "
                                 f"'{{\"topic\": \"billing\"}}'") from None
    if not isinstance(value, dict):
        raise ConfigurationError("--filter must be a JSON object, e.g. '{\"year\": 2024}'")
    return value


@kb_app.command("add")
def kb_add(
    paths: list[str] = typer.Argument(..., help="Files or folders (.txt .md .html .pdf)."),
    name: str = KB_NAME,
    embeddings: str | None = KB_EMBEDDINGS,
    meta: list[str] = typer.Option([], "--meta", help="KEY=VALUE metadata for every document "
                                   "(repeatable); filter on it in search."),
    chunk_size: int = typer.Option(256, "--chunk-size", min=16, help="Tokens per chunk."),
    overlap: int = typer.Option(32, "--overlap", min=0, help="Tokens shared by neighbours."),
    skip_errors: bool = typer.Option(False, "--skip-errors", help="Report unreadable or empty "
                                     "files and go on, instead of stopping."),
) -> None:
    """Ingest documents; unchanged ones are skipped, changed ones replaced."""
    from rich.progress import Progress

    from ponder.memory.knowledge import Chunker

    metadata = {}
    for item in meta:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigurationError(f"--meta {item!r}: write KEY=VALUE, e.g. --meta team=support")
        metadata[key] = value
    if overlap >= chunk_size:
        raise ConfigurationError(f"--overlap {overlap} must be smaller than --chunk-size "
                                 f"{chunk_size}")
    kb = _knowledge_base(name, embeddings, chunker=Chunker(chunk_size, overlap))
    with Progress(console=errors, transient=True) as progress:
        task = progress.add_task("ingesting", total=None)
        report = _on_knowledge_base(kb, lambda kb: kb.add(
            paths, metadata=metadata, skip_errors=skip_errors,
            progress=lambda done, total: progress.update(task, completed=done, total=total)))
    for error in report.errors:
        errors.print(f"[yellow]skipped:[/] {escape(error)}", highlight=False)
    console.print(f"{report.added} added, {report.updated} updated, {report.unchanged} unchanged"
                  f"; {report.chunks} chunks in {report.seconds:.2f} s")


@kb_app.command("search")
def kb_search(
    query: str = typer.Argument(..., help="What to look for."),
    k: int = typer.Option(5, "-k", "--k", min=1, help="How many results."),
    mode: str | None = typer.Option(None, "--mode", help="sparse, dense or hybrid (default: "
                                    "hybrid with embeddings, else sparse)"),
    filter: str | None = typer.Option(None, "--filter", help='Metadata filter as JSON, e.g. '
                                      '\'{"team": "support"}\''),
    name: str = KB_NAME,
    embeddings: str | None = KB_EMBEDDINGS,
    as_json: bool = JSON_LINES,
) -> None:
    """The best chunks for a query."""
    if mode:
        check_mode(mode)
    where = _filter(filter)
    kb = _knowledge_base(name, embeddings)
    hits = _on_knowledge_base(kb, lambda kb: kb.search(query, k, mode=mode, filter=where))
    for rank, hit in enumerate(hits, 1):
        chunk = hit.chunk
        if as_json:
            print(json.dumps({"rank": rank, "score": hit.score, "source": chunk.source,
                              "title": chunk.title, "position": chunk.position,
                              "text": chunk.text, "metadata": chunk.metadata}))
        else:
            console.print(f"[bold]{rank}.[/] {escape(chunk.title or chunk.source)} "
                          f"[dim]({escape(chunk.source)} #{chunk.position}, score "
                          f"{hit.score:.3f})[/]\n   {escape(chunk.text[:300])}")
    if not hits and not as_json:
        console.print("no results")


@kb_app.command("delete")
def kb_delete(
    source: list[str] = typer.Option([], "--source", help="A source (file path or id) to "
                                     "remove; repeatable."),
    filter: str | None = typer.Option(None, "--filter", help="Remove every source with a "
                                      "chunk matching this metadata filter (JSON)."),
    name: str = KB_NAME,
) -> None:
    """Remove sources and their chunks."""
    where = _filter(filter)
    if not source and where is None:
        raise ConfigurationError("say what to delete: --source PATH or --filter JSON")
    kb = _knowledge_base(name, None)
    deleted = _on_knowledge_base(kb, lambda kb: kb.delete(source=source, filter=where))
    console.print(f"deleted {deleted} source{'s' if deleted != 1 else ''}")


@kb_app.command("stats")
def kb_stats(name: str = KB_NAME,
             as_json: bool = JSON
             ) -> None:
    """Sources, chunks and the embedding model of a knowledge base."""
    from ponder.memory.knowledge import KnowledgeBase

    stats = _on_knowledge_base(KnowledgeBase(name=name), lambda kb: kb.stats())
    if as_json:
        print(json.dumps(stats))
        return
    model = (f"{stats['embedding_model']} ({stats['dimensions']} dimensions)"
             if stats["embedding_model"] else "none (word search only)")
    console.print(f"knowledge base {stats['name']} ({stats['backend']}): {stats['sources']} "
                  f"sources, {stats['chunks']} chunks; embeddings: {model}; metadata fields: "
                  f"{', '.join(stats['fields']) or 'none'}")
