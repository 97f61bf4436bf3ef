"""The Game of 24 as a Tree-of-Thoughts task: combine four numbers with + - * / into 24.

A state is the steps so far, one per line, e.g. ``4 + 8 = 12 (left: 4 6 12)``. Three steps
leave one number; a fourth writes the answer, ``Answer: (6 - 4) * (4 + 8) = 24``. The model's
arithmetic is never trusted: every proposed step is checked with exact fractions against the
numbers actually left, and an answer counts only if it uses exactly the four numbers and equals 24.

The one-prompt baselines of the Tree-of-Thoughts paper, input-output and Chain-of-Thought
prompting with five worked examples, are ``ChainOfThought`` planners in the formats and with the
examples below (``IO_FORMAT``, ``IO_EXAMPLES``, ``COT_FORMAT``, ``COT_EXAMPLES``).
"""

from __future__ import annotations

import ast
import re
from collections import Counter
from fractions import Fraction
from itertools import combinations

from ponder.agents.planning.cot import Example, PromptFormat

PROPOSE_PROMPT = """Use basic arithmetic (+ - * /) on two of the input numbers to propose possible next steps. Each step combines two numbers into one.
Input: 2 8 8 14
Possible next steps:
2 + 8 = 10 (left: 8 10 14)
8 / 2 = 4 (left: 4 8 14)
14 + 2 = 16 (left: 8 8 16)
2 * 8 = 16 (left: 8 14 16)
8 - 2 = 6 (left: 6 8 14)
14 - 8 = 6 (left: 2 6 8)
14 / 2 = 7 (left: 7 8 8)
14 - 2 = 12 (left: 8 8 12)
Input: {left}
Possible next steps:
"""  # noqa: E501

VALUE_PROMPT = """Evaluate if the given numbers can reach 24 (sure/likely/impossible).
10 14
10 + 14 = 24
sure
11 12
11 + 12 = 23
12 - 11 = 1
11 * 12 = 132
11 / 12 = 0.91
impossible
4 4 10
4 + 4 + 10 = 8 + 10 = 18
4 * 10 - 4 = 40 - 4 = 36
(10 - 4) * 4 = 6 * 4 = 24
sure
10 10 11
10 + 10 + 11 = 31
(11 - 10) * 10 = 10
10 10 10 are all too big
impossible
{left}
"""

ANSWER_PROMPT = """Use numbers and basic arithmetic operations (+ - * /) to obtain 24. Each step, you are only allowed to choose two of the remaining numbers to obtain a new number. Then write the whole expression.
Input: 4 4 6 8
Steps:
4 + 8 = 12 (left: 4 6 12)
6 - 4 = 2 (left: 2 12)
2 * 12 = 24 (left: 24)
Answer: (6 - 4) * (4 + 8) = 24
Input: {numbers}
Steps:
{steps}"""  # noqa: E501

VOTE_PROMPT = """Given four numbers and several partial solutions of the Game of 24 (reach 24 with + - * /), decide which choice is most promising. Analyze each choice in detail, then conclude in the last line "The best choice is {{s}}", where s is the integer id of the choice.
Input: {numbers}
{choices}"""  # noqa: E501

SAMPLE_PROMPT = """Use basic arithmetic (+ - * /) on two of the input numbers to propose ONE \
next step that keeps 24 reachable. Write it as "a op b = c (left: ...)".
Input: {left}
Next step:
"""

_INSTRUCTION = "Use numbers and basic arithmetic operations (+ - * /) to obtain 24."

# The ToT paper's standard (input-output) prompt: the puzzle, then the answer.
IO_FORMAT = PromptFormat(instruction=_INSTRUCTION, example="Input: {question}\nAnswer: {answer}",
                         question="Input: {question}\n", separator="\n", trigger="Answer:")
IO_EXAMPLES = [Example("4 4 6 8", "", "(4 + 8) * (6 - 4) = 24"),
               Example("2 9 10 12", "", "2 * 12 * (10 - 9) = 24"),
               Example("4 9 10 13", "", "(13 - 9) * (10 - 4) = 24"),
               Example("1 4 8 8", "", "(8 / 4 + 1) * 8 = 24"),
               Example("5 5 5 9", "", "5 + 5 + 5 + 9 = 24")]

# The ToT paper's CoT prompt: three steps, each combining two numbers, then the expression.
COT_FORMAT = PromptFormat(
    instruction=f"{_INSTRUCTION} Each step, you are only allowed to choose two of the remaining "
                "numbers to obtain a new number.",
    example="Input: {question}\nSteps:\n{rationale}\nAnswer: {answer}",
    question="Input: {question}\n", separator="\n", trigger="Answer:")
