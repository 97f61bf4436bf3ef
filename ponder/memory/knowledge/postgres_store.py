"""The Postgres knowledge store: pgvector with an HNSW index for cosine similarity, and word
search ranked by BM25 (``ranking = "bm25"``, the default; see ``bm25.py``) or by Postgres full
text on a stored ``tsvector`` (``ranking = "fulltext"``: English stemming, the title weighted
above the text, ``ts_rank``). Both see text through the analyser of ``analysis.py`` (CJK as
character bigrams)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from ponder.memory.knowledge.analysis import ANALYZER, index_text, query_terms
from ponder.memory.knowledge.bm25 import BM25Index
from ponder.memory.knowledge.store import (
    CHUNK_COLUMNS,
    Chunk,
    KnowledgeStore,
    SourceRecord,
    chunk_from_row,
)


def _vector(values: Sequence[float]) -> str:
    return "[" + ",".join(map(repr, map(float, values))) + "]"


# A chunk's words for full-text ranking: English stemming, the title weighted above the text.
_TSV = ("setweight(to_tsvector('english', %s), 'A') || setweight(to_tsvector('english', %s), "
        "'B') || setweight(to_tsvector('english', %s), 'C')")


def _analysed(title: str, text: str, keys: str) -> tuple[str, str, str]:
    return index_text(title), index_text(text), index_text(keys)


class PostgresKnowledgeStore(KnowledgeStore):
    """The knowledge store in Postgres: pgvector HNSW for cosine similarity, word search by BM25
    (``ranking = "bm25"``) or Postgres full text (``ranking = "fulltext"``).

    Tables are created on first use, prefixed by the store's name; connections come from a pool of
    at most 8.
    """
    ranking: Literal["bm25", "fulltext"] = "bm25"

    def __init__(self, url: str, name: str = "default") -> None:
        super().__init__(url, name)
        self._pool: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._has_vectors = False
        self._opening = asyncio.Lock()
        self._bm25: tuple[str, BM25Index] | None = None  # (the version it was built at, index)
        self._indexing = asyncio.Lock()

    async def _connection(self) -> Any:
        async with self._opening:
            if self._pool is None:
                from psycopg_pool import AsyncConnectionPool

                pool = AsyncConnectionPool(self.url, min_size=1, max_size=8, open=False,
                                           kwargs={"autocommit": False})
                await pool.open()
                async with pool.connection() as conn:
                    await self._create_tables(conn)
                self._pool, self._loop = pool, asyncio.get_running_loop()
        return self._pool.connection()

    async def _create_tables(self, conn: Any) -> None:
        p = self.prefix
        # One process at a time creates the tables; the others wait, then find them.
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (p,))
        await conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        await conn.execute(f"""
            CREATE TABLE IF NOT EXISTS {p}_meta (key text PRIMARY KEY, value text NOT NULL);
            CREATE TABLE IF NOT EXISTS {p}_fields (name text PRIMARY KEY);
            CREATE TABLE IF NOT EXISTS {p}_sources (
                source text PRIMARY KEY, hash text NOT NULL, title text,
                metadata jsonb NOT NULL, ingested_at timestamptz NOT NULL);
            CREATE TABLE IF NOT EXISTS {p}_chunks (
                id bigserial PRIMARY KEY, source text NOT NULL, position integer NOT NULL,
                text text NOT NULL, title text NOT NULL DEFAULT '', metadata jsonb NOT NULL,
                keys text NOT NULL DEFAULT '', tsv tsvector, embedding vector);
            CREATE INDEX IF NOT EXISTS {p}_chunks_source ON {p}_chunks (source);
            CREATE INDEX IF NOT EXISTS {p}_chunks_tsv ON {p}_chunks USING gin (tsv);
        """)
        row = await (await conn.execute(
            f"SELECT value FROM {p}_meta WHERE key = 'analyzer'")).fetchone()
        if row is None or row[0] != ANALYZER:
            await self._reindex_words(conn)
        await conn.commit()

    async def _reindex_words(self, conn: Any) -> None:
        """Index every chunk's words with the current analyser (see ``analysis.py``).

        Only Python can analyse, so ``tsv`` is written with each row (tables made before the
        analyser had it as a generated column of the raw text: that expression is dropped)."""
        p = self.prefix
        generated = await (await conn.execute(
            "SELECT is_generated FROM information_schema.columns WHERE table_schema = "
            "current_schema() AND table_name = %s AND column_name = 'tsv'", (f"{p}_chunks",)
        )).fetchone()
        if generated and generated[0] == "ALWAYS":
            await conn.execute(f"ALTER TABLE {p}_chunks ALTER COLUMN tsv DROP EXPRESSION")
        rows = await (await conn.execute(f"SELECT id, title, text, keys FROM {p}_chunks"
                                         )).fetchall()
        async with conn.cursor() as cur:
            await cur.executemany(f"UPDATE {p}_chunks SET tsv = {_TSV} WHERE id = %s",
                                  [(*_analysed(title, text, keys), id_)
                                   for id_, title, text, keys in rows])
        await conn.execute(f"INSERT INTO {p}_meta VALUES ('analyzer', %s) ON CONFLICT (key) "
                           f"DO UPDATE SET value = excluded.value", (ANALYZER,))

    async def hashes(self, sources: Sequence[str]) -> dict[str, str]:
        """See ``KnowledgeStore.hashes``."""
        async with await self._connection() as conn:
            rows = await conn.execute(f"SELECT source, hash FROM {self.prefix}_sources "
                                      f"WHERE source = ANY(%s)", (list(sources),))
            return dict(await rows.fetchall())

    async def replace(self, records: Sequence[SourceRecord], chunks: Sequence[Chunk],
                      vectors: Sequence[Sequence[float]] | None, model: str | None) -> None:
        """See ``KnowledgeStore.replace``; sets each chunk's ``id``. Raises ValueError when
        ``vectors`` and ``chunks`` differ in length."""
        if vectors is not None and len(vectors) != len(chunks):
            raise ValueError(f"{len(vectors)} vectors for {len(chunks)} chunks")
        if vectors and model:
            await self.check_vectors(model, len(vectors[0]))
        p = self.prefix
        now = datetime.now(UTC)
        async with await self._connection() as conn, conn.transaction():
            await self._changed(conn)
            await self._delete_sources(conn, [r.source for r in records])
            async with conn.cursor() as cur:
                await cur.executemany(
                    f"INSERT INTO {p}_sources VALUES (%s, %s, %s, %s::jsonb, %s)",
                    [(r.source, r.content_hash, r.title, json.dumps(r.metadata), now)
                     for r in records])
                rows = await conn.execute(
                    f"SELECT nextval(pg_get_serial_sequence('{p}_chunks', 'id')) "
                    f"FROM generate_series(1, %s)", (len(chunks),))
                ids = [i for (i,) in await rows.fetchall()]
                if vectors:
                    await self._ensure_vectors(conn, model or "unknown", len(vectors[0]))
                await cur.executemany(
                    f"INSERT INTO {p}_chunks (id, source, position, text, title, metadata, keys,"
                    f" embedding, tsv) VALUES (%s, %s, %s, %s, %s, %s::jsonb, %s, %s::vector, "
                    f"{_TSV})",
                    [(i, c.source, c.position, c.text, c.title or "", json.dumps(c.metadata),
                      "\n".join(c.keys), _vector(vectors[n]) if vectors else None,
                      *_analysed(c.title or "", c.text, "\n".join(c.keys)))
                     for n, (i, c) in enumerate(zip(ids, chunks, strict=True))])
                await cur.executemany(
                    f"INSERT INTO {p}_fields VALUES (%s) ON CONFLICT DO NOTHING",
                    [(k,) for k in sorted({k for c in chunks for k in c.metadata})])
        for i, chunk in zip(ids, chunks, strict=True):
            chunk.id = i

    async def _ensure_vectors(self, conn: Any, model: str, dimensions: int) -> None:
        p = self.prefix
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (p + "_vec",))
        row = await (await conn.execute(
            f"SELECT value FROM {p}_meta WHERE key = 'dimensions'")).fetchone()
        if row:
            return
        # The HNSW index needs a fixed dimension, known only now.
        await conn.execute(f"ALTER TABLE {p}_chunks ALTER COLUMN embedding "
                           f"TYPE vector({dimensions})")
        await conn.execute(f"CREATE INDEX IF NOT EXISTS {p}_chunks_embedding ON {p}_chunks "
                           f"USING hnsw (embedding vector_cosine_ops)")
        await conn.execute(f"INSERT INTO {p}_meta VALUES ('embedding_model', %s), "
                           f"('dimensions', %s)", (model, str(dimensions)))

    async def _changed(self, conn: Any) -> None:
        """Count a change to the chunks: word indexes built before it are out of date."""
        await conn.execute(f"INSERT INTO {self.prefix}_meta VALUES ('version', '1') ON CONFLICT "
                           f"(key) DO UPDATE SET value = ({self.prefix}_meta.value::bigint + 1)"
                           f"::text")

    async def _delete_sources(self, conn: Any, sources: list[str]) -> int:
        p = self.prefix
        await conn.execute(f"DELETE FROM {p}_chunks WHERE source = ANY(%s)", (sources,))
        cur = await conn.execute(f"DELETE FROM {p}_sources WHERE source = ANY(%s)", (sources,))
        return cur.rowcount

    async def chunks(self, sources: Sequence[str]) -> list[Chunk]:
        """See ``KnowledgeStore.chunks``."""
        sql = (f"SELECT {CHUNK_COLUMNS} FROM unnest(%s::text[]) WITH ORDINALITY s(source, n) "
               f"JOIN {self.prefix}_chunks c ON c.source = s.source ORDER BY s.n, c.position")
        async with await self._connection() as conn:
            rows = await conn.execute(sql, (list(sources),))
            return [chunk_from_row(row) for row in await rows.fetchall()]

    async def delete(self, *, sources: Sequence[str] = (), filter: dict | None = None) -> int:
        """See ``KnowledgeStore.delete``."""
        condition, params = await self.condition(filter, "postgres")
        async with await self._connection() as conn, conn.transaction():
            await self._changed(conn)
            named = list(sources)
            if filter:
                rows = await conn.execute(
                    f"SELECT DISTINCT c.source FROM {self.prefix}_chunks c WHERE {condition}",
                    params)
                named += [s for (s,) in await rows.fetchall()]
            return await self._delete_sources(conn, named)

    async def chunks_by_id(self, ids: Sequence[int]) -> dict[int, Chunk]:
        """See ``KnowledgeStore.chunks_by_id``."""
        async with await self._connection() as conn:
            rows = await conn.execute(f"SELECT {CHUNK_COLUMNS} FROM {self.prefix}_chunks c "
                                      f"WHERE c.id = ANY(%s)", (list(ids),))
            return {row[0]: chunk_from_row(row) for row in await rows.fetchall()}

    async def sparse_ranking(self, query: str, k: int, filter: dict | None = None
                             ) -> list[tuple[int, float]]:
        """(chunk id, score) pairs, best first: BM25 over an in-process index, or ``ts_rank``."""
        if self.ranking == "fulltext":
            return await self._fulltext(query, k, filter)
        index = await self._bm25_index()
        allowed = None
        if filter:
            condition, params = await self.condition(filter, "postgres")
            async with await self._connection() as conn:
                rows = await conn.execute(
                    f"SELECT c.id FROM {self.prefix}_chunks c WHERE {condition}", params)
                allowed = [i for (i,) in await rows.fetchall()]
        return await asyncio.to_thread(index.search, query, k, allowed)

    async def _bm25_index(self) -> BM25Index:
        """The BM25 index of the chunks as they are now: rebuilt when another write (from this
        process or any other) has changed them."""
        async with self._indexing:
            async with await self._connection() as conn:
                row = await (await conn.execute(
                    f"SELECT value FROM {self.prefix}_meta WHERE key = 'version'")).fetchone()
                version = row[0] if row else "0"
                if self._bm25 is None or self._bm25[0] != version:
                    rows = await (await conn.execute(
                        f"SELECT id, title, text, keys FROM {self.prefix}_chunks ORDER BY id"
                    )).fetchall()
                    # The title twice: a match there counts double, as in the SQLite store.
                    texts = [f"{title}\n{title}\n{text}\n{keys}" for _, title, text, keys in rows]
                    index = await asyncio.to_thread(BM25Index, [r[0] for r in rows], texts)
                    self._bm25 = (version, index)
            return self._bm25[1]

    async def _fulltext(self, query: str, k: int, filter: dict | None
                        ) -> list[tuple[int, float]]:
        terms = query_terms(query)
        if not terms:
            return []
        condition, params = await self.condition(filter, "postgres")
        # Any term may match (OR); ts_rank counts how often (Postgres has no IDF).
        sql = (f"SELECT c.id, ts_rank(c.tsv, q) AS score "
               f"FROM {self.prefix}_chunks c, to_tsquery('english', %s) q "
               f"WHERE c.tsv @@ q AND {condition} ORDER BY score DESC, c.id LIMIT %s")
        async with await self._connection() as conn:
            rows = await conn.execute(sql, (" | ".join(terms), *params, k))
            return [(i, float(score)) for i, score in await rows.fetchall()]

    async def dense_ranking(self, vector: Sequence[float], k: int, filter: dict | None = None
                            ) -> list[tuple[int, float]]:
        """(chunk id, cosine similarity) pairs of the ``k`` nearest chunks, best first (HNSW); []
        before any vector is stored."""
        if not self._has_vectors:  # asked once there are some: they are never dropped
            self._has_vectors = await self.embedding_model() is not None
            if not self._has_vectors:
                return []
        condition, params = await self.condition(filter, "postgres")
        sql = (f"SELECT c.id, 1 - (c.embedding <=> %s::vector) AS score "
               f"FROM {self.prefix}_chunks c WHERE c.embedding IS NOT NULL AND {condition} "
               f"ORDER BY c.embedding <=> %s::vector LIMIT %s")
        literal = _vector(vector)
        async with await self._connection() as conn, conn.transaction():
            # Enough candidates for k, and a filtered scan that goes on until k rows pass.
            await conn.execute(f"SET LOCAL hnsw.ef_search = {max(40, min(int(k), 1000))}")
            await conn.execute("SET LOCAL hnsw.iterative_scan = strict_order")
            rows = await conn.execute(sql, (literal, *params, literal, k))
            return [(i, float(score)) for i, score in await rows.fetchall()]

    async def embedding_model(self) -> tuple[str, int] | None:
        """See ``KnowledgeStore.embedding_model``."""
        async with await self._connection() as conn:
            rows = dict(await (await conn.execute(
                f"SELECT key, value FROM {self.prefix}_meta")).fetchall())
        if "dimensions" not in rows:
            return None
        return rows["embedding_model"], int(rows["dimensions"])

    async def fields(self) -> set[str]:
        """See ``KnowledgeStore.fields``."""
        async with await self._connection() as conn:
            rows = await conn.execute(f"SELECT name FROM {self.prefix}_fields")
            return {name for (name,) in await rows.fetchall()}

    async def stats(self) -> dict[str, Any]:
        """See ``KnowledgeStore.stats`` (``backend`` is "postgres")."""
        async with await self._connection() as conn:
            (sources,) = await (await conn.execute(
                f"SELECT count(*) FROM {self.prefix}_sources")).fetchone()
            (chunks,) = await (await conn.execute(
                f"SELECT count(*) FROM {self.prefix}_chunks")).fetchone()
        model = await self.embedding_model()
        return {"name": self.name, "backend": "postgres", "sources": sources, "chunks": chunks,
                "embedding_model": model[0] if model else None,
                "dimensions": model[1] if model else None,
                "fields": sorted(await self.fields())}

    async def aclose(self) -> None:
        """Close the connection pool (on the loop that opened it)."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        if self._loop is not asyncio.get_running_loop() and self._loop.is_running():
            # Opened by a sync call (on ponder's background loop): close it there.
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(pool.close(), self._loop))
        else:
            await pool.close()
