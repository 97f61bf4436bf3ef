"""One protocol for what runs: an Agent and a compiled graph are run, streamed, inspected and
closed the same way; a graph gets the database's checkpointer and the agents' retention."""

import sqlite3

import pytest
from langchain_core.messages import AIMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.types import interrupt

from ponder import Agent
from ponder.agents import ResumeError
from ponder.config import ConfigurationError
from ponder.graphs.targets import GraphTarget, Target, as_target, load_target
from ponder.testing import ScriptedChatModel
from tests.helpers.graphs import TYPED_DICT_GRAPH


def echo_graph(name="echo", checkpointer=None):
    def reply(state):
        return {"messages": [AIMessage(f"echo: {state['messages'][-1].content}")]}
    builder = StateGraph(MessagesState)
    builder.add_node("reply", reply)
    builder.add_edge(START, "reply")
    return builder.compile(name=name, checkpointer=checkpointer)


def asking_graph():
    def ask(state):
        answer = interrupt("which tea?")
        return {"messages": [AIMessage(f"brewing {answer}")]}
    builder = StateGraph(MessagesState)
    builder.add_node("ask", ask)
    builder.add_edge(START, "ask")
    return builder.compile(name="asker")


def test_agents_and_graphs_are_targets():
    agent = Agent("a", ScriptedChatModel(replies=["hi"]), checkpointer=False)
    assert as_target(agent) is agent and isinstance(agent, Target)
    wrapped = as_target(echo_graph())
    assert isinstance(wrapped, GraphTarget) and isinstance(wrapped, Target)
    assert wrapped.name == "echo" and wrapped.chats
    with pytest.raises(ConfigurationError, match="is a dict, not an Agent or a compiled"):
        as_target({"not": "a target"})


@pytest.mark.parametrize("kind", ["agent", "graph"])
async def test_one_protocol_runs_streams_and_inspects_either_kind(kind, tmp_path):
    url = f"sqlite:///{tmp_path}/t.db"
    made = (Agent("a", ScriptedChatModel(replies=["echo: hi", "echo: again"]), checkpointer=url)
            if kind == "agent" else echo_graph())
    target = as_target(made, database_url=url)
    try:
        state = await target.ainvoke("hi", thread_id="t1", user_id="u")
        assert state["messages"][-1].content == "echo: hi"
        updates = [u async for u in target.astream("again", thread_id="t1")]
        assert updates
        snapshot = await target.aget_state("t1")
        assert [m.content for m in snapshot.values["messages"]][-1] == "echo: again"
        assert len([s async for s in target.aget_state_history("t1")]) >= 2
        assert await target.ainterrupts("t1") == []
        await target.adelete_thread("t1")
        assert (await target.aget_state("t1")).values == {}
    finally:
        await target.aclose()


async def test_a_graph_without_a_checkpointer_gets_the_databases_and_keeps_its_checkpoints(
        tmp_path):
    path = tmp_path / "graphs.db"
    target = GraphTarget(echo_graph(), database_url=f"sqlite:///{path}", keep_checkpoints=3)
    for turn in range(8):
        await target.ainvoke(f"turn {turn}", thread_id="long")
    await target.aclose()  # waits for retention
    db = sqlite3.connect(path)
    assert db.execute("SELECT COUNT(*) FROM checkpoints WHERE thread_id = 'long'"
                      ).fetchone()[0] == 3
    reopened = GraphTarget(echo_graph(), database_url=f"sqlite:///{path}")
    state = await reopened.aget_state("long")
    assert len(state.values["messages"]) == 16  # retention keeps the whole conversation
    await reopened.aclose()


async def test_a_graph_with_its_own_checkpointer_keeps_it():
    saver = InMemorySaver()
    target = GraphTarget(echo_graph(checkpointer=saver), keep_checkpoints=2)
    for turn in range(4):
        await target.ainvoke(f"turn {turn}", thread_id="t")
    await target.aclose()
    assert len(saver.storage["t"][""]) == 2


async def test_interrupts_of_a_graph_are_answered_like_an_agents(tmp_path):
    target = GraphTarget(asking_graph(), database_url=f"sqlite:///{tmp_path}/i.db")
    try:
        state = await target.ainvoke("tea please", thread_id="t")
        [pending] = await target.ainterrupts("t")
        assert state["__interrupt__"][0].id == pending.id and pending.value == "which tea?"
        resume = await target.resume_input("t", {pending.id: "sencha"})
        state = await target.ainvoke(resume, thread_id="t")
        assert state["messages"][-1].content == "brewing sencha"
        with pytest.raises(ResumeError, match="waits on no interrupt"):  # nothing waits now
            await target.resume_input("t", {pending.id: "matcha"})
    finally:
        await target.aclose()


async def test_text_for_a_graph_without_messages_says_what_to_give(tmp_path):
    module = tmp_path / "typed_graphs.py"
    module.write_text(TYPED_DICT_GRAPH)
    target = load_target(f"{module}:no_messages", database_url=f"sqlite:///{tmp_path}/n.db")
    try:
        assert not target.chats
        with pytest.raises(ConfigurationError, match="cannot take text: give it a JSON object"):
            await target.ainvoke("hi", thread_id="t")
        assert (await target.ainvoke({"count": 1}, thread_id="t"))["count"] == 2
    finally:
        await target.aclose()
