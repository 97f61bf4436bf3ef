"""Fusion, query enhancement, gating and the knowledge base as an agent's memory."""

import pytest
from langchain_core.messages import AIMessage

from ponder.agents.agent import Agent
from ponder.memory.knowledge import Chunk, Document, Hit, KnowledgeBase
from ponder.memory.knowledge.retrieval import (
    AgreementGate,
    AskModelGate,
    HyDE,
    MultiQuery,
    SubQuestions,
    SynonymRewrite,
    fuse_hits,
    reciprocal_rank_fusion,
    weighted_fusion,
)
from ponder.testing import HashingEmbeddings, ScriptedChatModel
from tests.helpers.concurrency import Rendezvous


def test_reciprocal_rank_fusion_sums_one_over_k_plus_rank():
    fused = reciprocal_rank_fusion([[("a", 9), ("b", 5)], [("b", 0.9), ("c", 0.1)]])
    assert [key for key, _ in fused] == ["b", "a", "c"]
    assert fused[0][1] == pytest.approx(1 / 62 + 1 / 61)
    assert fused[1][1] == pytest.approx(1 / 61)
    weighted = reciprocal_rank_fusion([[("a", 1)], [("c", 1)]], weights=[1, 2])
    assert [key for key, _ in weighted] == ["c", "a"]


def test_weighted_fusion_normalises_each_ranking_before_weighting():
    sparse = [("a", 30.0), ("b", 20.0), ("c", 10.0)]   # BM25-sized scores
    dense = [("c", 0.9), ("b", 0.8), ("d", 0.5)]       # cosine-sized scores
    assert dict(weighted_fusion([sparse, dense], [1.0, 1.0])) == pytest.approx(
        {"a": 1.0, "b": 0.5 + 0.75, "c": 1.0, "d": 0.0})
    assert weighted_fusion([sparse, dense], [1.0, 0.1])[0][0] == "a"


def test_a_lone_hit_counts_fully_in_weighted_fusion():
    assert weighted_fusion([[("a", 0.4)], [("b", 0.9), ("a", 0.1)]], [1, 1]) == [
        ("a", 1.0), ("b", 1.0)]


def test_fusing_hits_merges_the_same_chunk():
    one = Chunk("s", 0, "text", id=7)
    other = Chunk("t", 0, "other", id=8)
    fused = fuse_hits([[Hit(one, 3.0), Hit(other, 1.0)], [Hit(one, 0.5)]], "rrf", [1, 1])
    assert [(h.chunk.id, h.score) for h in fused] == [(7, pytest.approx(2 / 61)),
                                                       (8, pytest.approx(1 / 62))]


def _by_prompt(answers):
    """A scripted model that answers by which instruction it was given."""
    def reply(messages):
        system = messages[0].content
        for key, answer in answers.items():
            if key in system:
                return answer(messages) if callable(answer) else answer
        raise AssertionError(f"unexpected prompt: {system}")
    return reply


async def test_enhancers_turn_a_question_into_queries():
    model = ScriptedChatModel(replies=_by_prompt({
        "synonyms": "refund reimbursement money back",
        "different search queries": "1. refund policy\n2. - money back rules\n\n3. returns\n4. x",
        "sub-questions": "What is refundable?\nHow long does a refund take?",
        "passage": "Refunds are paid within 14 days to the original card.",
    }))
    question = "how do refunds work"
    assert await SynonymRewrite(model).queries(question) == [
        question, "refund reimbursement money back"]
    assert await MultiQuery(model, n=3).queries(question) == [
        question, "refund policy", "money back rules", "returns"]
    assert await SubQuestions(model).queries(question) == [
        question, "What is refundable?", "How long does a refund take?"]
    assert await HyDE(model).queries(question) == [
        question, ("Refunds are paid within 14 days to the original card.", "dense")]


SHOP = [
    Document("Refunds are paid back to the original card within 14 days.", "refunds"),
    Document("Gift cards never expire and can be used online.", "gift-cards"),
    Document("Deliveries take three to five working days.", "delivery"),
]


