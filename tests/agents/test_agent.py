"""The agent: graph shape, profile, the tool loop, streaming, interrupts, memory, embedding."""

import asyncio
import contextlib
import threading

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, SystemMessage
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.types import Command, interrupt

from ponder import Agent, InMemoryMemory, Profile
from ponder.agents import ActionModule
from ponder.config import ConfigurationError
from ponder.models import chat_model
from ponder.testing import FakeOpenAIServer, ScriptedChatModel, tool_calls
from ponder.tools import tool as bounded_tool
from tests.helpers.concurrency import Rendezvous

PROFILE = Profile(role="a ship's navigator", goal="plot safe courses",
                  instructions=["Always state the heading."], constraints=["Never guess depths."])


def agent(replies, *, tools=(), **options) -> tuple[Agent, ScriptedChatModel]:
    model = ScriptedChatModel(replies=replies)
    options.setdefault("checkpointer", False)
    return Agent("navigator", model, PROFILE, tools=tools, **options), model


@tool
def depth(place: str) -> str:
    """The charted depth at a place."""
    return f"{place}: 12 m"


# -- shape ------------------------------------------------------------------------------------


def test_a_bare_agent_is_act_and_tools_only():
    bare, _ = agent([])
    assert set(bare.graph.get_graph().nodes) == {"__start__", "__end__", "act", "tools"}


def test_configured_modules_add_their_nodes():
    class Plan:
        async def plan(self, state, *, model, system, action, config):
            return {"plan": "1. look"}

    full, _ = agent([], memory=InMemoryMemory(), planner=Plan())
    assert set(full.graph.get_graph().nodes) >= {"recall", "plan", "act", "tools", "remember"}


def test_bad_construction_is_refused_clearly():
    with pytest.raises(ConfigurationError, match="agent name 'has spaces' is not valid"):
        Agent("has spaces", ScriptedChatModel())
    with pytest.raises(ConfigurationError, match="PONDER_MODEL is not set"):
        Agent("x")
    with pytest.raises(ConfigurationError, match="has no docstring"):
        Agent("x", ScriptedChatModel(), tools=[lambda: 1])
    with pytest.raises(ConfigurationError, match="max_steps must be at least 1"):
        Agent("x", ScriptedChatModel(), max_steps=0)
    with pytest.raises(ConfigurationError, match="no async recall"):
        Agent("x", ScriptedChatModel(), memory=object())


# -- profile ----------------------------------------------------------------------------------


async def test_the_profile_is_in_every_model_call():
    class Plan:
        async def plan(self, state, *, model, system, action, config):
            await model.ainvoke([system, HumanMessage("make a plan")], config)
            return {"plan": "check the depth first"}

    navigator, model = agent([
        "plan: check depth",
        tool_calls(("depth", {"place": "harbour"})),
        tool_calls(("depth", {"place": "reef"})),
        "Heading 270; the harbour is 12 m deep.",
    ], tools=[depth], planner=Plan(), memory=InMemoryMemory(["Harbour charts are from 2020."]))
    await navigator.ainvoke("How deep is the harbour?")
    assert len(model.calls) == 4  # the planner's call and three steps of the tool loop
    for messages in model.calls:
        system = messages[0]
        assert isinstance(system, SystemMessage)
        assert "You are navigator, a ship's navigator." in system.content
        assert "plot safe courses" in system.content and "Never guess depths." in system.content
    tool_loop = model.calls[1:]
    assert all("check the depth first" in m[0].content for m in tool_loop)  # the plan
    assert all("Harbour charts are from 2020." in m[0].content for m in tool_loop)  # recall


# -- the tool loop ----------------------------------------------------------------------------


