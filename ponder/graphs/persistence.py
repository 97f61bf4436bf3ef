"""Checkpointer and store from one database URL, and checkpoint retention.

``sqlite:///path.db`` (the default, ``PONDER_DATABASE_URL``) opens AsyncSqliteSaver and
AsyncSqliteStore in WAL mode with a busy timeout; ``postgresql://...`` opens AsyncPostgresSaver and
AsyncPostgresStore on one connection pool. ``memory://`` keeps everything in the process.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.store.base import BaseStore

from ponder.config import ConfigurationError, Settings
from ponder.sqlite import connect_async

__all__ = ["Persistence", "open_persistence", "prune_checkpoints"]

_SQLITE = re.compile(r"^sqlite(\+aiosqlite)?://")
_POSTGRES = re.compile(r"^postgres(ql)?(\+\w+)?://")


class Persistence:
    """The open checkpointer and store of one database; close it with ``aclose()``."""

    def __init__(self, url: str, checkpointer: BaseCheckpointSaver, store: BaseStore,
                 closers: list[Any]) -> None:
        self.url = url
        self.checkpointer = checkpointer
        self.store = store
        self._closers = closers

    async def aclose(self) -> None:
        _stop_batching(self.store)
        for close in reversed(self._closers):
            await close()
        self._closers.clear()

    async def __aenter__(self) -> Persistence:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


async def open_persistence(url: str | None = None) -> Persistence:
    """Open the checkpointer and store for ``url`` (default: ``PONDER_DATABASE_URL``)."""
    url = url or Settings.from_env().database_url
    if _SQLITE.match(url):
        return await _open_sqlite(url)
    if _POSTGRES.match(url):
        return await _open_postgres(url)
    if url in ("memory://", "memory"):
        from langgraph.checkpoint.memory import InMemorySaver
        from langgraph.store.memory import InMemoryStore

        return Persistence("memory://", InMemorySaver(), InMemoryStore(), [])
    raise ConfigurationError(
        f"PONDER_DATABASE_URL={_redact(url)!r} is not a supported database URL: use "
        "sqlite:///ponder.db (the default), postgresql://user:password@host:5432/db, or memory://"
    )


def sqlite_path(url: str) -> str:
    """The file of a sqlite URL: three slashes for a relative path, four for an absolute one."""
    path = _SQLITE.sub("", url)
    if not path.startswith("/"):
        raise ConfigurationError(f"{url!r} is not a sqlite URL: write sqlite:///relative/path.db "
                                 "or sqlite:////absolute/path.db")
    path = path[1:].split("?", 1)[0]
    if not path or path == ":memory:":
        return ":memory:"
    path = str(Path(path).expanduser())
    parent = Path(path).resolve().parent
    if not parent.is_dir():
        raise ConfigurationError(f"the folder of the database {path!r} does not exist: "
                                 f"create {parent} or choose another PONDER_DATABASE_URL")
    return path


def _stop_batching(store: BaseStore) -> None:
    """Stop the task in which LangGraph's async stores batch their operations: it outlives the
    connection otherwise, and the event loop ends with a pending task."""
    task = getattr(store, "_task", None)
    if task is not None:
        task.cancel()


async def _open_sqlite(url: str) -> Persistence:
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
    from langgraph.store.sqlite.aio import AsyncSqliteStore

    path = sqlite_path(url)
    saver_conn = await connect_async(path)  # WAL, with a busy timeout
    store_conn = await connect_async(path, isolation_level=None)  # the store expects autocommit
    saver = AsyncSqliteSaver(saver_conn)
    store = AsyncSqliteStore(store_conn)
    try:
        await saver.setup()
    except Exception as exc:
        # Its migration expects the standard library's sqlite3 error when the column it adds
        # exists already; pysqlite3 (ponder/sqlite.py) raises its own, meaning the same.
        if "duplicate column name: task_path" not in str(exc):
            raise
        saver.is_setup = True
    await store.setup()
    return Persistence(url, saver, store, [saver_conn.close, store_conn.close])


async def _open_postgres(url: str) -> Persistence:
    try:
        from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
        from langgraph.store.postgres.aio import AsyncPostgresStore
        from psycopg.rows import dict_row
        from psycopg_pool import AsyncConnectionPool
    except ImportError:
        raise ConfigurationError(
            "a postgresql:// database needs the postgres extra: pip install 'ponder[postgres]'"
        ) from None
    conninfo = re.sub(r"^postgres(ql)?(\+\w+)?://", "postgresql://", url)
    pool = AsyncConnectionPool(
        conninfo,
        min_size=1,
        max_size=10,
        open=False,
        # What the LangGraph savers require of their connections.
        kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row},
    )
    try:
        await pool.open(wait=True, timeout=10)
    except Exception as exc:
        await pool.close()
        raise ConfigurationError(f"cannot connect to {_redact(url)}: {exc}") from None
    saver = AsyncPostgresSaver(pool)
    store = AsyncPostgresStore(pool)
    await saver.setup()
    await store.setup()
    return Persistence(url, saver, store, [pool.close])


def _redact(url: str) -> str:
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)


# --------------------------------------------------------------------------- retention


async def prune_checkpoints(saver: BaseCheckpointSaver, thread_id: str, keep: int) -> None:
    """Keep only the ``keep`` newest checkpoints of each namespace of a thread.

    Long conversations otherwise grow without bound: every step saves a checkpoint. Works on
    the SQLite, Postgres and in-memory savers; other savers are left alone.
    """
    if keep < 1:
        raise ValueError(f"keep must be at least 1, got {keep}")
    kind = type(saver).__name__
    if kind == "AsyncSqliteSaver":
        await _prune_sqlite(saver, thread_id, keep)
    elif kind == "AsyncPostgresSaver":
        await _prune_postgres(saver, thread_id, keep)
    elif kind == "InMemorySaver":
        _prune_memory(saver, thread_id, keep)

_SQLITE_UNKEPT = """
    SELECT checkpoint_ns, checkpoint_id FROM (
        SELECT checkpoint_ns, checkpoint_id, ROW_NUMBER() OVER (
            PARTITION BY checkpoint_ns ORDER BY checkpoint_id DESC) AS newest
        FROM checkpoints WHERE thread_id = ?
    ) WHERE newest > ?
