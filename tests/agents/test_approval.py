"""Tool approval: a person approves, edits or rejects a call before it runs, each answer by its
interrupt's id; calls that need no approval run at once; "always" is remembered on the thread;
answers that are not decisions, and edited arguments that do not fit, run nothing. On SQLite
and on Postgres."""

import os
import subprocess
import sys
import time
from collections import Counter

import pytest
from langchain_core.messages import ToolMessage
from langchain_core.tools import StructuredTool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.types import Command

from ponder import Agent
from ponder.agents import ActionModule, ResumeError, approval
from ponder.config import ConfigurationError
from ponder.testing import ScriptedChatModel, tool_calls
from ponder.tools import tool


class Outbox:
    """Tools with side effects, counting every run with its arguments."""

    def __init__(self) -> None:
        self.runs: Counter[str] = Counter()
        outbox = self

        @tool(approval=True)
        def send_email(to: str, subject: str) -> str:
            """Send an email."""
            outbox.runs[f"send_email {to} {subject}"] += 1
            return f"sent {subject!r} to {to}"

        @tool(approval=lambda args: args["amount"] > 100)
        def pay(amount: int) -> str:
            """Pay an amount, in dollars (more than 100 needs approval)."""
            outbox.runs[f"pay {amount}"] += 1
            return f"paid {amount}"

        @tool
        def search(query: str) -> str:
            """Search (needs no approval)."""
            outbox.runs[f"search {query}"] += 1
            return f"results for {query}"

        self.tools = [send_email, pay, search]


def outbox_agent(replies, checkpointer, **options) -> tuple[Agent, Outbox, ScriptedChatModel]:
    outbox = Outbox()
    model = ScriptedChatModel(replies=replies)
    return Agent("outbox", model, tools=outbox.tools, checkpointer=checkpointer,
                 **options), outbox, model


def results(state) -> dict[str, str]:
    """Tool call id -> the content of its tool message."""
    return {m.tool_call_id: m.content for m in state["messages"] if isinstance(m, ToolMessage)}


def requests(state) -> list[dict]:
    return [i.value for i in state["__interrupt__"]]


async def test_approve_edit_and_reject_parallel_calls_answered_in_the_opposite_order(
        database_url):
    step = tool_calls(("send_email", {"to": "ann@example.com", "subject": "hello"}),
                      ("send_email", {"to": "bob@example.com", "subject": "invoice"}),
                      ("pay", {"amount": 500}))
    agent, outbox, model = outbox_agent([step, "Done."], database_url)
    try:
        paused = await agent.ainvoke("mail ann and bob, pay 500", thread_id="t")
        ann, bob, pay = step.tool_calls
        # One request per call, in the order of the calls, each with an interrupt id of its own.
        assert requests(paused) == [
            {"id": ann["id"], "tool": "send_email", "args": ann["args"],
             "description": "Send an email."},
            {"id": bob["id"], "tool": "send_email", "args": bob["args"],
             "description": "Send an email."},
            {"id": pay["id"], "tool": "pay", "args": {"amount": 500},
             "description": "Pay an amount, in dollars (more than 100 needs approval)."}]
        ids = [i.id for i in paused["__interrupt__"]]
        assert len(set(ids)) == 3 and not outbox.runs  # nothing ran

        done = await agent.aresume("t", {
            ids[2]: {"decision": "reject", "message": "Not this month."},
            ids[1]: {"decision": "edit",
                     "args": {"to": "bob@example.com", "subject": "invoice 42"}},
            ids[0]: {"decision": "approve"}})
        assert "__interrupt__" not in done
        assert outbox.runs == Counter({"send_email ann@example.com hello": 1,
                                       "send_email bob@example.com invoice 42": 1})
        assert results(done) == {ann["id"]: "sent 'hello' to ann@example.com",
                                 bob["id"]: "sent 'invoice 42' to bob@example.com",
                                 pay["id"]: "Not this month."}
        # The model saw every answer, the rejection as an error result, before it replied.
        seen = {m.tool_call_id: m for m in model.calls[1] if isinstance(m, ToolMessage)}
        assert seen[pay["id"]].status == "error" and seen[pay["id"]].content == "Not this month."
        assert done["messages"][-1].content == "Done." and len(model.calls) == 2
        assert await agent.ainterrupts("t") == []
    finally:
        await agent.aclose()