async def test_tool_calls_of_one_step_run_concurrently():
    together = Rendezvous(3)

    @tool
    async def slow(name: str) -> str:
        """Wait for the other calls."""
        await together.meet()  # only calls running at once all get past this
        return name

    navigator, _ = agent([tool_calls(("slow", {"name": "a"}), ("slow", {"name": "b"}),
                                     ("slow", {"name": "c"})), "done"], tools=[slow])
    state = await navigator.ainvoke("go")
    assert [m.content for m in state["messages"][2:5]] == ["a", "b", "c"]  # order of the calls


async def test_a_blocking_sync_tool_does_not_stall_other_agents():
    entered, release = threading.Event(), threading.Event()

    def blocking_lookup(place: str) -> str:
        """Look something up, synchronously: it blocks until the test lets it go."""
        entered.set()
        # Run on the event loop, it would block the quick agent too, for the whole wait.
        return "found" if release.wait(timeout=30) else "never released"

    slow_agent, _ = agent([tool_calls(("blocking_lookup", {"place": "x"})), "ok"],
                          tools=[blocking_lookup])
    quick_agent, _ = agent(["quick answer"])
    slow_task = asyncio.create_task(slow_agent.ainvoke("slow"))
    assert await asyncio.to_thread(entered.wait, 30)
    quick = await quick_agent.ainvoke("quick")  # while the sync tool is blocked
    release.set()
    slow = await slow_task
    assert quick["messages"][-1].content == "quick answer"
    assert [m.content for m in slow["messages"] if m.type == "tool"] == ["found"]


async def test_each_tool_call_is_timed_once():
    async def plain(x: int) -> str:
        """A plain function: the action module makes it a tool bounded by its timeout."""
        await asyncio.sleep(5)
        return "never"

    @bounded_tool(timeout_s=0.05)
    async def quick_bound(x: int) -> str:
        """Bounded by its own, shorter timeout."""
        await asyncio.sleep(5)
        return "never"

    @bounded_tool(timeout_s=None)
    async def unbounded(x: int) -> str:
        """Bounded by nothing: the module's timeout is not added around it."""
        await asyncio.sleep(0.3)
        return "finished"

    action = ActionModule([plain, quick_bound, unbounded], timeout_s=0.1)
    results = await action.run(AIMessage(content="", tool_calls=[
        {"name": name, "args": {"x": 1}, "id": name}
        for name in ("plain", "quick_bound", "unbounded")]))
    assert [m.content for m in results] == [
        "Error: tool 'plain' timed out after 0.1 s.",
        "Error: tool 'quick_bound' timed out after 0.05 s.",
        "finished"]


async def test_tool_failures_come_back_to_the_model():
    @tool
    def broken(x: int) -> int:
        """Always fails."""
        raise ValueError("the gauge is broken")

    @tool
    async def stuck(x: int) -> int:
        """Never returns."""
        await asyncio.Event().wait()
        return x

    reply = AIMessage(content="", tool_calls=[
        {"name": "broken", "args": {"x": 1}, "id": "c1"},
        {"name": "stuck", "args": {"x": 1}, "id": "c2"},
        {"name": "teleport", "args": {}, "id": "c3"},
        {"name": "broken", "args": {"x": "not a number"}, "id": "c4"},
    ], invalid_tool_calls=[{"name": "broken", "args": "{x: oops", "id": "c5",
                            "error": "bad json", "type": "invalid_tool_call"}])
    navigator, model = agent([reply, "I could not measure it."], tools=[broken, stuck],
                             tool_timeout_s=0.2)
    state = await navigator.ainvoke("measure")  # returns only if stuck's call is cut
    results = {m.tool_call_id: m for m in state["messages"] if m.type == "tool"}
    assert all(m.status == "error" for m in results.values())
    assert "the gauge is broken" in results["c1"].content
    assert "timed out after 0.2 s" in results["c2"].content
    assert "no tool named 'teleport'" in results["c3"].content and "broken" in results["c3"].content
    assert "invalid arguments for tool 'broken'" in results["c4"].content
    assert "not valid JSON" in results["c5"].content
    assert state["messages"][-1].content == "I could not measure it."
    assert len(model.calls[1]) == 1 + 1 + 1 + 5  # system, human, AI and the five results


