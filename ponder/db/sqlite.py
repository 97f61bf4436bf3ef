"""One SQLite library for the whole process.

The knowledge base and long-term memory need sqlite-vec, so a ``sqlite3`` that can load
extensions; many Linux builds of Python have none, and there ponder uses pysqlite3. Two copies
of SQLite must never open the same file in one process: each keeps its own POSIX locks, and
closing a file in one drops the other's locks, which corrupts the database. So every SQLite
connection ponder opens (checkpoints, stores, its own tables) comes from this one module.
"""

from __future__ import annotations

from functools import cache
from typing import Any


@cache
def sqlite_module() -> Any:
    """The standard library's ``sqlite3`` when it can load extensions, else pysqlite3's."""
    import sqlite3

    if hasattr(sqlite3.Connection, "enable_load_extension"):
        return sqlite3
    try:
        import pysqlite3.dbapi2
    except ImportError as exc:
        raise RuntimeError("this Python's sqlite3 cannot load extensions, which sqlite-vec "
                           "needs: pip install pysqlite3-binary") from exc
    return pysqlite3.dbapi2


def connect(path: str, **options: Any) -> Any:
    """A connection on ``sqlite_module()``, configured as every ponder connection is: a busy
    timeout, so a writer waits for another's lock instead of failing with "database is
    locked"; WAL, so readers and one writer work at once; and NORMAL sync, which WAL keeps
    safe."""
    conn = sqlite_module().connect(path, **options)
    conn.execute("PRAGMA busy_timeout = 10000")  # first: switching to WAL may have to wait
    if path != ":memory:":
        # WAL is kept in the file: only its first connection switches. Switching takes the
        # write lock, so asking first spares every later connection a wait behind a writer
        # (a long rebuild held it past the busy timeout on a busy machine).
        if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
    return conn


async def connect_async(path: str, **options: Any):
    """An aiosqlite connection made by ``connect``."""
    import aiosqlite

    return await aiosqlite.Connection(lambda: connect(path, **options), 64)