"""


async def _prune_sqlite(saver: Any, thread_id: str, keep: int) -> None:
    async with saver.lock:
        for table in ("writes", "checkpoints"):
            await saver.conn.execute(
                f"DELETE FROM {table} WHERE thread_id = ? AND (checkpoint_ns, checkpoint_id) "
                f"IN ({_SQLITE_UNKEPT})",
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


async def _prune_postgres(saver: Any, thread_id: str, keep: int) -> None:
    params = {"thread": thread_id, "keep": keep}
    async with saver._cursor() as cur, cur.connection.transaction():
        for table in ("checkpoint_writes", "checkpoints"):
            await cur.execute(
                f"DELETE FROM {table} WHERE thread_id = %(thread)s AND "
                f"(checkpoint_ns, checkpoint_id) IN ({_POSTGRES_UNKEPT})",
                params,
            )
        await cur.execute(_POSTGRES_UNREFERENCED_BLOBS, params)


def _prune_memory(saver: Any, thread_id: str, keep: int) -> None:
    for ns, checkpoints in saver.storage.get(thread_id, {}).items():
        for checkpoint_id in sorted(checkpoints, reverse=True)[keep:]:
            del checkpoints[checkpoint_id]
            saver.writes.pop((thread_id, ns, checkpoint_id), None)
        referenced = set()
        for saved in checkpoints.values():
            referenced.update(saver.serde.loads_typed(saved[0])["channel_versions"].items())
        for key in [k for k in saver.blobs if k[:2] == (thread_id, ns)]:
            if (key[2], key[3]) not in referenced:
                del saver.blobs[key]
