"""The SQL guard and the read-only executor, on SQLite and on a real Postgres."""

import asyncio
import contextlib
import itertools

import psycopg
import pytest
from sqlalchemy import create_engine, text

from ponder.tools.sql import Database, QueryError, UnsafeSQLError, check
from tests.helpers.sql_corpus import (
    HOSTILE,
    HOSTILE_RESTRICTED,
    RESTRICTED_COLUMNS,
    RESTRICTED_TABLES,
    VALID,
    VALID_RESTRICTED,
)


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
    ("SELECT PG_ADVISORY_LOCK_SHARED(42)", r"the function pg_advisory_lock_shared\(\) is not "
     r"allowed: only postgres built-in functions known to have no side effects"),
    ('SELECT "PG_ADVISORY_LOCK_SHARED"(42)',
     r"the function PG_ADVISORY_LOCK_SHARED\(\) is not allowed"),
    ("SELECT pg_catalog.pg_advisory_lock(42)",
     r"the function pg_catalog.pg_advisory_lock\(\) is not allowed"),
    ("SELECT public.lower('A')", r"the function public.lower\(\) is not allowed"),
    ("SELECT version()", r"the function version\(\) is not allowed"),
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


def test_allowlists_resolve_every_reference_by_its_scope():
    tables, columns = ["employee"], ["employee.id", "employee.name"]
    schema = {"employee": ["id", "name", "ssn"], "salary": ["id", "amount"]}
    for sql in ("SELECT ssn AS ssn FROM employee",
                "SELECT name AS ssn FROM employee WHERE ssn LIKE '1%'",
                "WITH employee AS (SELECT amount AS name FROM salary) SELECT name FROM employee",
                "SELECT e.name FROM (SELECT ssn AS name FROM employee) AS e"):
        for known in (schema, None):  # with the real columns, and assuming the worst without
            with pytest.raises(UnsafeSQLError, match="'ssn' is not allowed|'salary' is not"):
                check(sql, "postgres", tables=tables, columns=columns, schema=known)
    # With the real columns, * is the columns it covers; without them it cannot be checked.
    assert check("SELECT * FROM employee", tables=tables, columns=columns + ["employee.ssn"],
                 schema=schema) == "SELECT * FROM employee"
    with pytest.raises(UnsafeSQLError, match=r"\* is not allowed .* columns of 'employee' are "
                                             "not known"):
        check("SELECT * FROM employee", tables=tables, columns=columns + ["employee.ssn"])
    # Two tables could hold an unqualified name: it must be qualified.
    with pytest.raises(UnsafeSQLError, match="could not all be resolved .*: qualify each column"):
        check("SELECT name FROM employee, employee AS boss", tables=tables, columns=columns)
    # ORDER BY a bare alias is the output column; inside an expression it is the table's.
    assert check("SELECT name AS ssn FROM employee ORDER BY ssn", tables=tables,
                 columns=columns, schema=schema)
    with pytest.raises(UnsafeSQLError, match="the column 'ssn' could not be resolved"):
        check("SELECT name AS ssn FROM employee ORDER BY lower(ssn)", "postgres",
              tables=tables, columns=columns, schema=schema)
    # A table in another schema is another table.
    assert check("SELECT name FROM public.employee", "postgres", tables=tables, columns=columns)
    with pytest.raises(UnsafeSQLError, match="the table 'hr.employee' is not allowed"):
        check("SELECT name FROM hr.employee", "postgres", tables=tables, columns=columns)
    # A derived table cannot see its siblings: the database would read the outer employee.ssn.
    with pytest.raises(UnsafeSQLError, match="'e.ssn' refers to 'e', a FROM item this "
                                             "subquery cannot see"):
        check("SELECT (SELECT z.v FROM (SELECT 'x' AS ssn) AS e, (SELECT e.ssn AS v) AS z) "
              "FROM employee AS e", "postgres", tables=tables, columns=columns, schema=schema)


