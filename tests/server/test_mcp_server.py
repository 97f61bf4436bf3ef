"""Agents as MCP tools: ``/mcp`` of a real server and ``ponder mcp`` over stdio, driven by the
official ``mcp`` SDK's ClientSession and by fastmcp's Client."""

import asyncio
import os
import sys
import textwrap

import httpx
import pytest
from fastmcp import Client
from fastmcp.client.transports import StreamableHttpTransport
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from ponder import Agent, ConfigurationError, KnowledgeBase, Profile
from ponder.graphs.runs import RunRecorder
from ponder.memory.knowledge.documents import Document
from ponder.server import create_app
from ponder.server.keys import KeyStore
from ponder.testing import BackgroundServer, ScriptedChatModel
from ponder.tools import calculator
from tests.helpers.cli import ponder
from tests.helpers.models import echo_model


@pytest.fixture
def db(tmp_path):
    return f"sqlite:///{tmp_path}/server.db"


@pytest.fixture
async def docs(db):
    kb = KnowledgeBase(db, name="docs")
    await kb.add([Document("Ponder agents answer over MCP and the Responses API.", "mcp.md",
                           title="Serving"),
                  Document("Bananas are yellow when ripe.", "fruit.md")])
    yield kb
    await kb.aclose()


@pytest.fixture
async def server(db, docs):
    agents = [Agent("helper", echo_model(), Profile(role="a helper", goal="answer"),
                    tools=[calculator], memory=docs, checkpointer=db),
              Agent("other", ScriptedChatModel(replies=lambda m: "other"), checkpointer=db)]
    async with BackgroundServer(create_app(agents, database_url=db)) as url:
        yield url


async def session_call(url, *calls, headers=None):
    """Open an MCP session on ``url`` with the SDK's client; the results of ``calls`` (name,
    arguments, progress list) made in turn, and the tool list."""
    async with create_mcp_http_client(headers=headers) as http, \
            streamable_http_client(f"{url}/mcp", http_client=http) as (read, write, _), \
            ClientSession(read, write) as session:
        await session.initialize()
        tools = (await session.list_tools()).tools
        results = []
        for name, arguments, progress in calls:
            async def on_progress(value, total, message, progress=progress):
                progress.append((value, message))
            results.append(await session.call_tool(name, arguments,
                                                   progress_callback=on_progress))
        return tools, results


async def test_tools_list_agents_and_their_knowledge_bases(server):
    tools, _ = await session_call(server)
    by_name = {t.name: t for t in tools}
    assert set(by_name) == {"helper", "other", "search_docs"}
    helper = by_name["helper"]
    assert helper.inputSchema["required"] == ["message"]
    assert set(helper.inputSchema["properties"]) == {"message", "thread_id"}
    assert "a helper" in helper.description and "answer" in helper.description
    assert set(helper.outputSchema["properties"]) == {"reply", "thread_id"}
    assert by_name["search_docs"].annotations.readOnlyHint is True


async def test_call_an_agent_continue_its_thread_and_see_progress(server, db):
    progress = []
    _, [first] = await session_call(server, ("helper", {"message": "hello"}, progress))
    assert not first.isError
    assert first.content[0].text == "turn 1: you said hello"
    thread = first.structuredContent["thread_id"]
    assert first.structuredContent["reply"] == "turn 1: you said hello"
    # The reply's pieces came as progress notifications while it streamed.
    assert len(progress) > 3 and "".join(m for _, m in progress) == "turn 1: you said hello"
    assert [v for v, _ in progress] == sorted(v for v, _ in progress)

    # Another session goes on in the thread the reply named.
    _, [second, fresh] = await session_call(
        server, ("helper", {"message": "again", "thread_id": thread}, []),
        ("helper", {"message": "new"}, []))
    assert second.content[0].text == "turn 2: you said again"
    assert second.structuredContent["thread_id"] == thread
    assert fresh.content[0].text == "turn 1: you said new"
    assert fresh.structuredContent["thread_id"] != thread

    runs = RunRecorder(db)
    try:
        recorded = [r for r in await runs.list() if r.target == "helper"]
    finally:
        await runs.aclose()
    assert len(recorded) == 3 and {r.status for r in recorded} == {"success"}
    assert sum(r.thread_id == thread for r in recorded) == 2


