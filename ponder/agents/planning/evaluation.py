"""Reasoning benchmarks: Game of 24 (io, cot, sc, tot) and GSM8K (io, cot, zero-shot-cot, sc).

``evaluate(planner, items, metric)`` runs any planner object (its ``solve``) over (question, gold)
items and counts what ``metric`` accepts; each benchmark makes its methods' planners from the
names of ``planning.registry`` (``sc`` is ``SelfConsistency``, ``tot`` ``TreeOfThoughts``, ...),
with the task's examples. They run against any chat model (an OpenAI-compatible endpoint
included), so the published comparisons can be reproduced with a real model: ToT (b=5) against
CoT on Game of 24 rows 900-999, Self-Consistency against CoT on GSM8K. Answers are checked, never
trusted: Game of 24 expressions with exact arithmetic, GSM8K numbers against the gold answer
after ``####``.
"""

from __future__ import annotations

import asyncio
import csv
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from langchain_core.language_models import BaseChatModel

from ponder.agents.planning import game24
from ponder.agents.planning.answers import canonical_answer
from ponder.agents.planning.base import Solution, Solver
from ponder.agents.planning.cot import Example
from ponder.agents.planning.registry import make_planner, planner_name
from ponder.config import ConfigurationError

Gold = TypeVar("Gold")

# The methods of each benchmark, by the planners' own names (their aliases work too).
GAME24_METHODS = ("input-output", "chain-of-thought", "self-consistency", "tree-of-thoughts")
GSM8K_METHODS = ("input-output", "chain-of-thought", "zero-shot-cot", "self-consistency")

# The eight worked examples of the Chain-of-Thought paper (Wei et al. 2022) for GSM8K.
GSM8K_EXAMPLES = [
    Example("There are 15 trees in the grove. Grove workers will plant trees in the grove today. "
            "After they are done, there will be 21 trees. How many trees did the grove workers "
            "plant today?", "There are 15 trees originally. Then there were 21 trees after some "
            "more were planted. So there must have been 21 - 15 = 6.", "6"),
    Example("If there are 3 cars in the parking lot and 2 more cars arrive, how many cars are in "
            "the parking lot?", "There are originally 3 cars. 2 more cars arrive. 3 + 2 = 5.",
            "5"),
    Example("Leah had 32 chocolates and her sister had 42. If they ate 35, how many pieces do "
            "they have left in total?", "Originally, Leah had 32 chocolates. Her sister had 42. "
            "So in total they had 32 + 42 = 74. After eating 35, they had 74 - 35 = 39.", "39"),
    Example("Jason had 20 lollipops. He gave Denny some lollipops. Now Jason has 12 lollipops. "
            "How many lollipops did Jason give to Denny?", "Jason started with 20 lollipops. "
            "Then he had 12 after giving some to Denny. So he gave Denny 20 - 12 = 8.", "8"),
    Example("Shawn has five toys. For Christmas, he got two toys each from his mom and dad. How "
            "many toys does he have now?", "Shawn started with 5 toys. If he got 2 toys each "
            "from his mom and dad, then that is 4 more toys. 5 + 4 = 9.", "9"),
    Example("There were nine computers in the server room. Five more computers were installed "
            "each day, from monday to thursday. How many computers are now in the server room?",
            "There were originally 9 computers. For each of 4 days, 5 more computers were added. "
            "So 5 * 4 = 20 computers were added. 9 + 20 is 29.", "29"),
    Example("Michael had 58 golf balls. On tuesday, he lost 23 golf balls. On wednesday, he lost "
            "2 more. How many golf balls did he have at the end of wednesday?", "Michael "
            "started with 58 golf balls. After losing 23 on tuesday, he had 58 - 23 = 35. After "
            "losing 2 more, he had 35 - 2 = 33 golf balls.", "33"),
    Example("Olivia has $23. She bought five bagels for $3 each. How much money does she have "
            "left?", "Olivia had 23 dollars. 5 bagels for 3 dollars each will be 5 x 3 = 15 "
            "dollars. So she has 23 - 15 dollars left. 23 - 15 is 8.", "8"),
]


