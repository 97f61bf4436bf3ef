"""Reasoning benchmarks: Game of 24 (io, cot, sc, tot) and GSM8K (cot, zero-shot-cot, sc).

They run against any chat model (an OpenAI-compatible endpoint included), so the published
comparisons can be reproduced with a real model: ToT (b=5) against CoT on Game of 24 rows
900-999, Self-Consistency against CoT on GSM8K. Answers are checked, never trusted: Game of 24
expressions with exact arithmetic, GSM8K numbers against the gold answer after ``####``.
"""

from __future__ import annotations

import asyncio
import csv
import json
import re
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from langchain_core.language_models import BaseChatModel

from ponder.agents.planning.answers import canonical_answer
from ponder.agents.planning.base import ReasoningTrace, Solution
from ponder.agents.planning.cot import ChainOfThought, Example, ZeroShotCoT
from ponder.agents.planning.game24 import check_expression
from ponder.agents.planning.self_consistency import SelfConsistency
from ponder.agents.planning.tot import TreeOfThoughts
from ponder.config import ConfigurationError

GAME24_METHODS = ("io", "cot", "sc", "tot")
GSM8K_METHODS = ("cot", "zero-shot-cot", "sc")

GAME24_IO_PROMPT = """Use numbers and basic arithmetic operations (+ - * /) to obtain 24.
Input: 4 4 6 8
Answer: (4 + 8) * (6 - 4) = 24
Input: 2 9 10 12
Answer: 2 * 12 * (10 - 9) = 24
Input: 4 9 10 13
Answer: (13 - 9) * (10 - 4) = 24
Input: 1 4 8 8
Answer: (8 / 4 + 1) * 8 = 24
Input: 5 5 5 9
Answer: 5 + 5 + 5 + 9 = 24
Input: {puzzle}
"""

GAME24_COT_PROMPT = """Use numbers and basic arithmetic operations (+ - * /) to obtain 24. \
Each step, you are only allowed to choose two of the remaining numbers to obtain a new number.
Input: 4 4 6 8
Steps:
4 + 8 = 12 (left: 4 6 12)
6 - 4 = 2 (left: 2 12)
2 * 12 = 24 (left: 24)
Answer: (6 - 4) * (4 + 8) = 24
Input: 2 9 10 12
Steps:
12 * 2 = 24 (left: 9 10 24)
10 - 9 = 1 (left: 1 24)
24 * 1 = 24 (left: 24)
Answer: (12 * 2) * (10 - 9) = 24
Input: 4 9 10 13
Steps:
13 - 10 = 3 (left: 3 4 9)
9 - 3 = 6 (left: 4 6)
4 * 6 = 24 (left: 24)
Answer: 4 * (9 - (13 - 10)) = 24
Input: 1 4 8 8
Steps:
8 / 4 = 2 (left: 1 2 8)
1 + 2 = 3 (left: 3 8)
3 * 8 = 24 (left: 24)
Answer: (1 + 8 / 4) * 8 = 24
Input: 5 5 5 9
Steps:
5 + 5 = 10 (left: 5 9 10)
10 + 5 = 15 (left: 9 15)
15 + 9 = 24 (left: 24)
Answer: ((5 + 5) + 5) + 9 = 24
Input: {puzzle}
"""

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


async def _run_all(report: EvalReport, items: list, attempt, concurrency: int) -> EvalReport:
    """Attempt every item, ``concurrency`` at a time; one failure is one wrong answer."""
    gate = asyncio.Semaphore(concurrency)
    started = time.perf_counter()

    async def one(item) -> None:
        async with gate:
            try:
                solution, correct = await attempt(item)
            except Exception as exc:
                report.errors.append(f"{type(exc).__name__}: {exc}")
                solution, correct = Solution(None), False
            report.add(solution, correct)

    await asyncio.gather(*(one(item) for item in items))
    report.wall_s = time.perf_counter() - started
    return report


def _game24_answer(text: str) -> str | None:
    found = re.findall(r"Answer:\s*(.+)", text)  # the first: later ones are invented puzzles
    return found[0].strip() if found else None


async def evaluate_game24(model: BaseChatModel, method: str, puzzles: list[str], *, k: int = 5,
                          breadth: int = 5, n_evaluate: int = 3, concurrency: int = 8
                          ) -> EvalReport:
    """Run Game of 24 ``puzzles`` ("4 5 6 10") with ``method``: io, cot, sc or tot.

    ``sc`` votes over ``k`` samples at temperature 0.7; ``tot`` is TreeOfThoughts with ``breadth``
    and ``n_evaluate``. An answer counts only if its expression uses the four numbers and makes 24
    exactly. ``concurrency`` puzzles run at a time. Raises ConfigurationError for an unknown method.
    """
    if method not in GAME24_METHODS:
        raise ConfigurationError(f"unknown method {method!r} for game24: use "
                                 + ", ".join(GAME24_METHODS))
    tot = TreeOfThoughts(breadth=breadth, n_evaluate=n_evaluate)

    async def attempt(puzzle: str) -> tuple[Solution, bool]:
        numbers = [int(n) for n in puzzle.split()]
        if method == "tot":
            solution = await tot.solve(puzzle, model)
        else:
            trace = ReasoningTrace(model)
            prompt = (GAME24_IO_PROMPT if method == "io" else GAME24_COT_PROMPT).format(
                puzzle=puzzle)
            samples = k if method == "sc" else 1
            options = {"temperature": 0.7} if method == "sc" else {}
            replies = await asyncio.gather(*(trace.ask(method, prompt, **options)
                                             for _ in range(samples)))
            answers = [a for r in replies if (a := _game24_answer(r.text))]
            # Vote on the expression without spaces; the first spelling of the winner answers.
            spelling = {re.sub(r"\s+", "", a): a for a in reversed(answers)}
            votes = Counter(re.sub(r"\s+", "", a) for a in answers)
            solution = trace.solution(spelling[votes.most_common(1)[0][0]] if votes else None)
        return solution, bool(solution.answer) and check_expression(solution.answer, numbers)

    return await _run_all(EvalReport("game24", method), puzzles, attempt, concurrency)


async def evaluate_gsm8k(model: BaseChatModel, method: str, items: list[tuple[str, str]], *,
                         k: int = 5, concurrency: int = 8) -> EvalReport:
    """Run GSM8K ``items`` ((question, gold answer) pairs) with ``method``: cot, zero-shot-cot or
    sc.

    ``cot`` is few-shot with the built-in examples; ``sc`` votes over ``k`` of its paths. An answer
    counts when its normalised form equals the gold one. ``concurrency`` items run at a time. Raises
    ConfigurationError for an unknown method.
    """
    if method not in GSM8K_METHODS:
        raise ConfigurationError(f"unknown method {method!r} for gsm8k: use "
                                 + ", ".join(GSM8K_METHODS))
    few_shot = ChainOfThought(GSM8K_EXAMPLES)
    planner = {"cot": few_shot, "zero-shot-cot": ZeroShotCoT(),
               "sc": SelfConsistency(k, base=few_shot)}[method]

    async def attempt(item: tuple[str, str]) -> tuple[Solution, bool]:
        question, gold = item
        solution = await planner.solve(question, model)
        return solution, solution.answer is not None and solution.answer == gold

    return await _run_all(EvalReport("gsm8k", method), items, attempt, concurrency)
