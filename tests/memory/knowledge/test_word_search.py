"""Word search in any script, on SQLite (FTS5) and Postgres (BM25 and full text): words inside
unsegmented Chinese, Japanese and Korean text are found, and English keeps its stemming."""

import asyncio
import sqlite3

import pytest

from ponder.memory.knowledge import Document, KnowledgeBase
from ponder.memory.knowledge.analysis import index_text, query_terms

LINES = [
    Document("床前明月光", "zh-1"), Document("疑是地上霜", "zh-2"),
    Document("举头望明月", "zh-3"), Document("低头思故乡", "zh-4"),
    Document("東京の桜は三月に咲きます", "ja-1"), Document("京都で抹茶を飲みました", "ja-2"),
    Document("서울에서녹차를마셨습니다", "ko-1"), Document("부산의바다는아름답습니다", "ko-2"),
    Document("Brewing green tea needs cooler water than black tea.", "en-1"),
    Document("หนังสือภาษาไทยเล่มนี้ดีมาก", "th-1"),
    Document("Ｆｕｌｌ－ｗｉｄｔｈ ＡＢＣ letters and ｶﾀｶﾅ", "wide-1"),
]

QUERIES = [
    ("故乡", ["zh-4"]), ("明月", ["zh-1", "zh-3"]), ("月", ["ja-1", "zh-1", "zh-3"]),
    ("我思念故乡", ["zh-4"]), ("霜", ["zh-2"]),
    ("抹茶", ["ja-2"]), ("桜", ["ja-1"]), ("京", ["ja-1", "ja-2"]),
    ("녹차", ["ko-1"]), ("바다", ["ko-2"]),
    ("brews", ["en-1"]), ("waters", ["en-1"]),
    ("ภาษาไทย", ["th-1"]),
    # Queries are NFKC-normalised as documents are: full-width letters, half-width kana.
    ("ＡＢＣ", ["wide-1"]), ("abc", ["wide-1"]), ("ｶﾀｶﾅ", ["wide-1"]), ("カタカナ", ["wide-1"]),
]


