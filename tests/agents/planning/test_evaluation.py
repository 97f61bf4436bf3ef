"""The eval harness, end to end over HTTP: accuracy must be exactly what the model earned."""

import json
import os
import random
import re
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pytest
from langchain_core.messages import HumanMessage

from ponder.agents.planning import SelfConsistency
from ponder.agents.planning.evaluation import (
    evaluate,
    evaluate_game24,
    evaluate_gsm8k,
    game24_planner,
    load_game24,
    load_gsm8k,
)
from ponder.agents.planning.game24 import check_expression
from ponder.config import ConfigurationError
from ponder.models import chat_model
from ponder.testing import FakeOpenAIServer, ScriptedChatModel
from ponder.testing.game24 import _next_steps, game24_expert
from tests.helpers.data import DATA

P_CORRECT = 0.6


def right(key: str) -> bool:
    """Whether the scripted model answers this problem correctly: seeded, so tests know."""
    return random.Random(key).random() < P_CORRECT


@pytest.fixture
def gsm8k_file(tmp_path) -> Path:
    path = tmp_path / "gsm8k.jsonl"
    with path.open("w") as out:
        for i in range(20):
            out.write(json.dumps({"question": f"Problem {i}: what is {i} plus {i * 3}?",
                                  "answer": f"{i} + {3 * i} = {4 * i}\n#### {4 * i:,}"}) + "\n")
    return path


def gsm8k_student(messages) -> str:
    question = messages[-1].content.rsplit("Q: ", 1)[-1]
    a, b = (int(n) for n in re.findall(r"what is (\d+) plus (\d+)", question)[0])
    answer = a + b if right(question.split(":")[0]) else a + b + 1
    return f"{a} + {b} = {answer}. The answer is {answer}."


def expected_gsm8k(limit: int) -> float:
    return sum(right(f"Problem {i}") for i in range(limit)) / limit


async def test_gsm8k_accuracy_is_counted_exactly(gsm8k_file):
    items = load_gsm8k(gsm8k_file, limit=20)
    assert items[3] == ("Problem 3: what is 3 plus 9?", "12")
    async with FakeOpenAIServer(gsm8k_student) as srv:
        report = await evaluate_gsm8k(chat_model("openai:s", base_url=srv.base_url), "cot", items)
    assert report.n == 20 and report.calls == 20 and report.input_tokens > 0
    assert report.accuracy == expected_gsm8k(20)
    assert 0 < report.accuracy < 1  # the seed gives a mix, so both branches are exercised


def game24_student(messages) -> str:
    """Right (a true expression) or wrong (an expression missing a number) by the seed."""
    puzzle = messages[-1].content.strip().splitlines()[-1].removeprefix("Input: ").strip()
    if not right(puzzle):
        return f"Answer: {puzzle.split()[0]} * 24 = 24"
    # Three steps that keep 24 reachable, then the expert writes the expression.
    trail, left = [], [Fraction(n) for n in puzzle.split()]
    for _ in range(3):
        step = _next_steps(left)[0]
        trail.append(step)
        left = [Fraction(n) for n in re.findall(r"left: ([^)]*)", step)[0].split()]
    steps = "\n".join(trail)
    return game24_expert([HumanMessage(f"Input: {puzzle}\nSteps:\n{steps}\n")])


async def test_game24_accuracy_is_checked_with_exact_arithmetic():
    puzzles = ["4 5 6 10", "1 2 4 7", "2 3 4 6", "1 1 4 6", "3 3 8 8", "2 2 2 9"]
    async with FakeOpenAIServer(game24_student) as srv:
        model = chat_model("openai:s", base_url=srv.base_url)
        io = await evaluate_game24(model, "io", puzzles)
        sc = await evaluate_game24(model, "sc", puzzles, k=3)
    expected = sum(right(p) for p in puzzles) / len(puzzles)
    assert io.accuracy == expected and io.calls == len(puzzles)
    assert sc.accuracy == expected and sc.calls == 3 * len(puzzles)


