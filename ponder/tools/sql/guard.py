"""The SQL safety guard: only one read-only query passes, and what passes is what was checked.

``check(sql, dialect="sqlite")`` parses with sqlglot and requires exactly one statement whose root
is a query (SELECT, set operations, WITH ... SELECT). It walks the whole tree, CTEs and subqueries
included, and rejects any node that writes, changes schema or settings, or reaches outside the
database. Functions are an allowlist: a call passes only if it is a built-in known to have no
side effects, however its name is quoted, cased or schema-qualified; functions sqlglot types are
checked by class and, on SQLite and Postgres, by the name the database will see (see
``PURE_FUNCTION_NAMES``).

Optional allowlists restrict the tables and columns. Every reference is resolved by its scope
with sqlglot's optimizer (``qualify`` and ``traverse_scope``), so that an alias, a CTE or a
derived table never stands in for a real table or column: ``SELECT ssn AS name FROM employee``
reads ``employee.ssn``, and that is what is checked.

It returns the statement as sqlglot writes it back (comments dropped), so the database runs
exactly the tree that was checked. The guard is one layer: the executor also opens the database
read-only (see ``database.py``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import sqlglot
from sqlglot import exp
from sqlglot.dialects.dialect import Dialect
from sqlglot.errors import ParseError, SqlglotError, TokenError
from sqlglot.optimizer.normalize_identifiers import normalize_identifiers
from sqlglot.optimizer.qualify import qualify
from sqlglot.optimizer.scope import Scope, traverse_scope
from sqlglot.schema import MappingSchema

from ponder.errors import PonderError

__all__ = ["PURE_FUNCTION_NAMES", "UnsafeSQLError", "check"]


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


def _names(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Functions sqlglot parses into typed nodes, and that compute a value from their arguments and
# nothing else: aggregates and window functions, conditionals and casts, math, strings, dates,
# JSON and arrays. Anything sqlglot does not type is judged by name (PURE_FUNCTION_NAMES). A class
# missing from the installed sqlglot is skipped: its function is then refused, never let through.
_PURE_FUNCTION_CLASSES: frozenset[type[exp.Func]] = frozenset(
    cls for cls in (getattr(exp, name, None) for name in _names("""
        AnyValue ApproxDistinct ArgMax ArgMin ArrayAgg ArrayConcatAgg Avg BitwiseAndAgg
        BitwiseOrAgg BitwiseXorAgg Corr Count CountIf CovarPop CovarSamp CumeDist DenseRank
        First FirstValue GroupConcat Grouping JSONArrayAgg JSONBObjectAgg JSONObjectAgg Lag Last
        LastValue Lead LogicalAnd LogicalOr Max Median Min Mode NthValue Ntile PercentRank
        PercentileCont PercentileDisc Rank RegrAvgx RegrAvgy RegrCount RegrIntercept RegrR2
        RegrSlope RegrSxx RegrSxy RegrSyy RowNumber Stddev StddevPop StddevSamp Sum Variance
        VariancePop

        And Case Cast Coalesce Collate Exists Greatest If JSONCast Least Nullif Nvl2 Or TryCast
        Typeof Xor

        Abs Acos Acosh Asin Asinh Atan Atan2 Atanh Cbrt Ceil Cos Cosh Cot Degrees Exp Factorial
        Floor IsInf IsNan Ln Log Pi Pow Radians Rand Round SafeDivide Sign Sin Sinh Sqrt Tan Tanh
        Trunc WidthBucket

        Ascii BitLength ByteLength Chr Concat ConcatWs Contains Decode Encode EndsWith Format
        FromBase64 Hex Initcap Left Length Lower MD5 Overlay Pad RegexpCount RegexpExtract
        RegexpExtractAll RegexpILike RegexpInstr RegexpLike RegexpReplace RegexpSplit
        RegexpSubstr Repeat Replace Reverse Right SHA SHA2 SHA2Digest Space Split SplitPart
        StartsWith StrPosition Substring ToBase64 ToChar ToNumber Translate Trim Unhex Unicode
        Upper

        AddMonths CurrentDate CurrentTime CurrentTimestamp Date DateAdd DateBin DateDiff
        DateFromParts DateStrToDate DateSub DateToDateStr DateTrunc Datetime DatetimeAdd
        DatetimeDiff DatetimeSub DatetimeTrunc Day DayOfMonth DayOfWeek DayOfWeekIso DayOfYear
        Extract Hour JustifyDays JustifyHours JustifyInterval LastDay Localtime Localtimestamp
        MakeInterval Minute Month Quarter Second StrToDate StrToTime StrToUnix Time TimeAdd
        TimeDiff TimeStrToDate TimeStrToTime TimeStrToUnix TimeSub TimeToStr TimeToTimeStr
        TimeToUnix TimeTrunc Timestamp TimestampAdd TimestampDiff TimestampFromParts
        TimestampSub TimestampTrunc TsOrDsAdd TsOrDsDiff TsOrDsToDate TsOrDsToDateStr
        TsOrDsToDatetime TsOrDsToTime TsOrDsToTimestamp UnixDate UnixSeconds UnixToStr
        UnixToTime UnixToTimeStr Week WeekOfYear Year

        JSONArray JSONArrayContains JSONBContains JSONBContainsAllTopKeys
        JSONBContainsAnyTopKeys JSONBContainsTopKey JSONBExists JSONBExtract JSONBExtractScalar
        JSONBPathExists JSONExtract JSONExtractArray JSONExtractScalar JSONFormat JSONKeys
        JSONObject JSONStripNulls JSONType MatchAgainst ParseJSON

        Array ArrayAppend ArrayConcat ArrayContainedBy ArrayContains ArrayContainsAll
        ArrayOverlaps ArrayPosition
        ArrayPrepend ArrayRemove ArraySize ArraySlice ArrayToString Explode
        ExplodingGenerateSeries GenerateSeries StringToArray ToArray Unnest
    """)) if cls is not None and issubclass(cls, exp.Func)
)

# Per dialect, the built-in functions known to have no side effects, by name (lower case). The
# guard uses them for calls sqlglot leaves untyped (``exp.Anonymous``); on SQLite the executor's
# authorizer also allows exactly these, so the names include the typed ones as SQLite spells them.
# Left out on purpose, among others: SQLite's load_extension, readfile, writefile, edit,
# fts3_tokenizer, randomblob and zeroblob (a gigabyte in one step); Postgres's advisory locks,
# sequences (nextval, setval), set_config, pg_sleep, pg_notify, large objects, file access,
# dblink, txid_current (assigns a transaction id), setseed and query_to_xml (runs any SQL).
PURE_FUNCTION_NAMES: dict[str, frozenset[str]] = {
    "sqlite": _names("""
        cast exists
        abs char coalesce concat concat_ws format glob hex if ifnull iif instr length like
        likelihood likely lower ltrim max min nullif octet_length printf quote random replace
        round rtrim sign soundex substr substring trim typeof unhex unicode unlikely upper
        date time datetime julianday unixepoch strftime timediff
        avg count group_concat string_agg sum total median
        row_number rank dense_rank percent_rank cume_dist ntile lag lead first_value last_value
        nth_value
        acos acosh asin asinh atan atan2 atanh ceil ceiling cos cosh degrees exp floor ln log
        log10 log2 mod pi pow power radians sin sinh sqrt tan tanh trunc
        json jsonb json_array jsonb_array json_array_length json_error_position json_extract
        jsonb_extract json_insert jsonb_insert json_object jsonb_object json_patch jsonb_patch
        json_pretty json_remove jsonb_remove json_replace jsonb_replace json_set jsonb_set
        json_type json_valid json_quote json_group_array jsonb_group_array json_group_object
        jsonb_group_object json_each jsonb_each json_tree jsonb_tree -> ->>
        generate_series
    """),
    "postgres": _names("""
        cast exists array date time
        abs cbrt ceil ceiling degrees div exp factorial floor gcd lcm ln log log10 min_scale mod
        pi power radians round scale sign sqrt trim_scale trunc width_bucket random
        acos acosd acosh asin asind asinh atan atan2 atan2d atand atanh cos cosd cosh cot cotd
        sin sind sinh tan tand tanh
        ascii bit_length btrim char_length character_length chr concat concat_ws convert_from
        convert_to decode encode format initcap left length lower lpad ltrim md5 normalize
        octet_length overlay position quote_ident quote_literal quote_nullable regexp_count
        regexp_instr regexp_like regexp_match regexp_matches regexp_replace
        regexp_split_to_array regexp_split_to_table regexp_substr repeat replace reverse right
        rpad rtrim sha224 sha256 sha384 sha512 split_part starts_with string_to_array
        string_to_table strpos substr substring to_ascii to_hex translate trim unistr upper
        to_char to_date to_number to_timestamp
        age clock_timestamp current_date current_time current_timestamp date_add date_bin
        date_part date_subtract date_trunc extract isfinite justify_days justify_hours
        justify_interval localtime localtimestamp make_date make_interval make_time
        make_timestamp make_timestamptz now statement_timestamp timeofday transaction_timestamp
        any_value array_agg avg bit_and bit_or bit_xor bool_and bool_or count every json_agg
        json_object_agg jsonb_agg jsonb_object_agg max min string_agg sum
        corr covar_pop covar_samp regr_avgx regr_avgy regr_count regr_intercept regr_r2
        regr_slope regr_sxx regr_sxy regr_syy stddev stddev_pop stddev_samp variance var_pop
        var_samp mode percentile_cont percentile_disc grouping
        row_number rank dense_rank percent_rank cume_dist ntile lag lead first_value last_value
        nth_value
        coalesce nullif greatest least num_nonnulls num_nulls
        to_json to_jsonb array_to_json row_to_json json_build_array jsonb_build_array
        json_build_object jsonb_build_object json_object jsonb_object json_array_elements
        jsonb_array_elements json_array_elements_text jsonb_array_elements_text
        json_array_length jsonb_array_length json_each jsonb_each json_each_text jsonb_each_text
        json_extract_path jsonb_extract_path json_extract_path_text jsonb_extract_path_text
        json_object_keys jsonb_object_keys json_typeof jsonb_typeof json_strip_nulls
        jsonb_strip_nulls jsonb_pretty jsonb_set jsonb_insert jsonb_path_exists jsonb_path_match
        jsonb_path_query jsonb_path_query_array jsonb_path_query_first
        array_append array_cat array_dims array_length array_lower array_ndims array_position
        array_positions array_prepend array_remove array_replace array_to_string array_upper
        cardinality generate_series generate_subscripts unnest
        to_tsvector to_tsquery plainto_tsquery phraseto_tsquery websearch_to_tsquery ts_rank
        ts_rank_cd ts_headline
    """),
}

# The schema a dialect puts unqualified tables in: ``main.artist`` is ``artist`` on SQLite.
_DEFAULT_SCHEMAS = {"sqlite": "main", "postgres": "public"}
# Where a dialect's built-in functions live, when a call names its schema.
_FUNCTION_SCHEMAS = {"postgres": "pg_catalog"}

_QUERY_ROOTS = (exp.Select, exp.Union, exp.Intersect, exp.Except)


def check(sql: str, dialect: str = "sqlite", *, tables: Iterable[str] | None = None,
          columns: Iterable[str] | None = None,
          schema: Mapping[str, Iterable[str]] | None = None) -> str:
    """The validated query, as sqlglot writes it for ``dialect``; or UnsafeSQLError with why.

    Every function called must be a built-in known to have no side effects on ``dialect``.
    ``tables`` (``table`` or ``schema.table``) and ``columns`` (``table.column``, or a bare
    ``column`` allowed in every table), when given, are allowlists; names compare case-blind.
    ``schema`` maps each real table to its columns (``Database`` passes the database's own):
    with it, unqualified columns resolve as the database resolves them, and ``*`` passes when
    every column it covers is allowed. Without it, a table is assumed to have every column the
    query names, so a name two tables could hold must be qualified, and ``*`` over a table is
    refused.
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
            _check_function(node, dialect)
    if tables is not None or columns is not None:
        _Allowlists(dialect, tables, columns, schema).check(statement)
    safe = statement.sql(dialect=dialect, comments=False)
    # sqlglot may write a function under another name, or as several calls (GREATEST is MAX and
    # COALESCE on SQLite): the calls the database will make are those of the text it receives.
    try:
        written = sqlglot.parse_one(safe, read=dialect)
    except (ParseError, TokenError):
        raise UnsafeSQLError(f"the query could not be written back as {dialect} SQL") from None
    for node in written.find_all(exp.Func):
        _check_function(node, dialect)
    return safe


def _name(node: exp.Expression) -> str:
    if isinstance(node, exp.Command):
        return f"the command {str(node.this).upper()}"
    return type(node).__name__.upper()


def _check_function(node: exp.Func, dialect: str) -> None:
    """Raise unless the call is to a function known to have no side effects on ``dialect``."""
    names = PURE_FUNCTION_NAMES.get(dialect)
    in_schema = isinstance(node.parent, exp.Dot) and node.arg_key == "expression"
    if not in_schema and not isinstance(node, (exp.Anonymous, exp.AnonymousAggFunc)):
        # A function sqlglot knows, called by the name sqlglot writes for this dialect: where the
        # dialect has a list of its built-ins, that name must be one of them, or a user's
        # function of that name would run.
        name, call = _written_call(node, dialect)
        if type(node) in _PURE_FUNCTION_CLASSES and (not call or names is None or name in names):
            return
        name = name if call else node.sql_name().lower()
    else:
        # The name as the database resolves it: Postgres folds unquoted names to lower case and
        # keeps quoted ones, so "PG_SLEEP" is not pg_sleep (and not allowed either).
        name = _normalized(node.this if isinstance(node.this, exp.Identifier) else
                           exp.to_identifier(node.name), dialect)
        schema = node.parent.this if in_schema else None
        if name in (names or ()) and (schema is None or (
                isinstance(schema, exp.Identifier)
                and _normalized(schema, dialect) == _FUNCTION_SCHEMAS.get(dialect))):
            return
        if schema is not None:
            name = f"{schema.sql(dialect=dialect)}.{name}"
    raise UnsafeSQLError(
        f"the function {name}() is not allowed: only {dialect} built-in functions known to have "
        "no side effects may be called (aggregates, window, math, string, date and time, JSON, "
        "array and conditional functions)")


def _written_call(node: exp.Func, dialect: str) -> tuple[str, bool]:
    """The name sqlglot writes ``node`` with on ``dialect``, and whether it is a call by name
    (``lower(x)``) rather than an operator or keyword (``a @> b``, ``CASE``, ``CURRENT_DATE``)."""
    head, paren, _ = node.sql(dialect=dialect).partition("(")
    head = head.strip()
    return head.lower(), bool(paren) and head.isidentifier() and not isinstance(node, exp.Binary)


def _normalized(identifier: exp.Identifier, dialect: str) -> str:
    return Dialect.get_or_raise(dialect).normalize_identifier(identifier.copy()).name


class _Allowlists:
    """The table and column allowlists, checked against a query resolved scope by scope."""

    def __init__(self, dialect: str, tables: Iterable[str] | None,
                 columns: Iterable[str] | None,
                 schema: Mapping[str, Iterable[str]] | None) -> None:
        self.dialect = dialect
        self.tables = None if tables is None else {t.lower() for t in tables}
        self.columns = None if columns is None else {c.lower() for c in columns}
        self.default_schema = _DEFAULT_SCHEMAS.get(dialect)
        # Keys as the database matches them (case-blind on SQLite, exact for quoted Postgres).
        self.schema = {
            _normalized(exp.to_identifier(table, quoted=True), dialect):
                [_normalized(exp.to_identifier(c, quoted=True), dialect) for c in cols]
            for table, cols in (schema or {}).items()}

    def check(self, statement: exp.Expression) -> None:
        """Raise UnsafeSQLError at the first table or column the allowlists do not allow."""
        try:
            tree = self._resolved(statement)
            scopes = traverse_scope(tree)
            checked = {id(node) for scope in scopes for node in self._check_scope(scope)}
        except (SqlglotError, AssertionError) as exc:  # sqlglot asserts on shapes it can't type
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UnsafeSQLError(f"the query's tables and columns could not all be resolved "
                                 f"({first}): qualify each column with its table") from None
        # Whatever no scope accounted for is refused rather than trusted.
        kinds = (exp.Table,) if self.columns is None else (exp.Table, exp.Column, exp.TableColumn)
        for node in tree.find_all(*kinds):
            if id(node) not in checked:
                raise UnsafeSQLError(f"{node.sql(dialect=self.dialect)!r} could not be resolved "
                                     "to a table or column of the query: simplify the query")

    def _check_scope(self, scope: Scope) -> list[exp.Expression]:
        """Check the tables and columns of one scope (not its subqueries); return them."""
        seen: list[exp.Expression] = []
        for table in scope.tables:
            seen.append(table)
            # A CTE's name refers to the CTE only when unqualified, as in the database.
            if table.db or table.catalog or table.name not in scope.cte_sources:
                self._check_table(table)
        if self.columns is None:
            return seen
        for node in scope.walk():
            if isinstance(node, exp.Column) and not isinstance(node.this, exp.Star):
                seen.append(node)
                self._check_column(node, scope)
            elif isinstance(node, exp.Star) and isinstance(node.parent, exp.Column):
                seen.append(node)  # the star of t.*, checked with its column
            elif isinstance(node, (exp.Column, exp.Star, exp.TableColumn)):
                seen.append(node)
                self._check_star(node, scope)
        return seen

    def _resolved(self, statement: exp.Expression) -> exp.Expression:
        """A copy with every table and column qualified by the source it reads."""
        tree = normalize_identifiers(statement.copy(), dialect=self.dialect)
        if self.columns is None:  # tables only: scopes suffice, and columns need no schema
            return qualify(tree, dialect=self.dialect, qualify_columns=False,
                           validate_qualify_columns=False, quote_identifiers=False)
        tables = [t for t in tree.find_all(exp.Table) if not isinstance(t.this, exp.Func)]
        for table in tables:
            # main.artist is artist (and never a CTE: the database reads the table, and so does
            # sqlglot's scope); a table in another schema has columns the guard does not know.
            if (table.db and table.db != self.default_schema) or table.catalog:
                self._check_table(table)
                raise UnsafeSQLError(
                    f"the table {table.sql(dialect=self.dialect)!r} is outside the default "
                    "schema: its columns cannot be checked against the allowlist")
        # A table whose columns are unknown is assumed to have every column the query names:
        # then a name that two tables could hold is ambiguous, and a column that a subquery's own
        # table could hold is never taken for an outer one the database might not pick.
        names = {c.name for c in tree.find_all(exp.Column) if c.name} | {
            key.name for join in tree.find_all(exp.Join) for key in join.args.get("using") or ()}
        names = sorted(names) or ["_"]
        unknown = {t.name for t in tables} - set(self.schema)
        schema = {**self.schema, **dict.fromkeys(unknown, names)}
        # A NATURAL JOIN compares every column the two sides share: only a known schema says which.
        if unknown - {cte.alias_or_name for cte in tree.find_all(exp.CTE)} and any(
                join.method == "NATURAL" for join in tree.find_all(exp.Join)):
            raise UnsafeSQLError("NATURAL JOIN is not allowed when columns are restricted and "
                                 "the tables' columns are not known: join with ON or USING")
        mapping = MappingSchema({t: dict.fromkeys(cols, "unknown") for t, cols in schema.items()},
                                dialect=self.dialect, normalize=False)
        return qualify(tree, dialect=self.dialect, schema=mapping, expand_stars=False,
                       quote_identifiers=False)

    def _check_table(self, table: exp.Table) -> None:
        if isinstance(table.this, exp.Func) or self.tables is None:
            return  # a table-valued function: its call was checked as a function
        parts = [p.name.lower() for p in table.parts]
        name = ".".join(parts)
        if name in self.tables or (len(parts) == 2 and parts[0] == self.default_schema
                                   and parts[1] in self.tables):
            return
        raise UnsafeSQLError(f"the table {name!r} is not allowed "
                             f"(allowed: {', '.join(sorted(self.tables))})")

    def _source(self, reference: exp.Expression, name: str,
                scope: Scope) -> exp.Table | Scope | None:
        """The FROM item ``name`` refers to from ``scope``, as the database binds it: the
        innermost query that has it, out through enclosing queries."""
        visible = True
        while scope is not None:
            if name in scope.selected_sources:
                if not visible:
                    # sqlglot binds it here, but the database skips the FROM items beside a
                    # derived table or CTE and looks further out: the two would disagree.
                    raise UnsafeSQLError(
                        f"{reference.sql(dialect=self.dialect)!r} refers to {name!r}, a FROM item "
                        "this subquery cannot see (a derived table or CTE cannot refer to the "
                        "FROM items beside it): use LATERAL or rename it")
                return scope.selected_sources[name][1]
            visible = not (scope.is_derived_table or scope.is_cte)
            scope = scope.parent
        return None

    def _check_column(self, column: exp.Column, scope: Scope) -> None:
        if not column.table:
            if _is_output_reference(column, scope):
                return  # ORDER BY alias: a column the query already outputs, checked there
            raise UnsafeSQLError(
                f"the column {column.name!r} could not be resolved to one table's column: "
                "qualify it with its table (a table's name alone, or a name inside an ORDER BY "
                "expression, is read from the tables, not from the output's aliases)")
        source = self._source(column, column.table, scope)
        if source is None:
            raise UnsafeSQLError(f"the column {column.sql(dialect=self.dialect)!r} could not be "
                                 "resolved to a table in the query")
        if isinstance(source, exp.Table) and not isinstance(source.this, exp.Func):
            self._check_table_column(source, column.name)
        # A CTE, derived table or subquery: its own select list was checked in its own scope.

    def _check_table_column(self, table: exp.Table, name: str, reader: str = "it") -> None:
        qualified = f"{table.name.lower()}.{name.lower()}"
        if name.lower() in self.columns or qualified in self.columns:
            return
        raise UnsafeSQLError(f"the column {name!r} is not allowed: {reader} reads {qualified}, "
                             f"and the allowed columns are {', '.join(sorted(self.columns))}")

    def _check_star(self, star: exp.Expression, scope: Scope) -> None:
        """``*``, ``t.*`` and Postgres's whole-row ``t`` pass only when every column they cover
        is allowed."""
        if isinstance(star.parent, exp.Count) or isinstance(scope.expression.parent, exp.Exists):
            return  # count(*) and EXISTS (SELECT * ...) read no column
        if isinstance(star, (exp.Column, exp.TableColumn)):
            name = star.table if isinstance(star, exp.Column) else star.name
            source = self._source(star, name, scope)
            if source is None:
                raise UnsafeSQLError(f"{star.sql(dialect=self.dialect)!r} could not be resolved "
                                     "to a table in the query")
            sources = [source]
        elif star.parent is scope.expression:
            sources = [source for _, source in scope.selected_sources.values()]
        else:
            raise UnsafeSQLError("* is only allowed in count(*) and the select list when "
                                 "columns are restricted: name the columns")
        for source in sources:
            if not isinstance(source, exp.Table) or isinstance(source.this, exp.Func):
                continue
            known = self.schema.get(source.name)
            if known is None:
                raise UnsafeSQLError("* is not allowed when columns are restricted and the "
                                     f"columns of {source.name!r} are not known: name the "
                                     "columns")
            for name in known:
                self._check_table_column(source, name, star.sql(dialect=self.dialect))


def _is_output_reference(column: exp.Column, scope: Scope) -> bool:
    """A bare name in ORDER BY that names an output column (which the database prefers there)."""
    ordered = column.parent
    if not (isinstance(ordered, exp.Ordered) and isinstance(ordered.parent, exp.Order)
            and ordered.parent.parent is scope.expression):
        return False
    return column.name in scope.expression.named_selects
