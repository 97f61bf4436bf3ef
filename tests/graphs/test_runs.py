"""Run records and traces: what ran, how it ended, what it cost, step by step."""

import asyncio
import os
import subprocess
import sys
import textwrap

import pytest
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import interrupt

from ponder import Agent
from ponder.graphs.runs import RunRecorder, ThreadBusy
from ponder.testing import ScriptedChatModel, tool_calls
from ponder.tools import calculator


@pytest.fixture
async def recorder(database_url):
    store = RunRecorder(database_url)
    yield store
    await store.aclose()


async def test_a_successful_run_and_its_step_tree(recorder):
    model = ScriptedChatModel(replies=[tool_calls(("calculator", {"expression": "6*7"})), "42"])
    agent = Agent("calc", model, tools=[calculator], checkpointer=False)
    state = await recorder.run("calc", agent, "6 times 7?", thread_id="t1")
    run, steps = await recorder.get(state["run_id"])
    assert (run.status, run.target, run.thread_id) == ("success", "calc", "t1")
    assert run.input == "6 times 7?" and run.ended_at >= run.created_at
    assert run.usage["scripted"]["calls"] == 2
    shape = [(s["kind"], s["name"], s["parent"]) for s in steps]
    assert shape == [("node", "act", None), ("model", "scripted", 0), ("node", "tools", None),
                     ("tool", "calculator", 2), ("node", "act", None), ("model", "scripted", 4)]
    assert all(s["latency_s"] is not None for s in steps)
    assert steps[1]["input_tokens"] > 0 and steps[1]["output_tokens"] > 0


async def test_failed_and_interrupted_runs_are_recorded(recorder):
    broken = Agent("broken", ScriptedChatModel(replies=[]), checkpointer=False)
    with pytest.raises(Exception, match="ran out of replies"):
        await recorder.run("broken", broken, "hi")

    @tool
    def approve(what: str) -> str:
        """Ask a human."""
        return interrupt(what)

    waiting = Agent("waiting", ScriptedChatModel(replies=[tool_calls(("approve",
                                                                      {"what": "ok?"}))]),
                    tools=[approve], checkpointer=InMemorySaver())
    await recorder.run("waiting", waiting, "go", thread_id="w")
    runs = {r.target: r for r in await recorder.list()}
    assert runs["broken"].status == "error"
    assert "ran out of replies" in runs["broken"].error
    assert runs["waiting"].status == "interrupted"
    _, steps = await recorder.get(runs["broken"].id)
    assert any(s["error"] for s in steps)  # the failing model call is in the trace
    assert await recorder.get("run_nope") is None


def test_ponder_run_is_recorded_and_shown(tmp_path):  # agents and graphs alike
    (tmp_path / "bot.py").write_text(textwrap.dedent("""
        from ponder import Agent
        from ponder.testing import ScriptedChatModel, tool_calls
        from ponder.tools import calculator
        bot = Agent("bot", ScriptedChatModel(replies=[
            tool_calls(("calculator", {"expression": "1+1"})), "2"]), tools=[calculator],
            checkpointer=False)

        from langchain_core.messages import AIMessage
        from langgraph.graph import START, MessagesState, StateGraph
        async def reply(state):
            return {"messages": [AIMessage("graph says hi")]}
        builder = StateGraph(MessagesState)
        builder.add_node("reply", reply)
        builder.add_edge(START, "reply")
        greeter = builder.compile(name="greeter")
    """))
    env = {**os.environ, "PONDER_DATABASE_URL": f"sqlite:///{tmp_path}/cli.db"}

    def ponder(*args):
        return subprocess.run([sys.executable, "-m", "ponder.cli", *args], capture_output=True,
                              text=True, env=env, timeout=60)

    assert ponder("run", f"{tmp_path}/bot.py:bot", "1+1?").returncode == 0
    listed = ponder("runs", "list")
    assert "bot" in listed.stdout and "success" in listed.stdout
    run_id = next(w for w in listed.stdout.split() if w.startswith("run_"))
    shown = ponder("runs", "show", run_id)
    assert shown.returncode == 0
    for expected in ("node act", "model scripted", "tool calculator", "node tools"):
        assert expected in shown.stdout
    assert ponder("run", f"{tmp_path}/bot.py:greeter", "hi").stdout.strip() == "graph says hi"

    async def latest() -> dict:
        recorder = RunRecorder(env["PONDER_DATABASE_URL"])
        try:
            return (await recorder.list(1))[0]
        finally:
            await recorder.aclose()

    graph_run = asyncio.run(latest())
    assert (graph_run.target, graph_run.status) == ("greeter", "success")
    assert graph_run.output == "graph says hi"
    missing = ponder("runs", "show", "run_nope")
    assert missing.returncode == 2 and "no run has the id" in missing.stderr