async def test_enhanced_retrieval_searches_every_query_concurrently_and_merges(tmp_path):
    searched = []
    model = ScriptedChatModel(replies=_by_prompt({
        "different search queries": "money back card\npaid back refund"}))
    kb = KnowledgeBase(f"sqlite:///{tmp_path}/kb.db", embeddings=HashingEmbeddings(),
                       enhancer=MultiQuery(model, n=2), k=2)
    await kb.add(SHOP)
    search = kb.search

    together = Rendezvous(3)  # the three searches, concurrently

    async def search_together(query, k=None, **options):
        searched.append(query)
        await together.meet()
        return await search(query, k, **options)

    kb.search = search_together
    hits = await kb.retrieve("refund")
    assert searched == ["refund", "money back card", "paid back refund"]
    sources = [h.chunk.source for h in hits]
    assert sources[0] == "refunds" and len(sources) == len(set(sources)) == 2
    await kb.aclose()


async def test_hyde_passage_is_searched_densely(tmp_path):
    passage = "Deliveries take days; parcels arrive in working days."
    kb = KnowledgeBase(f"sqlite:///{tmp_path}/kb.db", embeddings=HashingEmbeddings(),
                       enhancer=HyDE(ScriptedChatModel(replies=_by_prompt({"passage": passage}))),
                       k=2)
    await kb.add(SHOP)
    searched = []
    search = kb.search

    async def recording_search(query, k=None, *, mode=None, **options):
        searched.append((query, mode))
        return await search(query, k, mode=mode, **options)

    kb.search = recording_search
    hits = await kb.retrieve("when will my parcel arrive?")
    assert searched == [("when will my parcel arrive?", None), (passage, "dense")]
    assert "delivery" in [h.chunk.source for h in hits]
    await kb.aclose()


async def test_gates_decide_when_to_retrieve():
    ask = AskModelGate(ScriptedChatModel(replies=lambda m: "ANSWER" if "2+2" in
                                         m[-1].content else "RETRIEVE"))
    assert not await ask.needs_retrieval("what is 2+2?")
    assert await ask.needs_retrieval("what is our refund window?")
    unsure = AskModelGate(ScriptedChatModel(replies=["hmm, maybe"]))
    assert await unsure.needs_retrieval("anything")

    sure = AgreementGate(ScriptedChatModel(replies=["Paris.", "paris", "PARIS!"]), n=3)
    assert not await sure.needs_retrieval("capital of France?")
    guessing = AgreementGate(ScriptedChatModel(replies=["14 days", "30 days", "14 days"]), n=3)
    assert await guessing.needs_retrieval("our refund window?")
    unknown = AgreementGate(ScriptedChatModel(replies=["UNKNOWN"] * 3), n=3)
    assert await unknown.needs_retrieval("our refund window?")


async def test_the_agent_recalls_from_the_knowledge_base_unless_the_gate_says_no(tmp_path):
    def gate_reply(messages):
        return "ANSWER" if "hello" in messages[-1].content else "RETRIEVE"

    kb = KnowledgeBase(f"sqlite:///{tmp_path}/kb.db", gate=AskModelGate(
        ScriptedChatModel(replies=gate_reply)), k=1)
    await kb.add(SHOP)
    seen = []

    def answer(messages):
        seen.append(messages[0].content)
        return AIMessage("ok")

    agent = Agent("shop", ScriptedChatModel(replies=answer), memory=kb,
                  checkpointer="memory://")
    await agent.aask("When are refunds paid?", thread_id="t1")
    assert "Refunds are paid back to the original card within 14 days." in seen[-1]
    await agent.aask("hello there", thread_id="t2")
    assert "knowledge base" not in seen[-1]
    await kb.aclose()



async def test_enrichment_titles_documents_and_indexes_pseudo_queries(tmp_path):
    from ponder.memory.knowledge.enrichment import Enricher

    def enrich(messages):
        if "title" in messages[0].content:
            return "Loyalty scheme rules"
        return "1. How do I earn stamps?\n2. What does a full card buy?\n3. Do stamps expire?"

    model = ScriptedChatModel(replies=enrich)
    kb = KnowledgeBase(f"sqlite:///{tmp_path}/kb.db", enricher=Enricher(model))
    await kb.add([Document("Every purchase earns one stamp. Ten stamps buy a free pot.",
                           "loyalty")])
    [hit] = await kb.search("expire", k=1)  # a word found only in a pseudo-query
    assert hit.chunk.title == "Loyalty scheme rules"
    assert hit.chunk.keys == ["How do I earn stamps?", "What does a full card buy?",
                              "Do stamps expire?"]
    assert (await kb.search("scheme", k=1))[0].chunk.source == "loyalty"  # title is indexed
    assert len(model.calls) == 2
    await kb.add([Document("Every purchase earns one stamp. Ten stamps buy a free pot.",
                           "loyalty")])
    assert len(model.calls) == 2  # unchanged: not enriched again
    await kb.aclose()
