"""A read-only SQL executor through SQLAlchemy: every query passes the guard, then runs on a
connection that cannot write, under a row limit and a wall-clock timeout.

SQLite opens the file with ``mode=ro`` and ``query_only``, and an authorizer that allows only
reads (a second wall behind the guard). Postgres runs each query in a READ ONLY transaction with
``statement_timeout``. SQLAlchemy is synchronous here and runs in a worker thread, so the event
loop never waits on the database.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import create_engine, event, inspect
from sqlalchemy.engine import Engine, Inspector, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError

from ponder.config import ConfigurationError
from ponder.errors import PonderError
from ponder.tools.sql.guard import PURE_FUNCTION_NAMES, check

__all__ = ["Database", "QueryError", "QueryResult"]

T = TypeVar("T")

_SQLGLOT_DIALECTS = {"sqlite": "sqlite", "postgresql": "postgres", "mysql": "mysql",
                     "mariadb": "mysql", "mssql": "tsql", "oracle": "oracle"}


class QueryError(PonderError, RuntimeError):
    """The database refused or failed the query; the message is the database's, for repair."""


@dataclass
class Table:
    """One table as a model needs to see it."""

    name: str
    columns: list[tuple[str, str]]            # (name, type)
    primary_key: list[str]
    foreign_keys: list[tuple[str, str, str]]  # (column, referenced table, referenced column)
    samples: dict[str, list[str]] = field(default_factory=dict)

    def describe(self) -> str:
        """The C3 layout: ``# table ( col, col, ... )``."""
        return f"# {self.name} ( {', '.join(c for c, _ in self.columns)} )"


@dataclass(frozen=True)
class QueryResult:
    """A query's result: the SQL that ran, its column names, its rows, and whether the row limit
    cut them (``truncated``)."""
    sql: str
    columns: list[str]
    rows: list[tuple]
    truncated: bool

    def as_table(self, max_chars: int = 4000) -> str:
        """A compact table for a model, with a note when rows or characters were cut."""
        if not self.rows:
            return "(the query returned no rows)"
        lines = [" | ".join(self.columns)]
        lines += [" | ".join(_cell(v) for v in row) for row in self.rows]
        text, shown = "", 0
        for line in lines:
            if len(text) + len(line) + 1 > max_chars:
                break
            text += line + "\n"
            shown += 1
        rows_shown = max(0, shown - 1)
        if self.truncated or rows_shown < len(self.rows):
            more = "more than " if self.truncated else ""
            text += (f"(showing {rows_shown} of {more}{len(self.rows)} rows: the result was "
                     "truncated; add filters or aggregate to see less)")
        return text.rstrip("\n")