async def test_runs_are_exported_as_opentelemetry_spans(recorder):
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):  # the first test in this process to need one
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    model = ScriptedChatModel(replies=[tool_calls(("calculator", {"expression": "6*7"})), "42"])
    agent = Agent("calc", model, tools=[calculator], checkpointer=False)
    state = await recorder.run("calc", agent, "6 times 7?", thread_id="t1")
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert set(spans) == {"run calc", "node act", "model scripted", "node tools",
                          "tool calculator"}
    root = spans["run calc"]
    assert root.attributes["ponder.run.id"] == state["run_id"]
    assert root.attributes["ponder.run.status"] == "success"
    assert spans["node tools"].parent.span_id == root.context.span_id
    assert spans["tool calculator"].parent.span_id == spans["node tools"].context.span_id
    assert spans["model scripted"].attributes["gen_ai.usage.input_tokens"] > 0
    assert all(root.start_time <= s.start_time <= s.end_time <= root.end_time
               for s in spans.values())
    exporter.shutdown()


async def test_runs_their_caller_executes_are_no_workers(recorder):
    """A worker runs pending runs by their TARGET string; a turn or an Agent Server run is
    executed by the process that made it (its target is an object there), so no worker may
    take it, however long it waits for its thread."""
    mine = await recorder.create("echo", "hi", thread_id="t", executor="caller")
    theirs = await recorder.create("module:agent", "hi", thread_id="u")
    assert await recorder.claimable(10, stale_s=10) == [theirs]
    assert (await recorder.claim(mine, recorder.holder, 10)).executor == "caller"


async def test_a_turn_waits_for_its_thread_and_a_reject_keeps_nothing(recorder):
    agent = Agent("calc", ScriptedChatModel(replies=["one", "two"]), checkpointer=False)
    async with recorder.recording("calc", "first", "t") as (first, _, finish):
        with pytest.raises(ThreadBusy, match="busy"):
            await recorder.run("calc", agent, "second", thread_id="t",
                               multitask_strategy="reject")
        waiting = asyncio.create_task(recorder.run("calc", agent, "third", thread_id="t"))
        await asyncio.sleep(0.3)
        assert not waiting.done()  # enqueued behind the first
        finish("success")
    state = await waiting
    runs = await recorder.list()
    assert [r.input for r in runs] == ["third", "first"]  # the rejected one left no record
    assert [r.status for r in runs] == ["success", "success"]
    assert state["run_id"] == runs[0].id


async def test_turns_of_one_thread_never_overlap_across_processes(database_url):
    """Two recorders (two processes' worth of engines) start 12 turns on one thread at once:
    every turn runs, and never two at a time (on Postgres, two claims in flight must not both
    miss each other)."""
    recorders = [RunRecorder(database_url, heartbeat_s=0.2) for _ in range(2)]
    inside, overlaps, done = [], [], []

    async def turn(i: int) -> None:
        async with recorders[i % 2].recording("t", f"turn {i}", "shared") as (_, _, finish):
            if inside:
                overlaps.append(i)
            inside.append(i)
            await asyncio.sleep(0.02)
            inside.remove(i)
            done.append(i)
            finish("success")

    try:
        await asyncio.wait_for(asyncio.gather(*(turn(i) for i in range(12))), 120)
    finally:
        for recorder in recorders:
            await recorder.aclose()
    assert overlaps == [] and sorted(done) == list(range(12))
