"""Checkpointer and store from one database URL, and checkpoint retention.

``sqlite:///path.db`` (the default, ``PONDER_DATABASE_URL``) opens AsyncSqliteSaver and
AsyncSqliteStore in WAL mode with a busy timeout; ``postgresql://...`` opens AsyncPostgresSaver
and AsyncPostgresStore on one connection pool; ``memory://`` keeps both in the process.
``open_store`` opens LangGraph's store alone (long-term memory has one of its own, with a vector
index).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.store.base import BaseStore

from ponder.db.sqlite import connect_async
from ponder.db.url import DatabaseURL, parse_url
from ponder.errors import ConfigurationError

__all__ = ["Persistence", "open_persistence", "open_store", "prune_checkpoints",
           "stop_batching"]

Closer = Callable[[], Awaitable[Any]]


class Persistence:
    """The open checkpointer and store of one database; close it with ``aclose()`` (or use it
    as an async context manager)."""

    def __init__(self, url: str, checkpointer: BaseCheckpointSaver, store: BaseStore,
                 closers: list[Closer]) -> None:
        self.url = url
        self.checkpointer = checkpointer
        self.store = store
        self._closers = closers

    async def aclose(self) -> None:
        """Close the checkpointer and store (their connections and the store's batching task)."""
        stop_batching(self.store)
        for close in reversed(self._closers):
            await close()
        self._closers.clear()

    async def __aenter__(self) -> Persistence:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


async def open_persistence(url: str | None = None) -> Persistence:
    """Open the checkpointer and store for ``url`` (default: ``PONDER_DATABASE_URL``).

    Raises ConfigurationError for an unknown URL, a missing folder or a Postgres server that
    cannot be reached."""
    db = parse_url(url)
    if db.kind == "memory":
        from langgraph.checkpoint.memory import InMemorySaver

        store, closers = await open_store(db)
        return Persistence(db.url, InMemorySaver(), store, closers)
    if db.kind == "sqlite":
        from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

        saver_conn = await connect_async(db.path)  # WAL, with a busy timeout
        saver = AsyncSqliteSaver(saver_conn)
        try:
            await saver.setup()
        except Exception as exc:
            # Its migration expects the standard library's sqlite3 error when the column it
            # adds exists already; pysqlite3 (ponder/db/sqlite.py) raises its own, meaning the
            # same.
            if "duplicate column name: task_path" not in str(exc):
                await saver_conn.close()
                raise
            saver.is_setup = True
        store, closers = await open_store(db)
        return Persistence(db.url, saver, store, [saver_conn.close, *closers])
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

    pool = await _postgres_pool(db, max_size=10)
    saver = AsyncPostgresSaver(pool)
    await _migrate(pool, saver.setup)
    return Persistence(db.url, saver, await _postgres_store(pool, None), [pool.close])


async def open_store(url: str | DatabaseURL | None = None, *, index: dict | None = None
                     ) -> tuple[BaseStore, list[Closer]]:
    """LangGraph's store on ``url`` (default: ``PONDER_DATABASE_URL``), set up, with ``index``
    (LangGraph's vector index settings) when given; and what closes it, last first."""
    db = url if isinstance(url, DatabaseURL) else parse_url(url)
    if db.kind == "memory":
        from langgraph.store.memory import InMemoryStore

        return InMemoryStore(index=index), []
    if db.kind == "sqlite":
        from langgraph.store.sqlite.aio import AsyncSqliteStore

        # ponder's one SQLite library, which can load sqlite-vec for the vector index; the
        # store expects autocommit.
        conn = await connect_async(db.path, isolation_level=None)
        store = AsyncSqliteStore(conn, index=index)
        await store.setup()
        return store, [conn.close]
    pool = await _postgres_pool(db, max_size=4)
    return await _postgres_store(pool, index), [pool.close]


async def _postgres_pool(db: DatabaseURL, max_size: int) -> Any:
    """An open psycopg pool with the connection settings LangGraph's savers and stores need."""
    from psycopg.rows import dict_row
    from psycopg_pool import AsyncConnectionPool

    pool = AsyncConnectionPool(db.conninfo, min_size=1, max_size=max_size, open=False, kwargs={
        "autocommit": True, "prepare_threshold": 0, "row_factory": dict_row})
    try:
        await pool.open(wait=True, timeout=10)
    except Exception as exc:
        await pool.close()
        raise ConfigurationError(f"cannot connect to {db.redacted}: {exc}") from None
    return pool


async def _postgres_store(pool: Any, index: dict | None) -> BaseStore:
    from langgraph.store.postgres.aio import AsyncPostgresStore

    store = AsyncPostgresStore(pool, index=index)
    await _migrate(pool, store.setup)
    return store


_MIGRATIONS_LOCK = 7240918  # an advisory lock key of ponder's own (the queue's uses 7240917)


async def _migrate(pool: Any, setup: Callable[[], Awaitable[Any]]) -> None:
    """Run a LangGraph saver's or store's migrations on Postgres, one process at a time;
    close the pool if they fail (its tasks would outlive it).

    Processes that open a fresh database at once (workers starting together) ran them side by
    side, and they collided: duplicate keys, deadlocks between index builds. In turn, the later
    ones find them done. The lock is tried, not waited for: a waiting statement holds a
    snapshot, and the holder's CREATE INDEX CONCURRENTLY waits for every snapshot to end."""
    try:
        async with pool.connection() as conn:
            while True:
                tried = await conn.execute("SELECT pg_try_advisory_lock(%s) AS held",
                                           (_MIGRATIONS_LOCK,))
                if (await tried.fetchone())["held"]:
                    break
                await asyncio.sleep(0.1)
            try:
                await setup()
            finally:
                await conn.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATIONS_LOCK,))
    except BaseException:
        await pool.close()
        raise