async def test_game24_sc_is_self_consistency_voting_on_expressions():
    # Two spellings of one expression and a wrong answer: the spellings vote together.
    samples = iter(["Steps: ...\nAnswer: (6 - 4) * (4 + 8) = 24\nInput: 1 1 1 1",
                    "Answer: 4 * 6 = 24", "Answer: (6-4)*(4+8) = 24"])
    model = ScriptedChatModel(replies=lambda messages: next(samples))
    planner = game24_planner("sc", k=3)
    assert isinstance(planner, SelfConsistency)
    solution = await planner.solve("4 4 6 8", model)
    assert solution.details["votes"] == {"(6-4)*(4+8)=24": 2.0, "4*6=24": 1.0}
    assert solution.answer == "(6-4)*(4+8)=24" and solution.calls == 3
    assert model.calls[0][-1].content.endswith("Input: 4 4 6 8\n")  # the ToT paper's CoT prompt


async def test_evaluate_runs_any_planner_object():
    samples = iter(["Answer: (6 - 4) * (4 + 8) = 24", "Answer: 4 * 6 = 24"])
    model = ScriptedChatModel(replies=lambda messages: next(samples))
    report = await evaluate(game24_planner("cot"), [("4 4 6 8", [4, 4, 6, 8])] * 2,
                            lambda answer, numbers: check_expression(answer, numbers),
                            model=model, concurrency=1)
    assert (report.task, report.method, report.n, report.correct) == ("", "ChainOfThought", 2, 1)


async def test_game24_tot_with_an_expert_solves_every_puzzle():
    puzzles = load_game24(DATA / "game24.csv", start=900, limit=3)
    async with FakeOpenAIServer(game24_expert) as srv:
        report = await evaluate_game24(chat_model("openai:s", base_url=srv.base_url), "tot",
                                       puzzles, breadth=2, n_evaluate=1)
    assert report.accuracy == 1.0 and report.calls > 3 * 3 and not report.errors


def test_bad_data_and_methods(tmp_path):
    with pytest.raises(ConfigurationError, match="not at .*pass --data"):
        load_gsm8k(tmp_path / "missing.jsonl")
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"question": "q", "answer": "no marker"}\n')
    with pytest.raises(ConfigurationError, match="line 1: not a GSM8K record"):
        load_gsm8k(broken)
    wrong_csv = tmp_path / "x.csv"
    wrong_csv.write_text("a,b\n1,2\n")
    with pytest.raises(ConfigurationError, match="no 'Puzzles' column"):
        load_game24(wrong_csv)


def test_the_eval_command(gsm8k_file):
    with FakeOpenAIServer(gsm8k_student) as srv:
        env = {**os.environ, "OPENAI_BASE_URL": srv.base_url}
        done = subprocess.run(
            [sys.executable, "-m", "ponder.cli", "eval", "gsm8k", "--model", "openai:s",
             "--method", "cot", "--limit", "10", "--data", str(gsm8k_file), "--json"],
            capture_output=True, text=True, env=env, timeout=120)
        bad = subprocess.run(
            [sys.executable, "-m", "ponder.cli", "eval", "game24", "--model", "openai:s",
             "--method", "magic", "--data", str(DATA / "game24.csv"), "--limit", "1"],
            capture_output=True, text=True, env=env, timeout=120)
    with FakeOpenAIServer(game24_student) as srv:
        env = {**os.environ, "OPENAI_BASE_URL": srv.base_url}
        full_name = subprocess.run(
            [sys.executable, "-m", "ponder.cli", "eval", "game24", "--model", "openai:s",
             "--method", "self-consistency", "--k", "2", "--start", "900", "--limit", "3",
             "--data", str(DATA / "game24.csv"), "--json"],
            capture_output=True, text=True, env=env, timeout=120)
    assert full_name.returncode == 0, full_name.stderr
    sc = json.loads(full_name.stdout)
    puzzles = load_game24(DATA / "game24.csv", start=900, limit=3)
    assert sc["calls"] == 2 * 3 and sc["accuracy"] == sum(map(right, puzzles)) / 3
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["accuracy"] == expected_gsm8k(10) and report["n"] == 10
    assert {"calls", "total_tokens", "wall_s", "model"} <= set(report)
    assert bad.returncode == 2 and "unknown method 'magic'" in bad.stderr
    assert "self-consistency (sc)" in bad.stderr
    assert "Traceback" not in bad.stderr
