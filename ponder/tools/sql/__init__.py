"""Text-to-SQL: a guard that only lets safe read-only queries through, and a read-only executor."""

from ponder.tools.sql.database import Database, QueryError, QueryResult, Table
from ponder.tools.sql.guard import UnsafeSQLError, check

__all__ = ["Database", "QueryError", "QueryResult", "Table", "UnsafeSQLError", "check"]
