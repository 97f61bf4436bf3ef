"""One filter semantics on SQLite and Postgres: the same filters select the same chunks, for
search (every mode) and for delete. A missing key is "not equal" to any value; values match
only values of their own JSON type."""

import asyncio

import pytest

from ponder.memory.knowledge import Document, FilterError, KnowledgeBase
from ponder.testing import HashingEmbeddings

DOCUMENTS = [
    Document("Tea notes for the sales team.", "sales", None, {"team": "sales", "year": 2020}),
    Document("Tea notes for the support team.", "support", "Support",
             {"team": "support", "year": "2020", "urgent": True}),
    Document("Tea notes for nobody in particular.", "untagged", None, {"rank": 1}),
    Document("Tea notes with an empty team.", "null-team", None, {"team": None, "urgent": False,
                                                                   "year": 2023.5}),
]

CASES = [
    ({"team": "sales"}, ["sales"]),
    ({"team": {"$eq": "sales"}}, ["sales"]),
    ({"team": {"$ne": "sales"}}, ["null-team", "support", "untagged"]),
    ({"team": {"$in": ["sales", "support"]}}, ["sales", "support"]),
    ({"team": {"$nin": ["sales"]}}, ["null-team", "support", "untagged"]),
    ({"team": {"$exists": True}}, ["null-team", "sales", "support"]),
    ({"team": {"$exists": False}}, ["untagged"]),
    ({"team": None}, ["null-team"]),
    ({"team": {"$ne": None}}, ["sales", "support", "untagged"]),
    # Types are kept apart: 2020 is not "2020", true is not 1.
    ({"year": 2020}, ["sales"]),
    ({"year": "2020"}, ["support"]),
    ({"year": {"$ne": 2020}}, ["null-team", "support", "untagged"]),
    ({"urgent": True}, ["support"]),
    ({"rank": True}, []),
    ({"rank": 1}, ["untagged"]),
    # Comparisons only between numbers, or between strings; never with a missing key.
    ({"year": {"$gte": 2020}}, ["null-team", "sales"]),
    ({"year": {"$gt": 2021, "$lt": 2024}}, ["null-team"]),
    ({"year": {"$lt": "3"}}, ["support"]),
    ({"team": {"$gt": "sales"}}, ["support"]),
    # The columns: every chunk has a source; a title only when the document has one.
    ({"source": {"$in": ["sales", "nope"]}}, ["sales"]),
    ({"title": {"$exists": False}}, ["null-team", "sales", "untagged"]),
    ({"title": {"$ne": "Support"}}, ["null-team", "sales", "untagged"]),
    ({"title": "Support", "team": {"$ne": "sales"}}, ["support"]),
]


@pytest.fixture
async def kb(database_url):
    knowledge_base = KnowledgeBase(database_url, embeddings=HashingEmbeddings(64))
    await knowledge_base.add(DOCUMENTS)
    yield knowledge_base
    await knowledge_base.aclose()


async def test_every_filter_selects_the_same_chunks_on_both_backends(kb):
    found = {}
    for filter, _ in CASES:
        for mode in ("sparse", "dense", "hybrid"):
            hits = await kb.search("tea notes", k=10, mode=mode, filter=filter)
            found[str(filter), mode] = sorted(h.chunk.source for h in hits)
    assert found == {(str(f), mode): expected for f, expected in CASES
                     for mode in ("sparse", "dense", "hybrid")}


@pytest.mark.parametrize(("filter", "expected"), [
    ({"team": {"$ne": "sales"}}, ["null-team", "support", "untagged"]),
    ({"team": {"$nin": ["sales", "support"]}}, ["null-team", "untagged"]),
    ({"team": {"$exists": False}}, ["untagged"]),
])
async def test_delete_by_filter_removes_what_search_finds(kb, filter, expected):
    assert await kb.delete(filter=filter) == len(expected)
    left = sorted(h.chunk.source for h in await kb.search("tea notes", k=10, mode="sparse"))
    assert left == sorted({d.source for d in DOCUMENTS} - set(expected))


async def test_a_bad_exists_is_refused_and_leaves_no_search_running(kb):
    with pytest.raises(FilterError, match=r"\$exists for field 'team' takes true or false"):
        await kb.search("tea", filter={"team": {"$exists": "yes"}})  # hybrid: two searches
    assert [t for t in asyncio.all_tasks() if "_ranking" in repr(t.get_coro())] == []


@pytest.mark.parametrize(("filter", "message"), [
    ({"team": {}}, "field 'team' has an empty condition"),
    ({"rank": float("nan")}, "nan is not a number JSON can store"),
    ({"rank": {"$in": [1, float("inf")]}}, "inf is not a number JSON can store"),
    ({"rank": {"$gt": 2**64}}, "outside the 64-bit integer range"),
])
async def test_values_no_backend_can_compare_are_refused(kb, filter, message):
    with pytest.raises(FilterError, match=message):
        await kb.search("tea", filter=filter)


async def test_large_integers_compare_exactly_on_both_backends(database_url):
    kb = KnowledgeBase(database_url, name="big")
    try:
        await kb.add([Document("Tea with a big id.", "a", None, {"id": 2**53 + 1})])
        assert [h.chunk.source for h in await kb.search("tea", filter={"id": {"$gt": 2**53}})] \
            == ["a"]
        assert await kb.search("tea", filter={"id": {"$gt": 2**53 + 1}}) == []
    finally:
        await kb.aclose()