async def test_a_call_that_needs_no_approval_runs_at_once(database_url):
    step = tool_calls(("search", {"query": "tea"}), ("pay", {"amount": 20}),
                      ("pay", {"amount": 900}))
    agent, outbox, _ = outbox_agent([step, "Paid."], database_url)
    try:
        paused = await agent.ainvoke("buy tea", thread_id="t")
        # The search and the small payment ran; the big one waits for its approval.
        assert [r["args"] for r in requests(paused)] == [{"amount": 900}]
        assert outbox.runs == Counter({"search tea": 1, "pay 20": 1})
        done = await agent.aresume("t", {"decision": "approve"})  # the one pending
        assert outbox.runs == Counter({"search tea": 1, "pay 20": 1, "pay 900": 1})
        assert sorted(results(done).values()) == ["paid 20", "paid 900", "results for tea"]
        assert done["messages"][-1].content == "Paid."
    finally:
        await agent.aclose()


async def test_always_allow_is_remembered_on_the_thread(database_url):
    first = tool_calls(("send_email", {"to": "ann@example.com", "subject": "one"}))
    second = tool_calls(("send_email", {"to": "ann@example.com", "subject": "two"}))
    elsewhere = tool_calls(("send_email", {"to": "ann@example.com", "subject": "three"}))
    agent, outbox, _ = outbox_agent([first, "Sent.", second, "Sent again.", elsewhere],
                                    database_url)
    try:
        paused = await agent.ainvoke("mail ann", thread_id="t")
        [asked] = paused["__interrupt__"]
        done = await agent.aresume("t", {asked.id: {"decision": "approve", "always": True}})
        assert done["allowed_tools"] == ["send_email"]
        # A later call of the tool on the thread runs without asking.
        later = await agent.ainvoke("mail ann again", thread_id="t")
        assert "__interrupt__" not in later and later["messages"][-1].content == "Sent again."
        assert outbox.runs == Counter({"send_email ann@example.com one": 1,
                                       "send_email ann@example.com two": 1})
        # Another thread still asks.
        other = await agent.ainvoke("mail ann", thread_id="u")
        assert [r["args"]["subject"] for r in requests(other)] == ["three"]
        assert outbox.runs["send_email ann@example.com three"] == 0
    finally:
        await agent.aclose()


async def test_policies_of_the_agent_override_the_tools(tmp_path):
    def delete_repo(name: str) -> str:
        """Delete a repository."""
        return f"deleted {name}"

    # What an MCP server marks destructive arrives as a tool's metadata (langchain-mcp-adapters).
    destructive = StructuredTool.from_function(delete_repo,
                                               metadata={"destructiveHint": True})
    outbox = Outbox()
    action = ActionModule([*outbox.tools, destructive])
    assert sorted(action.policies) == ["delete_repo", "pay", "send_email"]
    assert action.needs_approval({"name": "delete_repo", "args": {"name": "x"}})
    assert action.needs_approval({"name": "pay", "args": {"amount": 101}})
    assert not action.needs_approval({"name": "pay", "args": {"amount": 100}})
    assert not action.needs_approval({"name": "send_email", "args": {}}, allowed={"send_email"})

    overridden = ActionModule([*outbox.tools, destructive],
                              approve={"delete_repo": False, "search": True,
                                       "pay": lambda args: args["amount"] > 10})
    assert sorted(overridden.policies) == ["pay", "search", "send_email"]
    assert overridden.needs_approval({"name": "pay", "args": {"amount": 11}})
    # A policy that fails asks (it fails closed).
    failing = ActionModule(outbox.tools, approve={"pay": lambda args: args["missing"]})
    assert failing.needs_approval({"name": "pay", "args": {"amount": 1}})

    with pytest.raises(ConfigurationError, match="approve names 'send_mail', which is no tool"):
        Agent("a", ScriptedChatModel(replies=[]), tools=outbox.tools,
              approve={"send_mail": True}, checkpointer=False)
    with pytest.raises(ConfigurationError, match="the approval policy of tool 'pay' is 'yes'"):
        Agent("a", ScriptedChatModel(replies=[]), tools=outbox.tools, approve={"pay": "yes"},
              checkpointer=False)
    with pytest.raises(ConfigurationError, match="approval is 'always'"):
        tool(approval="always")(delete_repo)


