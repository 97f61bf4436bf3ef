"""Text-to-SQL in the style of C3 (Dong et al.): Clear prompting, Calibration hints, Consistency.

1. Schema linking: rank the tables by similarity to the question (embeddings when given, shared
   words otherwise) and keep the top ones; then ask the model which of them the question needs,
   several times, and keep the most common answer.
2. Clear prompting: one layout — instruction, the linked schema as ``# table ( col, ... )`` lines
   with sample values and foreign keys, the question.
3. Calibration hints as prior dialogue: what to watch for (no COUNT(*) when only ordering needs it,
   precise joins, only the columns asked for).
4. Self-consistency over execution results: sample several SQLs, run each through the guard and
   the read-only executor (a failed one is repaired with the database's error, up to a bound),
   group them by identical results, and return the SQL of the largest group.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from langchain_core.embeddings import Embeddings
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.tools import BaseTool, StructuredTool

from ponder.models import as_chat_model
from ponder.similarity import cosine
from ponder.tools.sql.database import Database, QueryError, QueryResult, Table
from ponder.tools.sql.guard import UnsafeSQLError

CALIBRATION = [
    HumanMessage("Before writing SQL: what do you pay attention to?"),
    AIMessage(
        "1. I select only the columns the question asks for, in the order it asks.\n"
        "2. I do not select COUNT(*) or other aggregates when the question only needs them to "
        "order or filter: I use them in ORDER BY or HAVING instead.\n"
        "3. I join only the tables I need, on their foreign keys, and I prefer a precise JOIN "
        "to a subquery or a cross join.\n"
        "4. I use DISTINCT only when the question asks for unique values.\n"
        "5. I match values as they are stored: the sample values show their spelling and case.\n"
        "6. I write exactly one SELECT statement and nothing else."),
]

LINK_PROMPT = """Which tables does this question need? Answer with the table names only, \
separated by commas.

{schema}

Question: {question}
Tables:"""

SQL_PROMPT = """### Write one {dialect} SQL query that answers the question, with no \
explanation. Use only these tables and columns.
### Schema:
{schema}
### Question: {question}
### SQL:"""

REPAIR_PROMPT = """The query failed.
Query: {sql}
Error: {error}
Write a corrected query, SQL only."""


@dataclass
class TextToSQLResult:
    """The outcome of one question: the winning SQL and its result (None when no candidate ran),
    the linked tables, every candidate's SQL, error, repairs and votes, and the error."""
    question: str
    sql: str | None
    result: QueryResult | None
    tables: list[str]
    candidates: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None

    def for_model(self) -> str:
        """The outcome as text for a model: the SQL and its result as a table, or why there is
        none."""
        if self.sql is None:
            return f"Could not answer from the database: {self.error}"
        return f"SQL: {self.sql}\nResult:\n{self.result.as_table()}"


def _words(text: str) -> set[str]:
    parts = re.findall(r"[a-z]+", re.sub(r"([a-z])([A-Z])", r"\1 \2", text).lower())
    return {p.rstrip("s") for p in parts if len(p) > 2}


def _describe(tables: list[Table], with_samples: bool) -> str:
    lines = [t.describe() for t in tables]
    if with_samples:
        for t in tables:
            for column, values in t.samples.items():
                if values:
                    lines.append(f"# sample values of {t.name}.{column}: "
                                 + ", ".join(repr(v) for v in values))
    names = {t.name.lower() for t in tables}
    keys = [f"# {t.name}.{c} = {ref}.{ref_c}" for t in tables for c, ref, ref_c in t.foreign_keys
            if ref.lower() in names]
    if keys:
        lines.append("# foreign keys:")
        lines += keys
    return "\n".join(lines)


def extract_sql(text: str) -> str:
    """The SQL in a reply: a fenced block if there is one, else from the first SELECT/WITH."""
    fenced = re.findall(r"```(?:sql)?\s*(.+?)```", text, re.S | re.I)
    if fenced:
        return fenced[0].strip()
    found = re.search(r"\b(SELECT|WITH)\b.*", text, re.S | re.I)
    return (found[0] if found else text).strip().rstrip(";").strip()


