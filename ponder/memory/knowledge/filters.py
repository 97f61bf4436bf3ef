"""Metadata filters: ``{"field": value}`` and ``{"field": {"$op": value}}``, all must hold.

Operators: ``$eq``, ``$ne``, ``$in``, ``$nin``, ``$gt``, ``$gte``, ``$lt``, ``$lte``,
``$exists``. A field must be one the knowledge base has seen (``source``, ``title`` or a
document's metadata key): a misspelt field is an error, not a filter that silently matches
nothing.

The semantics, the same on SQLite and Postgres (and so for ``delete(filter=...)``):

- A value matches only a stored value of the same JSON type: ``2020`` is not ``"2020"``, and
  ``True`` is not ``1``. ``None`` matches a stored JSON null.
- A chunk without the field is *not equal* to every value: ``$eq`` and ``$in`` never match it;
  ``$ne`` and ``$nin`` always do. Comparisons (``$gt`` ...) never match it, nor a stored value
  of another type (numbers compare with numbers, strings with strings, by code point).
- ``{"$exists": true}`` matches chunks that have the field (even with a null value),
  ``{"$exists": false}`` those that do not. A chunk's title exists when it has one.
"""

from __future__ import annotations

import json
import math
from typing import Any, Literal

from ponder.errors import PonderError

Dialect = Literal["sqlite", "postgres"]
COLUMNS = frozenset({"source", "title"})
_COMPARISONS = {"$eq": "=", "$ne": "!=", "$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
_OPERATORS = frozenset(_COMPARISONS) | {"$in", "$nin", "$exists"}
_INT64 = (-(2**63), 2**63 - 1)


class FilterError(PonderError, ValueError):
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
        if not conditions:
            raise FilterError(f"field {field!r} has an empty condition: write a value, or "
                              f"{{\"$op\": value}} with an operator")
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
    if op == "$exists":
        if not isinstance(value, bool):
            raise FilterError(f"$exists for field {field!r} takes true or false, not {value!r}")
        clause, params = _present(field, dialect, alias, mark)
        return (clause if value else f"NOT {clause}"), params
    if op in ("$in", "$nin"):
        if not isinstance(value, list | tuple) or not value:
            raise FilterError(f"{op} for field {field!r} needs a non-empty list of values")
        ors = [_clause(field, "$eq", v, dialect, alias) for v in value]
        clause = "(" + " OR ".join(c for c, _ in ors) + ")"
        return (clause if op == "$in" else f"NOT {clause}"), [p for _, ps in ors for p in ps]
    if isinstance(value, dict | list):
        raise FilterError(f"field {field!r}: compare with a single value, not {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise FilterError(f"field {field!r}: {value!r} is not a number JSON can store")
    if isinstance(value, int) and not isinstance(value, bool) and not _INT64[0] <= value <= \
            _INT64[1]:
        raise FilterError(f"field {field!r}: {value} is outside the 64-bit integer range")
    if op == "$ne":  # "not equal" holds for a missing field too (see the module's docstring)
        clause, params = _clause(field, "$eq", value, dialect, alias)
        return f"NOT {clause}", params
    if field in COLUMNS:
        return _column_clause(field, op, value, dialect, alias, mark)
    if dialect == "sqlite":
        return _sqlite_clause(field, op, value, alias)
    return _postgres_clause(field, op, value, alias)


def _present(field: str, dialect: Dialect, alias: str, mark: str) -> tuple[str, list[Any]]:
    if field == "source":
        return "1=1", []
    if field == "title":
        return f"{alias}.title <> ''", []
    if dialect == "sqlite":
        return f"json_type({alias}.metadata, {mark}) IS NOT NULL", [_path(field)]
    return f"{alias}.metadata ? {mark}", [field]


def _column_clause(field: str, op: str, value: Any, dialect: Dialect, alias: str, mark: str
                   ) -> tuple[str, list[Any]]:
    """``source`` and ``title`` are text columns (a missing title is stored as '')."""
    if not isinstance(value, str):  # a string column equals no other type, nor orders with it
        return "1=0", []
    column = f"{alias}.{field}" if dialect == "sqlite" else f'{alias}.{field} COLLATE "C"'
    present = f"{alias}.title <> '' AND " if field == "title" else ""
    return f"({present}{column} {_COMPARISONS[op]} {mark})", [value]


def _sqlite_clause(field: str, op: str, value: Any, alias: str) -> tuple[str, list[Any]]:
    # json_type tells the JSON type ('null', 'true', 'false', 'integer', 'real', 'text', ...),
    # which json_extract's SQL value alone does not. A missing key's SQL NULL would make
    # ``NOT (...)`` NULL as well, and so never true: it becomes 'missing'.
    kind = f"coalesce(json_type({alias}.metadata, ?), 'missing')"
    extracted = f"json_extract({alias}.metadata, ?)"
    path = _path(field)
    if op == "$eq" and (value is None or isinstance(value, bool)):
        return f"{kind} = ?", [path, json.dumps(value)]
    if isinstance(value, bool) or value is None:
        return "1=0", []  # true, false and null have no order
    types = "('integer', 'real')" if isinstance(value, int | float) else "('text')"
    return (f"({kind} IN {types} AND {extracted} {_COMPARISONS[op]} ?)",
            [path, path, value])


def _postgres_clause(field: str, op: str, value: Any, alias: str) -> tuple[str, list[Any]]:
    if op == "$eq":  # containment compares JSON values with their types
        return f"{alias}.metadata @> %s::jsonb", [json.dumps({field: value})]
    if isinstance(value, bool) or value is None:
        return "1=0", []  # true, false and null have no order
    if isinstance(value, int | float):
        return (f"(coalesce(jsonb_typeof({alias}.metadata->%s), 'missing') = 'number' AND "
                f"({alias}.metadata->>%s)::numeric {_COMPARISONS[op]} %s)", [field, field, value])
    return (f"(coalesce(jsonb_typeof({alias}.metadata->%s), 'missing') = 'string' AND "
            f"{alias}.metadata->>%s COLLATE \"C\" {_COMPARISONS[op]} %s)",
            [field, field, str(value)])


def _path(field: str) -> str:
    return "$." + json.dumps(field)
