"""KnowledgeBase: ingest documents, search them, and serve as an agent's memory (``recall``).

    kb = KnowledgeBase("sqlite:///ponder.db", embeddings="local")
    await kb.add(["handbook/", "faq.md"])
    hits = await kb.search("how do refunds work?", k=5)        # hybrid when it has embeddings
    agent = Agent("support", model, memory=kb)                  # recalled before every turn
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from langchain_core.embeddings import Embeddings
from langchain_core.messages import BaseMessage

from ponder.config import ConfigurationError, Settings
from ponder.db.url import parse_url
from ponder.memory.knowledge.chunking import Chunker, tokenizer_for
from ponder.memory.knowledge.documents import Document, DocumentError, clean, files, load
from ponder.memory.knowledge.enrichment import Enricher
from ponder.memory.knowledge.interop import KnowledgeBaseRetriever, KnowledgeBaseVectorStore
from ponder.memory.knowledge.rerank import Reranker
from ponder.memory.knowledge.retrieval import (
    Fusion,
    Gate,
    Mode,
    QueryEnhancer,
    fuse,
    fuse_hits,
)
from ponder.memory.knowledge.store import Chunk, Hit, KnowledgeStore, SourceRecord
from ponder.models import embedding_model_id
from ponder.models import embeddings as make_embeddings
from ponder.tasks import gather_cancelling

# Sparse and dense weights of the hybrid fusion, chosen on SciFact's train split
# (`ponder eval retrieval --mode hybrid`; see the knowledge-base section of the README).
HYBRID_WEIGHTS = (1.0, 0.7)


@dataclass
class IngestReport:
    """What one ``add`` did. Unchanged sources cost a hash lookup and nothing else."""

    added: int = 0
    updated: int = 0
    unchanged: int = 0
    chunks: int = 0
    seconds: float = 0.0
    embedding_seconds: float = 0.0
    errors: list[str] = field(default_factory=list)


class KnowledgeBase:
    """Documents chunked into one database (``PONDER_DATABASE_URL`` by default), searched by
    words (full text), meaning (vectors, when ``embeddings`` are given) or both."""

    def __init__(
        self,
        url: str | None = None,
        *,
        name: str = "default",
        embeddings: Embeddings | str | None = None,
        chunker: Chunker | None = None,
        enricher: Enricher | None = None,
        mode: Mode | None = None,
        fusion: Fusion = "weighted",
        weights: tuple[float, float] = HYBRID_WEIGHTS,
        candidates: int = 100,
        enhancer: QueryEnhancer | None = None,
        reranker: Reranker | None = None,
        gate: Gate | None = None,
        k: int = 4,
        batch_size: int = 256,
        sources: Sequence[str | Path | Document] = (),
    ) -> None:
        self.store = open_store(url or Settings.from_env().database_url, name)
        self.embeddings = (make_embeddings(embeddings) if isinstance(embeddings, str)
                           else embeddings)
        # Sized with the embedding model's tokenizer, found when first needed (see ``_chunker``).
        self.chunker = chunker or Chunker()
        self._finding_tokenizer = threading.Lock()
        self.enricher = enricher
        self.mode: Mode = mode or ("hybrid" if self.embeddings else "sparse")
        self.fusion, self.weights, self.candidates = fusion, weights, candidates
        self.enhancer, self.reranker, self.gate = enhancer, reranker, gate
        self.k, self.batch_size = k, batch_size
        # Ingested before the first search (unchanged ones cost a hash lookup).
        self.sources = list(sources)
        self._sources_added = asyncio.Lock() if self.sources else None

    # -- ingestion -----------------------------------------------------------------------

    async def add(
        self,
        items: Iterable[str | Path | Document] | str | Path | Document,
        *,
        metadata: dict[str, Any] | None = None,
        skip_errors: bool = False,
        progress: Callable[[int, int], None] | None = None,
    ) -> IngestReport:
        """Ingest files, folders and documents. A source whose content is unchanged is skipped;
        a changed one has its chunks replaced. With ``skip_errors``, an unreadable or empty
        file is reported in ``errors`` instead of stopping the ingestion; either way, every
        batch is written whole or not at all. ``progress(done, total)`` follows the sources."""
        started = time.perf_counter()
        report = IngestReport()
        await self.store.check_vectors(
            embedding_model_id(self.embeddings) if self.embeddings else None)
        pending = await asyncio.to_thread(
            _expand, [items] if isinstance(items, str | Path | Document) else items)
        total = len(pending)
        for start in range(0, total, self.batch_size):
            batch = await self._documents(pending[start : start + self.batch_size], metadata,
                                          skip_errors, report)
            await self._ingest(batch, skip_errors, report)
            if progress:
                progress(min(start + self.batch_size, total), total)
        if report.chunks:
            await self.store.compact(report.chunks)
        report.seconds = time.perf_counter() - started
        return report

    async def _documents(self, items: Sequence[Path | Document], metadata: dict | None,
                         skip_errors: bool, report: IngestReport) -> list[Document]:
        paths = [item for item in items if isinstance(item, Path)]
        loaded = await asyncio.to_thread(_load_files, paths, metadata, skip_errors,
                                         report) if paths else []
        given = [Document(d.text, d.source, d.title, {**(metadata or {}), **d.metadata})
                 for d in items if isinstance(d, Document)]
        # One source, one document: the last one given wins.
        return list({d.source: d for d in [*loaded, *given]}.values())

    def _chunker(self) -> Chunker:
        """``chunker``, counting tokens as the embedding model does unless told otherwise."""
        with self._finding_tokenizer:  # two ingestions at once load it once
            if self.chunker.tokenizer is None:
                self.chunker = self.chunker.using(tokenizer_for(self.embeddings))
        return self.chunker

    def _fingerprint(self, document: Document, chunker: Chunker) -> str:
        """Changes when the document or the way it is indexed (chunking, embeddings) changes."""
        model = embedding_model_id(self.embeddings) if self.embeddings else ""
        settings = (f"{chunker.size}/{chunker.overlap}/{chunker.tokenizer.name}/{model}/"
                    f"{bool(self.enricher)}")
        return hashlib.sha256(f"{document.content_hash}/{settings}".encode()).hexdigest()

    async def _ingest(self, documents: list[Document], skip_errors: bool,
                      report: IngestReport) -> None:
        chunker = await asyncio.to_thread(self._chunker)  # a tokenizer loads from disk
        fingerprints = {d.source: self._fingerprint(d, chunker) for d in documents}
        stored = await self.store.hashes(list(fingerprints))
        changed = [d for d in documents if stored.get(d.source) != fingerprints[d.source]]
        report.unchanged += len(documents) - len(changed)
        # Cleaning and chunking only what changed is what makes re-ingestion cheap.
        changed, chunks = await asyncio.to_thread(self._chunk, changed, chunker, skip_errors,
                                                  report)
        if not changed:
            return
        records = [SourceRecord(d.source, fingerprints[d.source], d.title, d.metadata)
                   for d in changed]
        if self.enricher:
            await self.enricher.enrich(changed, chunks)
            for record, document in zip(records, changed, strict=True):
                record.title = document.title
        vectors, model = None, None
        if self.embeddings and chunks:
            began = time.perf_counter()
            vectors = await self.embeddings.aembed_documents([_embedded_text(c) for c in chunks])
            report.embedding_seconds += time.perf_counter() - began
            model = embedding_model_id(self.embeddings)
        await self.store.replace(records, chunks, vectors, model)
        report.updated += sum(1 for d in changed if d.source in stored)
        report.added += sum(1 for d in changed if d.source not in stored)
        report.chunks += len(chunks)

    def _chunk(self, documents: list[Document], chunker: Chunker, skip_errors: bool,
               report: IngestReport) -> tuple[list[Document], list[Chunk]]:
        kept: list[Document] = []
        chunks: list[Chunk] = []
        for document in documents:
            text = clean(document.text)
            if not text:
                error = DocumentError(f"{document.source}: the document is empty (no text to "
                                      f"index)")
                if not skip_errors:
                    raise error
                report.errors.append(str(error))
                continue
            kept.append(document)
            chunks.extend(Chunk(document.source, i, piece, document.title,
                                dict(document.metadata))
                          for i, piece in enumerate(_fitted(chunker, document.title).split(text)))
        return kept, chunks

    async def delete(self, *, source: str | Sequence[str] = (), filter: dict | None = None
                     ) -> int:
        """Remove sources by name, or every source with a chunk matching ``filter``."""
        sources = [source] if isinstance(source, str) else list(source)
        # A file's source is its absolute path; accept the path as the user wrote it too.
        named = list(dict.fromkeys([*sources, *map(os.path.abspath, sources)]))
        return await self.store.delete(sources=named, filter=filter)

    async def stats(self) -> dict[str, Any]:
        """The store's counts: ``name``, ``backend``, ``sources``, ``chunks``,
        ``embedding_model``, ``dimensions`` (None before any vector) and the filterable
        ``fields``."""
        return await self.store.stats()

    # -- search --------------------------------------------------------------------------

    async def search(self, query: str, k: int | None = None, *, mode: Mode | None = None,
                     filter: dict | None = None, vector: Sequence[float] | None = None
                     ) -> list[Hit]:
        """The ``k`` best chunks for ``query``: by words (sparse), meaning (dense) or both
        (hybrid: the two rankings fused). ``vector``: the query's embedding, if already made."""
        if self._sources_added is not None:
            await self._add_sources()
        k = k or self.k
        mode = mode or self.mode
        if mode not in ("sparse", "dense", "hybrid"):
            raise ConfigurationError(f"unknown search mode {mode!r}: use sparse, dense or hybrid")
        if mode == "sparse":
            return await self.store.sparse(query, k, filter)
        if self.embeddings is None:
            raise ConfigurationError(f"{mode} search needs embeddings: create the knowledge base "
                                     f"with embeddings=... (e.g. 'local'), or search with "
                                     f"mode='sparse'")
        if vector is None:
            vector = await self.embeddings.aembed_query(query)
        if mode == "dense":
            return await self.store.dense(vector, k, filter)
        depth = max(k, self.candidates)
        # A failure (a bad filter, a lost connection) cancels the other search: nothing is left
        # running, holding a connection, after the caller has its error.
        rankings = await gather_cancelling(self.store.sparse_ranking(query, depth, filter),
                                           self.store.dense_ranking(vector, depth, filter))
        return await self.store.hits(fuse(rankings, self.fusion, self.weights)[:k])

    async def _add_sources(self) -> None:
        async with self._sources_added:
            if self.sources:
                await self.add(self.sources)
                self.sources = []
        self._sources_added = None

    async def retrieve(self, question: str, k: int | None = None, *,
                       filter: dict | None = None) -> list[Hit]:
        """Search with the whole pipeline: enhanced queries (all searched concurrently and
        fused), then reranking."""
        k = k or self.k
        depth = max(k, 20) if self.reranker else k
        if self.enhancer is None:
            hits = await self.search(question, depth, filter=filter)
        else:
            queries = [q if isinstance(q, tuple) else (q, None)
                       for q in await self.enhancer.queries(question)]
            rankings = await gather_cancelling(*(
                self.search(text, depth, mode=mode if self.embeddings else None, filter=filter)
                for text, mode in queries))
            hits = fuse_hits(rankings, "rrf", [1.0] * len(rankings))[:depth]
        if self.reranker:
            hits = await self.reranker.rerank(question, hits)
        return hits[:k]

    # -- the agent's memory --------------------------------------------------------------

    async def recall(self, query: str, *, user_id: str | None = None,
                     thread_id: str | None = None) -> str | None:
        """Memory's hook: the retrieved chunks as "[n] label" and text blocks, best first, for
        the system message; None when the gate says no retrieval is needed or nothing matched."""
        if self.gate and not await self.gate.needs_retrieval(query):
            return None
        hits = await self.retrieve(query)
        if not hits:
            return None
        return "From the knowledge base:\n\n" + "\n\n".join(
            f"[{i}] {_label(hit.chunk)}\n{hit.chunk.text}" for i, hit in enumerate(hits, 1))

    async def remember(self, messages: Sequence[BaseMessage], *, user_id: str | None = None,
                       thread_id: str | None = None) -> None:
        """Documents are added with ``add``; a conversation teaches the knowledge base nothing."""

    # -- LangChain -----------------------------------------------------------------------

    def as_vectorstore(self) -> KnowledgeBaseVectorStore:
        """This knowledge base as a LangChain vector store (it needs embeddings)."""
        return KnowledgeBaseVectorStore(self)

    def as_retriever(self, **kwargs: Any) -> KnowledgeBaseRetriever:
        """This knowledge base as a LangChain retriever (``k``, ``mode``, ``filter``)."""
        return KnowledgeBaseRetriever(knowledge_base=self, **kwargs)

    async def aclose(self) -> None:
        """Close the store's connections."""
        await self.store.aclose()