def stop_batching(store: BaseStore) -> None:
    """Stop the task in which LangGraph's async stores batch their operations: it outlives the
    connection otherwise, and the event loop ends with a pending task."""
    task = getattr(store, "_task", None)
    if task is not None:
        task.cancel()


# --------------------------------------------------------------------------- retention


async def prune_checkpoints(saver: BaseCheckpointSaver, thread_ids: Iterable[str],
                            keep: int) -> None:
    """Keep only the ``keep`` newest checkpoints of each namespace of each of the threads,
    in one transaction.

    Long conversations otherwise grow without bound: every step saves a checkpoint. Works on
    the SQLite, Postgres and in-memory savers; other savers are left alone.
    """
    if keep < 1:
        raise ValueError(f"keep must be at least 1, got {keep}")
    threads = list(thread_ids)
    kind = type(saver).__name__
    if kind == "AsyncSqliteSaver":
        await _prune_sqlite(saver, threads, keep)
    elif kind == "AsyncPostgresSaver":
        await _prune_postgres(saver, threads, keep)
    elif kind == "InMemorySaver":
        for thread_id in threads:
            _prune_memory(saver, thread_id, keep)

_SQLITE_UNKEPT = """
    SELECT checkpoint_ns, checkpoint_id FROM (
        SELECT checkpoint_ns, checkpoint_id, ROW_NUMBER() OVER (
            PARTITION BY checkpoint_ns ORDER BY checkpoint_id DESC) AS newest
        FROM checkpoints WHERE thread_id = ?
    ) WHERE newest > ?
"""


async def _prune_sqlite(saver: Any, thread_ids: list[str], keep: int) -> None:
    async with saver.lock:
        for thread_id in thread_ids:
            for table in ("writes", "checkpoints"):
                await saver.conn.execute(
                    f"DELETE FROM {table} WHERE thread_id = ? AND "
                    f"(checkpoint_ns, checkpoint_id) IN ({_SQLITE_UNKEPT})",
                    (thread_id, thread_id, keep),
                )
        await saver.conn.commit()


_POSTGRES_UNKEPT = """
    SELECT checkpoint_ns, checkpoint_id FROM (
        SELECT checkpoint_ns, checkpoint_id, ROW_NUMBER() OVER (
            PARTITION BY checkpoint_ns ORDER BY checkpoint_id DESC) AS newest
        FROM checkpoints WHERE thread_id = %(thread)s
    ) ranked WHERE newest > %(keep)s
"""

# Channel values live in checkpoint_blobs, one row per (channel, version), shared by every
# checkpoint that has that version: only versions no kept checkpoint refers to can go.
_POSTGRES_UNREFERENCED_BLOBS = """
    DELETE FROM checkpoint_blobs b WHERE b.thread_id = %(thread)s AND NOT EXISTS (
        SELECT 1 FROM checkpoints c
        WHERE c.thread_id = b.thread_id AND c.checkpoint_ns = b.checkpoint_ns
          AND c.checkpoint -> 'channel_versions' ->> b.channel = b.version)
"""


