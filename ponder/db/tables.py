"""Tables of ponder's own (API keys, threads, run records, schedules), on SQLAlchemy's async
engine: aiosqlite on ponder's one SQLite library, or psycopg."""

from __future__ import annotations

import asyncio
from typing import ClassVar

from sqlalchemy import MetaData, inspect
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.schema import CreateColumn

from ponder.db.sqlite import connect_async
from ponder.db.url import parse_url

_TABLES_LOCK = 7240919  # an advisory lock key of ponder's own (see persistence.py)


class Tables:
    """A store of some tables (``metadata``) in the database at ``url`` (default
    ``PONDER_DATABASE_URL``; SQLite or Postgres: ConfigurationError for memory://, whose tables
    no other process could see). An async context manager; ``engine()`` makes the tables on
    first use. ``share``: use that store's engine instead (its metadata must hold these tables);
    it closes the engine."""

    metadata: ClassVar[MetaData]

    def __init__(self, url: str | None = None, *, share: Tables | None = None) -> None:
        self._owner = share  # whose engine (and connections) this store uses, and closes
        self.db = share.db if share else parse_url(url).require(("sqlite", "postgres"),
                                                                "ponder's own tables")
        self.url = self.db.url
        self._engine: AsyncEngine | None = None
        self._making: asyncio.Lock | None = None

    async def engine(self) -> AsyncEngine:
        """The engine, with the tables made (and columns a newer ponder added)."""
        if self._owner is not None:
            return await self._owner.engine()
        if self._engine is None:
            # Concurrent first calls (a server's first requests) make the tables once.
            self._making = self._making or asyncio.Lock()
            async with self._making:
                return await self._make_engine()
        return self._engine

    async def _make_engine(self) -> AsyncEngine:
        if self._engine is None:
            options = {}
            if self.db.kind == "sqlite":
                # ponder's one SQLite library (see ponder/db/sqlite.py), not aiosqlite's own.
                path = self.db.path
                options["async_creator"] = lambda: connect_async(path)
                # Connections past pool_size are closed when returned, and each new one costs
                # a thread and a file open: keep as many as a busy server has requests.
                options.update(pool_size=20, max_overflow=20)
            engine = create_async_engine(self.db.sqlalchemy, **options)
            try:
                for attempt in range(3):
                    try:
                        await self._make_tables(engine)
                        break
                    except Exception as exc:
                        # SQLite: another process made a table between our check and our
                        # CREATE ("already exists"); the next attempt sees it.
                        if "already exists" not in str(exc) or attempt == 2:
                            raise
            except BaseException:
                await engine.dispose()  # the next call tries again
                raise
            self._engine = engine
        return self._engine

    async def _make_tables(self, engine: AsyncEngine) -> None:
        async with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                # Processes starting together would create the tables side by side and
                # collide on Postgres's catalog: one at a time (until commit).
                await conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_TABLES_LOCK})")
            await conn.run_sync(self.metadata.create_all)
            await conn.run_sync(_add_missing_columns, self.metadata)

    async def aclose(self) -> None:
        """Dispose of the engine and its connections; ``engine()`` opens a new one if called
        again."""
        if self._engine is not None:
            await self._engine.dispose()
            self._engine, self._making = None, None

    async def __aenter__(self) -> Tables:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _add_missing_columns(conn, metadata: MetaData) -> None:
    """Columns a newer ponder added to a table an older one made (nullable, so rows stay)."""
    inspector = inspect(conn)
    for table in metadata.sorted_tables:
        present = {c["name"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name not in present:
                ddl = CreateColumn(column).compile(dialect=conn.dialect)
                conn.exec_driver_sql(f"ALTER TABLE {table.name} ADD COLUMN {ddl}")
