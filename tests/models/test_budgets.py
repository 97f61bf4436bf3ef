"""Costs and budgets: every call priced by genai-prices; budgets on agents and runs stop calls
that could go over them, and say which budget and what was spent."""

import asyncio
import math

import pytest
from langchain_core.messages import HumanMessage

from ponder import Agent, Budget, BudgetExceeded, ConfigurationError
from ponder.agents.planning import SelfConsistency
from ponder.graphs.runs import RunRecorder
from ponder.models import (
    LocalLedger,
    ResiliencePolicy,
    UnpricedModel,
    chat_model,
    spending,
    track_usage,
)
from ponder.models.budgets import DEFAULT_OUTPUT_TOKENS
from ponder.models.prices import cost_usd
from ponder.testing import FakeOpenAIServer
from tests.helpers.priced import PRICE, PRICED_MODEL, dollars, priced

CALL = dollars(PRICE["input_tokens"], PRICE["output_tokens"])  # what each scripted call costs


def model(server: FakeOpenAIServer, name: str = PRICED_MODEL, **options):
    return chat_model(f"openai:{name}", base_url=server.base_url, **options)


def test_prices_come_from_genai_prices():
    assert cost_usd("openai", "gpt-4o-mini", 1000, 200) == pytest.approx(dollars(1000, 200))
    assert cost_usd("openai", "gpt-4o-mini", 1000, 200) > 0
    # Another provider's name for the same table; models and providers it does not know.
    assert cost_usd("anthropic", "claude-3-5-haiku-latest", 10, 10) > 0
    assert cost_usd("openai", "my-own-finetune", 10, 10) is None
    assert cost_usd("ollama", "qwen2.5", 10, 10) is None


async def test_every_usage_record_has_its_cost():
    async with FakeOpenAIServer([priced("one"), priced("two"), priced("three")]) as server:
        known, unknown = model(server), model(server, "my-local-model")
        with track_usage() as usage:
            await known.ainvoke("hi")
            async for _ in known.astream("hi again"):  # streamed calls are priced too
                pass
            await unknown.ainvoke("hello")
    calls = list(usage.recent)
    assert [c.cost_usd for c in calls[:2]] == [pytest.approx(CALL)] * 2
    assert calls[2].cost_usd is None  # no price known: None, never a guess
    assert usage.cost_usd == pytest.approx(2 * CALL) and usage.unpriced_calls == 1
    assert usage.by_model[PRICED_MODEL]["cost_usd"] == pytest.approx(2 * CALL)
    assert "cost_usd" not in usage.by_model["my-local-model"]
    assert usage.as_dict()["cost_usd"] == pytest.approx(2 * CALL)
    assert known.usage.cost_usd == pytest.approx(2 * CALL)  # the model's own log


@pytest.mark.parametrize("limits, problem", [
    ({"usd": -0.01}, "usd must be a number of dollars, 0 or more"),
    ({"usd": math.nan}, "usd must be a number"),
    ({"usd": "5"}, "usd must be a number"),
    ({"tokens": -1}, "tokens must be a whole number, 0 or more"),
    ({"calls": 2.5}, "calls must be a whole number"),
    ({"calls": True}, "calls must be a whole number"),
    ({}, "a budget needs a limit"),
])
def test_a_bad_budget_is_refused_when_made(limits, problem):
    with pytest.raises(ConfigurationError, match=problem) as error:
        Budget(**limits)
    assert isinstance(error.value, ValueError)


def test_an_agent_takes_only_a_budget():
    with pytest.raises(ConfigurationError, match="budget must be a ponder.Budget"):
        Agent("a", "openai:gpt-4o-mini", budget=5, checkpointer=False)


async def test_an_agents_budget_holds_across_its_turns(tmp_path):
    async with FakeOpenAIServer(lambda messages: priced("sure")) as server:
        # Each call reserves its input estimate plus 8 output tokens (its max_tokens), and
        # costs CALL: room for three calls, not four.
        limit = 3 * CALL + dollars(30, 8) - CALL / 2
        agent = Agent("helper", model(server, max_tokens=8), budget=Budget(usd=limit),
                      checkpointer=f"sqlite:///{tmp_path}/a.db")
        for turn in range(2):
            assert await agent.aask(f"question {turn}", thread_id="t") == "sure"
        streamed = [piece async for piece in agent.astream_text("question 2", thread_id="t")]
        assert "".join(streamed) == "sure"  # a streamed turn is charged the same way
        with pytest.raises(BudgetExceeded) as stopped:
            await agent.aask("question 3", thread_id="t")
        assert len(server.requests) == 3  # the fourth call was never sent
        message = str(stopped.value)
        assert "the budget of agent 'helper'" in message
        assert f"${3 * CALL:.8f} spent of" in message  # what was spent, exactly
        assert stopped.value.kind == "usd" and stopped.value.spent.calls == 3
        # Nothing done is lost: the thread keeps its three turns and the refused question.
        state = await agent.aget_state("t")
        assert [m.content for m in state.values["messages"]][-2:] == ["sure", "question 3"]
        await agent.aclose()