async def _prune_postgres(saver: Any, thread_ids: list[str], keep: int) -> None:
    async with saver._cursor() as cur, cur.connection.transaction():
        for thread_id in thread_ids:
            params = {"thread": thread_id, "keep": keep}
            for table in ("checkpoint_writes", "checkpoints"):
                await cur.execute(
                    f"DELETE FROM {table} WHERE thread_id = %(thread)s AND "
                    f"(checkpoint_ns, checkpoint_id) IN ({_POSTGRES_UNKEPT})",
                    params,
                )
            await cur.execute(_POSTGRES_UNREFERENCED_BLOBS, params)


def _prune_memory(saver: Any, thread_id: str, keep: int) -> None:
    for ns, checkpoints in saver.storage.get(thread_id, {}).items():
        _drop_memory(saver, thread_id, ns, sorted(checkpoints, reverse=True)[keep:])


def _drop_memory(saver: Any, thread_id: str, ns: str, dropped: list[str]) -> None:
    """Delete checkpoints of an InMemorySaver, and the channel values only they held."""
    checkpoints = saver.storage[thread_id][ns]
    for checkpoint_id in dropped:
        del checkpoints[checkpoint_id]
        saver.writes.pop((thread_id, ns, checkpoint_id), None)
    referenced = set()
    for saved in checkpoints.values():
        referenced.update(saver.serde.loads_typed(saved[0])["channel_versions"].items())
    for key in [k for k in saver.blobs if k[:2] == (thread_id, ns)]:
        if (key[2], key[3]) not in referenced:
            del saver.blobs[key]


async def copy_checkpoints(saver: BaseCheckpointSaver, source: str, target: str) -> None:
    """Copy every checkpoint of thread ``source``, and their pending writes, to thread
    ``target`` (which should have none): the copy has the same state, history and interrupts.

    Uses only the saver's public interface (``alist``, ``aput``, ``aput_writes``), oldest
    checkpoint first so each one's parent exists, so it works on any saver; LangGraph's own
    ``acopy_thread`` is not implemented by its SQLite and Postgres savers.
    """
    saved = [t async for t in saver.alist({"configurable": {"thread_id": source}})]
    for found in reversed(saved):
        where = {"thread_id": target,
                 "checkpoint_ns": found.config["configurable"].get("checkpoint_ns", "")}
        if found.parent_config:
            where["checkpoint_id"] = found.parent_config["configurable"]["checkpoint_id"]
        config = await saver.aput({"configurable": where}, found.checkpoint, found.metadata,
                                  found.checkpoint["channel_versions"])
        by_task: dict[str, list[tuple[str, Any]]] = {}
        for task_id, channel, value in found.pending_writes or ():
            by_task.setdefault(task_id, []).append((channel, value))
        for task_id, writes in by_task.items():
            await saver.aput_writes(config, writes, task_id)


async def rewind_checkpoints(saver: BaseCheckpointSaver, thread_id: str,
                             checkpoint_id: str | None) -> None:
    """Delete every checkpoint of a thread saved after ``checkpoint_id`` (None: all of them),
    so the thread is as it was then: what ran since is discarded, history included.

    Checkpoint ids are time-ordered (LangGraph's UUIDv6), so "after" is a comparison. Works on
    the SQLite, Postgres and in-memory savers, the ones ponder opens; a saver of one's own
    (whose tables ponder does not know) raises ConfigurationError, and nothing is deleted.
    """
    if checkpoint_id is None:
        await saver.adelete_thread(thread_id)
        return
    kind = type(saver).__name__
    if kind == "AsyncSqliteSaver":
        async with saver.lock:
            for table in ("writes", "checkpoints"):
                await saver.conn.execute(
                    f"DELETE FROM {table} WHERE thread_id = ? AND checkpoint_id > ?",
                    (thread_id, checkpoint_id))
            await saver.conn.commit()
    elif kind == "AsyncPostgresSaver":
        params = {"thread": thread_id, "after": checkpoint_id}
        async with saver._cursor() as cur, cur.connection.transaction():
            for table in ("checkpoint_writes", "checkpoints"):
                await cur.execute(f"DELETE FROM {table} WHERE thread_id = %(thread)s AND "
                                  "checkpoint_id > %(after)s", params)
            await cur.execute(_POSTGRES_UNREFERENCED_BLOBS, params)
    elif kind == "InMemorySaver":
        for ns, checkpoints in saver.storage.get(thread_id, {}).items():
            _drop_memory(saver, thread_id, ns, [c for c in checkpoints if c > checkpoint_id])
    else:
        raise ConfigurationError(
            f"a thread on a {kind} cannot be rewound: ponder deletes checkpoints on its own "
            "SQLite, Postgres and in-memory checkpointers; use multitask_strategy 'interrupt' "
            "(the run stops and its progress stays)")
