"""The knowledge base's store: chunks with their text index and vectors, in the one database.

One interface, two backends chosen by the URL: SQLite (FTS5 ``bm25()`` and sqlite-vec) and
Postgres (full-text ``tsvector`` and pgvector HNSW). A write replaces whole sources in one
transaction, so a failed ingestion leaves what was stored before.
"""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ponder.config import ConfigurationError
from ponder.errors import PonderError
from ponder.memory.knowledge.filters import Dialect, compile_filter

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,40}$")


class EmbeddingMismatchError(PonderError, ValueError):
    """New embeddings do not fit the ones already stored (another dimension or model)."""


@dataclass
class Chunk:
    """A piece of a source, the unit of retrieval. ``keys`` are extra search keys (pseudo-queries
    from enrichment), matched by sparse search."""

    source: str
    position: int
    text: str
    title: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    keys: list[str] = field(default_factory=list)
    id: int | None = None


@dataclass
class Hit:
    """A retrieved chunk and its score (higher is better; comparable within one ranking)."""

    chunk: Chunk
    score: float


@dataclass
class SourceRecord:
    """What is stored about a source: the hash of the content its chunks came from."""

    source: str
    content_hash: str
    title: str | None
    metadata: dict[str, Any]


# The chunk table's columns as every query reads them (``c`` is the chunk table).
CHUNK_COLUMNS = "c.id, c.source, c.position, c.text, c.title, c.metadata, c.keys"


def chunk_from_row(row: Sequence[Any]) -> Chunk:
    """A chunk from the ``CHUNK_COLUMNS`` of a row (metadata as JSON text or decoded)."""
    id_, source, position, text, title, metadata, keys = row[:7]
    if isinstance(metadata, str):
        metadata = json.loads(metadata)
    return Chunk(source, position, text, title or None, metadata,
                 keys.split("\n") if keys else [], id_)


class KnowledgeStore(ABC):
    """Sources, their chunks, a text index and (once embeddings arrive) a vector index."""

    def __init__(self, url: str, name: str = "default") -> None:
        if not _NAME.match(name):
            raise ConfigurationError(f"knowledge base name {name!r}: use lower-case letters, "
                                     f"digits and _ (starting with a letter)")
        self.url, self.name = url, name
        self.prefix = f"ponder_kb_{name}"

    @abstractmethod
    async def hashes(self, sources: Sequence[str]) -> dict[str, str]:
        """The stored content hash of each of ``sources`` that is stored."""

    @abstractmethod
    async def replace(self, records: Sequence[SourceRecord], chunks: Sequence[Chunk],
                      vectors: Sequence[Sequence[float]] | None, model: str | None) -> None:
        """Atomically make ``records`` the stored sources, with exactly ``chunks`` (and their
        ``vectors`` from embedding ``model``) instead of whatever they had."""

    @abstractmethod
    async def chunks(self, sources: Sequence[str]) -> list[Chunk]:
        """The chunks of ``sources``, in the order given, each source's in position order."""

    @abstractmethod
    async def delete(self, *, sources: Sequence[str] = (), filter: dict | None = None) -> int:
        """Remove sources named, or whose chunks match ``filter``; the number of sources."""

    @abstractmethod
    async def sparse_ranking(self, query: str, k: int, filter: dict | None = None
                             ) -> list[tuple[int, float]]:
        """(chunk id, score) of the ``k`` chunks that match ``query``'s words best (BM25)."""

    @abstractmethod
    async def dense_ranking(self, vector: Sequence[float], k: int, filter: dict | None = None
                            ) -> list[tuple[int, float]]:
        """(chunk id, cosine similarity) of the ``k`` chunks nearest to ``vector``."""

    @abstractmethod
    async def chunks_by_id(self, ids: Sequence[int]) -> dict[int, Chunk]:
        """The chunks with these ids (a deleted one is missing)."""

    async def sparse(self, query: str, k: int, filter: dict | None = None) -> list[Hit]:
        """Chunks by word relevance."""
        return await self.hits(await self.sparse_ranking(query, k, filter))

    async def dense(self, vector: Sequence[float], k: int, filter: dict | None = None
                    ) -> list[Hit]:
        """Chunks by cosine similarity to ``vector``."""
        return await self.hits(await self.dense_ranking(vector, k, filter))

    async def hits(self, ranking: Sequence[tuple[int, float]]) -> list[Hit]:
        """The chunks of a ranking, in its order (chunks deleted meanwhile are left out)."""
        chunks = await self.chunks_by_id([i for i, _ in ranking]) if ranking else {}
        return [Hit(chunks[i], score) for i, score in ranking if i in chunks]

    async def compact(self, written: int) -> None:  # noqa: B027 (optional for a backend)
        """Tidy the indexes after ``written`` chunks were added (a no-op unless worth it)."""

    @abstractmethod
    async def embedding_model(self) -> tuple[str, int] | None:
        """The model and dimension of the stored vectors, if any were stored."""

    @abstractmethod
    async def fields(self) -> set[str]:
        """The metadata keys filters may use."""

    async def condition(self, filter: dict | None, dialect: Dialect) -> tuple[str, list[Any]]:
        """``filter`` as a SQL condition on the chunk table ``c`` (checked against the known
        fields), and its parameters."""
        return compile_filter(filter, await self.fields() if filter else set(), dialect)

    @abstractmethod
    async def stats(self) -> dict[str, Any]:
        """Counts of sources and chunks, the embedding model and dimension."""

    @abstractmethod
    async def aclose(self) -> None:
        """Close the store's connections; the store is not used again."""

    async def check_vectors(self, model: str | None, dimensions: int | None = None) -> None:
        """Refuse to write chunks whose vectors (or lack of them: ``model`` None) cannot share
        the index with those stored; called before anything is written."""
        stored = await self.embedding_model()
        if stored is None:
            return
        stored_model, stored_dimensions = stored
        if model is None:
            raise EmbeddingMismatchError(
                f"knowledge base {self.name!r} holds vectors from {stored_model}: add documents "
                f"with those embeddings (embeddings={stored_model!r}, or PONDER_EMBEDDINGS="
                f"{stored_model}), or chunks without vectors would be invisible to dense search")
        if dimensions is not None and stored_dimensions != dimensions:
            raise EmbeddingMismatchError(
                f"knowledge base {self.name!r} holds {stored_dimensions}-dimensional vectors from "
                f"{stored_model}, but {model} gives {dimensions}: use {stored_model}, or a new "
                f"knowledge base name for the new model")
        if stored_model != model:
            raise EmbeddingMismatchError(
                f"knowledge base {self.name!r} holds vectors from {stored_model}, not {model}: "
                f"vectors of two models are not comparable; use {stored_model}, or a new "
                f"knowledge base name")