@pytest.fixture(params=["sqlite", "postgres-bm25", "postgres-fulltext"])
async def kb(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/ponder.db"
    else:
        url = request.getfixturevalue("postgres_url")
    knowledge_base = KnowledgeBase(url, name="poems")
    if request.param == "postgres-fulltext":
        knowledge_base.store.ranking = "fulltext"
    await knowledge_base.add(LINES)
    yield knowledge_base
    await knowledge_base.aclose()


async def test_words_inside_unsegmented_text_are_found(kb):
    found = {query: sorted(h.chunk.source for h in await kb.search(query, k=5, mode="sparse"))
             for query, _ in QUERIES}
    assert found == dict(QUERIES)


async def test_a_sparse_knowledge_base_recalls_for_a_chinese_question(kb):
    recalled = await kb.recall("思念故乡的诗是哪一句？")
    assert recalled is not None and "低头思故乡" in recalled


def test_the_analyser_gives_characters_and_bigrams_and_leaves_other_scripts_alone():
    assert index_text("低头思故乡") == " 低 头 思 故 乡 低头 头思 思故 故乡 "
    assert query_terms("故乡的月") == ["故乡", "乡的", "的月"]
    assert query_terms("月") == ["月"]
    assert query_terms("The brewing of tea") == ["brewing", "tea"]
    assert index_text("Brewing tea") == "Brewing tea"


async def test_processes_opening_an_old_index_at_once_wait_for_its_rebuild(tmp_path):
    path = tmp_path / "old.db"
    _old_layout(path, [(i, f"note{i}", f"第{i}号笔记讲故乡的茶 tea note {i}") for i in range(3000)])
    stores = [KnowledgeBase(f"sqlite:///{path}") for _ in range(3)]
    try:
        found = await asyncio.gather(*(kb.search("故乡", k=3000, mode="sparse")
                                       for kb in stores))
        assert [len(hits) for hits in found] == [3000, 3000, 3000]
    finally:
        for kb in stores:
            await kb.aclose()


def _old_layout(path, rows):
    """A knowledge base as ponder wrote it before the analyser: FTS5 over the raw text, kept by
    triggers."""
    with sqlite3.connect(path) as conn:
        conn.executescript(OLD_LAYOUT)
        conn.executemany("INSERT INTO ponder_kb_default_sources VALUES (?, 'h', NULL, '{}', '')",
                         [(source,) for _, source, _ in rows])
        conn.executemany("INSERT INTO ponder_kb_default_chunks VALUES (?, ?, 0, ?, '', '{}', '')",
                         rows)


OLD_LAYOUT = """
    CREATE TABLE ponder_kb_default_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE ponder_kb_default_fields (name TEXT PRIMARY KEY);
    CREATE TABLE ponder_kb_default_sources (source TEXT PRIMARY KEY, hash TEXT NOT NULL,
        title TEXT, metadata TEXT NOT NULL, ingested_at TEXT NOT NULL);
    CREATE TABLE ponder_kb_default_chunks (id INTEGER PRIMARY KEY, source TEXT NOT NULL,
        position INTEGER NOT NULL, text TEXT NOT NULL, title TEXT NOT NULL DEFAULT '',
        metadata TEXT NOT NULL, keys TEXT NOT NULL DEFAULT '');
    CREATE VIRTUAL TABLE ponder_kb_default_fts USING fts5(title, text, keys,
        content='ponder_kb_default_chunks', content_rowid='id',
        tokenize='porter unicode61 remove_diacritics 2');
    CREATE TRIGGER ponder_kb_default_chunks_indexed AFTER INSERT
        ON ponder_kb_default_chunks BEGIN
        INSERT INTO ponder_kb_default_fts (rowid, title, text, keys)
        VALUES (new.id, new.title, new.text, new.keys);
    END;
"""


async def test_an_index_from_before_the_analyser_is_rebuilt_and_loses_nothing(tmp_path):
    path = tmp_path / "old.db"
    _old_layout(path, [(1, "poem", "低头思故乡"), (2, "tea", "Brewing tea")])
    kb = KnowledgeBase(f"sqlite:///{path}")
    try:
        assert [h.chunk.source for h in await kb.search("故乡", mode="sparse")] == ["poem"]
        assert [h.chunk.source for h in await kb.search("brew", mode="sparse")] == ["tea"]
        assert await kb.delete(source="poem") == 1
        assert await kb.search("故乡", mode="sparse") == []
        assert (await kb.stats())["chunks"] == 1
    finally:
        await kb.aclose()


async def test_a_postgres_table_from_before_the_analyser_is_reindexed(postgres_url):
    import psycopg

    # The layout ponder used before: tsv generated from the raw text.
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("""
            CREATE EXTENSION IF NOT EXISTS vector;
            CREATE TABLE ponder_kb_default_chunks (
                id bigserial PRIMARY KEY, source text NOT NULL, position integer NOT NULL,
                text text NOT NULL, title text NOT NULL DEFAULT '', metadata jsonb NOT NULL,
                keys text NOT NULL DEFAULT '',
                tsv tsvector GENERATED ALWAYS AS (
                    setweight(to_tsvector('english', title), 'A')
                    || setweight(to_tsvector('english', text), 'B')
                    || setweight(to_tsvector('english', keys), 'C')) STORED,
                embedding vector);
            INSERT INTO ponder_kb_default_chunks (source, position, text, metadata)
            VALUES ('poem', 0, '低头思故乡', '{}');
        """)
    kb = KnowledgeBase(postgres_url)
    kb.store.ranking = "fulltext"
    try:
        assert [h.chunk.source for h in await kb.search("故乡", mode="sparse")] == ["poem"]
        await kb.add(Document("举头望明月", "moon"))  # new rows get their words too
        assert [h.chunk.source for h in await kb.search("明月", mode="sparse")] == ["moon"]
    finally:
        await kb.aclose()
