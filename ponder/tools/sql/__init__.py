"""Text-to-SQL: a guard that only lets safe read-only queries through, and a read-only executor."""

from ponder.tools.sql.database import Database, QueryError, QueryResult, Table
from ponder.tools.sql.guard import UnsafeSQLError, check
from ponder.tools.sql.text_to_sql import TextToSQL, TextToSQLResult, sql_tool, text_to_sql

__all__ = [
    "Database",
    "QueryError",
    "QueryResult",
    "Table",
    "TextToSQL",
    "TextToSQLResult",
    "UnsafeSQLError",
    "check",
    "sql_tool",
    "text_to_sql",
]