def _cell(value: Any) -> str:
    text = "NULL" if value is None else str(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _sqlite_authorizer(action: int, arg1: str | None, arg2: str | None, *_: Any) -> int:
    if action in (sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_RECURSIVE):
        return sqlite3.SQLITE_OK
    if action == sqlite3.SQLITE_FUNCTION:  # the same allowlist as the guard's, by SQLite's name
        name = (arg2 or "").lower()
        return sqlite3.SQLITE_OK if name in PURE_FUNCTION_NAMES["sqlite"] else sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_DENY


def _columns_by_table(inspector: Inspector) -> dict[str, list[str]]:
    """Every table and view with its columns: the guard resolves column references with it."""
    return {name: [c["name"] for c in inspector.get_columns(name)]
            for name in inspector.get_table_names() + inspector.get_view_names()}


class Database:
    """One database for a model to query: ``await db.run(sql)`` -> QueryResult."""

    def __init__(self, url: str, *, row_limit: int = 200, timeout_s: float = 10.0,
                 tables: list[str] | None = None, columns: list[str] | None = None) -> None:
        try:
            self.url = make_url(url)
        except ArgumentError:
            raise ConfigurationError(f"{url!r} is not a database URL: write e.g. "
                                     "sqlite:///chinook.db or postgresql://user:pw@host/db"
                                     ) from None
        self.backend = self.url.get_backend_name()
        self.dialect = _SQLGLOT_DIALECTS.get(self.backend, self.backend)
        self.row_limit, self.timeout_s = row_limit, timeout_s
        self.tables, self.columns = tables, columns
        self._engine: Engine | None = None
        self._schema: dict[str, Table] | None = None
        self._columns_by_table: dict[str, list[str]] | None = None

    def _open(self) -> Engine:
        if self._engine is not None:
            return self._engine
        if self.backend == "sqlite":
            path = self.url.database
            if not path or path == ":memory:":
                raise ConfigurationError("an in-memory SQLite database cannot be opened read-only")
            try:  # fail with the file's name rather than "unable to open database file"
                sqlite3.connect(f"file:{path}?mode=ro", uri=True).close()
            except sqlite3.Error as exc:
                raise ConfigurationError(f"cannot open the SQLite database {path}: {exc}"
                                         ) from None
            engine = create_engine(f"sqlite:///file:{path}?mode=ro&uri=true")

            @event.listens_for(engine, "connect")
            def _read_only(dbapi_connection, _record):
                dbapi_connection.execute("PRAGMA query_only = 1")
                dbapi_connection.set_authorizer(_sqlite_authorizer)
        else:
            url = self.url
            if self.backend == "postgresql" and url.drivername == "postgresql":
                url = url.set(drivername="postgresql+psycopg")
            engine = create_engine(url, pool_pre_ping=True)
        self._engine = engine
        return engine

    async def run(self, sql: str) -> QueryResult:
        """Check ``sql`` with the guard, then run it read-only. Raises UnsafeSQLError,
        QueryError (the database's own message) or TimeoutError. With a column allowlist, the
        guard resolves each reference against this database's own tables and columns."""
        schema = None
        if self.columns is not None:  # columns resolve against the real tables, all of them
            if self._columns_by_table is None:
                self._columns_by_table = await asyncio.to_thread(self._inspect, _columns_by_table)
            schema = self._columns_by_table
        safe = check(sql, self.dialect, tables=self.tables, columns=self.columns, schema=schema)
        # The database enforces the timeout; this outer one only catches a hung connection.
        return await asyncio.wait_for(asyncio.to_thread(self._run, safe), self.timeout_s + 5)

    def _run(self, sql: str) -> QueryResult:
        engine = self._open()
        try:
            with engine.connect() as conn:
                if self.backend == "sqlite":
                    raw = conn.connection.dbapi_connection
                    deadline = time.monotonic() + self.timeout_s
                    # Called every 10,000 VM steps: a runaway (recursive) query is interrupted.
                    raw.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)
                elif self.backend == "postgresql":
                    conn.exec_driver_sql("SET TRANSACTION READ ONLY")
                    conn.exec_driver_sql(
                        f"SET LOCAL statement_timeout = {int(self.timeout_s * 1000)}")
                # The driver's own cursor, without parameters: a "%" in the query is just a "%".
                cursor = conn.connection.dbapi_connection.cursor()
                try:
                    cursor.execute(sql)
                    columns = [d[0] for d in cursor.description or ()]
                    rows = [tuple(r) for r in cursor.fetchmany(self.row_limit + 1)]
                except Exception as exc:
                    raise self._query_error(exc) from None
                finally:
                    cursor.close()
                    if self.backend == "sqlite":
                        raw.set_progress_handler(None, 0)
                    conn.rollback()
        except OperationalError as exc:  # from SQLAlchemy: the connection itself failed
            raise ConfigurationError(f"cannot connect to the database: {exc.orig}") from None
        except DBAPIError as exc:
            raise self._query_error(exc.orig) from None
        return QueryResult(sql, columns, rows[: self.row_limit], len(rows) > self.row_limit)

    async def schema(self) -> dict[str, Table]:
        """Tables, columns, types, keys and foreign keys (cached after the first call)."""
        if self._schema is None:
            self._schema = await asyncio.to_thread(self._introspect)
        return self._schema

    def _introspect(self) -> dict[str, Table]:
        return self._inspect(self._tables)

    def _inspect(self, read: Callable[[Inspector], T]) -> T:
        """``read(inspector)`` on this database, with a clear error if it cannot be read."""
        if self.backend == "sqlite":  # the query engine's authorizer refuses PRAGMA
            path = self.url.database
            engine = create_engine(f"sqlite:///file:{path}?mode=ro&uri=true")
        else:
            engine = self._open()
        try:
            return read(inspect(engine))
        except OperationalError as exc:
            raise ConfigurationError(f"cannot read the schema: {exc.orig}") from None
        finally:
            if engine is not self._engine:
                engine.dispose()

    def _tables(self, inspector: Inspector) -> dict[str, Table]:
        allowed = {t.lower() for t in self.tables} if self.tables is not None else None
        schema = {}
        for name in inspector.get_table_names():
            if allowed is not None and name.lower() not in allowed:
                continue
            schema[name] = Table(
                name,
                [(c["name"], str(c["type"])) for c in inspector.get_columns(name)],
                inspector.get_pk_constraint(name).get("constrained_columns") or [],
                [(column, fk["referred_table"], referred)
                 for fk in inspector.get_foreign_keys(name)
                 for column, referred in zip(fk["constrained_columns"],
                                             fk["referred_columns"], strict=False)],
            )
        return schema

    async def add_samples(self, tables: list[Table], per_column: int = 3) -> None:
        """A few distinct values per column, for the prompt (fetched once per table)."""
        for table in tables:
            if table.samples:
                continue
            for column, _ in table.columns:
                quote = '"'
                sql = (f"SELECT DISTINCT {quote}{column}{quote} FROM {quote}{table.name}{quote} "
                       f"WHERE {quote}{column}{quote} IS NOT NULL LIMIT {per_column}")
                try:
                    result = await self.run(sql)
                except Exception:  # a column we may not read: no samples, no failure
                    continue
                table.samples[column] = [_cell(r[0])[:40] for r in result.rows]

    def _query_error(self, exc: BaseException) -> Exception:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "interrupted" in message or "statement timeout" in message:
            return TimeoutError(f"the query ran longer than {self.timeout_s:g} s and was stopped")
        return QueryError(message)

    async def aclose(self) -> None:
        """Dispose of the engine and its connections."""
        if self._engine is not None:
            await asyncio.to_thread(self._engine.dispose)
            self._engine = None
