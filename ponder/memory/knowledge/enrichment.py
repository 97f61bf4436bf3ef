"""LLM enrichment at ingestion: a title for an untitled document, and pseudo-queries per chunk
(questions the chunk answers), indexed as extra search keys so a question matches the chunk
even when it shares few words with its text."""

from __future__ import annotations

import asyncio

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import HumanMessage, SystemMessage

from ponder.memory.knowledge.documents import Document
from ponder.memory.knowledge.store import Chunk
from ponder.models import list_items


class Enricher:
    """Writes titles for untitled documents and pseudo-queries for chunks with ``model``.

    ``queries_per_chunk`` questions per chunk; ``titles`` False leaves titles alone; at most
    ``concurrency`` model calls at a time.
    """
    def __init__(self, model: BaseChatModel, *, queries_per_chunk: int = 3,
                 titles: bool = True, concurrency: int = 8) -> None:
        self.model, self.queries_per_chunk, self.titles = model, queries_per_chunk, titles
        self._slots = asyncio.Semaphore(concurrency)

    async def _ask(self, instruction: str, text: str) -> str:
        async with self._slots:
            reply = await self.model.ainvoke([SystemMessage(instruction), HumanMessage(text)])
        return reply.text.strip()

    async def title(self, document: Document) -> str:
        """A title of at most about 12 words for ``document`` (from its first 4,000 characters);
        "" when the model wrote nothing."""
        title = await self._ask("Write a short, specific title (at most 12 words) for this "
                                "document. Reply with the title only.", document.text[:4000])
        return title.strip().strip('"').splitlines()[0] if title else ""

    async def pseudo_queries(self, chunk: Chunk) -> list[str]:
        """Up to ``queries_per_chunk`` questions that ``chunk`` answers, one per list item of the
        reply."""
        reply = await self._ask(
            f"Write {self.queries_per_chunk} different questions that this passage answers, "
            f"one per line, nothing else.", chunk.text)
        return list_items(reply, self.queries_per_chunk)

    async def enrich(self, documents: list[Document], chunks: list[Chunk]) -> None:
        """Fill in missing titles and add pseudo-queries, concurrently, in place."""
        untitled = [d for d in documents if self.titles and not d.title]
        titles, keys = await asyncio.gather(
            asyncio.gather(*(self.title(d) for d in untitled)),
            asyncio.gather(*(self.pseudo_queries(c) for c in chunks)))
        for document, title in zip(untitled, titles, strict=True):
            document.title = title or None
        by_source = {d.source: d.title for d in documents}
        for chunk, queries in zip(chunks, keys, strict=True):
            chunk.title = chunk.title or by_source.get(chunk.source)
            chunk.keys = queries