class TextToSQL:
    """``await TextToSQL(db, model).answer("Which artist has the most albums?")``."""

    def __init__(self, db: Database, model: BaseChatModel, *,
                 embeddings: Embeddings | None = None, candidates: int = 5,
                 link_samples: int = 3, max_tables: int = 12, max_repairs: int = 2,
                 temperature: float = 0.7, system: SystemMessage | None = None) -> None:
        if candidates < 1 or link_samples < 1:
            raise ValueError("candidates and link_samples must be at least 1")
        self.db, self.model, self.embeddings = db, model, embeddings
        self.candidates, self.link_samples = candidates, link_samples
        self.max_tables, self.max_repairs = max_tables, max_repairs
        self.temperature, self.system = temperature, system
        self._table_vectors: dict[str, list[float]] | None = None

    def _messages(self, *body: BaseMessage) -> list[BaseMessage]:
        return [*([self.system] if self.system else []), *body]

    # -- 1. schema linking ----------------------------------------------------------------------

    async def _ranked(self, question: str, tables: dict[str, Table]) -> list[Table]:
        if len(tables) <= self.max_tables:
            return list(tables.values())
        if self.embeddings is not None:
            if self._table_vectors is None:
                texts = [t.describe() for t in tables.values()]
                vectors = await self.embeddings.aembed_documents(texts)
                self._table_vectors = dict(zip(tables, vectors, strict=True))
            query = await self.embeddings.aembed_query(question)
            ranked = sorted(tables, key=lambda n: -cosine(query, self._table_vectors[n]))
        else:
            wanted = _words(question)
            ranked = sorted(tables, key=lambda n: -len(wanted & _words(tables[n].describe())))
        return [tables[n] for n in ranked[: self.max_tables]]

    async def link(self, question: str) -> list[Table]:
        """The tables the question needs: ranked, then recalled by the model, majority kept."""
        tables = await self.db.schema()
        if not tables:
            raise QueryError("the database has no tables the model may read")
        candidates = await self._ranked(question, tables)
        if len(candidates) <= 2:
            return candidates
        prompt = LINK_PROMPT.format(schema=_describe(candidates, False), question=question)
        replies = await asyncio.gather(*(
            self.model.ainvoke(self._messages(HumanMessage(prompt)),
                               temperature=self.temperature)
            for _ in range(self.link_samples)))
        by_name = {t.name.lower(): t for t in candidates}
        picks = Counter()
        for reply in replies:
            chosen = frozenset(w.lower() for w in re.findall(r"[\w.]+", reply.text)
                               if w.lower() in by_name)
            if chosen:
                picks[chosen] += 1
        if not picks:
            return candidates
        chosen = picks.most_common(1)[0][0]
        return [t for t in candidates if t.name.lower() in chosen]

    # -- 2-4. generate, execute, vote -----------------------------------------------------------

    async def _candidate(self, prompt: list[BaseMessage]) -> dict[str, Any]:
        """One sampled SQL, executed; repaired with the database's error up to a bound."""
        messages = list(prompt)
        attempt: dict[str, Any] = {"sql": None, "error": None, "repairs": 0}
        for repair in range(self.max_repairs + 1):
            reply = await self.model.ainvoke(messages, temperature=self.temperature)
            sql = extract_sql(reply.text)
            attempt.update(sql=sql, repairs=repair)
            try:
                attempt["result"] = await self.db.run(sql)
                attempt["error"] = None
                return attempt
            except (QueryError, UnsafeSQLError, TimeoutError) as exc:
                attempt["error"] = f"{type(exc).__name__}: {exc}"
                messages += [reply, HumanMessage(REPAIR_PROMPT.format(sql=sql, error=exc))]
        return attempt

    async def answer(self, question: str) -> TextToSQLResult:
        """Answer ``question`` with SQL: link the tables, sample ``candidates`` queries, run and
        repair them, and return the one whose result most candidates share.

        C3: Dong et al. 2023, "C3: Zero-shot Text-to-SQL with ChatGPT". Raises ValueError for an
        empty question and QueryError when the database has no readable tables; when no candidate
        runs, the result has no SQL and says why.
        """
        if not question.strip():
            raise ValueError("the question is empty")
        tables = await self.link(question)
        await self.db.add_samples(tables)
        prompt = self._messages(*CALIBRATION, HumanMessage(SQL_PROMPT.format(
            dialect=self.db.dialect, schema=_describe(tables, True), question=question)))
        attempts = await asyncio.gather(*(self._candidate(prompt)
                                          for _ in range(self.candidates)))
        ran = [a for a in attempts if a.get("result") is not None]
        names = [t.name for t in tables]
        summary = [{"sql": a["sql"], "error": a["error"], "repairs": a["repairs"]}
                   for a in attempts]
        if not ran:
            last = next((a["error"] for a in reversed(attempts) if a["error"]), "no SQL")
            return TextToSQLResult(question, None, None, names, summary,
                                   f"no candidate query ran ({last})")
        groups = Counter(_result_key(a["result"]) for a in ran)
        best = groups.most_common(1)[0][0]
        winner = next(a for a in ran if _result_key(a["result"]) == best)
        for item in summary:
            item["votes"] = next((groups[_result_key(a["result"])] for a in ran
                                  if a["sql"] == item["sql"]), 0)
        return TextToSQLResult(question, winner["result"].sql, winner["result"], names, summary)


def _result_key(result: QueryResult) -> tuple:
    """Identical result sets, whatever the row order: the sorted multiset of rows."""
    return tuple(sorted(tuple(map(repr, row)) for row in result.rows))


async def text_to_sql(question: str, url: str, *, model: BaseChatModel | str | None = None,
                      **options: Any) -> TextToSQLResult:
    """Answer ``question`` from the database at ``url`` (opened read-only)."""
    db = Database(url)
    try:
        return await TextToSQL(db, as_chat_model(model), **options).answer(question)
    finally:
        await db.aclose()


def sql_tool(url: str, *, model: BaseChatModel | str | None = None, **options: Any
             ) -> BaseTool:
    """A tool for agents. With ``model``: ``ask_database(question)`` runs the C3 pipeline.
    Without: ``query_database(sql)`` runs the agent's own SQL through the guard, read-only; the
    schema is read when the tool is made and goes into its description."""
    db = Database(url)
    if model is not None:
        pipeline = TextToSQL(db, as_chat_model(model), **options)

        async def ask_database(question: str) -> str:
            """Answer a question from the database: it writes, checks and runs the SQL."""
            return (await pipeline.answer(question)).for_model()

        return StructuredTool.from_function(coroutine=ask_database)

    async def query_database(sql: str) -> str:
        try:
            return (await db.run(sql)).as_table()
        except (QueryError, UnsafeSQLError, TimeoutError) as exc:
            return f"The query was not run: {exc}. Fix it and try again."

    # The model needs the schema to write SQL: it is read once, now, and put in the description.
    schema = _describe(list(db._introspect().values()), False)
    return StructuredTool.from_function(
        coroutine=query_database, name="query_database",
        description=f"Run one read-only {db.dialect} SELECT and get the rows as a table. "
                    f"Tables:\n{schema}")
