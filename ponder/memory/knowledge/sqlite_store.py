"""The SQLite knowledge store: FTS5 (``bm25()``, Porter stemming, CJK bigrams from
``analysis.py``) and sqlite-vec, in one file.

SQLite calls are synchronous, so each runs in a worker thread on the store's one connection.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from array import array
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from ponder.db.sqlite import connect as connect_sqlite
from ponder.db.url import parse_url
from ponder.memory.knowledge.analysis import ANALYZER, index_text, query_terms
from ponder.memory.knowledge.store import (
    CHUNK_COLUMNS,
    Chunk,
    Hit,
    KnowledgeStore,
    SourceRecord,
    chunk_from_row,
)

T = TypeVar("T")


def connect(path: str) -> Any:
    """A connection with sqlite-vec loaded, in WAL mode, usable from worker threads."""
    import sqlite_vec

    conn = connect_sqlite(path, check_same_thread=False, isolation_level=None)
    conn.enable_load_extension(True)
    sqlite_vec.load(conn)
    conn.enable_load_extension(False)
    return conn


def _blob(vector: Sequence[float]) -> bytes:
    return array("f", vector).tobytes()


# Rebuilding the word index of a large knowledge base (a new analyser) takes a while: other
# processes opening it meanwhile wait this long for it, beyond SQLite's busy timeout.
_MIGRATION_PATIENCE_S = 600.0


def _begin_waiting(conn: Any, patience_s: float) -> None:
    """BEGIN IMMEDIATE, waiting up to ``patience_s`` for another writer's lock."""
    deadline = time.monotonic() + patience_s
    while True:
        try:
            conn.execute("BEGIN IMMEDIATE")  # waits for the busy timeout itself
            return
        except Exception as exc:  # the sqlite3 module's own OperationalError (two libraries)
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise


def _analysed(id_: int, title: str, text: str, keys: str) -> tuple[int, str, str, str]:
    """A chunk's row of the word index: its searchable columns as the analyser gives them."""
    return id_, index_text(title), index_text(text), index_text(keys)


