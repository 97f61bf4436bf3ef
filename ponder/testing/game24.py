"""A scripted Game of 24 expert: answers Tree-of-Thoughts prompts correctly, by exhaustive search.

Use it as ``ScriptedChatModel(replies=game24_expert)`` (or with FakeOpenAIServer) to test a
search without a real model: it proposes the steps that keep 24 reachable first, values states
honestly (sure/impossible), votes for a solvable choice, and writes the final expression.
"""

from __future__ import annotations

import operator
import re
from fractions import Fraction
from itertools import combinations

from langchain_core.messages import BaseMessage

from ponder.agents.planning.game24 import show, solvable


def game24_expert(messages: list[BaseMessage]) -> str:
    """The expert's reply to a Tree-of-Thoughts Game of 24 prompt (``messages[-1]``): next steps
    that keep 24 reachable first, an honest value, a vote for a solvable choice, or the final
    answer."""
    prompt = str(messages[-1].content)
    if prompt.rstrip().endswith("Possible next steps:"):
        return "\n".join(_next_steps(_last_numbers(prompt, "Input:"))[:8])
    if prompt.rstrip().endswith("Next step:"):
        steps = _next_steps(_last_numbers(prompt, "Input:"))
        return steps[0] if steps else "no step"
    if "(sure/likely/impossible)" in prompt:
        numbers = [Fraction(n) for n in prompt.strip().splitlines()[-1].split()]
        return "sure" if solvable(numbers) else "impossible"
    if "The best choice is" in prompt:
        choices = re.split(r"Choice \d+:\n", prompt)[1:]
        for i, choice in enumerate(choices):
            lefts = re.findall(r"\(left: ([^)]*)\)", choice)
            if lefts and solvable([Fraction(n) for n in lefts[-1].split()]):
                return f"Choice {i + 1} can still reach 24.\nThe best choice is {i + 1}"
        return "None looks good.\nThe best choice is 1"
    if "Steps:" in prompt:
        return _answer(prompt)
    return "I only play the Game of 24."


def _last_numbers(prompt: str, marker: str) -> list[Fraction]:
    line = prompt[prompt.rfind(marker) + len(marker):].strip().splitlines()[0]
    return [Fraction(n) for n in line.split()]


def _next_steps(numbers: list[Fraction]) -> list[str]:
    """Every step on two of the numbers, those that keep 24 reachable first."""
    good, bad = [], []
    for i, j in combinations(range(len(numbers)), 2):
        rest = [n for k, n in enumerate(numbers) if k not in (i, j)]
        a, b = sorted((numbers[i], numbers[j]), reverse=True)
        for op, value in (("+", a + b), ("-", a - b), ("*", a * b), ("/", a / b if b else None)):
            if value is None:
                continue
            left = sorted([*rest, value])
            line = f"{show(a)} {op} {show(b)} = {show(value)} (left: {' '.join(map(show, left))})"
            (good if solvable(left) else bad).append(line)
    return list(dict.fromkeys(good + bad))


def _answer(prompt: str) -> str:
    """Rebuild the expression from the steps: each step replaces two terms by their combination."""
    numbers = _last_numbers(prompt, "Input:")
    terms = [(n, show(n)) for n in numbers]
    steps = prompt[prompt.rfind("Steps:") + len("Steps:"):]
    for a, op, b in re.findall(r"(-?[\d/]+) ([-+*/]) (-?[\d/]+) =", steps):
        left = _take(terms, Fraction(a))
        right = _take(terms, Fraction(b))
        value = _APPLY[op](left[0], right[0])
        terms.append((value, f"({left[1]} {op} {right[1]})"))
    expression = terms[0][1][1:-1] if terms[0][1].startswith("(") else terms[0][1]
    return f"Answer: {expression} = 24"


_APPLY = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv}


def _take(terms: list[tuple[Fraction, str]], value: Fraction) -> tuple[Fraction, str]:
    for i, (v, _) in enumerate(terms):
        if v == value:
            return terms.pop(i)
    raise ValueError(f"{value} is not among the numbers left")
