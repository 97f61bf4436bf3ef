"""ponder's MCP client against a real FastMCP server (tests/helpers/mcp_server.py), started over
stdio and over streamable HTTP (uvicorn on 127.0.0.1): a session per thread kept across turns,
tool lists refreshed, elicitation as interrupts, a killed server restarted, servers that are down
or reject arguments."""

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from langchain_core.messages import ToolMessage
from langchain_core.tools import tool
from langgraph_sdk import get_client

from ponder import Agent
from ponder.agents.spec import SpecError
from ponder.graphs.targets import load_target
from ponder.server.app import create_app
from ponder.testing import BackgroundServer, ScriptedChatModel, tool_calls
from ponder.tools.mcp import MCPServer, MCPServerError, elicit_result, mcp_tools
from tests.helpers.cli import ponder
from tests.helpers.serving import free_port, wait_until_up

SERVER = Path(__file__).parent.parent / "helpers" / "mcp_server.py"


def stdio_server(**options) -> MCPServer:
    return MCPServer("counter", command=sys.executable, args=[str(SERVER)], **options)


def serve_http(port: int) -> subprocess.Popen:
    """The test server over streamable HTTP: its own process, uvicorn on 127.0.0.1:port."""
    process = subprocess.Popen([sys.executable, str(SERVER), "--http", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_until_up(process, f"http://127.0.0.1:{port}/health", 60)
    return process


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    process.wait(timeout=30)


@pytest.fixture(scope="module")
def http_url():
    port = free_port()
    process = serve_http(port)
    try:
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        stop(process)


@pytest.fixture(params=["stdio", "http"])
def server(request) -> MCPServer:
    if request.param == "stdio":
        return stdio_server()
    return MCPServer("counter", url=request.getfixturevalue("http_url"))


def agent_with(server_or_tools, replies, tmp_path, **options) -> Agent:
    tools = server_or_tools if isinstance(server_or_tools, list) else [server_or_tools]
    # ``replies``: a list used in turn, or a function of the messages
    return Agent("mcp-user", ScriptedChatModel(replies=replies), tools=tools,
                 checkpointer=f"sqlite:///{tmp_path}/ponder.db", **options)


def results(state) -> list[str]:
    """The text of the tool messages of the last turn."""
    turn = []
    for message in state["messages"]:
        if message.type == "human":
            turn = []
        elif isinstance(message, ToolMessage):
            turn.append(message.text)
    return turn


async def test_tools_carry_schemas_descriptions_annotations_and_rich_results():
    server = stdio_server()
    try:
        tools = {t.name: t for t in await mcp_tools(server)}
        assert {"count", "add", "pid", "picture", "readme", "order"} <= set(tools)
        add = tools["add"]
        assert add.description == "Add two integers."
        assert add.args_schema["required"] == ["a", "b"]
        assert add.metadata["readOnlyHint"] is True
        assert tools["pid"].metadata["destructiveHint"] is True
        assert tools["count"].metadata["destructiveHint"] is False

        def call(name, args=None):
            return {"name": name, "args": args or {}, "id": f"call-{name}", "type": "tool_call"}

        picture = await tools["picture"].ainvoke(call("picture"))
        assert picture.content[0]["type"] == "image"
        assert picture.content[0]["mime_type"] == "image/png"
        readme = await tools["readme"].ainvoke(call("readme"))
        assert readme.content[0]["text"] == "Counting since 2026."
        counted = await tools["count"].ainvoke(call("count", {"step": 5}))
        assert counted.artifact == {"structured_content": {"result": 5}}
    finally:
        await server.aclose()


async def test_counter_state_lasts_the_thread_and_is_separate_per_thread(server, tmp_path):
    replies = []
    for step in (1, 2, 3, 10):
        replies += [tool_calls(("count", {"step": step})), "counted"]
    agent = agent_with(server, replies, tmp_path)
    try:
        seen = [results(await agent.ainvoke(f"count {n}", thread_id="a"))[0] for n in range(3)]
        assert seen == ["1", "3", "6"]  # one session for the three turns: the count goes on
        assert results(await agent.ainvoke("count", thread_id="b")) == ["10"]
        assert set(server._sessions) == {"a", "b"}
    finally:
        await agent.aclose()
    assert server._sessions == {}


async def test_concurrent_calls_and_threads_each_use_their_threads_session(tmp_path):
    server = stdio_server()
    # Each thread's step makes three calls at once; two threads run at once.

    def reply(messages):
        if messages[-1].type == "human":
            return tool_calls(*[("count", {"step": 1})] * 3)
        return "done"

    agent = agent_with(server, reply, tmp_path)
    try:
        a, b = await asyncio.gather(agent.ainvoke("go", thread_id="a"),
                                    agent.ainvoke("go", thread_id="b"))
        assert sorted(results(a)) == sorted(results(b)) == ["1", "2", "3"]
        pids = [results(await mcp_tools_call(server, thread, "pid"))
                for thread in ("a", "b")]
        assert pids[0] != pids[1]  # a process per thread, and one only
    finally:
        await agent.aclose()


async def test_max_concurrency_caps_the_calls_in_flight(tmp_path):
    server = stdio_server(max_concurrency=2)
    agent = agent_with(server, [tool_calls(*[("nap", {"seconds": 0.5})] * 4), "rested"],
                       tmp_path)
    try:
        peaks = results(await agent.ainvoke("nap", thread_id="t"))
        assert max(map(int, peaks)) == 2  # two at once (the server runs calls concurrently)
    finally:
        await agent.aclose()


async def mcp_tools_call(server: MCPServer, thread_id: str, name: str, args=None):
    """Call one of the thread's tools directly: ``{"messages": [ToolMessage]}``."""
    tools = {t.name: t for t in await server.tools(thread_id)}
    message = await tools[name].ainvoke({"name": name, "args": args or {}, "id": "direct",
                                         "type": "tool_call"})
    return {"messages": [message]}


async def test_idle_session_is_closed_and_a_new_one_starts(tmp_path):
    server = stdio_server(idle_timeout_s=1.0)
    replies = [tool_calls(("count", {"step": 1})), "one", tool_calls(("count", {"step": 1})), "one"]
    agent = agent_with(server, replies, tmp_path)
    try:
        assert results(await agent.ainvoke("count", thread_id="t")) == ["1"]
        async with asyncio.timeout(20):  # idle past 1 s: closed by its own task
            await server._sessions["t"].closed()
        assert server._sessions == {}
        assert results(await agent.ainvoke("count", thread_id="t")) == ["1"]  # a new session
    finally:
        await agent.aclose()


async def test_tool_list_is_refreshed_when_the_server_says_it_changed(tmp_path):
    server = stdio_server()
    replies = [tool_calls(("unlock", {})), tool_calls(("secret", {})), "in"]
    agent = agent_with(server, replies, tmp_path)
    try:
        config = {"configurable": {"thread_id": "t"}}
        assert "secret" not in {t.name for t in await agent.action.tools_for(config)}
        state = await agent.ainvoke("let me in", thread_id="t")
        assert results(state) == ["unlocked", "opensesame"]
        assert "secret" in {t.name for t in await agent.action.tools_for(config)}
    finally:
        await agent.aclose()


async def test_elicitation_is_an_interrupt_answered_through_aresume(server, tmp_path):
    replies = [tool_calls(("order", {})), "ordered", tool_calls(("greet", {})), "greeted",
               tool_calls(("order", {})), "not ordered"]
    agent = agent_with(server, replies, tmp_path)
    try:
        state = await agent.ainvoke("order tea", thread_id="t")
        (question,) = state["__interrupt__"]
        assert question.value["type"] == "mcp_elicitation"
        assert question.value["server"] == "counter" and question.value["tool"] == "order"
        assert question.value["message"] == "Which tea, and how many grams?"
        assert set(question.value["requestedSchema"]["properties"]) == {"tea", "grams"}
        state = await agent.aresume("t", {question.id: {"tea": "sencha", "grams": 50}})
        assert results(state) == ["Ordered 50 g of sencha."]

        state = await agent.ainvoke("greet me", thread_id="t")
        state = await agent.aresume("t", "Ada")  # one pending question, one field: its value
        assert results(state) == ["Hello, Ada!"]

        await agent.ainvoke("order again", thread_id="t")
        state = await agent.aresume("t", {"action": "decline"})
        assert results(state) == ["No order (decline)."]
    finally:
        await agent.aclose()


def test_elicitation_answers_are_read_by_the_requested_schema():
    from mcp import types

    one = types.ElicitRequestFormParams(message="How many?", requestedSchema={
        "type": "object", "properties": {"n": {"type": "integer"}}})
    assert elicit_result("3", one).content == {"n": 3}
    assert elicit_result('{"n": 4}', one).content == {"n": 4}
    assert elicit_result({"action": "cancel"}, one).action == "cancel"
    with pytest.raises(ValueError, match="'n' is a integer, not 'many'"):
        elicit_result("many", one)
    two = types.ElicitRequestFormParams(message="Tea?", requestedSchema={
        "type": "object", "properties": {"tea": {"type": "string"}, "grams": {"type": "integer"}}})
    with pytest.raises(ValueError, match="JSON object of tea, grams"):
        elicit_result("sencha", two)


async def test_a_killed_stdio_server_is_restarted_on_the_next_call(tmp_path):
    server = stdio_server()
    replies = [tool_calls(("pid", {})), "got it",
               tool_calls(("count", {"step": 1})), tool_calls(("count", {"step": 1})),
               tool_calls(("pid", {})), "counted"]
    agent = agent_with(server, replies, tmp_path, approve={"pid": False})  # destructiveHint
    try:
        first = int(results(await agent.ainvoke("pid?", thread_id="t"))[0])
        os.kill(first, signal.SIGKILL)
        state = await agent.ainvoke("count", thread_id="t")
        failed, counted, second = state["messages"][-6], state["messages"][-4], \
            state["messages"][-2]
        assert failed.status == "error"
        assert "'counter' ended its session during the call" in failed.text
        assert "started again on the next call" in failed.text
        assert counted.text == "1"  # a new process, a new count
        assert int(second.text) != first
    finally:
        await agent.aclose()


async def test_an_http_server_that_restarts_gets_a_new_session(tmp_path):
    port = free_port()
    process = serve_http(port)
    server = MCPServer("counter", url=f"http://127.0.0.1:{port}/mcp")
    replies = [tool_calls(("count", {"step": 1})), "one", tool_calls(("count", {"step": 1})),
               "failed", tool_calls(("count", {"step": 1})), "one again"]
    agent = agent_with(server, replies, tmp_path)
    try:
        assert results(await agent.ainvoke("count", thread_id="t")) == ["1"]
        process.kill()
        process.wait(timeout=30)
        started = time.monotonic()
        (failed,) = results(await agent.ainvoke("count", thread_id="t"))
        assert time.monotonic() - started < 10  # told at once, not at the tool timeout
        assert "'counter' ended its session during the call" in failed
        assert "a new session is opened on the next call" in failed
        process = serve_http(port)
        assert results(await agent.ainvoke("count", thread_id="t")) == ["1"]
    finally:
        await agent.aclose()
        stop(process)


async def test_rejected_arguments_reach_the_model_and_the_agent_goes_on(server, tmp_path):
    replies = [tool_calls(("add", {"a": "two", "b": 2})), tool_calls(("add", {"a": 2, "b": 2})),
               "four"]
    agent = agent_with(server, replies, tmp_path)
    try:
        state = await agent.ainvoke("2+2", thread_id="t")
        rejected = [m for m in state["messages"] if isinstance(m, ToolMessage)][0]
        assert rejected.status == "error"
        assert "valid integer" in rejected.text
        assert results(state)[1:] == ["4"]
        assert state["messages"][-1].text == "four"
    finally:
        await agent.aclose()


@tool
def shout(text: str) -> str:
    """Say it louder."""
    return text.upper()


async def test_servers_that_are_down_leave_the_agent_its_other_tools(tmp_path, caplog):
    missing = MCPServer("ghost", command="no-such-mcp-server-3f9a")
    refused = MCPServer("offline", url=f"http://127.0.0.1:{free_port()}/mcp")
    replies = [tool_calls(("shout", {"text": "hi"}), ("count", {})), "HI"]
    agent = agent_with([shout, missing, refused], replies, tmp_path)
    try:
        state = await agent.ainvoke("shout", thread_id="t")
        shouted, count = results(state)
        assert shouted == "HI"
        assert "there is no tool named 'count'" in count and "shout" in count
        down = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert any("MCP server 'ghost' is down: the command 'no-such-mcp-server-3f9a' was not "
                   "found" in m for m in down), down
        assert any("MCP server 'offline' is down: cannot connect to" in m for m in down), down
        assert not any(r.exc_info for r in caplog.records)
        with pytest.raises(MCPServerError, match="'ghost' is down"):
            await mcp_tools(missing)
    finally:
        await agent.aclose()


async def test_a_server_that_never_answers_is_down_after_connect_timeout_s():
    silent = MCPServer("silent", command=sys.executable, args=["-c", "import time; "
                                                                     "time.sleep(60)"],
                       connect_timeout_s=1)
    with pytest.raises(MCPServerError, match="'silent' is down: it did not answer within 1 s"):
        await mcp_tools(silent)
    assert await silent.thread_tools("t") == []  # down: not tried again at once
    await silent.aclose()


def test_ponder_run_says_which_server_is_down(tmp_path):
    (tmp_path / "agent.py").write_text(
        "from ponder import Agent\n"
        "from ponder.testing import ScriptedChatModel\n"
        "from ponder.tools.mcp import MCPServer\n"
        "agent = Agent('helper', ScriptedChatModel(replies=['Still here.']),\n"
        "              tools=[MCPServer('ghost', command='no-such-mcp-server-3f9a')])\n")
    done = ponder("run", "agent.py:agent", "hello", cwd=tmp_path,
                  env={"PONDER_DATABASE_URL": f"sqlite:///{tmp_path}/ponder.db",
                       "PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.returncode == 0, done.stderr
    assert "Still here." in done.stdout
    assert "MCP server 'ghost' is down: the command 'no-such-mcp-server-3f9a' was not found" \
        in done.stderr
    assert "Traceback" not in done.stderr


def write_greeter(tmp_path) -> None:
    """agent.py: ``agent``, which calls the server's greet tool and says what it returned."""
    (tmp_path / "agent.py").write_text(
        "import sys\n"
        "from ponder import Agent\n"
        "from ponder.testing import ScriptedChatModel, tool_calls\n"
        "from ponder.tools.mcp import MCPServer\n"
        "def reply(messages):\n"
        "    if messages[-1].type == 'human':\n"
        "        return tool_calls(('greet', {}))\n"
        "    return 'The tool said: ' + messages[-1].text\n"
        f"server = MCPServer('counter', command=sys.executable, args=[{str(SERVER)!r}])\n"
        "agent = Agent('greeter', ScriptedChatModel(replies=reply), tools=[server])\n")


def test_ponder_run_asks_the_servers_question_and_passes_the_answer_on(tmp_path):
    write_greeter(tmp_path)
    done = ponder("run", "agent.py:agent", "hi", cwd=tmp_path, input="Ada\n",
                  env={"PONDER_DATABASE_URL": f"sqlite:///{tmp_path}/ponder.db",
                       "PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.returncode == 0, done.stderr
    assert "What is your name?" in done.stdout
    assert "The tool said: Hello, Ada!" in done.stdout


async def test_agent_server_command_resume_answers_the_servers_question(tmp_path):
    write_greeter(tmp_path)
    url = f"sqlite:///{tmp_path}/ponder.db"
    target = load_target(f"{tmp_path}/agent.py:agent", database_url=url)
    try:
        with BackgroundServer(create_app([target], database_url=url)) as served:
            client = get_client(url=served, api_key=None)
            thread = (await client.threads.create())["thread_id"]
            paused = await client.runs.wait(thread, "greeter", input={
                "messages": [{"role": "user", "content": "hi"}]})
            [question] = paused["__interrupt__"]
            assert question["value"]["message"] == "What is your name?"
            done = await client.runs.wait(thread, "greeter", command={"resume": "Ada"})
            assert done["messages"][-1]["content"] == "The tool said: Hello, Ada!"
    finally:
        await target.aclose()


def test_spec_mcp_section_loads(tmp_path):
    (tmp_path / "agent.yaml").write_text(
        "name: counter-user\n"
        "mcp:\n"
        "  counter:\n"
        f"    command: {sys.executable}\n"
        f"    args: [{SERVER}]\n"
        "    env: {COUNTER_MODE: test}\n"
        "    tool_name_prefix: true\n"
        "  web:\n"
        "    url: http://127.0.0.1:9/mcp\n"
        "    headers: {Authorization: Bearer abc}\n")
    agent = Agent.from_spec(tmp_path / "agent.yaml",
                            model=ScriptedChatModel(replies=[tool_calls(("counter_count", {})),
                                                             "done"]))
    counter, web = agent.action.sources
    assert (counter.name, counter.command, counter.args) == ("counter", sys.executable,
                                                              [str(SERVER)])
    assert counter.cwd == str(tmp_path) and counter.env == {"COUNTER_MODE": "test"}
    assert (web.url, web.headers) == ("http://127.0.0.1:9/mcp", {"Authorization": "Bearer abc"})
    state = asyncio.run(_turn(agent))
    assert results(state) == ["1"]

    (tmp_path / "bad.yaml").write_text("name: x\nmcp:\n  both: {command: a, url: http://b}\n")
    with pytest.raises(SpecError, match="bad.yaml.*'both'.*exactly one"):
        Agent.from_spec(tmp_path / "bad.yaml", model=ScriptedChatModel(replies=[]))
    (tmp_path / "typo.yaml").write_text("name: x\nmcp:\n  s: {comand: a}\n")
    with pytest.raises(SpecError, match="typo.yaml.*comand"):
        Agent.from_spec(tmp_path / "typo.yaml", model=ScriptedChatModel(replies=[]))


async def _turn(agent: Agent) -> dict:
    try:
        return await agent.ainvoke("count", thread_id="t")
    finally:
        await agent.aclose()


def test_server_settings_are_checked():
    for bad, match in [(dict(), "exactly one"), (dict(command="x", url="http://y"), "exactly one"),
                       (dict(url="ftp://x"), "http://"), (dict(command="x", headers={"a": "b"}),
                                                          "headers are for url"),
                       (dict(command="x", idle_timeout_s=0), "idle_timeout_s")]:
        with pytest.raises(Exception, match=match):
            MCPServer("s", **bad)
    with pytest.raises(Exception, match="name"):
        MCPServer("bad name", command="x")


async def test_a_destructive_tool_needs_approval_unless_the_agent_says_otherwise(tmp_path):
    replies = [tool_calls(("pid", {}), ("add", {"a": 1, "b": 2})), "done"]
    agent = agent_with(stdio_server(), list(replies), tmp_path)
    try:
        state = await agent.ainvoke("which process?", thread_id="t")
        (asked,) = state["__interrupt__"]  # pid is marked destructiveHint; add is read-only
        assert asked.value["tool"] == "pid"
        assert results(state) == ["3"]  # the call that needs no approval ran at once
        state = await agent.aresume("t", {asked.id: {"decision": "approve"}})
        assert sorted(results(state))[0].isdigit() and "__interrupt__" not in state
    finally:
        await agent.aclose()
    (tmp_path / "trusted").mkdir()
    trusted = agent_with(stdio_server(), list(replies), tmp_path / "trusted",
                         approve={"pid": False})
    try:
        state = await trusted.ainvoke("which process?", thread_id="t")
        assert "__interrupt__" not in state and len(results(state)) == 2
    finally:
        await trusted.aclose()
