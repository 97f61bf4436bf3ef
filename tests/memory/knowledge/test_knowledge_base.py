"""The knowledge base on a real SQLite file and a real Postgres: ingestion, idempotence,
replacement, deletion, filters, the three search modes, and bad input that loses nothing."""

import asyncio

import pytest
from langchain_core.embeddings import Embeddings

from ponder.config import ConfigurationError
from ponder.memory.knowledge import (
    Chunker,
    Document,
    DocumentError,
    EmbeddingMismatchError,
    FilterError,
    KnowledgeBase,
)
from ponder.testing import HashingEmbeddings

TEAS = [
    Document("Sencha is a Japanese green tea, steamed and rolled. Brew it at 75 degrees.",
             "sencha", "Sencha", {"kind": "green", "year": 2019, "origin": "japan"}),
    Document("Assam is a malty black tea from India. Brew it with boiling water.",
             "assam", "Assam", {"kind": "black", "year": 2021, "origin": "india"}),
    Document("Darjeeling, the champagne of teas, is a light black tea from India.",
             "darjeeling", "Darjeeling", {"kind": "black", "year": 2023, "origin": "india"}),
    Document("Matcha is stone-ground green tea powder whisked into hot water.",
             "matcha", "Matcha", {"kind": "green", "year": 2024, "origin": "japan"}),
]



@pytest.fixture
async def kb(database_url):
    knowledge_base = KnowledgeBase(database_url, embeddings=HashingEmbeddings(64))
    yield knowledge_base
    await knowledge_base.aclose()


async def test_ingestion_is_idempotent_and_a_changed_source_replaces_its_chunks(kb):
    first = await kb.add(TEAS)
    assert (first.added, first.updated, first.unchanged, first.chunks) == (4, 0, 0, 4)
    calls = kb.embeddings.calls
    again = await kb.add(TEAS)
    assert (again.added, again.updated, again.unchanged, again.chunks) == (0, 0, 4, 0)
    assert kb.embeddings.calls == calls  # nothing was embedded again
    changed = Document("Sencha is now described as grassy and sweet.", "sencha", "Sencha",
                       {"kind": "green", "year": 2025, "origin": "japan"})
    report = await kb.add([changed])
    assert (report.added, report.updated) == (0, 1)
    hits = await kb.search("grassy sweet", k=1, mode="sparse")
    assert hits[0].chunk.text == changed.text
    assert await kb.search("steamed rolled", k=5, mode="sparse") == []  # old chunk gone
    assert (await kb.stats())["sources"] == 4


async def test_the_three_search_modes_find_the_right_tea(kb):
    await kb.add(TEAS)
    for mode in ("sparse", "dense", "hybrid"):
        hits = await kb.search("malty black tea from India", k=2, mode=mode)
        assert hits[0].chunk.source == "assam", mode
        assert hits[0].chunk.metadata == {"kind": "black", "year": 2021, "origin": "india"}
        assert hits[0].score >= hits[1].score


async def test_metadata_filters(kb):
    await kb.add(TEAS)

    async def sources(filter, mode="hybrid"):
        return sorted(h.chunk.source for h in await kb.search("tea", k=10, mode=mode,
                                                              filter=filter))

    for mode in ("sparse", "dense", "hybrid"):
        assert await sources({"kind": "green"}, mode) == ["matcha", "sencha"]
    assert await sources({"year": {"$gte": 2021}, "origin": "india"}) == ["assam", "darjeeling"]
    assert await sources({"kind": {"$in": ["green"]}, "year": {"$lt": 2020}}) == ["sencha"]
    assert await sources({"origin": {"$ne": "japan"}}) == ["assam", "darjeeling"]
    assert await sources({"source": {"$nin": ["assam", "matcha"]}}) == ["darjeeling", "sencha"]
    with pytest.raises(FilterError, match="unknown metadata field 'colour'.*known fields: kind"):
        await kb.search("tea", filter={"colour": "green"})
    with pytest.raises(FilterError, match="unknown operator '\\$like'"):
        await kb.search("tea", filter={"kind": {"$like": "g%"}})


async def test_delete_by_source_and_by_filter(kb):
    await kb.add(TEAS)
    assert await kb.delete(source="assam") == 1
    assert await kb.delete(filter={"kind": "green"}) == 2
    assert [h.chunk.source for h in await kb.search("tea", k=10)] == ["darjeeling"]
    assert await kb.delete(source="nothing-like-this") == 0
    # A deleted source is ingested anew.
    assert (await kb.add(TEAS)).added == 3


async def test_long_documents_are_chunked_and_positions_kept(kb):
    text = "\n\n".join(f"Paragraph {i} explains step {i} of brewing oolong." for i in range(30))
    kb.chunker = Chunker(size=30, overlap=5)
    report = await kb.add([Document(text, "oolong-guide", "Oolong")])
    assert report.chunks > 5
    hits = await kb.search("step 17", k=1, mode="sparse")
    assert "step 17 " in hits[0].chunk.text and hits[0].chunk.title == "Oolong"
    assert hits[0].chunk.position > 0


class _Broken(Embeddings):
    provider, model_name = "testing", "hashing-64"

    def embed_documents(self, texts):
        raise RuntimeError("the embedding service is down")

    def embed_query(self, text):
        raise RuntimeError("the embedding service is down")


