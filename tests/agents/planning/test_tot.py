"""Tree of Thoughts: search logic on a task whose tree and values the test controls, and the
shipped Game of 24 task with exact checking."""

import asyncio
import re
from fractions import Fraction

import pytest

from ponder.agents.planning import (
    Budget,
    Game24,
    TreeOfThoughts,
)
from ponder.agents.planning.base import ReasoningTrace
from ponder.agents.planning.game24 import check_expression, solvable
from ponder.agents.planning.tot import _Search
from ponder.testing import ScriptedChatModel
from ponder.testing.game24 import game24_expert

# A tiny tree: each state is a path of letters; "Answer:" after two letters.
TREE = {"": ["a", "b", "c"], "a": ["d", "e"], "b": ["f"], "c": ["g", "h"]}
VALUES = {"a": 5, "b": 9, "c": 7, "d": 1, "e": 2, "f": 0.5, "g": 8, "h": 0, "ab": 0}
GOALS = {"cg"}


class Letters:
    """A thought task over TREE: propose lists children, value reads VALUES."""

    steps = 3

    def parse_input(self, question):
        return question

    def _path(self, y):
        return "".join(line for line in y.splitlines() if not line.startswith("Answer"))

    def propose_prompt(self, x, y):
        return f"PROPOSE [{self._path(y)}]"

    sample_prompt = propose_prompt

    def children(self, x, y, text):
        path = self._path(y)
        if len(path) == 2:
            return [y + "Answer: " + path + "\n"]
        return [y + child[-1] + "\n" for child in text.split() if child != "none"]

    def value_prompt(self, x, y):
        return f"VALUE [{self.state_key(x, y)}]"

    def parse_value(self, text):
        return float(text)

    def vote_prompt(self, x, states):
        return "VOTE " + " ".join(f"[{self.state_key(x, s)}]" for s in states)

    def parse_vote(self, text, count):
        return int(text) if text.isdigit() and int(text) < count else None

    def is_final(self, y):
        return "Answer:" in y

    def final_value(self, x, y):
        return 20.0 if self.check(x, y) else 0.0

    def state_key(self, x, y):
        path = self._path(y)
        return "ab" if set(path) == {"a", "b"} else path  # two paths, one key: a cache test

    def check(self, x, y):
        return self.answer(y) in GOALS

    def answer(self, y):
        found = re.findall(r"Answer: (\w+)", y)
        return found[-1] if found else None


def letters_model():
    def reply(messages):
        prompt = messages[-1].content
        key = re.findall(r"\[(\w*)\]", prompt)
        if prompt.startswith("PROPOSE"):
            return " ".join(TREE.get(key[0][-1:] if key[0] else "", [])) or "none"
        if prompt.startswith("VALUE"):
            return str(VALUES.get(key[0], VALUES.get(key[0][-1], 0)))
        if prompt.startswith("VOTE"):  # votes for the choice with the highest value
            scores = [VALUES.get(k[-1], 0) for k in key]
            return str(scores.index(max(scores)))
        return "?"
    return ScriptedChatModel(replies=reply)


def proposed(model):
    return [re.findall(r"\[(\w*)\]", m[-1].content)[0] for m in model.calls
            if m[-1].content.startswith("PROPOSE")]


async def test_bfs_keeps_the_b_best_states_of_each_level():
    model = letters_model()
    solution = await TreeOfThoughts(Letters(), breadth=2, n_evaluate=1).solve("x", model)
    # Level 1 values: b=9, c=7, a=5 -> only b and c are expanded.
    assert sorted(proposed(model)[1:3]) == ["b", "c"]
    assert "a" not in proposed(model)
    assert solution.answer == "cg"


async def test_dfs_prunes_below_the_threshold_and_backtracks():
    model = letters_model()
    solution = await TreeOfThoughts(Letters(), search="dfs", threshold=1.0, n_evaluate=1
                                    ).solve("x", model)
    # Best first: b (9) -> f (0.5) is pruned -> back to c (7) -> g (8) -> the answer.
    assert proposed(model) == ["", "b", "c", "cg"]
    assert solution.answer == "cg"
    assert solution.details["pruned"] >= 1 and solution.details["backtracks"] == 1