async def test_calls_on_one_thread_at_once_run_one_after_the_other(server):
    _, [first] = await session_call(server, ("helper", {"message": "start"}, []))
    thread = first.structuredContent["thread_id"]
    replies = await asyncio.gather(*(session_call(
        server, ("helper", {"message": text, "thread_id": thread}, [])) for text in "ab"))
    texts = sorted(result.content[0].text for _, [result] in replies)
    assert texts in (["turn 2: you said a", "turn 3: you said b"],
                     ["turn 2: you said b", "turn 3: you said a"])


async def test_progress_names_the_tools_the_agent_calls(server):
    progress = []
    _, [result] = await session_call(server, ("helper", {"message": "compute it"}, progress))
    assert result.content[0].text == "The result is 42."
    messages = [m for _, m in progress]
    assert messages[:2] == ["calling calculator", "calculator answered"]
    assert "".join(messages[2:]) == "The result is 42."


async def test_search_a_knowledge_base(server):
    _, [result] = await session_call(server, ("search_docs", {"query": "bananas", "k": 1}, []))
    assert not result.isError
    hits = result.structuredContent["hits"]
    assert [h["source"] for h in hits] == ["fruit.md"]
    assert "Bananas are yellow" in result.content[0].text


async def test_fastmcp_client(server):
    async with Client(f"{server}/mcp") as client:
        assert {t.name for t in await client.list_tools()} == {"helper", "other",
                                                               "search_docs"}
        result = await client.call_tool("other", {"message": "hi"})
        assert result.data.reply == "other" and result.content[0].text == "other"
        again = await client.call_tool("helper", {"message": "one"})
        on = await client.call_tool("helper", {"message": "two",
                                               "thread_id": again.data.thread_id})
        assert on.data.reply == "turn 2: you said two"


async def test_bad_arguments_are_a_tool_error(server):
    async with Client(f"{server}/mcp") as client:
        result = await client.call_tool("helper", {"thread_id": "x"}, raise_on_error=False)
        assert result.is_error and "message" in result.content[0].text


async def test_keys_and_their_rate_limits_are_enforced(db):
    store = KeyStore(db)
    try:
        _, secret = await store.create("mcp-client")
        _, slow = await store.create("slow", requests_per_minute=2)
    finally:
        await store.aclose()
    agent = Agent("bot", ScriptedChatModel(replies=lambda m: "hello"), checkpointer=db)
    async with BackgroundServer(create_app([agent], database_url=db)) as url:
        async with httpx.AsyncClient() as http:
            refused = await http.post(f"{url}/mcp", json={
                "jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                headers={"accept": "application/json, text/event-stream"})
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "invalid_api_key"
        with pytest.raises(ExceptionGroup) as caught:  # the SDK's client, without a key
            await session_call(url)
        assert caught.group_contains(httpx.HTTPStatusError, match="401 Unauthorized")

        _, [reply] = await session_call(url, ("bot", {"message": "hi"}, []),
                                        headers={"Authorization": f"Bearer {secret}"})
        assert reply.content[0].text == "hello"
        transport = StreamableHttpTransport(f"{url}/mcp", headers={"x-api-key": secret})
        async with Client(transport) as client:
            assert (await client.call_tool("bot", {"message": "hi"})).data.reply == "hello"

        async with httpx.AsyncClient() as http:
            statuses = [(await http.post(f"{url}/mcp", json={
                "jsonrpc": "2.0", "id": i, "method": "tools/list"}, headers={
                "accept": "application/json, text/event-stream",
                "authorization": f"Bearer {slow}"})) for i in range(3)]
        assert [r.status_code for r in statuses][2] == 429
        assert statuses[2].headers["retry-after"]
        assert all(r.status_code != 429 for r in statuses[:2])


AGENT_FILE = textwrap.dedent("""
    from ponder import Agent
    from ponder.testing import ScriptedChatModel

    def reply(messages):
        users = [m for m in messages if m.type == "human"]
        return f"turn {len(users)}: you said {users[-1].content}"

    bot = Agent("bot", ScriptedChatModel(replies=reply))
""")


async def test_ponder_mcp_over_stdio(tmp_path):
    (tmp_path / "agent.py").write_text(AGENT_FILE)
    database = f"sqlite:///{tmp_path}/stdio.db"
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "ponder.cli", "mcp", "agent.py:bot"], cwd=tmp_path,
        env={**os.environ, "PONDER_DATABASE_URL": database})
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        assert [t.name for t in (await session.list_tools()).tools] == ["bot"]
        first = await session.call_tool("bot", {"message": "hello"})
        assert first.content[0].text == "turn 1: you said hello"
        second = await session.call_tool("bot", {"message": "again", "thread_id":
                                                 first.structuredContent["thread_id"]})
        assert second.content[0].text == "turn 2: you said again"
    runs = RunRecorder(database)
    try:
        assert [r.status for r in await runs.list()] == ["success", "success"]
    finally:
        await runs.aclose()