async def test_a_step_with_only_unparseable_calls_is_answered():
    garbled = AIMessage(content="", invalid_tool_calls=[{
        "name": "depth", "args": "{place:", "id": "c1", "error": "bad",
        "type": "invalid_tool_call"}])
    navigator, _ = agent([garbled, "Sorry, let me retry."], tools=[depth])
    state = await navigator.ainvoke("depth?")
    assert "not valid JSON" in state["messages"][2].content
    assert state["messages"][-1].content == "Sorry, let me retry."


async def test_max_steps_ends_the_turn_with_a_clear_message():
    navigator, model = agent(lambda m: tool_calls(("depth", {"place": "again"})), tools=[depth],
                             max_steps=3)
    state = await navigator.ainvoke("loop forever")
    assert "stopped after 3 tool steps" in state["messages"][-1].content
    assert len(model.calls) == 4  # three steps ran; the fourth call's tools did not
    assert sum(1 for m in state["messages"] if m.type == "tool" and m.status != "error") == 3
    # Every tool call is answered, so the thread stays valid for the next turn.
    calls = {c["id"] for m in state["messages"] if m.type == "ai" for c in m.tool_calls}
    assert calls == {m.tool_call_id for m in state["messages"] if m.type == "tool"}


# -- streaming --------------------------------------------------------------------------------


async def test_tokens_stream_from_the_model_node():
    navigator, _ = agent(["Heading two seven zero, steady."])
    chunks = [(c, meta) async for c, meta in navigator.astream("course?", stream_mode="messages")]
    tokens = [c.content for c, meta in chunks
              if isinstance(c, AIMessageChunk) and meta["langgraph_node"] == "act" and c.content]
    assert len(tokens) == 5
    assert "".join(tokens) == "Heading two seven zero, steady."


async def test_tokens_stream_through_the_real_provider_path():
    async with FakeOpenAIServer(["Steady as she goes."], tokens_per_second=50) as srv:
        model = chat_model("openai:scripted", base_url=srv.base_url)
        navigator = Agent("navigator", model, PROFILE, checkpointer=False)
        pieces = [p async for p in navigator.astream_text("course?")]
    assert len(pieces) >= 4 and "".join(pieces) == "Steady as she goes."


async def test_stream_modes_pass_through():
    seen = {mode: 0 for mode in ("values", "updates", "messages", "custom")}

    @tool
    def noisy(x: int) -> str:
        """Reports progress."""
        from langgraph.config import get_stream_writer

        get_stream_writer()({"progress": x})
        return "ok"

    navigator, _ = agent([tool_calls(("noisy", {"x": 7})), "done"], tools=[noisy])
    async for mode, _ in navigator.astream("go", stream_mode=list(seen)):
        seen[mode] += 1
    assert all(count > 0 for count in seen.values()), seen


# -- human in the loop and time travel ---------------------------------------------------------


async def test_interrupt_and_resume_inside_a_tool():
    @tool
    def change_course(heading: int) -> str:
        """Change course, after the captain approves."""
        answer = interrupt({"question": f"Turn to {heading}?"})
        return f"turned to {heading}" if answer == "yes" else "course kept"

    navigator, _ = agent([tool_calls(("change_course", {"heading": 90})), "Turned."],
                         tools=[change_course], checkpointer=InMemorySaver())
    paused = await navigator.ainvoke("turn east", thread_id="t1")
    assert paused["__interrupt__"][0].value == {"question": "Turn to 90?"}
    done = await navigator.aresume("t1", "yes")
    assert done["messages"][-2].content == "turned to 90"
    assert done["messages"][-1].content == "Turned."


async def test_interrupt_before_tools_for_approval():
    navigator, _ = agent([tool_calls(("depth", {"place": "bay"})), "12 m."], tools=[depth],
                         checkpointer=InMemorySaver(), interrupt_before=["tools"])
    await navigator.ainvoke("depth?", thread_id="t")
    assert (await navigator.aget_state("t")).next == ("tools",)
    done = await navigator.aresume("t")
    assert done["messages"][-1].content == "12 m."


