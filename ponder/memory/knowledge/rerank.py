"""Reranking: a second, closer look at the first-stage candidates.

- ``CrossEncoderReranker``: a sentence-transformers cross-encoder scores each (query, passage).
- ``ListwiseReranker`` (RankGPT, Sun et al. 2023): the model orders a window of passages; the
  window slides from the end of the list to its start, so good passages bubble to the top.
- ``JudgeReranker`` (JudgeRank, Niu et al. 2024): analyse the query once, analyse each document
  against it, then judge Yes/No. Scoring: ``discrete`` (relevant first, first-stage order kept),
  ``continuous`` (S = p_yes / (p_yes + p_no) from the judgement's token logprobs) or ``hybrid``
  (S = alpha * S_prob + the first-stage score, e.g. BM25).

Every reranker can keep only the ``top_k`` best after scoring (RankRAG's filter step).
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Literal, Protocol

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

from ponder.memory.knowledge.store import Hit


class Reranker(Protocol):
    """Reorders first-stage hits by a closer look at each against the query."""

    async def rerank(self, query: str, hits: Sequence[Hit]) -> list[Hit]:
        """``hits`` in a new order, best first, with new scores (perhaps only the ``top_k``
        best)."""


def _keep(hits: list[Hit], top_k: int | None) -> list[Hit]:
    return hits[:top_k] if top_k else hits


class CrossEncoderReranker:
    """``model``: a ``sentence_transformers.CrossEncoder`` or a path to load one from."""

    def __init__(self, model: Any, *, top_k: int | None = None, batch_size: int = 32) -> None:
        if isinstance(model, str):
            from sentence_transformers import CrossEncoder

            model = CrossEncoder(model, device="cpu")
        self.model, self.top_k, self.batch_size = model, top_k, batch_size

    async def rerank(self, query: str, hits: Sequence[Hit]) -> list[Hit]:
        """``hits`` by the cross-encoder's score of (query, chunk text), best first (in a worker
        thread)."""
        if not hits:
            return []
        pairs = [(query, hit.chunk.text) for hit in hits]
        scores = await asyncio.to_thread(self.model.predict, pairs, batch_size=self.batch_size)
        ranked = [replace(hit, score=float(s)) for hit, s in zip(hits, scores, strict=True)]
        return _keep(sorted(ranked, key=lambda h: h.score, reverse=True), self.top_k)


class ListwiseReranker:
    """RankGPT's permutation generation over a sliding window (``window`` passages, moved
    ``step`` at a time from the end of the list backwards)."""

    def __init__(self, model: BaseChatModel, *, window: int = 20, step: int = 10,
                 top_k: int | None = None, max_chars: int = 1200) -> None:
        if not 0 < step <= window:
            raise ValueError(f"need 0 < step <= window, got step={step}, window={window}")
        self.model, self.window, self.step = model, window, step
        self.top_k, self.max_chars = top_k, max_chars

    async def rerank(self, query: str, hits: Sequence[Hit]) -> list[Hit]:
        """``hits`` reordered by the model, window by window from the end of the list to its start.

        RankGPT: Sun et al. 2023, "Is ChatGPT Good at Search? Investigating Large Language Models as
        Re-Ranking Agents". The new score is the position counted from the bottom (n for the first).
        """
        order = list(hits)
        start = max(len(order) - self.window, 0)
        while True:
            end = start + self.window
            order[start:end] = await self._rank_window(query, order[start:end])
            if start == 0:
                break
            start = max(start - self.step, 0)
        n = len(order)
        return _keep([replace(hit, score=float(n - i)) for i, hit in enumerate(order)],
                     self.top_k)

    async def _rank_window(self, query: str, window: list[Hit]) -> list[Hit]:
        if len(window) < 2:
            return window
        passages = "\n".join(f"[{i}] {hit.chunk.text[: self.max_chars]}"
                             for i, hit in enumerate(window, 1))
        reply = await self.model.ainvoke([
            SystemMessage("You are RankGPT, an assistant that ranks passages by their "
                          "relevance to a query."),
            HumanMessage(f"I will give you {len(window)} passages, each marked with a number "
                         f"in brackets. Rank them by relevance to the query.\n\n{passages}\n\n"
                         f"Query: {query}\n\nRank all {len(window)} passages, most relevant "
                         f"first, in the format [2] > [1] > [3]. Reply with the ranking only."),
        ])
        return [window[i] for i in parse_permutation(reply.text, len(window))]


def parse_permutation(text: str, n: int) -> list[int]:
    """0-based indices in the order the reply gives, each once; any the reply left out keep
    their original order after them."""
    seen: list[int] = []
    for number in re.findall(r"\d+", text):
        index = int(number) - 1
        if 0 <= index < n and index not in seen:
            seen.append(index)
    return seen + [i for i in range(n) if i not in seen]


Scoring = Literal["discrete", "continuous", "hybrid"]


class JudgeReranker:
    """JudgeRank's three steps: query analysis, document analysis, relevance judgement."""

    def __init__(self, model: BaseChatModel, *, scoring: Scoring = "continuous",
                 alpha: float = 1.0, top_k: int | None = None, max_chars: int = 3000) -> None:
        if scoring not in ("discrete", "continuous", "hybrid"):
            raise ValueError(f"unknown scoring {scoring!r}: use discrete, continuous or hybrid")
        self.model, self.scoring, self.alpha = model, scoring, alpha
        self.top_k, self.max_chars = top_k, max_chars

    async def rerank(self, query: str, hits: Sequence[Hit]) -> list[Hit]:
        """``hits`` by the model's relevance judgement: one query analysis, then one judgement per
        hit.

        JudgeRank: Niu et al. 2024, "JudgeRank: Leveraging Large Language Models for Reasoning-
        Intensive Reranking". Scores: ``discrete`` the position from the bottom, ``continuous``
        p(Yes) from 0 to 1, ``hybrid`` ``alpha`` * p(Yes) + the first-stage score.
        """
        if not hits:
            return []
        analysis = await self._say(
            "Analyse the query: state its core problem or claim, and what a document must "
            "contain to be relevant to it.", f"Query: {query}")
        probabilities = await asyncio.gather(*(self._judge(query, analysis, hit)
                                               for hit in hits))
        if self.scoring == "discrete":
            # Relevant before not relevant; within each group, the first-stage order.
            ranked = [h for h, p in zip(hits, probabilities, strict=True) if p >= 0.5] + \
                     [h for h, p in zip(hits, probabilities, strict=True) if p < 0.5]
            n = len(ranked)
            return _keep([replace(h, score=float(n - i)) for i, h in enumerate(ranked)],
                         self.top_k)
        scored = [replace(hit, score=p if self.scoring == "continuous"
                          else self.alpha * p + hit.score)
                  for hit, p in zip(hits, probabilities, strict=True)]
        return _keep(sorted(scored, key=lambda h: h.score, reverse=True), self.top_k)

    async def _say(self, instruction: str, text: str, **options: Any) -> AIMessage:
        reply = await self.model.ainvoke([SystemMessage(instruction), HumanMessage(text)],
                                         **options)
        return reply

    async def _judge(self, query: str, analysis: AIMessage, hit: Hit) -> float:
        document = hit.chunk.text[: self.max_chars]
        reading = await self._say(
            "Given a query and its analysis, extract the parts of the document that bear on the "
            "query and explain how they relate to it.",
            f"Query: {query}\n\nQuery analysis: {analysis.text}\n\nDocument: {document}")
        judgement = await self._say(
            "Based on the analyses, is the document relevant to the query? Answer Yes or No.",
            f"Query: {query}\n\nQuery analysis: {analysis.text}\n\nDocument analysis: "
            f"{reading.text}\n\nDocument: {document}",
            logprobs=True, top_logprobs=5)
        return yes_probability(judgement)


def yes_probability(reply: AIMessage) -> float:
    """p_yes / (p_yes + p_no) over the first token's top logprobs; without logprobs, 1.0 for a
    Yes and 0.0 for anything else."""
    content = (reply.response_metadata.get("logprobs") or {}).get("content") or []
    if content:
        p_yes = p_no = 0.0
        for candidate in content[0].get("top_logprobs") or [content[0]]:
            token = candidate["token"].strip().lower()
            if token == "yes":
                p_yes += math.exp(candidate["logprob"])
            elif token == "no":
                p_no += math.exp(candidate["logprob"])
        if p_yes + p_no > 0:
            return p_yes / (p_yes + p_no)
    return 1.0 if reply.text.strip().lower().startswith("yes") else 0.0