def test_ponder_mcp_with_a_target_that_does_not_exist_says_so(tmp_path):
    done = ponder("mcp", "missing.py:bot", cwd=tmp_path,
                  env={"PONDER_DATABASE_URL": f"sqlite:///{tmp_path}/x.db"})
    assert done.returncode == 2 and "missing.py does not exist" in done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""


async def test_an_agent_that_fails_is_a_tool_error_and_the_server_goes_on(db):
    def broken(messages):
        raise RuntimeError("the model's secret internals")
    agents = [Agent("broken", ScriptedChatModel(replies=broken), checkpointer=db),
              Agent("fine", ScriptedChatModel(replies=lambda m: "fine"), checkpointer=db)]
    async with BackgroundServer(create_app(agents, database_url=db)) as url:
        _, [failed, fine] = await session_call(url, ("broken", {"message": "hi"}, []),
                                               ("fine", {"message": "hi"}, []))
    assert failed.isError and "secret" not in failed.content[0].text
    assert "the agent failed" in failed.content[0].text
    assert not fine.isError and fine.content[0].text == "fine"


def test_an_agent_named_like_a_search_tool_is_refused(db, docs):
    agents = [Agent("helper", ScriptedChatModel(replies=lambda m: "x"), memory=docs,
                    checkpointer=db),
              Agent("search_docs", ScriptedChatModel(replies=lambda m: "x"), checkpointer=db)]
    with pytest.raises(ConfigurationError, match="'search_docs' and the knowledge base 'docs'"):
        create_app(agents, database_url=db)


async def test_a_compiled_graph_is_a_tool_too(tmp_path):
    from langgraph.graph import START, MessagesState, StateGraph

    def answer(state: MessagesState):
        users = [m for m in state["messages"] if m.type == "human"]
        return {"messages": [("ai", f"graph turn {len(users)}")]}

    builder = StateGraph(MessagesState)
    builder.add_node("answer", answer)
    builder.add_edge(START, "answer")
    app = create_app([builder.compile(name="plain-graph")],
                     database_url=f"sqlite:///{tmp_path}/graph.db")
    async with BackgroundServer(app) as url, Client(f"{url}/mcp") as client:
        assert [t.name for t in await client.list_tools()] == ["plain-graph"]
        first = await client.call_tool("plain-graph", {"message": "one"})
        second = await client.call_tool("plain-graph", {"message": "two",
                                                        "thread_id": first.data.thread_id})
    assert (first.data.reply, second.data.reply) == ("graph turn 1", "graph turn 2")