COT_EXAMPLES = [
    Example("4 4 6 8", "4 + 8 = 12 (left: 4 6 12)\n6 - 4 = 2 (left: 2 12)\n2 * 12 = 24 (left: 24)",
            "(6 - 4) * (4 + 8) = 24"),
    Example("2 9 10 12", "12 * 2 = 24 (left: 9 10 24)\n10 - 9 = 1 (left: 1 24)\n"
            "24 * 1 = 24 (left: 24)", "(12 * 2) * (10 - 9) = 24"),
    Example("4 9 10 13", "13 - 10 = 3 (left: 3 4 9)\n9 - 3 = 6 (left: 4 6)\n4 * 6 = 24 (left: 24)",
            "4 * (9 - (13 - 10)) = 24"),
    Example("1 4 8 8", "8 / 4 = 2 (left: 1 2 8)\n1 + 2 = 3 (left: 3 8)\n3 * 8 = 24 (left: 24)",
            "(1 + 8 / 4) * 8 = 24"),
    Example("5 5 5 9", "5 + 5 = 10 (left: 5 9 10)\n10 + 5 = 15 (left: 9 15)\n"
            "15 + 9 = 24 (left: 24)", "((5 + 5) + 5) + 9 = 24"),
]

_STEP = re.compile(
    r"^\s*(-?[\d.]+(?:/\d+)?)\s*([-+*/×÷x])\s*(-?[\d.]+(?:/\d+)?)\s*=\s*(-?[\d.]+(?:/\d+)?)"
    r"\s*\(left:\s*([^)]*)\)"
)
_VALUES = {"sure": 20.0, "likely": 1.0, "impossible": 0.001}
_OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b,
        "/": lambda a, b: a / b}  # a zero divisor raises ZeroDivisionError: the step is invalid


def _number(text: str) -> Fraction:
    return Fraction(text)


def show(value: Fraction) -> str:
    """A fraction as the puzzle writes it: "12" for whole numbers, "3/4" otherwise."""
    return str(value.numerator) if value.denominator == 1 else str(value)