@dataclass
class EvalReport:
    """One benchmark run: items, correct answers, model calls, tokens and wall seconds.

    ``errors`` holds one "Type: message" line per item whose attempt raised (counted as wrong).
    """
    task: str
    method: str
    n: int = 0
    correct: int = 0
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    wall_s: float = 0.0
    errors: list[str] = field(default_factory=list)

    @property
    def accuracy(self) -> float:
        """Correct answers over items, 0.0 to 1.0 (0.0 when there were none)."""
        return self.correct / self.n if self.n else 0.0

    def add(self, solution: Solution, correct: bool) -> None:
        """Count one item's solution (its calls and tokens) and whether its answer was correct."""
        self.n += 1
        self.correct += bool(correct)
        self.calls += solution.calls
        self.input_tokens += solution.input_tokens
        self.output_tokens += solution.output_tokens

    def as_dict(self) -> dict:
        """The report as JSON-ready data, with accuracy, total tokens and at most 20 error lines."""
        data = asdict(self)
        data["errors"] = self.errors[:20]
        return {**data, "accuracy": round(self.accuracy, 4),
                "total_tokens": self.input_tokens + self.output_tokens,
                "wall_s": round(self.wall_s, 3)}


# -- data ---------------------------------------------------------------------------------------


def _missing(path: Path, what: str) -> ConfigurationError:
    return ConfigurationError(f"the {what} data set is not at {path}: pass --data PATH")


def load_game24(path: str | Path, start: int = 0, limit: int | None = None) -> list[str]:
    """Puzzles ("4 5 6 10") from a CSV with a ``Puzzles`` column, rows ``start`` onwards."""
    path = Path(path)
    if not path.is_file():
        raise _missing(path, "Game of 24")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if "Puzzles" not in (reader.fieldnames or []):
            raise ConfigurationError(f"{path} has no 'Puzzles' column: it is not the Game of 24 "
                                     "CSV (columns found: " + ", ".join(reader.fieldnames or [])
                                     + ")")
        puzzles = [row["Puzzles"] for row in reader]
    return puzzles[start: None if limit is None else start + limit]


def load_gsm8k(path: str | Path, start: int = 0, limit: int | None = None
               ) -> list[tuple[str, str]]:
    """(question, gold answer) pairs from GSM8K JSONL: the answer is the number after ``####``."""
    path = Path(path)
    if not path.is_file():
        raise _missing(path, "GSM8K")
    items = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                gold = record["answer"].rsplit("####", 1)[1].strip()
                items.append((record["question"], canonical_answer(gold)))
            except (json.JSONDecodeError, KeyError, IndexError, AttributeError):
                raise ConfigurationError(f"{path}, line {number}: not a GSM8K record "
                                         "(question, answer ending in '#### N')") from None
    return items[start: None if limit is None else start + limit]


# -- runs ---------------------------------------------------------------------------------------


async def evaluate(planner: Solver, items: Sequence[tuple[str, Gold]],
                   metric: Callable[[str | None, Gold], bool], *,
                   model: BaseChatModel | str | None = None, concurrency: int = 8,
                   task: str = "", method: str | None = None) -> EvalReport:
    """Solve every (question, gold) item with ``planner`` and count the answers ``metric(answer,
    gold)`` accepts.

    ``planner`` is any planner usable alone (``await planner.solve(question, model)``).
    ``concurrency`` items run at a time. An item whose solve or check raises is a wrong answer,
    its "Type: message" line in the report's ``errors``. ``task`` and ``method`` (default: the
    planner's class name) label the report.
    """
    report = EvalReport(task, method or type(planner).__name__)
    gate = asyncio.Semaphore(concurrency)
    started = time.perf_counter()

    async def one(question: str, gold: Gold) -> None:
        async with gate:
            try:
                solution = await planner.solve(question, model)
                correct = metric(solution.answer, gold)
            except Exception as exc:
                report.errors.append(f"{type(exc).__name__}: {exc}")
                solution, correct = Solution(None), False
            report.add(solution, correct)

    await asyncio.gather(*(one(question, gold) for question, gold in items))
    report.wall_s = time.perf_counter() - started
    return report