def open_store(url: str, name: str = "default") -> KnowledgeStore:
    """The store for a ``sqlite:///`` or ``postgresql://`` database URL (memory:// is an
    in-memory SQLite database of this process)."""
    db = parse_url(url)
    if db.kind == "postgres":
        from ponder.memory.knowledge.postgres_store import PostgresKnowledgeStore

        return PostgresKnowledgeStore(db.conninfo, name)
    from ponder.memory.knowledge.sqlite_store import SqliteKnowledgeStore

    return SqliteKnowledgeStore("sqlite:///:memory:" if db.kind == "memory" else db.url, name)


def _expand(items: Iterable[str | Path | Document]) -> list[Path | Document]:
    expanded: list[Path | Document] = []
    for item in items:
        expanded.extend([item] if isinstance(item, Document) else files([item]))
    return expanded


def _load_files(paths: list[Path], metadata: dict | None, skip_errors: bool,
                report: IngestReport) -> list[Document]:
    documents = []
    for path in paths:
        try:
            documents.append(load(path, **(metadata or {})))
        except DocumentError as exc:
            if not skip_errors:
                raise
            report.errors.append(str(exc))
    return documents


def _fitted(chunker: Chunker, title: str | None) -> Chunker:
    """``chunker``, its chunks made small enough that the model reads all of each, with the
    title it is embedded with (see ``_embedded_text``)."""
    limit = chunker.tokenizer.max_tokens if chunker.tokenizer else None
    if limit is None or chunker.size > chunker.tokenizer.window:
        # No known limit; or chunks asked for larger than the model reads, on purpose (BEIR
        # ranks whole documents: 512-token chunks keep SciFact's abstracts whole for BM25).
        return chunker
    # A title longer than half the model's input is cut short when embedded, not the chunks.
    room = max(limit - (chunker.tokenizer.count(f"{title}\n") if title else 0), limit // 2)
    if chunker.size <= room:
        return chunker
    return replace(chunker, size=room, overlap=min(chunker.overlap, room // 4))


def _embedded_text(chunk: Chunk) -> str:
    return f"{chunk.title}\n{chunk.text}" if chunk.title else chunk.text


def _label(chunk: Chunk) -> str:
    name = chunk.title or Path(chunk.source).name or chunk.source
    return f"{name} ({chunk.source})" if chunk.title else name


# The LangChain adapters make and hold knowledge bases, but this module imports them (for
# ``as_vectorstore`` and ``as_retriever``), so it tells them the class.
KnowledgeBaseVectorStore.knowledge_base_class = KnowledgeBase
KnowledgeBaseRetriever.model_rebuild(_types_namespace={"KnowledgeBase": KnowledgeBase})