@pytest.mark.parametrize("answer,problem", [
    ({"decision": "maybe"}, "the decision \"maybe\" is not one of approve, edit, reject"),
    ("yes", 'the answer to a tool approval is "yes"'),
    ({"decision": "edit"}, 'an edit gives the new arguments as an object in "args"'),
    ({"decision": "approve", "args": {"amount": 1}}, '"args" belong to an edit'),
    ({"decision": "reject", "always": True}, '"always" is true or false, and only with'),
    ({"decision": "approve", "why": "x"}, "an approval answer has no field 'why'"),
])
async def test_an_answer_that_is_not_a_decision_runs_nothing(database_url, answer, problem):
    step = tool_calls(("pay", {"amount": 500}))
    agent, outbox, _ = outbox_agent([step, "Paid."], database_url)
    try:
        paused = await agent.ainvoke("pay", thread_id="t")
        [asked] = paused["__interrupt__"]
        with pytest.raises(ResumeError, match="asks to approve a call of tool 'pay'") as bad:
            await agent.aresume("t", {asked.id: answer})
        assert problem in str(bad.value)
        with pytest.raises(ResumeError, match="no pending interrupt of thread 't' has the id"):
            await agent.aresume("t", {"0" * 32: {"decision": "approve"}})
        assert not outbox.runs
        assert [i.id for i in await agent.ainterrupts("t")] == [asked.id]  # still asked
        done = await agent.aresume("t", {asked.id: {"decision": "approve"}})
        assert outbox.runs == Counter({"pay 500": 1}) and done["messages"][-1].content == "Paid."
    finally:
        await agent.aclose()


async def test_edited_arguments_that_do_not_fit_are_asked_about_again(database_url):
    step = tool_calls(("send_email", {"to": "ann@example.com", "subject": "hi"}))
    agent, outbox, _ = outbox_agent([step, "Sent."], database_url)
    try:
        paused = await agent.ainvoke("mail ann", thread_id="t")
        [first] = paused["__interrupt__"]
        again = await agent.aresume("t", {first.id: {"decision": "edit",
                                                     "args": {"to": "bob@example.com"}}})
        [second] = again["__interrupt__"]
        assert second.id != first.id and not outbox.runs
        assert second.value["error"] == ("the edited arguments do not fit tool 'send_email': "
                                         "subject: Field required")
        assert second.value["args"] == {"to": "ann@example.com", "subject": "hi"}
        done = await agent.aresume("t", {second.id: {
            "decision": "edit", "args": {"to": "bob@example.com", "subject": "hi"}}})
        assert outbox.runs == Counter({"send_email bob@example.com hi": 1})
        assert done["messages"][-1].content == "Sent."
    finally:
        await agent.aclose()


async def test_an_agent_without_approval_policies_has_no_approval_step(tmp_path):
    agent = Agent("plain", ScriptedChatModel(replies=[]), tools=Outbox().tools[2:],
                  checkpointer=False)
    assert "tools_done" not in agent.graph.nodes
    assert "tools_done" in Agent("gated", ScriptedChatModel(replies=[]), tools=Outbox().tools,
                                 checkpointer=False).graph.nodes


async def test_a_planner_s_tool_loop_asks_before_any_call_runs():
    """Inside one node (a planner's loop, ``ActionModule.run``) the questions come one after
    another, and the calls run once all are answered: a node runs again from its start."""
    outbox = Outbox()
    action = ActionModule(outbox.tools)
    step = tool_calls(("send_email", {"to": "ann@example.com", "subject": "hi"}),
                      ("search", {"query": "tea"}), ("pay", {"amount": 500}))

    async def plan(state):
        return {"messages": await action.run(step)}

    graph = (StateGraph(MessagesState).add_node("plan", plan).add_edge(START, "plan")
             .compile(checkpointer=InMemorySaver()))
    config = {"configurable": {"thread_id": "t"}}
    first = await graph.ainvoke({"messages": [("user", "go")]}, config)
    [email] = first["__interrupt__"]
    assert email.value["tool"] == "send_email" and not outbox.runs
    second = await graph.ainvoke(Command(resume={email.id: {"decision": "approve"}}), config)
    [payment] = second["__interrupt__"]
    assert payment.value["tool"] == "pay" and not outbox.runs
    done = await graph.ainvoke(Command(resume={payment.id: {"decision": "reject"}}), config)
    assert [m.content for m in done["messages"][1:]] == [
        "sent 'hi' to ann@example.com", "results for tea",
        "The person did not approve this call of 'pay': it was not run."]
    assert outbox.runs == Counter({"send_email ann@example.com hi": 1, "search tea": 1})


def test_edited_arguments_are_checked_against_a_json_schema_too():
    """MCP tools carry their arguments' JSON Schema as a dict."""
    schema = {"type": "object", "properties": {"name": {"type": "string"}},
              "required": ["name"]}
    delete = StructuredTool(name="delete_repo", description="Delete a repository.",
                            args_schema=schema, coroutine=lambda **_: None,
                            metadata={"destructiveHint": True})
    approval.check_args(delete, {"name": "x"})
    with pytest.raises(approval.ApprovalError,
                       match="do not fit tool 'delete_repo': arguments: 'name' is a required "
                             "property$"):
        approval.check_args(delete, {"extra": 1})
    with pytest.raises(approval.ApprovalError, match="name: 5 is not of type 'string'"):
        approval.check_args(delete, {"name": 5})


