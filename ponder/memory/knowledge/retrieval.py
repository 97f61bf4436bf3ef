"""Retrieval: fusing sparse and dense rankings, enhancing queries, and deciding when to retrieve.

- Fusion: reciprocal rank fusion (RRF, Cormack et al. 2009; k = 60) and weighted fusion of
  min-max normalised scores.
- Query enhancement: synonym rewrite, multi-query (RAG-Fusion), multi-perspective sub-questions,
  and HyDE (a hypothetical background document searched in place of the question). Every query
  is searched concurrently; the rankings are fused and duplicates merged.
- Gating: skip retrieval for what the model already knows — by asking it, or by the agreement of
  a few quick answers.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Hashable, Sequence
from typing import Literal, Protocol

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import HumanMessage, SystemMessage

from ponder.memory.knowledge.store import Chunk, Hit
from ponder.models import list_items

Mode = Literal["sparse", "dense", "hybrid"]
Fusion = Literal["rrf", "weighted"]
RRF_K = 60


Ranking = Sequence[tuple[Hashable, float]]  # (key, score) pairs, best first


def reciprocal_rank_fusion(rankings: Sequence[Ranking], *, k: int = RRF_K,
                           weights: Sequence[float] | None = None) -> list[tuple[Hashable, float]]:
    """One ranking from several: each key scores ``sum(weight / (k + rank))``."""
    fused: dict[Hashable, float] = {}
    for ranking, weight in zip(rankings, weights or [1.0] * len(rankings), strict=True):
        for rank, (key, _) in enumerate(ranking, start=1):
            fused[key] = fused.get(key, 0.0) + weight / (k + rank)
    return sorted(fused.items(), key=lambda item: item[1], reverse=True)


def weighted_fusion(rankings: Sequence[Ranking], weights: Sequence[float]
                    ) -> list[tuple[Hashable, float]]:
    """One ranking from several: the weighted sum of each ranking's min-max normalised scores
    (a key missing from a ranking gets 0 from it)."""
    fused: dict[Hashable, float] = {}
    for ranking, weight in zip(rankings, weights, strict=True):
        if not ranking:
            continue
        scores = [score for _, score in ranking]
        low, span = min(scores), max(scores) - min(scores)
        for key, score in ranking:
            # Equal scores (one hit, say) are all as good as this ranking gets.
            fused[key] = fused.get(key, 0.0) + weight * ((score - low) / span if span else 1.0)
    return sorted(fused.items(), key=lambda item: item[1], reverse=True)


def fuse(rankings: Sequence[Ranking], fusion: Fusion, weights: Sequence[float]
         ) -> list[tuple[Hashable, float]]:
    """One ranking of (key, score) pairs, best first, from several by ``fusion``.

    "rrf": reciprocal rank fusion (Cormack et al. 2009, "Reciprocal Rank Fusion outperforms
    Condorcet and individual Rank Learning Methods"); "weighted": min-max normalised scores,
    weighted. Raises ValueError for another fusion.
    """
    if fusion == "rrf":
        return reciprocal_rank_fusion(rankings, weights=weights)
    if fusion == "weighted":
        return weighted_fusion(rankings, weights)
    raise ValueError(f"unknown fusion {fusion!r}: use rrf or weighted")


def _key(chunk: Chunk) -> Hashable:
    return chunk.id if chunk.id is not None else (chunk.source, chunk.position)


def fuse_hits(rankings: Sequence[Sequence[Hit]], fusion: Fusion, weights: Sequence[float]
              ) -> list[Hit]:
    """``fuse`` for rankings of hits: one hit per chunk, with its fused score."""
    chunks = {}
    pairs = []
    for ranking in rankings:
        keyed = [(_key(hit.chunk), hit) for hit in ranking]
        chunks.update((key, hit.chunk) for key, hit in keyed)
        pairs.append([(key, hit.score) for key, hit in keyed])
    return [Hit(chunks[key], score) for key, score in fuse(pairs, fusion, weights)]


async def _ask(model: BaseChatModel, instruction: str, text: str, **options) -> str:
    reply = await model.ainvoke([SystemMessage(instruction), HumanMessage(text)], **options)
    return reply.text.strip()


class QueryEnhancer(Protocol):
    """Turns a question into the queries to search; each is (text, mode) or text."""

    async def queries(self, question: str) -> list[str | tuple[str, Mode]]:
        """The queries to search for ``question``: text (the base's mode) or (text, mode) pairs."""


class SynonymRewrite:
    """The question, and the question rewritten with synonyms and expanded terms."""

    prompt = ("Rewrite the user's search query for a document search engine: keep its meaning, "
              "add synonyms and spelled-out abbreviations. Reply with the rewritten query only.")

    def __init__(self, model: BaseChatModel) -> None:
        self.model = model

    async def queries(self, question: str) -> list[str | tuple[str, Mode]]:
        """The question and its rewrite (one model call)."""
        return [question, await _ask(self.model, self.prompt, question)]


class MultiQuery:
    """RAG-Fusion: the question and ``n`` differently worded versions of it."""

    def __init__(self, model: BaseChatModel, n: int = 3) -> None:
        self.model, self.n = model, n

    async def queries(self, question: str) -> list[str | tuple[str, Mode]]:
        """The question and up to ``n`` rewordings of it (one model call; RAG-Fusion)."""
        prompt = (f"Write {self.n} different search queries that look for the information the "
                  f"user's question needs, worded differently from it and from each other. "
                  f"One query per line, nothing else.")
        return [question, *list_items(await _ask(self.model, prompt, question), self.n)]


class SubQuestions:
    """Multi-perspective decomposition: the sub-questions a complete answer needs."""

    def __init__(self, model: BaseChatModel, max_questions: int = 4) -> None:
        self.model, self.max_questions = model, max_questions

    async def queries(self, question: str) -> list[str | tuple[str, Mode]]:
        """The question and up to ``max_questions`` sub-questions (one model call)."""
        prompt = (f"Break the user's question into at most {self.max_questions} simpler "
                  f"sub-questions, each from a different angle, that together answer it. "
                  f"One per line, nothing else.")
        return [question, *list_items(await _ask(self.model, prompt, question),
                                      self.max_questions)]


class HyDE:
    """A hypothetical background document (Gao et al. 2022), searched densely: a passage that
    would answer the question sits nearer the real answer than the question does."""

    prompt = ("Write a short passage (about 100 words) from a reference text that answers the "
              "question. Write the passage only.")

    def __init__(self, model: BaseChatModel) -> None:
        self.model = model

    async def queries(self, question: str) -> list[str | tuple[str, Mode]]:
        """The question, and a passage of about 100 words written to answer it, searched densely.

        HyDE: Gao et al., "Precise Zero-Shot Dense Retrieval without Relevance Labels" (ACL 2023).
        """
        return [question, (await _ask(self.model, self.prompt, question), "dense")]


class Gate(Protocol):
    """Decides whether a question needs retrieval."""

    async def needs_retrieval(self, question: str) -> bool:
        """Whether ``question`` needs a search of the knowledge base."""


class AskModelGate:
    """Asks the model whether it can answer from what it already knows."""

    prompt = ("Decide whether answering the user's message needs facts looked up in documents "
              "(specific, recent, private or detailed information), or whether general knowledge "
              "or the conversation is enough. Answer exactly RETRIEVE or ANSWER.")

    def __init__(self, model: BaseChatModel) -> None:
        self.model = model

    async def needs_retrieval(self, question: str) -> bool:
        """False only when the model answers ANSWER without RETRIEVE (one call): unsure means
        retrieve."""
        verdict = (await _ask(self.model, self.prompt, question)).upper()
        # Unsure means retrieve: a wasted search is cheaper than a made-up answer.
        return "ANSWER" not in verdict or "RETRIEVE" in verdict


class AgreementGate:
    """Skips retrieval when ``n`` quick, independent answers agree: a model that knows gives
    the same answer every time; one that guesses does not."""

    prompt = "Answer in at most five words. If you do not know, say UNKNOWN."

    def __init__(self, model: BaseChatModel, n: int = 3, temperature: float = 0.8) -> None:
        self.model, self.n, self.temperature = model, n, temperature

    async def needs_retrieval(self, question: str) -> bool:
        """True unless all ``n`` answers (words compared, case ignored) agree and none says
        unknown."""
        answers = await asyncio.gather(*(
            _ask(self.model, self.prompt, question, temperature=self.temperature)
            for _ in range(self.n)))
        normalised = {" ".join(re.findall(r"\w+", a.lower())) for a in answers}
        return len(normalised) > 1 or "unknown" in next(iter(normalised))