class SqliteKnowledgeStore(KnowledgeStore):
    """The knowledge store in SQLite: FTS5 ``bm25()`` for words and sqlite-vec for vectors.

    Writes run on one connection in a worker thread; reads on per-thread reader connections.
    """
    # Column weights of bm25(): a match in the title counts twice (chosen on SciFact train).
    weights = (2.0, 1.0, 1.0)
    # Dense search's first pass takes this many candidates per result (see ``dense``).
    oversample = 2

    def __init__(self, url: str, name: str = "default") -> None:
        super().__init__(url, name)
        self.path = parse_url(url).path
        self._conn: Any = None  # the one writer
        self._lock = threading.Lock()
        self._readers = threading.local()  # a reader per worker thread: searches run in parallel
        self._reader_connections: list[Any] = []
        # Reads under way: closing waits for them (a cancelled search's thread still runs).
        self._reading = 0
        self._no_reads = threading.Condition(self._lock)
        self._dimensions: int | None = None

    async def _run(self, work: Callable[[Any], T]) -> T:
        """``work`` on the writer connection, one at a time."""
        def locked() -> T:
            with self._lock:
                if self._conn is None:
                    self._conn = self._open()
                return work(self._conn)

        return await asyncio.to_thread(locked)

    async def _read(self, work: Callable[[Any], T]) -> T:
        """``work`` on this worker thread's reader: in WAL mode, readers neither wait for each
        other nor for the writer."""
        if self.path == ":memory:" or self._conn is None:
            return await self._run(work)  # a private in-memory database; or tables to create

        def on_reader() -> T:
            with self._lock:
                conn = getattr(self._readers, "conn", None)
                if conn is None:
                    conn = self._readers.conn = connect(self.path)
                    self._reader_connections.append(conn)
                self._reading += 1
            try:
                return work(conn)
            finally:
                with self._lock:
                    self._reading -= 1
                    self._no_reads.notify_all()

        return await asyncio.to_thread(on_reader)

    def _open(self) -> Any:
        conn = connect(self.path)
        p = self.prefix
        _begin_waiting(conn, _MIGRATION_PATIENCE_S)
        try:
            conn.execute(f"CREATE TABLE IF NOT EXISTS {p}_meta (key TEXT PRIMARY KEY, "
                         f"value TEXT NOT NULL)")
            conn.execute(f"CREATE TABLE IF NOT EXISTS {p}_fields (name TEXT PRIMARY KEY)")
            conn.execute(f"""CREATE TABLE IF NOT EXISTS {p}_sources (
                source TEXT PRIMARY KEY, hash TEXT NOT NULL, title TEXT,
                metadata TEXT NOT NULL, ingested_at TEXT NOT NULL)""")
            conn.execute(f"""CREATE TABLE IF NOT EXISTS {p}_chunks (
                id INTEGER PRIMARY KEY, source TEXT NOT NULL, position INTEGER NOT NULL,
                text TEXT NOT NULL, title TEXT NOT NULL DEFAULT '', metadata TEXT NOT NULL,
                keys TEXT NOT NULL DEFAULT '')""")
            conn.execute(f"CREATE INDEX IF NOT EXISTS {p}_chunks_source ON {p}_chunks (source)")
            row = conn.execute(f"SELECT value FROM {p}_meta WHERE key = 'analyzer'").fetchone()
            if row is None or row[0] != ANALYZER:
                self._rebuild_text_index(conn)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            conn.close()
            raise
        self._dimensions = self._stored_dimensions(conn)
        return conn

    def _rebuild_text_index(self, conn: Any) -> None:
        """(Re)create the word index with the current analyser and index every chunk in it.

        The index is contentless: it holds the analysed text (see ``analysis.py``), which only
        Python can make, so rows are written and deleted by the store, not by triggers. (A
        contentless table's rows are deleted with FTS5's 'delete' command and the values they
        were indexed with, which every SQLite with FTS5 supports.)"""
        p = self.prefix
        # The layout before analysis: an external-content index kept by triggers.
        conn.execute(f"DROP TRIGGER IF EXISTS {p}_chunks_indexed")
        conn.execute(f"DROP TRIGGER IF EXISTS {p}_chunks_unindexed")
        conn.execute(f"DROP TABLE IF EXISTS {p}_fts")
        conn.execute(f"""CREATE VIRTUAL TABLE {p}_fts USING fts5(
            title, text, keys, content='',
            tokenize='porter unicode61 remove_diacritics 2')""")
        rows = conn.execute(f"SELECT id, title, text, keys FROM {p}_chunks")
        conn.executemany(f"INSERT INTO {p}_fts (rowid, title, text, keys) VALUES (?, ?, ?, ?)",
                         (_analysed(*row) for row in rows.fetchall()))
        conn.execute(f"INSERT OR REPLACE INTO {p}_meta VALUES ('analyzer', ?)", (ANALYZER,))

    def _stored_dimensions(self, conn: Any) -> int | None:
        row = conn.execute(f"SELECT value FROM {self.prefix}_meta WHERE key = 'dimensions'"
                           ).fetchone()
        return int(row[0]) if row else None

    async def hashes(self, sources: Sequence[str]) -> dict[str, str]:
        """See ``KnowledgeStore.hashes``."""
        def read(conn: Any) -> dict[str, str]:
            rows = conn.execute(
                f"SELECT source, hash FROM {self.prefix}_sources "
                f"WHERE source IN (SELECT value FROM json_each(?))", (json.dumps(list(sources)),))
            return dict(rows.fetchall())

        return await self._read(read)

    async def replace(self, records: Sequence[SourceRecord], chunks: Sequence[Chunk],
                      vectors: Sequence[Sequence[float]] | None, model: str | None) -> None:
        """See ``KnowledgeStore.replace``; sets each chunk's ``id``. Raises ValueError when
        ``vectors`` and ``chunks`` differ in length."""
        if vectors is not None and len(vectors) != len(chunks):
            raise ValueError(f"{len(vectors)} vectors for {len(chunks)} chunks")
        if vectors and model:
            await self.check_vectors(model, len(vectors[0]))
        now = datetime.now(UTC).isoformat(timespec="seconds")
        p = self.prefix
        # Analysed before the write lock is taken: other writers wait for the lock, not for this.
        words = [_analysed(0, c.title or "", c.text, "\n".join(c.keys))[1:] for c in chunks]

        def write(conn: Any) -> None:
            conn.execute("BEGIN IMMEDIATE")
            try:
                sources = json.dumps([r.source for r in records])
                self._delete_sources(conn, sources)
                conn.executemany(
                    f"INSERT INTO {p}_sources VALUES (?, ?, ?, ?, ?)",
                    [(r.source, r.content_hash, r.title, json.dumps(r.metadata), now)
                     for r in records])
                (first,) = conn.execute(f"SELECT coalesce(max(id), 0) + 1 FROM {p}_chunks"
                                        ).fetchone()
                rows = [(first + i, c.source, c.position, c.text, c.title or "",
                         json.dumps(c.metadata), "\n".join(c.keys)) for i, c in enumerate(chunks)]
                conn.executemany(f"INSERT INTO {p}_chunks VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
                conn.executemany(
                    f"INSERT INTO {p}_fts (rowid, title, text, keys) VALUES (?, ?, ?, ?)",
                    [(first + i, *analysed) for i, analysed in enumerate(words)])
                conn.executemany(f"INSERT OR IGNORE INTO {p}_fields VALUES (?)",
                                 [(k,) for k in {k for c in chunks for k in c.metadata}])
                if vectors:
                    self._ensure_vectors(conn, model or "unknown", len(vectors[0]))
                    rows = [(first + i, _blob(v)) for i, v in enumerate(vectors)]
                    conn.executemany(f"INSERT INTO {p}_vectors VALUES (?, ?)", rows)
                    if self._dimensions % 8 == 0:
                        conn.executemany(f"INSERT INTO {p}_bits VALUES "
                                         f"(?, vec_quantize_binary(?))", rows)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                self._dimensions = self._stored_dimensions(conn)
                raise
            for i, chunk in enumerate(chunks):
                chunk.id = first + i

        await self._run(write)

    def _ensure_vectors(self, conn: Any, model: str, dimensions: int) -> None:
        if self._dimensions is not None:
            return
        # The vectors as written, for exact scores, and apart from them (a scan reads only
        # these few bytes a row) their sign bits, for a fast first pass.
        conn.execute(f"CREATE TABLE IF NOT EXISTS {self.prefix}_vectors ("
                     f"id INTEGER PRIMARY KEY, embedding BLOB NOT NULL)")
        conn.execute(f"CREATE TABLE IF NOT EXISTS {self.prefix}_bits ("
                     f"id INTEGER PRIMARY KEY, bits BLOB NOT NULL)")
        conn.executemany(f"INSERT OR REPLACE INTO {self.prefix}_meta VALUES (?, ?)",
                         [("embedding_model", model), ("dimensions", str(dimensions))])
        self._dimensions = dimensions

    def _delete_sources(self, conn: Any, sources_json: str) -> int:
        p = self.prefix
        if self._dimensions is not None:
            for table in ("vectors", "bits"):
                conn.execute(f"DELETE FROM {p}_{table} WHERE id IN (SELECT id FROM {p}_chunks "
                             f"WHERE source IN (SELECT value FROM json_each(?)))",
                             (sources_json,))
        indexed = conn.execute(f"SELECT id, title, text, keys FROM {p}_chunks WHERE source IN "
                               f"(SELECT value FROM json_each(?))", (sources_json,))
        conn.executemany(f"INSERT INTO {p}_fts ({p}_fts, rowid, title, text, keys) "
                         f"VALUES ('delete', ?, ?, ?, ?)",
                         [_analysed(*row) for row in indexed.fetchall()])
        conn.execute(f"DELETE FROM {p}_chunks WHERE source IN (SELECT value FROM json_each(?))",
                     (sources_json,))
        return conn.execute(f"DELETE FROM {p}_sources WHERE source IN "
                            f"(SELECT value FROM json_each(?))", (sources_json,)).rowcount

    async def chunks(self, sources: Sequence[str]) -> list[Chunk]:
        """See ``KnowledgeStore.chunks``."""
        sql = (f"SELECT {CHUNK_COLUMNS} FROM json_each(?) s JOIN {self.prefix}_chunks c "
               f"ON c.source = s.value ORDER BY s.key, c.position")
        return await self._read(lambda conn: [
            chunk_from_row(row) for row in conn.execute(sql, (json.dumps(list(sources)),))])

    async def delete(self, *, sources: Sequence[str] = (), filter: dict | None = None) -> int:
        """See ``KnowledgeStore.delete``."""
        condition, params = await self.condition(filter, "sqlite")

        def write(conn: Any) -> int:
            conn.execute("BEGIN IMMEDIATE")
            try:
                named = list(sources)
                if filter:
                    named += [s for (s,) in conn.execute(
                        f"SELECT DISTINCT c.source FROM {self.prefix}_chunks c WHERE {condition}",
                        params)]
                deleted = self._delete_sources(conn, json.dumps(named))
                conn.execute("COMMIT")
                return deleted
            except BaseException:
                conn.execute("ROLLBACK")
                raise

        return await self._run(write)

    async def compact(self, written: int) -> None:
        """After a bulk load, merge FTS5's index segments into one: word search gets ~10%
        faster. Skipped for small additions, as it rewrites the whole index."""
        p = self.prefix

        def optimize(conn: Any) -> None:
            (total,) = conn.execute(f"SELECT count(*) FROM {p}_chunks").fetchone()
            if written * 10 >= total:
                conn.execute(f"INSERT INTO {p}_fts ({p}_fts) VALUES ('optimize')")

        await self._run(optimize)

    async def chunks_by_id(self, ids: Sequence[int]) -> dict[int, Chunk]:
        """See ``KnowledgeStore.chunks_by_id``."""
        return await self._read(lambda conn: self._chunks_by_id(conn, ids))

    def _chunks_by_id(self, conn: Any, ids: Sequence[int]) -> dict[int, Chunk]:
        rows = conn.execute(f"SELECT {CHUNK_COLUMNS} FROM {self.prefix}_chunks c "
                            f"WHERE c.id IN (SELECT value FROM json_each(?))",
                            (json.dumps(list(ids)),))
        return {row[0]: chunk_from_row(row) for row in rows}

    async def sparse(self, query: str, k: int, filter: dict | None = None) -> list[Hit]:
        """See ``KnowledgeStore.sparse`` (the ranking and its chunks in one read)."""
        # The ranking and its chunks in one trip to the worker thread.
        search = await self._sparse_search(query, k, filter)
        return await self._read(lambda conn: self._hits(conn, search(conn)))

    async def sparse_ranking(self, query: str, k: int, filter: dict | None = None
                             ) -> list[tuple[int, float]]:
        """See ``KnowledgeStore.sparse_ranking`` (FTS5 ``bm25()``, the title weighted twice)."""
        return await self._read(await self._sparse_search(query, k, filter))

    async def _sparse_search(self, query: str, k: int, filter: dict | None
                             ) -> Callable[[Any], list[tuple[int, float]]]:
        terms = query_terms(query)
        if not terms:
            return lambda conn: []
        # Any term may match (OR): BM25 ranks by how many, how rare and how often.
        match = " OR ".join(f'"{t}"' for t in terms)
        condition, params = await self.condition(filter, "sqlite")
        p = self.prefix
        bm25 = f"bm25({p}_fts, {', '.join(map(str, self.weights))})"
        if filter:
            sql = (f"SELECT c.id, {bm25} AS rank FROM {p}_fts JOIN {p}_chunks c "
                   f"ON c.id = {p}_fts.rowid WHERE {p}_fts MATCH ? AND {condition} "
                   f"ORDER BY rank LIMIT ?")
        else:
            sql = (f"SELECT rowid, {bm25} AS rank FROM {p}_fts WHERE {p}_fts MATCH ? "
                   f"ORDER BY rank LIMIT ?")
        args = (match, *params, k)
        return lambda conn: [(i, -rank) for i, rank in conn.execute(sql, args)]

    async def dense(self, vector: Sequence[float], k: int, filter: dict | None = None
                    ) -> list[Hit]:
        """See ``KnowledgeStore.dense`` (the ranking and its chunks in one read)."""
        search = await self._dense_search(vector, k, filter)
        return await self._read(lambda conn: self._hits(conn, search(conn)))

    async def dense_ranking(self, vector: Sequence[float], k: int, filter: dict | None = None
                            ) -> list[tuple[int, float]]:
        """See ``KnowledgeStore.dense_ranking`` (sqlite-vec)."""
        return await self._read(await self._dense_search(vector, k, filter))

    async def _dense_search(self, vector: Sequence[float], k: int, filter: dict | None
                            ) -> Callable[[Any], list[tuple[int, float]]]:
        if self._dimensions is None:  # none yet, or written since by another process
            stored = await self.embedding_model()
            if stored is None:
                return lambda conn: []
            self._dimensions = stored[1]
        condition, params = await self.condition(filter, "sqlite")
        p = self.prefix
        blob = _blob(vector)
        if filter or self._dimensions % 8:
            # Exact scores for every chunk that passes the filter.
            sql = (f"SELECT v.id, vec_distance_cosine(v.embedding, ?) AS distance "
                   f"FROM {p}_vectors v JOIN {p}_chunks c ON c.id = v.id WHERE {condition} "
                   f"ORDER BY distance LIMIT ?")
            args: tuple = (blob, *params, k)
        else:
            # Candidates by the Hamming distance of sign bits, then exact cosine on those. On
            # SciFact with MiniLM, 2x oversampling keeps a full scan's nDCG@10 (dense and
            # hybrid) and 97% of its Recall@100, at a third of its cost. (A plain scan with
            # SQLite's top-k sort beats sqlite-vec's vec0 KNN here, whose cost grows with k.)
            sql = (f"WITH coarse AS (SELECT id FROM {p}_bits ORDER BY vec_distance_hamming("
                   f"vec_bit(bits), (SELECT vec_quantize_binary(?))) LIMIT ?) "
                   f"SELECT v.id, vec_distance_cosine(v.embedding, ?) AS distance "
                   f"FROM coarse JOIN {p}_vectors v ON v.id = coarse.id "
                   f"ORDER BY distance LIMIT ?")
            args = (blob, max(k * self.oversample, 100), blob, k)
        return lambda conn: [(i, 1.0 - distance) for i, distance in conn.execute(sql, args)]

    def _hits(self, conn: Any, ranking: list[tuple[int, float]]) -> list[Hit]:
        chunks = self._chunks_by_id(conn, [i for i, _ in ranking]) if ranking else {}
        return [Hit(chunks[i], score) for i, score in ranking if i in chunks]

    async def embedding_model(self) -> tuple[str, int] | None:
        """See ``KnowledgeStore.embedding_model``."""
        def read(conn: Any) -> tuple[str, int] | None:
            rows = dict(conn.execute(f"SELECT key, value FROM {self.prefix}_meta").fetchall())
            if "dimensions" not in rows:
                return None
            return rows["embedding_model"], int(rows["dimensions"])

        return await self._read(read)

    async def fields(self) -> set[str]:
        """See ``KnowledgeStore.fields``."""
        return await self._read(lambda conn: {
            name for (name,) in conn.execute(f"SELECT name FROM {self.prefix}_fields")})

    async def stats(self) -> dict[str, Any]:
        """See ``KnowledgeStore.stats`` (``backend`` is "sqlite")."""
        def read(conn: Any) -> dict[str, Any]:
            (sources,) = conn.execute(f"SELECT count(*) FROM {self.prefix}_sources").fetchone()
            (chunks,) = conn.execute(f"SELECT count(*) FROM {self.prefix}_chunks").fetchone()
            return {"sources": sources, "chunks": chunks}

        counts = await self._read(read)
        model = await self.embedding_model()
        return {"name": self.name, "backend": "sqlite", **counts,
                "embedding_model": model[0] if model else None,
                "dimensions": model[1] if model else None,
                "fields": sorted(await self.fields())}

    async def aclose(self) -> None:
        """Close the store's connections, after the reads under way finish."""
        def close(conn: Any) -> None:  # holding the lock: no new read starts
            self._no_reads.wait_for(lambda: self._reading == 0)
            for reader in self._reader_connections:
                reader.close()
            self._reader_connections.clear()
            self._readers = threading.local()
            conn.close()
            self._conn = None

        if self._conn is not None:
            await self._run(close)