async def test_calls_and_tokens_budgets_count_without_prices():
    async with FakeOpenAIServer(lambda messages: priced("ok")) as server:
        unpriced = model(server, "my-local-model")
        agent = Agent("counted", unpriced, budget=Budget(calls=2), checkpointer=False)
        await agent.aask("one")
        await agent.aask("two")
        with pytest.raises(BudgetExceeded, match="2 calls spent of 2"):
            await agent.aask("three")
        # Tokens: each call takes 7; a call reserves up to its input estimate + 8.
        agent = Agent("tokens", model(server, max_tokens=8), budget=Budget(tokens=20),
                      checkpointer=False)
        await agent.aask("one")
        with pytest.raises(BudgetExceeded, match=r"7 tokens spent of 20; the next call of "
                                                 r"openai:gpt-4o-mini needs up to \d+"):
            await agent.aask("a much longer question than the first one, with many words")
        assert len(server.requests) == 3


async def test_a_dollar_budget_refuses_a_model_without_a_price():
    async with FakeOpenAIServer(["never"]) as server:
        agent = Agent("local", model(server, "my-local-model"), budget=Budget(usd=1.0),
                      checkpointer=False)
        with pytest.raises(UnpricedModel, match="openai:my-local-model has no price in "
                                                "genai-prices.*tokens or calls limit instead"):
            await agent.aask("hi")
        assert server.requests == []


async def test_without_max_tokens_a_call_reserves_the_default_output():
    async with FakeOpenAIServer(lambda messages: priced("fine")) as server:
        # Room for a call with 8 output tokens, not for one with the default's.
        budget = Budget(usd=dollars(100, 8))
        assert dollars(100, 8) < dollars(0, DEFAULT_OUTPUT_TOKENS)
        with pytest.raises(BudgetExceeded, match="may cost up to"):
            with spending(LocalLedger(budget, "a test")):
                await model(server).ainvoke("hi")
        with spending(LocalLedger(budget, "a test")):
            await model(server, max_tokens=8).ainvoke("hi")
        assert len(server.requests) == 1


async def test_concurrent_calls_never_go_over_a_budget():
    async with FakeOpenAIServer(lambda messages: priced("ok"), latency=0.05) as server:
        ledger = LocalLedger(Budget(calls=5), "a shared test budget")
        chat = model(server, max_tokens=8)

        async def ask():
            with spending(ledger):
                await chat.ainvoke("hi")

        results = await asyncio.gather(*(ask() for _ in range(20)), return_exceptions=True)
    assert sum(r is None for r in results) == 5 == len(server.requests)
    assert all(isinstance(r, BudgetExceeded) for r in results if r is not None)
    assert ledger.spent.calls == 5 and ledger.reserved.calls == 0  # every hold settled


async def test_a_budget_stops_self_consistency_part_way(tmp_path):
    def reply(messages):  # a reasoning call, then an extraction call, per sampled path
        return priced("18" if messages[-1].content.endswith("is") else "thinking: 18")

    async with FakeOpenAIServer(reply) as server:
        # One call at a time, in order: the five reasoning calls, then the extractions.
        chat = model(server, max_tokens=8, policy=ResiliencePolicy(max_concurrency=1))
        agent = Agent("thinker", chat, planner=SelfConsistency(k=5, early_stop=False),
                      checkpointer=f"sqlite:///{tmp_path}/a.db",
                      budget=Budget(usd=12 * CALL))
        recorder = RunRecorder(f"sqlite:///{tmp_path}/runs.db")
        try:
            with pytest.raises(BudgetExceeded):
                await recorder.run("thinker", agent, "What is 3 times 6?", thread_id="t")
            made = len(server.requests)
            assert 5 < made < 10  # every path reasoned, some extracted, then the stop
            record = (await recorder.list(1))[0]
            assert record.status == "error"
            assert "BudgetExceeded: the budget of agent 'thinker' is used up" in record.error
            spent = made * CALL
            assert f"${spent:.8f} spent of ${12 * CALL:.7f}" in record.error
            # The run's usage shows the calls made and their cost.
            assert record.usage[PRICED_MODEL]["calls"] == made
            assert record.usage[PRICED_MODEL]["cost_usd"] == pytest.approx(spent)
            # Nothing done is lost: the thread's checkpoint holds the question, ready to plan.
            state = await agent.aget_state("t")
            assert [type(m) for m in state.values["messages"]] == [HumanMessage]
            assert state.next == ("plan",)
        finally:
            await recorder.aclose()
            await agent.aclose()


async def test_a_stream_abandoned_after_its_output_began_pays_what_it_held():
    async with FakeOpenAIServer([priced("one two three four five")],
                                tokens_per_second=20) as server:
        ledger = LocalLedger(Budget(usd=1.0), "a test")
        with spending(ledger):
            stream = model(server, max_tokens=8).astream("count")
            async for _ in stream:
                break  # the client left: its usage never comes
            await stream.aclose()
        for _ in range(50):  # the provider's stream is closed by the event loop, soon
            if ledger.reserved.calls == 0:
                break
            await asyncio.sleep(0.05)
    assert ledger.reserved == type(ledger.reserved)()  # nothing still held
    assert ledger.spent.calls == 1 and ledger.spent.nano_usd > CALL * 1e9  # all it held


async def test_a_ledger_active_twice_is_charged_once():
    async with FakeOpenAIServer(lambda messages: priced("ok")) as server:
        ledger = LocalLedger(Budget(calls=1), "a nested test")
        with spending(ledger), spending(ledger):
            await model(server, max_tokens=8).ainvoke("hi")
    assert ledger.spent.calls == 1
