"""Defects an independent review found, each pinned by the behaviour a user would notice."""

import asyncio
import os
import subprocess
import sys
import textwrap
import types

from langchain_core.messages import AIMessage
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import interrupt

from ponder import Agent
from ponder.agents.planning import (
    Budget,
    ChainOfThought,
    Example,
    SelfConsistency,
    TreeOfThoughts,
    ZeroShotCoT,
    extract_answer,
)
from ponder.models import chat_model
from ponder.models.retries import retry_after_s as _retry_after_s
from ponder.testing import FakeOpenAIServer, Fault, ScriptedChatModel, tool_calls
from tests.agents.planning.test_tot import Letters, letters_model


def test_a_failed_run_exits_instead_of_hanging(tmp_path):
    (tmp_path / "bot.py").write_text(textwrap.dedent("""
        from ponder import Agent
        bot = Agent("bot", "openai:scripted")
    """))
    with FakeOpenAIServer([], faults=[Fault.server_error(500)] * 5) as srv:
        env = {**os.environ, "OPENAI_BASE_URL": srv.base_url, "PONDER_MAX_ATTEMPTS": "1",
               "PONDER_DATABASE_URL": f"sqlite:///{tmp_path}/bot.db"}
        done = subprocess.run([sys.executable, "-m", "ponder.cli", "run", f"{tmp_path}/bot.py:bot",
                               "hi"], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 2 and "failed after 1 attempt" in done.stderr


async def test_an_interrupt_leaves_no_tool_call_running_and_none_run_twice():
    # Each call of a step is a task of its own: the charge finishes within the turn (nothing
    # runs behind the caller's back once it returns) and is not charged again on resume.
    side_effects = []

    @tool
    async def charge(amount: int) -> str:
        """Charge a card."""
        await asyncio.sleep(0.3)
        side_effects.append(amount)
        return "charged"

    @tool
    def approve(what: str) -> str:
        """Ask a human."""
        return interrupt(what)

    model = ScriptedChatModel(replies=[tool_calls(("charge", {"amount": 5}),
                                                  ("approve", {"what": "ok?"})),
                                       "Charged and approved."])
    agent = Agent("shop", model, tools=[charge, approve], checkpointer=InMemorySaver())
    paused = await agent.ainvoke("buy", thread_id="t")
    charged_by_then = list(side_effects)
    await asyncio.sleep(0.5)
    assert paused["__interrupt__"] and side_effects == charged_by_then == [5]
    await agent.aresume("t", "yes")
    assert side_effects == [5]


async def test_the_step_limit_answers_unparseable_calls_too():
    garbled = AIMessage(content="", invalid_tool_calls=[{
        "name": "depth", "args": "{", "id": "c9", "error": "bad", "type": "invalid_tool_call"}])

    @tool
    def depth(place: str) -> str:
        """Depth."""
        return "12 m"

    agent = Agent("nav", ScriptedChatModel(replies=[tool_calls(("depth", {"place": "x"})),
                                                    garbled]),
                  tools=[depth], max_steps=1, checkpointer=False)
    state = await agent.ainvoke("go")
    answered = {m.tool_call_id for m in state["messages"] if m.type == "tool"}
    assert "c9" in answered and "stopped after 1 tool steps" in state["messages"][-1].content


def test_an_unreadable_retry_after_falls_back_to_backoff():
    def error(headers):
        return types.SimpleNamespace(response=types.SimpleNamespace(headers=headers))

    assert _retry_after_s(error({"retry-after": "soon"})) is None
    assert _retry_after_s(error({"retry-after-ms": "-50"})) == 0.0
    assert _retry_after_s(error({"retry-after": "2.5"})) == 2.5


async def test_a_planner_streams_its_answer_not_its_samples():
    def reply(messages):
        return "18" if messages[-1].content.endswith("is") else "thinking about it: 18"

    agent = Agent("thinker", ScriptedChatModel(replies=reply),
                  planner=SelfConsistency(3, early_stop=False), checkpointer=False)
    assert "".join([t async for t in agent.astream_text("?")]) == "18"


async def test_one_request_for_k_paths_counts_its_tokens_once():
    async with FakeOpenAIServer(["The answer is 7."] * 3) as srv:
        model = chat_model("openai:s", base_url=srv.base_url)
        solution = await SelfConsistency(3, base=ChainOfThought([Example("q", "r", "1")]),
                                         use_n=True).solve("?", model)
        assert solution.calls == 3 and sum(s.output_tokens > 0 for s in solution.steps) == 1
        over = await SelfConsistency(3, base=ChainOfThought([Example("q", "r", "1")]),
                                     use_n=True, budget=Budget(calls=2)).solve("?", model)
    assert over.answer is None and over.calls == 0
    assert over.error == "stopped: the budget of 2 calls is spent"


async def test_a_budget_stop_leaves_no_calls_running():
    model = letters_model()
    model.latency = 0.2
    solution = await TreeOfThoughts(Letters(), n_evaluate=3, budget=Budget(calls=3)).solve(
        "x", model)
    calls_at_return = len(model.calls)
    await asyncio.sleep(0.4)
    assert solution.answer is None and len(model.calls) == calls_at_return


async def test_zero_shot_reads_the_first_answer_deterministically():
    async with FakeOpenAIServer(["16 - 3 - 4 = 9 eggs at $2 each.",
                                 " 18 dollars. That is 9 eggs at $2."]) as srv:
        solution = await ZeroShotCoT().solve("How much?", chat_model("openai:s",
                                                                     base_url=srv.base_url))
        stage_two = srv.requests[1]
    assert solution.answer == "18" and stage_two["temperature"] == 0.0


def test_answers_that_used_to_split_votes():
    trigger = "The answer is"
    assert extract_answer("The answer is: Paris.", "text", trigger) == \
        extract_answer("The answer is Paris", "text", trigger) == "paris"
    assert extract_answer("The answer is (B). A quick check agrees.", "option", trigger) == "B"
    assert extract_answer("The sides are 3,4,5 so the answer is 5", "number") == "5"
    assert extract_answer("The answer is 9.\nQ: next?\nA: The answer is 7.", "number",
                          trigger) == "9"