async def test_the_value_cache_scores_an_equivalent_state_once():
    model = letters_model()
    tot = TreeOfThoughts(Letters(), breadth=3, n_evaluate=2)
    await tot.solve("x", model)
    value_prompts = [m[-1].content for m in model.calls if m[-1].content.startswith("VALUE")]
    assert len(value_prompts) == len(set(value_prompts)) * 2  # each key once, n_evaluate times
    # "a then b" and "b then a" share the key "ab": scored together, they cost one evaluation.
    model = letters_model()
    search = _Search(tot, "x", ReasoningTrace(model))
    await search.score(["a\nb\n", "b\na\n", "a\nb\n"])
    assert sum(1 for m in model.calls if "VALUE" in m[-1].content) == 2  # one key, n_evaluate=2
    assert search.cache_hits == 2


async def test_vote_evaluation_picks_the_voted_states():
    model = letters_model()
    solution = await TreeOfThoughts(Letters(), evaluate="vote", breadth=1, n_evaluate=3
                                    ).solve("x", model)
    assert proposed(model)[:2] == ["", "b"]  # b has the highest value, so it wins the vote
    assert solution.details["sequential_calls"] >= 3


async def test_a_budget_stops_the_search():
    model = letters_model()
    solution = await TreeOfThoughts(Letters(), budget=Budget(calls=4)).solve("x", model)
    assert solution.answer is None and "budget of 4 calls" in solution.error
    assert solution.calls <= 4


@pytest.mark.parametrize("options, message", [
    ({"breadth": 0}, "breadth must be a whole number"),
    ({"n_evaluate": 0}, "n_evaluate must be"),
    ({"search": "astar"}, "search must be one of bfs, beam, dfs"),
])
def test_bad_parameters(options, message):
    with pytest.raises(ValueError, match=message):
        TreeOfThoughts(**options)


# -- Game of 24 --------------------------------------------------------------------------------


@pytest.mark.parametrize("search", ["bfs", "beam", "dfs"])
async def test_game24_is_solved_with_an_expert_model(search):
    solution = await TreeOfThoughts(search=search).solve(
        "4 5 6 10", ScriptedChatModel(replies=game24_expert))
    assert solution.answer and check_expression(solution.answer, [4, 5, 6, 10])
    assert solution.error is None


async def test_game24_rejects_wrong_arithmetic_and_never_trusts_the_answer():
    def liar(messages):
        prompt = messages[-1].content
        if prompt.rstrip().endswith("Possible next steps:"):
            return "4 + 5 = 10 (left: 6 10 10)\n4 * 6 = 24 (left: 5 10)"  # wrong; wrong numbers
        return "sure"

    solution = await TreeOfThoughts(breadth=2).solve("4 5 6 10", ScriptedChatModel(replies=liar))
    assert solution.answer is None and solution.details["rejected_steps"] >= 1


def test_exact_checks():
    assert check_expression("8 / (3 - 8 / 3) = 24", [Fraction(n) for n in (3, 3, 8, 8)])
    assert not check_expression("4 * 6 = 24", [4, 6, 1, 1])          # numbers unused
    assert not check_expression("(10 + 10) + 4 = 24", [10, 4, 5, 6])  # numbers not given
    assert not check_expression("__import__('os')", [1, 2, 3, 4])
    assert not check_expression("1 / 0 + 24", [1, 0, 24, 0])
    assert solvable([Fraction(n) for n in (4, 5, 6, 10)])
    assert not solvable([Fraction(n) for n in (1, 1, 1, 1)])
    assert Game24().valid_step([4, 5, 6, 10], "10 - 4 = 6 (left: 5 6 6)")
    assert not Game24().valid_step([4, 5, 6, 10], "10 - 4 = 6 (left: 5 6)")


async def test_bad_input_and_silent_models():
    with pytest.raises(ValueError, match="four numbers"):
        await TreeOfThoughts().solve("2 3", ScriptedChatModel(replies=["x"]))
    solution = await TreeOfThoughts().solve("4 5 6 10", ScriptedChatModel(replies=lambda m: ""))
    assert solution.answer is None and solution.error == "no state reached a correct answer"


async def test_a_budget_stop_leaves_no_calls_running():
    model = letters_model()
    model.latency = 0.2
    solution = await TreeOfThoughts(Letters(), n_evaluate=3, budget=Budget(calls=3)).solve(
        "x", model)
    calls_at_return = len(model.calls)
    await asyncio.sleep(0.4)
    assert solution.answer is None and len(model.calls) == calls_at_return
