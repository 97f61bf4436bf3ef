"""The knowledge base as LangChain sees it: a ``VectorStore`` and a ``BaseRetriever``.

In the vector store, a LangChain document is one source (its id) stored as one chunk, exactly
as given: no cleaning or splitting, so what goes in comes back. The retriever runs the
knowledge base's whole retrieval pipeline.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from langchain_core.callbacks import (
    AsyncCallbackManagerForRetrieverRun,
    CallbackManagerForRetrieverRun,
)
from langchain_core.documents import Document as LangChainDocument
from langchain_core.embeddings import Embeddings
from langchain_core.retrievers import BaseRetriever
from langchain_core.vectorstores import VectorStore
from pydantic import ConfigDict

from ponder.memory.knowledge.retrieval import Mode
from ponder.memory.knowledge.store import Chunk, Hit, SourceRecord
from ponder.models import embedding_model_id
from ponder.sync import run_sync

if TYPE_CHECKING:
    from ponder.memory.knowledge.base import KnowledgeBase


def _document(chunk: Chunk, id_: str | None = None) -> LangChainDocument:
    return LangChainDocument(page_content=chunk.text, metadata=dict(chunk.metadata), id=id_)


class KnowledgeBaseVectorStore(VectorStore):
    """A knowledge base as a LangChain vector store: ``kb.as_vectorstore()``. Each document
    is one chunk (its id the source); needs the knowledge base's embeddings."""

    # What ``from_texts`` makes: KnowledgeBase, set by its module (which imports this one).
    knowledge_base_class: ClassVar[type[KnowledgeBase]]

    def __init__(self, knowledge_base: KnowledgeBase) -> None:
        if knowledge_base.embeddings is None:
            raise ValueError("a vector store needs embeddings: create the KnowledgeBase with "
                             "embeddings=...")
        self.knowledge_base = knowledge_base

    @property
    def embeddings(self) -> Embeddings:
        """The knowledge base's embeddings."""
        return self.knowledge_base.embeddings

    async def aadd_documents(self, documents: list[LangChainDocument], **kwargs: Any
                             ) -> list[str]:
        """Store each document as one source of one chunk, as given; the ids (``ids=`` or each
        document's id, else a new UUID).

        A repeated id keeps the last document. Raises ValueError when ``ids`` and ``documents``
        differ in length, and the store's errors on an embedding model or dimension mismatch.
        """
        ids = list(kwargs.get("ids") or [d.id or str(uuid.uuid4()) for d in documents])
        if len(ids) != len(documents):
            raise ValueError(f"{len(ids)} ids for {len(documents)} documents")
        latest = {i: d for i, d in zip(ids, documents, strict=True)}  # a repeated id: last wins
        records, chunks = [], []
        for id_, doc in latest.items():
            digest = hashlib.sha256(json.dumps([doc.page_content, doc.metadata], sort_keys=True,
                                               default=str).encode()).hexdigest()
            records.append(SourceRecord(id_, digest, None, dict(doc.metadata)))
            chunks.append(Chunk(id_, 0, doc.page_content, None, dict(doc.metadata)))
        embeddings = self.knowledge_base.embeddings
        vectors = await embeddings.aembed_documents([c.text for c in chunks]) if chunks else []
        await self.knowledge_base.store.replace(records, chunks, vectors,
                                                embedding_model_id(embeddings))
        return ids

    def add_documents(self, documents: list[LangChainDocument], **kwargs: Any) -> list[str]:
        """``aadd_documents``, from synchronous code."""
        return run_sync(lambda: self.aadd_documents(documents, **kwargs))

    async def aadd_texts(self, texts: Iterable[str], metadatas: list[dict] | None = None, *,
                         ids: list[str] | None = None, **kwargs: Any) -> list[str]:
        """Store ``texts`` (with ``metadatas``, one dict per text) as documents; their ids."""
        texts = list(texts)
        metadatas = metadatas or [{} for _ in texts]
        documents = [LangChainDocument(page_content=t, metadata=m)
                     for t, m in zip(texts, metadatas, strict=True)]
        return await self.aadd_documents(documents, ids=ids)

    def add_texts(self, texts: Iterable[str], metadatas: list[dict] | None = None, *,
                  ids: list[str] | None = None, **kwargs: Any) -> list[str]:
        """``aadd_texts``, from synchronous code."""
        return run_sync(lambda: self.aadd_texts(texts, metadatas, ids=ids))

    async def adelete(self, ids: list[str] | None = None, **kwargs: Any) -> bool:
        """Delete the documents (sources) with these ids; True. Raises ValueError without
        ``ids``."""
        if ids is None:
            raise ValueError("say which documents to delete: delete(ids=[...])")
        await self.knowledge_base.store.delete(sources=ids)
        return True

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool:
        """``adelete``, from synchronous code."""
        return run_sync(lambda: self.adelete(ids))

    async def aget_by_ids(self, ids: Sequence[str], /) -> list[LangChainDocument]:
        """The chunks of the sources with these ids, as documents (an unknown id is left out)."""
        chunks = await self.knowledge_base.store.chunks(list(ids))
        return [_document(c, c.source) for c in chunks]

    def get_by_ids(self, ids: Sequence[str], /) -> list[LangChainDocument]:
        """``aget_by_ids``, from synchronous code."""
        return run_sync(lambda: self.aget_by_ids(ids))

    async def asimilarity_search_with_score(self, query: str, k: int = 4,
                                            filter: dict | None = None, **kwargs: Any
                                            ) -> list[tuple[LangChainDocument, float]]:
        """The ``k`` chunks nearest to ``query`` (dense search) as (document, cosine similarity)
        pairs, best first. ``filter`` is a knowledge-base metadata filter."""
        hits = await self.knowledge_base.search(query, k, mode="dense", filter=filter)
        return [(_document(h.chunk, h.chunk.source), h.score) for h in hits]

    def similarity_search_with_score(self, query: str, k: int = 4, filter: dict | None = None,
                                     **kwargs: Any) -> list[tuple[LangChainDocument, float]]:
        """``asimilarity_search_with_score``, from synchronous code."""
        return run_sync(lambda: self.asimilarity_search_with_score(query, k, filter))

    async def asimilarity_search(self, query: str, k: int = 4, filter: dict | None = None,
                                 **kwargs: Any) -> list[LangChainDocument]:
        """The ``k`` documents nearest to ``query``, best first."""
        return [d for d, _ in await self.asimilarity_search_with_score(query, k, filter)]

    def similarity_search(self, query: str, k: int = 4, filter: dict | None = None,
                          **kwargs: Any) -> list[LangChainDocument]:
        """``asimilarity_search``, from synchronous code."""
        return run_sync(lambda: self.asimilarity_search(query, k, filter))

    def _select_relevance_score_fn(self):
        return lambda score: score  # scores are cosine similarities already

    @classmethod
    def from_texts(cls, texts: list[str], embedding: Embeddings,
                   metadatas: list[dict] | None = None, *, ids: list[str] | None = None,
                   url: str | None = None, name: str = "default", **kwargs: Any
                   ) -> KnowledgeBaseVectorStore:
        """A vector store over a new KnowledgeBase at ``url`` (None: ``PONDER_DATABASE_URL``)
        named ``name``, with ``texts`` added."""
        store = cls(cls.knowledge_base_class(url, name=name, embeddings=embedding))
        store.add_texts(texts, metadatas, ids=ids)
        return store

    @classmethod
    async def afrom_texts(cls, texts: list[str], embedding: Embeddings,
                          metadatas: list[dict] | None = None, *, ids: list[str] | None = None,
                          url: str | None = None, name: str = "default", **kwargs: Any
                          ) -> KnowledgeBaseVectorStore:
        """``from_texts``, from async code."""
        store = cls(cls.knowledge_base_class(url, name=name, embeddings=embedding))
        await store.aadd_texts(texts, metadatas, ids=ids)
        return store


class KnowledgeBaseRetriever(BaseRetriever):
    """``kb.as_retriever(k=4)``: documents whose metadata carries source, title and score."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    knowledge_base: KnowledgeBase
    k: int = 4
    mode: Mode | None = None
    filter: dict | None = None

    async def _aget_relevant_documents(self, query: str, *,
                                       run_manager: AsyncCallbackManagerForRetrieverRun,
                                       **kwargs: Any) -> list[LangChainDocument]:
        k = kwargs.get("k", self.k)
        kb = self.knowledge_base
        if self.mode:
            hits = await kb.search(query, k, mode=self.mode, filter=self.filter)
        else:
            hits = await kb.retrieve(query, k, filter=self.filter)
        return [_retrieved(hit) for hit in hits]

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun,
                                **kwargs: Any) -> list[LangChainDocument]:
        return run_sync(lambda: self._aget_relevant_documents(query, run_manager=None, **kwargs))


def _retrieved(hit: Hit) -> LangChainDocument:
    chunk = hit.chunk
    return LangChainDocument(page_content=chunk.text, metadata={
        **chunk.metadata, "source": chunk.source, "title": chunk.title,
        "position": chunk.position, "score": hit.score})
