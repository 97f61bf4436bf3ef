"""The SQL safety guard: only one read-only query passes, and what passes is what was checked.

``check(sql, dialect="sqlite")`` parses with sqlglot and requires exactly one statement whose root
is a query (SELECT, set operations, WITH ... SELECT). It walks the whole tree, CTEs and subqueries
included, and rejects any node that writes, changes schema or settings, or reaches outside the
database; and calls of functions that read files, load code or touch the server. An optional
allowlist restricts the tables and columns. It returns the statement as sqlglot writes it back
(comments dropped), so the database runs exactly the tree that was checked.

The guard is one layer: the executor also opens the database read-only (see ``database.py``).
"""

from __future__ import annotations

from collections.abc import Iterable

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError

from ponder.errors import PonderError

__all__ = ["UnsafeSQLError", "check"]


class UnsafeSQLError(PonderError, ValueError):
    """The SQL is not a single safe read-only query. The message says why."""


# Nodes that write, change schema, settings or sessions, or leave the database.
_FORBIDDEN_NODES: tuple[type[exp.Expression], ...] = tuple(
    getattr(exp, name) for name in (
        "Insert", "Update", "Delete", "Merge", "Drop", "Create", "Alter", "TruncateTable",
        "Grant", "Revoke", "Attach", "Detach", "Pragma", "Copy", "Set", "Command", "Transaction",
        "Commit", "Rollback", "Into", "Lock", "Use", "LoadData", "Analyze", "Kill", "Cache",
        "Uncache", "Refresh", "Call", "Execute", "Vacuum",
    ) if hasattr(exp, name)
)

# Functions that read or write files, load code, sleep, or act on the server or other sessions.
FORBIDDEN_FUNCTIONS = frozenset({
    # SQLite
    "load_extension", "readfile", "writefile", "edit", "fts3_tokenizer", "zipfile",
    "sqlar_compress", "sqlar_uncompress", "randomblob", "zeroblob",
    # Postgres
    "pg_read_file", "pg_read_binary_file", "pg_ls_dir", "pg_stat_file", "pg_sleep",
    "pg_sleep_for", "pg_sleep_until", "lo_import", "lo_export", "lo_get", "lo_put", "lo_unlink",
    "dblink", "dblink_exec", "set_config", "pg_terminate_backend", "pg_cancel_backend",
    "pg_reload_conf", "pg_rotate_logfile", "pg_logical_emit_message", "pg_advisory_lock",
    "pg_advisory_xact_lock", "pg_try_advisory_lock", "txid_current", "nextval", "setval",
    "currval", "query_to_xml", "query_to_xmlschema", "table_to_xml", "cursor_to_xml",
    "database_to_xml", "pg_file_write", "pg_file_rename", "pg_file_unlink", "copy_to",
    # MySQL and others
    "load_file", "sleep", "benchmark", "sys_exec", "sys_eval",
})

_QUERY_ROOTS = (exp.Select, exp.Union, exp.Intersect, exp.Except)


def check(sql: str, dialect: str = "sqlite", *, tables: Iterable[str] | None = None,
          columns: Iterable[str] | None = None) -> str:
    """The validated query, as sqlglot writes it for ``dialect``; or UnsafeSQLError with why.

    ``tables`` and ``columns`` (bare names or ``table.column``), when given, are allowlists.
    """
    if not isinstance(sql, str) or not sql.strip():
        raise UnsafeSQLError("the query is empty")
    try:
        statements = [s for s in sqlglot.parse(sql, read=dialect) if s is not None]
    except (ParseError, TokenError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "syntax error"
        raise UnsafeSQLError(f"the query could not be parsed as {dialect} SQL: {first}") from None
    if len(statements) != 1:
        raise UnsafeSQLError(f"exactly one statement is allowed, found {len(statements)}")
    statement = statements[0]
    if not isinstance(statement, _QUERY_ROOTS):
        raise UnsafeSQLError(f"only queries are allowed, not {_name(statement)}")
    for node in statement.walk():
        if isinstance(node, _FORBIDDEN_NODES):
            raise UnsafeSQLError(f"{_name(node)} is not allowed in a read-only query")
        if isinstance(node, exp.Func):
            name = _function_name(node)
            if name in FORBIDDEN_FUNCTIONS:
                raise UnsafeSQLError(f"the function {name}() is not allowed")
    if tables is not None or columns is not None:
        _check_allowlists(statement, tables, columns)
    return statement.sql(dialect=dialect, comments=False)


def _name(node: exp.Expression) -> str:
    if isinstance(node, exp.Command):
        return f"the command {str(node.this).upper()}"
    return type(node).__name__.upper()


def _function_name(node: exp.Func) -> str:
    if isinstance(node, exp.Anonymous):
        return str(node.this).lower()
    return node.sql_name().lower()


def _check_allowlists(statement: exp.Expression, tables: Iterable[str] | None,
                      columns: Iterable[str] | None) -> None:
    ctes = {cte.alias_or_name.lower() for cte in statement.find_all(exp.CTE)}
    if tables is not None:
        allowed = {t.lower() for t in tables}
        for table in statement.find_all(exp.Table):
            name = table.name.lower()
            if name not in allowed and name not in ctes:
                raise UnsafeSQLError(f"the table {table.name!r} is not allowed "
                                     f"(allowed: {', '.join(sorted(allowed))})")
    if columns is not None:
        allowed_columns = {c.lower() for c in columns}
        aliases = {a.alias.lower() for a in statement.find_all(exp.Alias)}
        for star in statement.find_all(exp.Star):
            if not isinstance(star.parent, exp.Count):
                raise UnsafeSQLError("* is not allowed when columns are restricted: "
                                     "name the columns")
        for column in statement.find_all(exp.Column):
            name = column.name.lower()
            qualified = f"{column.table.lower()}.{name}" if column.table else None
            if name in aliases or (column.table and column.table.lower() in ctes):
                continue
            if name not in allowed_columns and qualified not in allowed_columns and not any(
                    c.endswith(f".{name}") for c in allowed_columns):
                raise UnsafeSQLError(f"the column {column.sql()!r} is not allowed")