class Game24:
    """The task: parsing, prompts, step checking and the final exact-arithmetic check."""

    steps = 4

    def parse_input(self, question: str) -> list[Fraction]:
        """The four numbers of a puzzle such as "4 5 6 10", as fractions.

        Raises ValueError unless the text holds exactly four numbers.
        """
        numbers = re.findall(r"-?\d+(?:\.\d+)?", question)
        if len(numbers) != 4:
            raise ValueError(f"a Game of 24 puzzle is four numbers, e.g. '4 5 6 10'; got "
                             f"{question!r}")
        return [Fraction(n) for n in numbers]

    def left(self, x: list[Fraction], y: str) -> list[Fraction]:
        """The numbers left after the steps ``y``: from the last "(left: ...)" line, else the
        input ``x``."""
        lines = [line for line in y.strip().splitlines() if "left:" in line]
        if not lines:
            return list(x)
        found = re.search(r"\(left:\s*([^)]*)\)", lines[-1])
        return [_number(n) for n in found[1].split()]

    def is_final(self, y: str) -> bool:
        """Whether the state ``y`` has written its answer ("Answer:")."""
        return "Answer:" in y

    def state_key(self, x: list[Fraction], y: str) -> str:
        """States with the same numbers left are worth the same: they share a value."""
        if self.is_final(y):
            return y.strip().splitlines()[-1]
        return " ".join(sorted(show(n) for n in self.left(x, y)))

    # -- generation ----------------------------------------------------------------------------

    def propose_prompt(self, x: list[Fraction], y: str) -> str:
        """The prompt that proposes next steps; with one number left, the prompt that writes the
        answer."""
        left = self.left(x, y)
        if len(left) == 1:
            return ANSWER_PROMPT.format(numbers=" ".join(show(n) for n in x), steps=y)
        return PROPOSE_PROMPT.format(left=" ".join(show(n) for n in left))

    def sample_prompt(self, x: list[Fraction], y: str) -> str:
        """The prompt for one sampled next step; with one number left, the answer prompt."""
        if len(self.left(x, y)) == 1:
            return self.propose_prompt(x, y)
        return SAMPLE_PROMPT.format(left=" ".join(show(n) for n in self.left(x, y)))

    def children(self, x: list[Fraction], y: str, text: str) -> list[str]:
        """The new states in a reply; steps whose arithmetic or numbers are wrong are dropped."""
        left = self.left(x, y)
        found = []
        for line in text.splitlines():
            line = line.strip()
            if len(left) == 1 and line.startswith("Answer:"):
                found.append(y + line + "\n")
            elif len(left) > 1 and self.valid_step(left, line):
                found.append(y + line + "\n")
        return list(dict.fromkeys(found))

    def valid_step(self, left: list[Fraction], line: str) -> bool:
        """Whether ``line`` ("a op b = c (left: ...)") is exact arithmetic on two of the numbers
        ``left`` and lists exactly the numbers that remain. A division by zero is invalid."""
        match = _STEP.match(line)
        if not match:
            return False
        try:
            a, b, c = (_number(match[i]) for i in (1, 3, 4))
            rest = [_number(n) for n in match[5].split()]
        except (ValueError, ZeroDivisionError):
            return False
        op = {"×": "*", "x": "*", "÷": "/"}.get(match[2], match[2])
        remaining = Counter(left)
        if remaining[a] < 1 or remaining[b] < 1 or (a == b and remaining[a] < 2):
            return False
        try:
            if _OPS[op](a, b) != c:
                return False
        except ZeroDivisionError:
            return False
        remaining.subtract([a, b])
        remaining[c] += 1
        return +remaining == Counter(rest)

    # -- evaluation ----------------------------------------------------------------------------

    def value_prompt(self, x: list[Fraction], y: str) -> str:
        """The prompt that rates whether the numbers left can still reach 24
        (sure/likely/impossible)."""
        return VALUE_PROMPT.format(left=" ".join(show(n) for n in self.left(x, y)))

    def parse_value(self, text: str) -> float:
        """The score of a value reply's last word: sure 20, likely 1, impossible 0.001, else 0."""
        words = text.strip().lower().split()
        return _VALUES.get(words[-1].strip(".") if words else "", 0.0)

    def vote_prompt(self, x: list[Fraction], states: list[str]) -> str:
        """The prompt that picks the most promising of ``states`` (numbered from 1)."""
        choices = "\n".join(f"Choice {i + 1}:\n{s}" for i, s in enumerate(states))
        return VOTE_PROMPT.format(numbers=" ".join(show(n) for n in x), choices=choices)

    def parse_vote(self, text: str, count: int) -> int | None:
        """The 0-based index of the last "best choice is N" in ``text``; None if absent or out of
        range."""
        found = re.findall(r"best choice is\s*(\d+)", text, re.I)
        choice = int(found[-1]) - 1 if found else None
        return choice if choice is not None and 0 <= choice < count else None

    def final_value(self, x: list[Fraction], y: str) -> float:
        """A final state's exact value: 20 (as "sure") when its answer checks, else 0."""
        return _VALUES["sure"] if self.check(x, y) else 0.0

    # -- the answer ----------------------------------------------------------------------------

    def answer(self, y: str) -> str | None:
        """The expression after the last "Answer:" line of ``y``, or None."""
        lines = [line for line in y.splitlines() if line.startswith("Answer:")]
        return lines[-1].removeprefix("Answer:").strip() if lines else None

    def check(self, x: list[Fraction], y: str) -> bool:
        """Whether ``y``'s answer uses exactly the numbers ``x`` and makes 24 (exact fractions)."""
        answer = self.answer(y)
        return answer is not None and check_expression(answer, x)


def check_expression(answer: str, numbers: list[Fraction]) -> bool:
    """True when ``answer`` ("expr" or "expr = 24") uses exactly ``numbers`` and equals 24."""
    expression = answer.split("=")[0].replace("×", "*").replace("÷", "/")
    try:
        tree = ast.parse(expression, mode="eval")
        used: list[Fraction] = []
        value = _exact(tree.body, used)
    except (SyntaxError, ValueError, ZeroDivisionError):
        return False
    return value == 24 and Counter(used) == Counter(numbers)


_AST_OPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}


def _exact(node: ast.AST, used: list[Fraction]) -> Fraction:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        used.append(Fraction(str(node.value)))
        return used[-1]
    if isinstance(node, ast.BinOp) and type(node.op) in _AST_OPS:
        return _OPS[_AST_OPS[type(node.op)]](_exact(node.left, used), _exact(node.right, used))
    raise ValueError("only numbers and + - * / are allowed")


def solvable(numbers: list[Fraction], target: Fraction = Fraction(24)) -> bool:
    """Whether ``numbers`` can make ``target`` (exhaustive search; four numbers are few)."""
    if len(numbers) == 1:
        return numbers[0] == target
    for i, j in combinations(range(len(numbers)), 2):
        rest = [n for k, n in enumerate(numbers) if k not in (i, j)]
        a, b = numbers[i], numbers[j]
        for value in {a + b, a - b, b - a, a * b, a / b if b else None, b / a if a else None}:
            if value is not None and solvable([*rest, value], target):
                return True
    return False