async def test_time_travel_forks_from_an_earlier_checkpoint():
    navigator, _ = agent(["first answer", "second answer", "forked answer"],
                         checkpointer=InMemorySaver())
    await navigator.ainvoke("one", thread_id="t")
    await navigator.ainvoke("two", thread_id="t")
    history = [s async for s in navigator.aget_state_history("t")]
    after_first = next(s for s in history if len(s.values.get("messages", [])) == 2
                       and not s.next)
    forked = await navigator.ainvoke("another two", thread_id="t",
                                     checkpoint_id=after_first.config["configurable"]
                                     ["checkpoint_id"])
    assert [m.content for m in forked["messages"]] == ["one", "first answer", "another two",
                                                       "forked answer"]


# -- memory -----------------------------------------------------------------------------------


async def test_remember_runs_after_the_reply_without_delaying_it():
    written = asyncio.Event()

    class SlowMemory(InMemoryMemory):
        async def remember(self, messages, *, user_id, thread_id):
            # Until the test lets it write (or 30 s pass): a reply that waited for it would
            # come after the note.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(written.wait(), 30)
            await super().remember(messages, user_id=user_id, thread_id=thread_id)

    memory = SlowMemory()
    navigator, _ = agent(["noted", "you like the north route"], memory=memory)
    await navigator.ainvoke("I prefer the north route", user_id="ann")
    assert memory.notes == []  # the reply came first; the note is still being written
    written.set()
    await navigator.flush()
    assert memory.notes[0].text == "The user said: I prefer the north route"
    state = await navigator.ainvoke("which route do I prefer?", user_id="ann")
    assert state["context"] == "The user said: I prefer the north route"


async def test_one_users_memories_are_not_recalled_for_another():
    memory = InMemoryMemory()
    navigator, model = agent(lambda m: "ok", memory=memory)
    await asyncio.gather(*(navigator.ainvoke(f"my secret harbour is {name}town", user_id=name)
                           for name in ("ann", "bob", "cy")))
    await navigator.flush()
    for name in ("ann", "bob", "cy"):
        recalled = await memory.recall("secret harbour", user_id=name)
        assert f"{name}town" in recalled
        assert all(f"{other}town" not in recalled for other in {"ann", "bob", "cy"} - {name})


# -- inside other graphs ----------------------------------------------------------------------


async def test_the_agent_graph_is_a_subgraph_with_interrupts_and_streaming():
    @tool
    def confirm(what: str) -> str:
        """Ask a human to confirm."""
        return "confirmed" if interrupt(what) else "refused"

    inner, _ = agent([tool_calls(("confirm", {"what": "anchor?"})), "Anchored in the bay."],
                     tools=[confirm])
    parent = StateGraph(MessagesState)
    parent.add_node("navigator", inner.graph)
    parent.add_edge(START, "navigator")
    graph = parent.compile(checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "p"}}
    paused = await graph.ainvoke({"messages": [("user", "anchor")]}, config)
    assert paused["__interrupt__"][0].value == "anchor?"
    tokens = []
    async for namespace, (chunk, _meta) in graph.astream(Command(resume=True), config,
                                                        stream_mode="messages", subgraphs=True):
        if isinstance(chunk, AIMessageChunk) and chunk.content:
            tokens.append(chunk.content)
            assert namespace and namespace[0].startswith("navigator")
    assert "".join(tokens) == "Anchored in the bay."
    final = await graph.aget_state(config)
    assert final.values["messages"][-1].content == "Anchored in the bay."


def test_sync_wrappers_for_scripts():
    navigator, _ = agent(["aye", "aye again"])
    assert navigator.ask("ready?") == "aye"
    assert navigator.invoke("again?")["messages"][-1].content == "aye again"


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
