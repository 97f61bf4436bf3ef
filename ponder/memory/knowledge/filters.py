"""Metadata filters: ``{"field": value}`` and ``{"field": {"$op": value}}``, all must hold.

Operators: ``$eq``, ``$ne``, ``$in``, ``$nin``, ``$gt``, ``$gte``, ``$lt``, ``$lte``. A field
must be one the knowledge base has seen (``source``, ``title`` or a document's metadata key):
a misspelt field is an error, not a filter that silently matches nothing.
"""

from __future__ import annotations

import json
from typing import Any, Literal

Dialect = Literal["sqlite", "postgres"]
COLUMNS = frozenset({"source", "title"})
_COMPARISONS = {"$eq": "=", "$ne": "!=", "$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
_OPERATORS = frozenset(_COMPARISONS) | {"$in", "$nin"}


class FilterError(ValueError):
    """A filter naming an unknown field or operator, or with a value of the wrong shape."""


def compile_filter(filter: dict[str, Any] | None, known: set[str], dialect: Dialect,
                   alias: str = "c") -> tuple[str, list[Any]]:
    """A SQL condition on the chunk table ``alias`` (``"1=1"`` for no filter) and its parameters.

    Parameters are ``?`` for SQLite and ``%s`` for Postgres.
    """
    if not filter:
        return "1=1", []
    if not isinstance(filter, dict):
        raise FilterError(f"a filter is a mapping of field to value, not {type(filter).__name__}")
    clauses: list[str] = []
    params: list[Any] = []
    for field, condition in filter.items():
        if field not in known | COLUMNS:
            fields = ", ".join(sorted(known | COLUMNS))
            raise FilterError(f"unknown metadata field {field!r} in the filter; known fields: "
                              f"{fields}")
        conditions = condition if isinstance(condition, dict) else {"$eq": condition}
        for op, value in conditions.items():
            if op not in _OPERATORS:
                raise FilterError(f"unknown operator {op!r} for field {field!r}; use one of "
                                  f"{', '.join(sorted(_OPERATORS))}")
            clause, values = _clause(field, op, value, dialect, alias)
            clauses.append(clause)
            params.extend(values)
    return " AND ".join(clauses), params


def _clause(field: str, op: str, value: Any, dialect: Dialect, alias: str
            ) -> tuple[str, list[Any]]:
    mark = "?" if dialect == "sqlite" else "%s"
    if op in ("$in", "$nin"):
        if not isinstance(value, list | tuple) or not value:
            raise FilterError(f"{op} for field {field!r} needs a non-empty list of values")
        ors = [_clause(field, "$eq", v, dialect, alias) for v in value]
        clause = "(" + " OR ".join(c for c, _ in ors) + ")"
        return (clause if op == "$in" else f"NOT {clause}"), [p for _, ps in ors for p in ps]
    if isinstance(value, dict | list):
        raise FilterError(f"field {field!r}: compare with a single value, not {value!r}")
    sql_op = _COMPARISONS[op]
    if field in COLUMNS:
        return f"{alias}.{field} {sql_op} {mark}", [value]
    if dialect == "sqlite":
        # json_extract gives SQL values of the JSON's own type, so 2020 = 2020 and 'a' = 'a'.
        return f"json_extract({alias}.metadata, {mark}) {sql_op} {mark}", [
            "$." + json.dumps(field), _sqlite_value(value)]
    if isinstance(value, bool) or value is None or op in ("$eq", "$ne"):
        equal = f"{alias}.metadata @> {mark}::jsonb"
        return (equal if op == "$eq" else f"NOT {equal}"), [json.dumps({field: value})]
    if isinstance(value, int | float):
        return f"({alias}.metadata->>{mark})::float8 {sql_op} {mark}", [field, value]
    return f"{alias}.metadata->>{mark} {sql_op} {mark}", [field, str(value)]


def _sqlite_value(value: Any) -> Any:
    return int(value) if isinstance(value, bool) else value