def game24_planner(method: str, *, k: int = 5, breadth: int = 5, n_evaluate: int = 3) -> Solver:
    """The planner of a Game of 24 method: io, cot, sc or tot (or their own names).

    ``io`` and ``cot`` are the Tree-of-Thoughts paper's five-example prompts (a
    ``ChainOfThought`` in ``game24.IO_FORMAT`` and ``game24.COT_FORMAT``); ``sc`` is
    ``SelfConsistency`` over ``k`` samples of ``cot``, all of them drawn, as in the paper's CoT-SC
    baseline; ``tot`` is ``TreeOfThoughts`` with ``breadth`` and ``n_evaluate``. Answers are
    expressions, voted on without their spaces. Raises ConfigurationError for another method.
    """
    name = planner_name(method, GAME24_METHODS, what="method")
    cot = {"examples": game24.COT_EXAMPLES, "prompt_format": game24.COT_FORMAT,
           "answer": "expression"}
    options: dict[str, Any] = {
        "input-output": {"examples": game24.IO_EXAMPLES, "prompt_format": game24.IO_FORMAT,
                         "answer": "expression"},
        "chain-of-thought": cot,
        "self-consistency": {"k": k, "base": make_planner("cot", **cot), "early_stop": False},
        "tree-of-thoughts": {"breadth": breadth, "n_evaluate": n_evaluate},
    }[name]
    return make_planner(name, **options)


def _makes_24(answer: str | None, puzzle: str) -> bool:
    return answer is not None and game24.check_expression(
        answer, [int(n) for n in puzzle.split()])


async def evaluate_game24(model: BaseChatModel, method: str, puzzles: list[str], *, k: int = 5,
                          breadth: int = 5, n_evaluate: int = 3, concurrency: int = 8
                          ) -> EvalReport:
    """Run Game of 24 ``puzzles`` ("4 5 6 10") with ``method``: io, cot, sc or tot (see
    ``game24_planner``).

    An answer counts only if its expression uses the four numbers and makes 24 exactly.
    ``concurrency`` puzzles run at a time. Raises ConfigurationError for an unknown method.
    """
    planner = game24_planner(method, k=k, breadth=breadth, n_evaluate=n_evaluate)
    return await evaluate(planner, [(p, p) for p in puzzles], _makes_24, model=model,
                          concurrency=concurrency, task="game24", method=method)


def gsm8k_planner(method: str, *, k: int = 5) -> Solver:
    """The planner of a GSM8K method: io, cot, zero-shot-cot or sc (or their own names).

    ``cot`` is few-shot with the CoT paper's eight examples (``GSM8K_EXAMPLES``), ``io`` the same
    examples with their answers alone, and ``sc`` is ``SelfConsistency`` over ``k`` paths of
    ``cot``. Raises ConfigurationError for another method.
    """
    name = planner_name(method, GSM8K_METHODS, what="method")
    few_shot = {"examples": GSM8K_EXAMPLES}
    options: dict[str, Any] = {
        "input-output": few_shot, "chain-of-thought": few_shot, "zero-shot-cot": {},
        "self-consistency": {"k": k, "base": make_planner("cot", **few_shot)},
    }[name]
    return make_planner(name, **options)


async def evaluate_gsm8k(model: BaseChatModel, method: str, items: list[tuple[str, str]], *,
                         k: int = 5, concurrency: int = 8) -> EvalReport:
    """Run GSM8K ``items`` ((question, gold answer) pairs) with ``method``: io, cot, zero-shot-cot
    or sc (see ``gsm8k_planner``).

    An answer counts when its canonical form equals the gold one. ``concurrency`` items run at a
    time. Raises ConfigurationError for an unknown method.
    """
    return await evaluate(gsm8k_planner(method, k=k), items, lambda answer, gold: answer == gold,
                          model=model, concurrency=concurrency, task="gsm8k", method=method)