def test_a_spec_declares_approval_policies(tmp_path):
    (tmp_path / "policies.py").write_text("def big(args):\n    return args['amount'] > 100\n")
    (tmp_path / "shop_tools.py").write_text(
        "def pay(amount: int) -> str:\n    'Pay an amount.'\n    return 'paid'\n\n"
        "def search(query: str) -> str:\n    'Search.'\n    return 'found'\n")
    spec = tmp_path / "agent.yaml"
    spec.write_text("name: shop\ntools: [shop_tools.py:pay, shop_tools.py:search]\n"
                    "approve: {pay: 'policies.py:big', search: true}\n")
    agent = Agent.from_spec(spec, model=ScriptedChatModel(replies=[]), checkpointer=False)
    assert agent.action.needs_approval({"name": "pay", "args": {"amount": 101}})
    assert not agent.action.needs_approval({"name": "pay", "args": {"amount": 5}})
    assert agent.action.needs_approval({"name": "search", "args": {"query": "x"}})
    spec.write_text("name: shop\ntools: [shop_tools.py:pay]\napprove: {pai: true}\n")
    with pytest.raises(ConfigurationError, match=r"agent.yaml: approve names 'pai', which is "
                                                 r"no tool of this agent: its tools are pay"):
        Agent.from_spec(spec, model=ScriptedChatModel(replies=[]), checkpointer=False)


KILLED = """
import asyncio, os, sys, time
from pathlib import Path
from ponder import Agent
from ponder.testing import ScriptedChatModel, tool_calls
from ponder.tools import tool

folder = Path(sys.argv[1])

@tool(approval=True, timeout_s=None)
def deploy(version: str) -> str:
    \"\"\"Deploy a version.\"\"\"
    with open(folder / "started", "a") as f:
        f.write(version + "\\n")
    if os.environ.get("DIE") == "in the call":
        (folder / "dying").write_text("")
        time.sleep(600)
    with open(folder / "deployed", "a") as f:
        f.write(version + "\\n")
    return f"deployed {version}"

async def reply(messages):
    if messages[-1].type == "human":
        return tool_calls(("deploy", {"version": "1.2"}))
    if os.environ.get("DIE") == "after the call":  # before the turn's answer
        (folder / "dying").write_text("")
        await asyncio.sleep(600)
    return "Deployed."

async def main(command):
    agent = Agent("ops", ScriptedChatModel(replies=reply), tools=[deploy],
                  checkpointer=f"sqlite:///{folder}/ops.db")
    async with agent:
        if command == "ask and approve":
            [asked] = (await agent.ainvoke("deploy 1.2", thread_id="t"))["__interrupt__"]
            assert not (folder / "started").exists()
            state = await agent.aresume("t", {asked.id: {"decision": "approve"}})
        else:  # go on from the last checkpoint, as a takeover does
            state = await agent.ainvoke(None, thread_id="t")
        print(state["messages"][-1].content)

asyncio.run(main(sys.argv[2]))
"""


@pytest.mark.parametrize("die,started", [("after the call", "1.2\n"),
                                         ("in the call", "1.2\n1.2\n")])
def test_an_approved_call_runs_once_across_a_kill_9_between_approval_and_result(
        tmp_path, die, started):
    """A process killed (kill -9) after the approval: the approval is kept (nobody is asked
    again), and the call runs again only when it had not finished."""
    script = tmp_path / "ops.py"
    script.write_text(KILLED)

    def run(command, **env):
        return subprocess.Popen([sys.executable, str(script), str(tmp_path), command],
                                env={**os.environ, **env}, stdout=subprocess.PIPE, text=True)

    approving = run("ask and approve", DIE=die)
    try:
        for _ in range(600):
            if (tmp_path / "dying").exists() or approving.poll() is not None:
                break
            time.sleep(0.1)
        assert (tmp_path / "dying").exists(), "the approved call did not run"
    finally:
        approving.kill()  # SIGKILL: no shutdown, nothing more saved
        approving.wait(timeout=30)
    going_on = run("go on")
    out, _ = going_on.communicate(timeout=60)
    assert going_on.returncode == 0 and out.strip() == "Deployed."  # not asked again
    assert (tmp_path / "deployed").read_text() == "1.2\n"  # finished once
    assert (tmp_path / "started").read_text() == started
