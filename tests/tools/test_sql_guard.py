"""The SQL guard and the read-only executor, on SQLite and on a real Postgres."""

import pytest

from ponder.tools.sql import Database, QueryError, UnsafeSQLError, check
from tests.tools.sql_corpus import HOSTILE, VALID


@pytest.fixture(params=["sqlite", "postgres"])
def chinook(request) -> str:
    return request.getfixturevalue(f"chinook_{request.param}")


async def run_corpus(url: str) -> tuple[list[str], list[str]]:
    """(hostile that got through, valid that were refused)."""
    db = Database(url, row_limit=50, timeout_s=1.0)
    through, refused = [], []
    try:
        for sql in HOSTILE:
            try:
                await db.run(sql)
                through.append(sql)
            except (UnsafeSQLError, TimeoutError):
                pass
        for sql in VALID:
            try:
                await db.run(sql)
            except Exception as exc:
                refused.append(f"{sql}: {type(exc).__name__}: {exc}")
    finally:
        await db.aclose()
    return through, refused


async def test_every_hostile_input_is_blocked_and_every_valid_query_runs(chinook):
    assert len(HOSTILE) >= 50 and len(VALID) >= 50
    through, refused = await run_corpus(chinook)
    assert through == []
    assert refused == []


def test_what_passes_is_what_was_checked():
    assert check("SELECT name FROM artist -- ; DROP TABLE artist") == "SELECT name FROM artist"
    assert check("SELECT /* x */ 1") == "SELECT 1"


@pytest.mark.parametrize("sql, reason", [
    ("", "the query is empty"),
    ("SELEC name FROM artist", "could not be parsed|only queries"),
    ("SELECT 1; SELECT 2", "exactly one statement is allowed, found 2"),
    ("WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x", "DELETE is not allowed"),
    ("SELECT pg_sleep(5)", r"the function pg_sleep\(\) is not allowed"),
])
def test_reasons(sql, reason):
    with pytest.raises(UnsafeSQLError, match=reason):
        check(sql, "postgres")


def test_allowlists():
    tables, columns = ["artist", "album"], ["artist.name", "artist.artistid", "album.artistid"]
    assert check("SELECT a.name, count(*) AS n FROM artist a JOIN album b ON "
                 "a.artistid = b.artistid GROUP BY a.name ORDER BY n", tables=tables,
                 columns=columns)
    with pytest.raises(UnsafeSQLError, match="the table 'customer' is not allowed"):
        check("SELECT firstname FROM customer", tables=tables)
    with pytest.raises(UnsafeSQLError, match="the column 'email' is not allowed"):
        check("SELECT email FROM artist", tables=tables, columns=columns)
    with pytest.raises(UnsafeSQLError, match=r"\* is not allowed when columns are restricted"):
        check("SELECT * FROM artist", tables=tables, columns=columns)
    assert check("WITH top AS (SELECT artistid FROM album) SELECT artistid FROM top",
                 tables=tables, columns=columns)


async def test_the_read_only_connection_is_a_second_wall(chinook_sqlite):
    # Even if a write reached the database, the connection itself refuses it.
    db = Database(chinook_sqlite)
    with pytest.raises(QueryError, match="readonly|not authorized|read-only|attempt to write"):
        await __import__("asyncio").to_thread(db._run, "DELETE FROM artist")
    await db.aclose()


async def test_results_are_compact_tables_with_a_truncation_note(chinook):
    db = Database(chinook, row_limit=3)
    result = await db.run("SELECT name FROM artist ORDER BY name")
    table = result.as_table()
    assert table.splitlines()[0].lower() == "name"
    assert len(table.splitlines()) == 5 and "showing 3 of more than 3 rows" in table
    empty = await db.run("SELECT name FROM artist WHERE name = 'nobody at all'")
    assert empty.as_table() == "(the query returned no rows)"
    with pytest.raises(QueryError, match="nope"):
        await db.run("SELECT nope FROM artist")
    await db.aclose()


async def test_bad_databases_get_clear_errors(tmp_path):
    from ponder.config import ConfigurationError

    with pytest.raises(ConfigurationError, match="cannot open the SQLite database"):
        await Database(f"sqlite:///{tmp_path}/missing.db").run("SELECT 1")
    with pytest.raises(ConfigurationError, match="cannot connect to the database"):
        await Database("postgresql://u:p@127.0.0.1:1/none?connect_timeout=1").run("SELECT 1")
    with pytest.raises(ConfigurationError, match="is not a database URL"):
        Database("not a url")
