"""Execution accuracy of text-to-SQL on your own question/gold-SQL pairs.

A prediction is right when it returns the gold query's rows: as a multiset (duplicates count,
order does not) unless the gold query orders its rows, then as a sequence.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from langchain_core.language_models import BaseChatModel

from ponder.config import ConfigurationError
from ponder.models import track_usage
from ponder.tools.sql.database import Database, QueryResult
from ponder.tools.sql.guard import check
from ponder.tools.sql.text_to_sql import TextToSQL


def load_questions(path: str | Path) -> list[dict[str, str]]:
    """JSONL lines with ``question`` and ``sql`` (the gold query)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigurationError(f"the questions file is not at {path}: pass --questions PATH")
    items = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            items.append({"question": str(record["question"]), "sql": str(record["sql"])})
        except (json.JSONDecodeError, KeyError, TypeError):
            raise ConfigurationError(f"{path}, line {number}: expected a JSON object with "
                                     "'question' and 'sql'") from None
    return items


def same_rows(gold: QueryResult, predicted: QueryResult, ordered: bool) -> bool:
    """Whether the two results have the same rows (cells compared by ``repr``): as sequences when
    ``ordered``, else as multisets."""
    def rows(result):
        return [tuple(map(repr, row)) for row in result.rows]

    if ordered:
        return rows(gold) == rows(predicted)
    return sorted(rows(gold)) == sorted(rows(predicted))


def orders_rows(sql: str, dialect: str) -> bool:
    """Whether ``sql`` has a top-level ORDER BY (parsed with sqlglot in ``dialect``).

    Raises UnsafeSQLError for a query the guard (``check``) refuses.
    """
    import sqlglot

    return sqlglot.parse_one(check(sql, dialect), read=dialect).args.get("order") is not None


async def evaluate_sql(url: str, items: list[dict[str, str]], model: BaseChatModel, *,
                       candidates: int = 5, concurrency: int = 4) -> dict[str, Any]:
    """Execution accuracy of TextToSQL on ``items`` (``question`` and gold ``sql``) against the
    database at ``url``.

    Each item's gold query runs (up to 10,000 rows) and is compared with the predicted query's rows;
    ``concurrency`` items at a time, ``candidates`` SQL samples each. Returns {"task", "n",
    "correct", "execution_accuracy" (0 to 1), "calls", "total_tokens", "wall_s", "errors" (at most
    20 lines)}; an item that raises counts as wrong.
    """
    db = Database(url, row_limit=10_000)
    pipeline = TextToSQL(db, model, candidates=candidates)
    gate = asyncio.Semaphore(concurrency)
    correct, errors = 0, []

    async def one(item: dict[str, str]) -> None:
        nonlocal correct
        async with gate:
            try:
                gold = await db.run(item["sql"])
                answer = await pipeline.answer(item["question"])
                if answer.result is not None and same_rows(
                        gold, answer.result, orders_rows(item["sql"], db.dialect)):
                    correct += 1
                elif answer.error:
                    errors.append(f"{item['question']}: {answer.error}")
            except Exception as exc:
                errors.append(f"{item['question']}: {type(exc).__name__}: {exc}")

    started = time.perf_counter()
    with track_usage() as usage:
        await asyncio.gather(*(one(item) for item in items))
    await db.aclose()
    n = len(items)
    return {"task": "sql", "n": n, "correct": correct,
            "execution_accuracy": round(correct / n, 4) if n else 0.0,
            "calls": usage.calls, "total_tokens": usage.total_tokens,
            "wall_s": round(time.perf_counter() - started, 3), "errors": errors[:20]}
