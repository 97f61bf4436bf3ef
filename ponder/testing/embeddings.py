"""Embeddings without a model: deterministic vectors in which shared words mean similarity."""

from __future__ import annotations

import hashlib
import math
import re

from langchain_core.embeddings import Embeddings


def fake_embedding(text: str, dimensions: int = 64) -> list[float]:
    """A deterministic unit vector: hashed bag of words, so shared words mean similar vectors."""
    vector = [0.0] * dimensions
    for word in re.findall(r"\w+", text.lower()):
        digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
        index = int.from_bytes(digest[:4], "little") % dimensions
        vector[index] += 1.0 if digest[4] & 1 else -1.0
    norm = math.sqrt(sum(v * v for v in vector))
    if norm == 0:
        vector[0], norm = 1.0, 1.0
    return [v / norm for v in vector]


class HashingEmbeddings(Embeddings):
    """LangChain embeddings from ``fake_embedding``: in-process, instant and deterministic."""

    provider = "testing"

    def __init__(self, dimensions: int = 64) -> None:
        self.dimensions = dimensions
        self.model_name = f"hashing-{dimensions}"
        self.calls = 0

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """One ``fake_embedding`` of ``dimensions`` floats per text; counts the call in
        ``calls``."""
        self.calls += 1
        return [fake_embedding(text, self.dimensions) for text in texts]

    def embed_query(self, text: str) -> list[float]:
        """The ``fake_embedding`` of ``text``."""
        return self.embed_documents([text])[0]
