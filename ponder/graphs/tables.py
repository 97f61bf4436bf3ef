"""Tables of ponder's own (API keys, threads, run records), made on first use."""

from __future__ import annotations

from typing import ClassVar

from sqlalchemy import MetaData, inspect
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.schema import CreateColumn

from ponder.config import ConfigurationError, Settings


def async_url(url: str) -> str:
    """The async driver's URL for a ``PONDER_DATABASE_URL``."""
    if url.startswith("sqlite:///"):
        return "sqlite+aiosqlite:///" + url.removeprefix("sqlite:///")
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    raise ConfigurationError(f"the server's tables need a sqlite:/// or postgresql:// "
                             f"database, not {url!r}")


class Tables:
    """A store of some tables (``metadata``) in the database at ``url``."""

    metadata: ClassVar[MetaData]

    def __init__(self, url: str | None = None) -> None:
        self.url = url or Settings.from_env().database_url
        self._engine: AsyncEngine | None = None

    async def engine(self) -> AsyncEngine:
        if self._engine is None:
            url = async_url(self.url)
            options = {}
            if url.startswith("sqlite"):
                from ponder.sqlite import connect_async, sqlite_file

                # ponder's one SQLite library (see ponder/sqlite.py), not aiosqlite's default.
                path = sqlite_file(self.url)
                options["async_creator"] = lambda: connect_async(path)
            self._engine = create_async_engine(url, **options)
            async with self._engine.begin() as conn:
                await conn.run_sync(self.metadata.create_all)
                await conn.run_sync(_add_missing_columns, self.metadata)
        return self._engine

    async def aclose(self) -> None:
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None


def _add_missing_columns(conn, metadata: MetaData) -> None:
    """Columns a newer ponder added to a table an older one made (nullable, so rows stay)."""
    inspector = inspect(conn)
    for table in metadata.sorted_tables:
        present = {c["name"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name not in present:
                ddl = CreateColumn(column).compile(dialect=conn.dialect)
                conn.exec_driver_sql(f"ALTER TABLE {table.name} ADD COLUMN {ddl}")
