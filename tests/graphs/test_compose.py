"""Composition: sequence, parallel map-reduce, router and supervisor, over agents and graphs."""

import pytest
from langchain_core.messages import AIMessageChunk
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command, interrupt

from ponder import Agent, Profile
from ponder.config import ConfigurationError
from ponder.graphs.compose import parallel, router, sequence, supervisor
from ponder.testing import ScriptedChatModel, tool_calls
from tests.helpers.concurrency import Rendezvous


def echo(name, latency=0.0, together=None, **options):
    """An agent that answers '<name>: <last user message>' (and counts what it saw); with
    ``together`` (a Rendezvous), each model call first waits there for the others."""
    def answer(messages):
        humans = [m for m in messages if m.type == "human"]
        return f"{name}: {humans[-1].content} (saw {len(messages) - 1} messages)"

    async def answer_together(messages):
        await together.meet()
        return answer(messages)

    reply = answer_together if together else answer
    return Agent(name, ScriptedChatModel(replies=reply, latency=latency,
                                         tokens_per_second=500 if latency else None),
                 Profile(role=f"the {name} specialist"), checkpointer=False, **options)


async def test_sequence_passes_the_conversation_along():
    graph = sequence(echo("drafter"), echo("editor"))
    state = await graph.ainvoke({"messages": [("user", "write a haiku")]})
    replies = [m.content for m in state["messages"] if m.type == "ai"]
    assert replies == ["drafter: write a haiku (saw 1 messages)",
                       "editor: write a haiku (saw 2 messages)"]  # the editor saw the draft


async def test_parallel_maps_every_item_at_once_and_reduces():
    mapper = echo("worker", together=Rendezvous(4))  # the four items' calls, side by side
    graph = parallel(mapper, lambda text: text.split(","),
                     reduce=lambda question, results: " | ".join(sorted(results)))
    state = await graph.ainvoke({"messages": [("user", "a,b,c,d")]})
    assert state["messages"][-1].content == " | ".join(
        f"worker: {x} (saw 1 messages)" for x in "abcd")
    by_agent = parallel(echo("worker"), lambda text: ["x", "y"], reduce=echo("summariser"))
    final = (await by_agent.ainvoke({"messages": [("user", "go")]}))["messages"][-1].content
    assert final.startswith("summariser: go\n\nResults to combine:\n- worker:")


async def test_router_by_function_and_by_model():
    routes = {"billing": echo("billing"), "support": echo("support")}
    by_rule = router(routes, lambda messages: "billing" if "invoice" in
                     messages[-1].content else "support")
    assert (await by_rule.ainvoke({"messages": [("user", "my invoice")]}))["messages"][
        -1].content.startswith("billing:")
    by_model = router(routes, ScriptedChatModel(replies=["Support."]))
    assert (await by_model.ainvoke({"messages": [("user", "it broke")]}))["messages"][
        -1].content.startswith("support:")
    confused = router(routes, ScriptedChatModel(replies=["neither"]))
    with pytest.raises(ValueError, match="not one of billing, support"):
        await confused.ainvoke({"messages": [("user", "?")]})


async def test_a_supervisor_calls_two_agents_in_parallel():
    boss_model = ScriptedChatModel(replies=[
        tool_calls(("ask_flights", {"request": "flights to Rome"}),
                   ("ask_hotels", {"request": "hotels in Rome"})),
        "Booked: see the flights and hotels above."])
    both = Rendezvous(2)  # the two agents' calls, at once
    boss = supervisor("planner", boss_model,
                      [echo("flights", together=both), echo("hotels", together=both)],
                      checkpointer=False)
    state = await boss.ainvoke("plan a trip to Rome")
    results = [m.content for m in state["messages"] if m.type == "tool"]
    assert results == ["flights: flights to Rome (saw 1 messages)",
                       "hotels: hotels in Rome (saw 1 messages)"]
    assert "the flights specialist" in boss.action.by_name["ask_flights"].description


async def test_an_interrupt_inside_a_nested_agent_pauses_and_resumes_the_whole():
    @tool
    def pay(amount: int) -> str:
        """Pay, once a human approves."""
        return "paid" if interrupt(f"pay {amount}?") == "yes" else "declined"

    cashier = Agent("cashier", ScriptedChatModel(replies=[tool_calls(("pay", {"amount": 30})),
                                                          "Payment done."]),
                    tools=[pay], checkpointer=False)
    graph = sequence(echo("greeter"), cashier)
    graph = graph.copy({"checkpointer": InMemorySaver()})
    config = {"configurable": {"thread_id": "shop"}}
    paused = await graph.ainvoke({"messages": [("user", "check out")]}, config)
    assert paused["__interrupt__"][0].value == "pay 30?"
    done = await graph.ainvoke(Command(resume="yes"), config)
    assert [m.content for m in done["messages"]][-2:] == ["paid", "Payment done."]


async def test_tokens_stream_from_nested_agents():
    graph = sequence(echo("first", latency=0.01), echo("second", latency=0.01))
    seen = {}
    async for namespace, (chunk, _meta) in graph.astream(
            {"messages": [("user", "hi")]}, stream_mode="messages", subgraphs=True):
        if isinstance(chunk, AIMessageChunk) and chunk.content:
            owner = namespace[0].split(":")[0]
            seen[owner] = seen.get(owner, "") + chunk.content
    assert seen == {"first": "first: hi (saw 1 messages)",
                    "second": "second: hi (saw 2 messages)"}


def test_bad_compositions():
    with pytest.raises(ConfigurationError, match="at least one"):
        sequence()
    with pytest.raises(ConfigurationError, match="share a name"):
        sequence(echo("same"), echo("same"))
    with pytest.raises(ConfigurationError, match="not an Agent or a compiled"):
        sequence("not a part")