async def test_bad_input_is_a_clear_error_and_loses_nothing(kb, database_url, tmp_path):
    await kb.add(TEAS)
    before = await kb.stats()

    no_model = KnowledgeBase(database_url)
    with pytest.raises(EmbeddingMismatchError, match="holds vectors from testing:hashing-64: "
                       "add documents with those embeddings"):
        await no_model.add([Document("Genmaicha has roasted rice.", "genmaicha")])
    await no_model.aclose()

    other_model = KnowledgeBase(database_url, embeddings=HashingEmbeddings(32))
    with pytest.raises(EmbeddingMismatchError, match="holds vectors from testing:hashing-64, "
                       "not testing:hashing-32"):
        await other_model.add([Document("Genmaicha has roasted rice.", "genmaicha")])
    await other_model.aclose()

    # The same model asked for fewer dimensions (as OpenAI's `dimensions=` does).
    shortened = HashingEmbeddings(32)
    shortened.model_name = "hashing-64"
    other_size = KnowledgeBase(database_url, embeddings=shortened)
    with pytest.raises(EmbeddingMismatchError, match="holds 64-dimensional vectors from "
                       "testing:hashing-64, but testing:hashing-64 gives 32"):
        await other_size.add([Document("Genmaicha has roasted rice.", "genmaicha")])
    await other_size.aclose()

    empty = Document("   \n ", "blank")
    with pytest.raises(DocumentError, match="blank: the document is empty"):
        await kb.add([Document("Rooibos is caffeine free.", "rooibos"), empty])
    report = await kb.add([Document("Rooibos is caffeine free.", "rooibos"), empty],
                          skip_errors=True)
    assert report.added == 1 and report.errors == ["blank: the document is empty (no text to "
                                                   "index)"]
    await kb.delete(source="rooibos")

    # A failure mid-ingestion (here, the embedding service) leaves the stored sources as they were.
    broken = KnowledgeBase(database_url, embeddings=_Broken())
    with pytest.raises(RuntimeError, match="down"):
        await broken.add([Document("Sencha, rewritten.", "sencha", "Sencha")])
    await broken.aclose()

    assert await kb.stats() == before
    assert (await kb.search("steamed rolled", k=1))[0].chunk.source == "sencha"
    with pytest.raises(ValueError, match="unknown search mode 'fuzzy'"):
        await kb.search("tea", mode="fuzzy")


async def test_word_search_needs_no_embeddings(database_url):
    kb = KnowledgeBase(database_url, name="words")
    await kb.add(TEAS)
    assert kb.mode == "sparse"
    assert (await kb.search("champagne", k=1))[0].chunk.source == "darjeeling"
    with pytest.raises(ValueError, match="dense search needs embeddings"):
        await kb.search("tea", mode="dense")
    await kb.aclose()


async def test_knowledge_bases_with_different_names_are_separate(database_url):
    one = KnowledgeBase(database_url, name="one")
    two = KnowledgeBase(database_url, name="two")
    await one.add(TEAS[:1])
    await two.add(TEAS[1:2])
    assert [h.chunk.source for h in await one.search("tea", k=5)] == ["sencha"]
    assert [h.chunk.source for h in await two.search("tea", k=5)] == ["assam"]
    await asyncio.gather(one.aclose(), two.aclose())
    with pytest.raises(ConfigurationError, match="knowledge base name 'Bad-Name'"):
        KnowledgeBase(database_url, name="Bad-Name")


async def test_files_are_ingested_and_deleted_by_the_path_given(tmp_path, database_url):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "hours.md").write_text("# Hours\n\nThe shop opens at nine.")
    (folder / "bad.pdf").write_bytes(b"not a pdf")
    kb = KnowledgeBase(database_url)
    with pytest.raises(DocumentError, match="bad.pdf"):
        await kb.add([folder])
    report = await kb.add([folder], skip_errors=True, metadata={"team": "shop"})
    assert report.added == 1 and "bad.pdf" in report.errors[0]
    hit = (await kb.search("when does the shop open", k=1))[0]
    assert hit.chunk.title == "Hours" and hit.chunk.metadata["team"] == "shop"
    assert await kb.delete(source=str(folder / "hours.md")) == 1
    await kb.aclose()


async def test_postgres_word_search_sees_every_writer_and_can_use_full_text(postgres_url):
    reader, writer = KnowledgeBase(postgres_url), KnowledgeBase(postgres_url)
    await writer.add(TEAS[:1])
    assert [h.chunk.source for h in await reader.search("tea", k=5)] == ["sencha"]
    await writer.add(TEAS[1:])  # the reader's BM25 index is now out of date
    assert (await reader.search("malty", k=5))[0].chunk.source == "assam"
    await writer.delete(source="assam")
    assert await reader.search("malty", k=5) == []
    reader.store.ranking = "fulltext"
    assert [h.chunk.source for h in await reader.search("champagne", k=5)] == ["darjeeling"]
    assert sorted(h.chunk.source for h in await reader.search(
        "tea", k=5, filter={"origin": "japan"})) == ["matcha", "sencha"]
    await asyncio.gather(reader.aclose(), writer.aclose())