def test_with_every_table_and_column_allowed_every_analytical_query_passes(chinook_sqlite):
    # Resolution refuses nothing the database itself would run: with the real columns, and with
    # none (every table then assumed to hold every name the query uses).
    db = Database(chinook_sqlite)
    schema = {table.lower(): [c.lower() for c, _ in info.columns]
              for table, info in db._introspect().items()}
    columns = [f"{table}.{column}" for table, names in schema.items() for column in names]
    refused = []
    for dialect in ("sqlite", "postgres"):
        for known in (schema, None):
            for sql in VALID + VALID_RESTRICTED:
                try:
                    check(sql, dialect, tables=list(schema), columns=columns, schema=known)
                except UnsafeSQLError as exc:
                    refused.append(f"{dialect}, schema={known is not None}: {sql}: {exc}")
    assert refused == []


@pytest.fixture
def staff(database_url) -> str:
    """The issue's database: employee(id, name, ssn) with two people, on SQLite and Postgres."""
    engine = create_engine(database_url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE employee (id INTEGER PRIMARY KEY, name TEXT, ssn TEXT)"))
        conn.execute(text("INSERT INTO employee VALUES (1, 'Ann', '111-11-1111'), "
                          "(2, 'Bob', '222-22-2222')"))
    engine.dispose()
    return database_url


async def test_an_alias_does_not_exempt_a_column(staff):
    db = Database(staff, tables=["employee"], columns=["employee.id", "employee.name"])
    try:
        for sql in ("SELECT ssn AS ssn FROM employee",
                    "SELECT ssn AS name FROM employee",
                    "SELECT name AS ssn FROM employee WHERE ssn LIKE '1%'",
                    "WITH employee AS (SELECT ssn AS name FROM employee) "
                    "SELECT name FROM employee",
                    "SELECT x.name FROM (SELECT ssn AS name FROM employee) AS x"):
            with pytest.raises(UnsafeSQLError, match=r"the column 'ssn' is not allowed: it reads "
                                                     r"employee\.ssn"):
                await db.run(sql)
        result = await db.run("SELECT name AS ssn FROM employee ORDER BY ssn DESC")
        assert (result.columns, result.rows) == (["ssn"], [("Bob",), ("Ann",)])
        result = await db.run("WITH e AS (SELECT id, name FROM employee) "
                              "SELECT e.name FROM e WHERE e.id = 2")
        assert result.rows == [("Bob",)]
    finally:
        await db.aclose()


async def test_no_allowed_query_depends_on_a_forbidden_column(staff):
    # Aliases, CTEs, derived tables, stars and subqueries combined: whatever the guard lets
    # through must return the same rows after every SSN changes, so it neither shows an SSN nor
    # lets one be guessed through WHERE, ORDER BY or GROUP BY.
    selects = ["ssn", "x.ssn", "name", "x.name", "t.v", "*", "x.*", "(SELECT ssn)",
               "(SELECT max(ssn) FROM employee)"]
    sources = ["employee", "employee AS x", "(SELECT ssn AS v FROM employee) AS t",
               "(SELECT name AS v FROM employee) AS t", "(SELECT name AS ssn FROM employee) AS x",
               "(SELECT * FROM employee) AS x", "employee AS x JOIN employee AS y USING (id)"]
    withs = ["", "WITH employee AS (SELECT id, name, name AS ssn FROM employee) ",
             "WITH x AS (SELECT ssn FROM employee) "]
    tails = ["", " WHERE ssn LIKE '1%'", " ORDER BY ssn", " ORDER BY lower(ssn)", " GROUP BY 1"]
    queries = [f"{w}SELECT {s}{alias} FROM {f}{t}" for w, s, f, t, alias in itertools.product(
        withs, selects, sources, tails, ["", " AS ssn"])]
    db = Database(staff, tables=["employee"], columns=["employee.id", "employee.name"])
    before = {}
    try:
        for sql in queries:
            with contextlib.suppress(UnsafeSQLError, QueryError):
                before[sql] = (await db.run(sql)).rows
        engine = create_engine(staff.replace("postgresql://", "postgresql+psycopg://", 1))
        with engine.begin() as conn:
            conn.execute(text("UPDATE employee SET ssn = '999-' || ssn"))
        engine.dispose()
        changed = [sql for sql, rows in before.items() if (await db.run(sql)).rows != rows]
    finally:
        await db.aclose()
    assert len(queries) == 1890 and len(before) >= 50  # many disguises, many allowed queries
    assert changed == []


async def test_restricted_corpus(chinook):
    restricted = Database(chinook, tables=RESTRICTED_TABLES, columns=RESTRICTED_COLUMNS)
    unrestricted = Database(chinook)
    through, refused, wrong = [], [], []
    try:
        for sql in HOSTILE_RESTRICTED:
            try:
                await restricted.run(sql)
                through.append(sql)
            except UnsafeSQLError:
                pass
        for sql in VALID_RESTRICTED:
            try:
                result = await restricted.run(sql)
            except UnsafeSQLError as exc:
                refused.append(f"{sql}: {exc}")
                continue
            expected = await unrestricted.run(sql)
            if result.rows != expected.rows or not result.rows:
                wrong.append(sql)
    finally:
        await restricted.aclose()
        await unrestricted.aclose()
    assert len(HOSTILE_RESTRICTED) >= 30 and len(VALID_RESTRICTED) >= 10
    assert through == []
    assert refused == []
    assert wrong == []


@pytest.mark.parametrize("sql, expected", [
    ("SELECT lower(name), length(name), upper(substr(name, 1, 2)) FROM artist "
     "WHERE artistid = 1", ("ac/dc", 5, "AC")),
    ("SELECT coalesce(NULL, 'x'), nullif(1, 1), abs(-2), round(2.567, 1), "
     "replace('a-b', '-', '+'), trim('  t  ')", ("x", None, 2, 2.6, "a+b", "t")),
    ("SELECT count(*), count(DISTINCT billingcountry), max(total), min(total) FROM invoice",
     (412, 24, 25.86, 0.99)),
    ("SELECT CASE WHEN 1 < 2 THEN 'yes' ELSE 'no' END, cast(42 AS TEXT), 'a' || 'b'",
     ("yes", "42", "ab")),
])
async def test_side_effect_free_functions_run_and_return_their_values(chinook, sql, expected):
    db = Database(chinook)
    try:
        [row] = (await db.run(sql)).rows
    finally:
        await db.aclose()
    # Postgres answers NUMERIC as Decimal: compare numbers as numbers.
    assert tuple(float(v) if hasattr(v, "as_integer_ratio") and not isinstance(v, int) else v
                 for v in row) == expected


async def test_a_function_with_side_effects_never_runs_on_postgres(postgres_url):
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE calls (n integer)")
        conn.execute("CREATE FUNCTION bump() RETURNS integer LANGUAGE sql AS "
                     "'INSERT INTO calls VALUES (1) RETURNING n'")
        # Named like a function sqlglot knows from another dialect (it parses it as typed).
        conn.execute("CREATE FUNCTION contains(text, text) RETURNS boolean LANGUAGE sql AS "
                     "'INSERT INTO calls VALUES (1) RETURNING true'")
    db = Database(postgres_url)
    try:
        for sql in ("SELECT pg_advisory_lock_shared(42)", "SELECT PG_ADVISORY_LOCK_SHARED(42)",
                    'SELECT "pg_advisory_lock_shared"(42)',
                    "SELECT pg_catalog.pg_advisory_lock_shared(42)",
                    'SELECT "pg_catalog"."pg_advisory_lock_shared"(42)',
                    "SELECT pg_try_advisory_lock(42)", "SELECT bump()", "SELECT public.bump()",
                    'SELECT "bump"()', "SELECT n FROM calls WHERE bump() > 0",
                    "SELECT contains('a', 'b')"):
            with pytest.raises(UnsafeSQLError, match=r"\(\) is not allowed: only postgres "
                                                     "built-in functions known to have no side "
                                                     "effects"):
                await db.run(sql)
        assert (await db.run("SELECT pg_catalog.lower('AB'), upper('ab')")).rows == [("ab", "AB")]
    finally:
        await db.aclose()
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                            ).fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM calls").fetchone() == (0,)


async def test_the_read_only_connection_is_a_second_wall(chinook_sqlite):
    # Even if a write reached the database, the connection itself refuses it.
    db = Database(chinook_sqlite)
    with pytest.raises(QueryError, match="readonly|not authorized|read-only|attempt to write"):
        await asyncio.to_thread(db._run, "DELETE FROM artist")
    # Functions too: SQLite's authorizer allows the guard's side-effect-free functions only.
    for sql in ("SELECT randomblob(16)", "SELECT load_extension('evil')"):
        with pytest.raises(QueryError, match="not authorized"):
            await asyncio.to_thread(db._run, sql)
    assert (await asyncio.to_thread(db._run, "SELECT lower('AB')")).rows == [("ab",)]
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
