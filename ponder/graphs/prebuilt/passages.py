"""What the retrieval graphs share: passages from a knowledge base or any LangChain retriever,
and passages numbered for a prompt (so answers can cite them as [1], [2], ...)."""

from __future__ import annotations

from langchain_core.retrievers import BaseRetriever

from ponder.memory.knowledge import KnowledgeBase


async def search(retriever: KnowledgeBase | BaseRetriever, query: str, k: int) -> list[str]:
    """The texts of the ``k`` best passages: a knowledge base's full pipeline (enhancement,
    reranking), or a LangChain retriever's documents."""
    if isinstance(retriever, KnowledgeBase):
        return [hit.chunk.text for hit in await retriever.retrieve(query, k)]
    return [document.page_content for document in await retriever.ainvoke(query)][:k]


def numbered(passages: list[str]) -> str:
    """The passages as "[1] text" lines for a prompt; "(none)" when there are none."""
    return "\n".join(f"[{i}] {p}" for i, p in enumerate(passages, 1)) or "(none)"
