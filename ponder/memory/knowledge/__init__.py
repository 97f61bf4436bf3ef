"""The RAG knowledge base: ingest documents, search them by words and meaning, rerank, evaluate."""

from ponder.memory.knowledge.base import IngestReport, KnowledgeBase
from ponder.memory.knowledge.chunking import Chunker
from ponder.memory.knowledge.documents import Document, DocumentError
from ponder.memory.knowledge.filters import FilterError
from ponder.memory.knowledge.store import Chunk, EmbeddingMismatchError, Hit

__all__ = ["Chunk", "Chunker", "Document", "DocumentError", "EmbeddingMismatchError",
           "FilterError", "Hit", "IngestReport", "KnowledgeBase"]
