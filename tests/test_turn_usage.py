"""Every model call made for a turn is paid for: a planner's samples, a memory's query rewriting
and fact extraction (in the background, after the reply), a conversation summary, a tool's own
model call. They count in the turn's usage (OpenAI responses, the threads API), its run record,
/metrics and the caller's key's token limit, whatever model makes them and whether or not they
pass the run's config on."""

import asyncio
import json
import time

import httpx
import openai
import pytest
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_core.tools import tool

from ponder import Agent, track_usage
from ponder.graphs.runs import RunRecorder
from ponder.memory.conversation import ConversationMemory
from ponder.server import create_app
from ponder.server.keys import KeyStore
from ponder.testing import BackgroundServer, ScriptedChatModel, tool_calls
from tests.helpers.cli import ponder
from tests.helpers.priced import priced, thinker


def shop_model() -> ScriptedChatModel:
    def reply(messages):
        system = messages[0].content if messages[0].type == "system" else ""
        if system.startswith("Rewrite"):
            return priced("sencha stock")
        if system.startswith("Extract"):
            return priced("[]")
        if system.startswith("Summarise the conversation"):
            return priced("The customer asks about tea.")
        if system.startswith("Write one SQL"):
            return priced("SELECT count(*) FROM tins")
        if messages[-1].type == "tool":
            return priced("We have 7 tins of Sencha.")
        return priced(tool_calls(("stock", {"item": "sencha"}), content="Let me check."))
    return ScriptedChatModel(replies=reply)


class RewritingMemory:
    """Recall rewrites the query with the model; remember extracts facts with it, after the
    reply. Neither passes the run's config on."""

    def __init__(self, model) -> None:
        self.model = model

    async def recall(self, query, *, user_id=None, thread_id=None):
        rewritten = await self.model.ainvoke([SystemMessage("Rewrite the question as a search "
                                                            "query."), HumanMessage(query)])
        return f"You searched your notes for: {rewritten.text}"

    async def remember(self, messages, *, user_id=None, thread_id=None):
        await asyncio.sleep(0.2)  # well after the reply
        await self.model.ainvoke([SystemMessage("Extract durable facts as a JSON list."),
                                  HumanMessage(messages[-1].text)])


def shop(checkpointer=False) -> Agent:
    model = shop_model()

    @tool
    async def stock(item: str) -> str:
        """How many tins of a tea are in stock."""
        await model.ainvoke([SystemMessage("Write one SQL query for the question."),
                             HumanMessage(item)])
        return "7"

    return Agent("shop", model, tools=[stock], memory=RewritingMemory(model),
                 conversation=ConversationMemory(max_tokens=100), checkpointer=checkpointer)


def kinds(model: ScriptedChatModel) -> list[str]:
    """What each call the model received was for."""
    found = []
    for messages in model.calls:
        system = messages[0].content if messages[0].type == "system" else ""
        found.append(next((k for k in ("Rewrite", "Extract", "Summarise", "Write one SQL")
                           if system.startswith(k)), "reply"))
    return found


LONG = "How many tins of Sencha do you have? " + "I drink a lot of green tea. " * 20


async def test_a_turn_counts_every_call_in_its_scope():
    agent = shop()
    with track_usage() as usage:
        await agent.ainvoke(LONG, thread_id="t")
        await agent.flush()
    assert sorted(set(kinds(agent.model))) == ["Extract", "Rewrite", "Write one SQL", "reply"]
    assert usage.calls == len(agent.model.calls) == 5
    assert usage.total_tokens == 7 * usage.calls
    assert usage.by_model == {"scripted": {"calls": 5, "input_tokens": 15, "output_tokens": 20,
                                           "total_tokens": 35}}


async def test_the_run_record_counts_planner_summary_tool_and_memory_calls(tmp_path):
    recorder = RunRecorder(f"sqlite:///{tmp_path}/runs.db")
    try:
        planner = thinker()
        state = await recorder.run("thinker", planner, "What is 3 times 6?")
        assert state["messages"][-1].text == "18"
        record = await recorder.record(state["run_id"])
        assert len(planner.model.calls) == 10  # 5 paths, 2 calls each
        assert record.usage == {"scripted": {"calls": 10, "input_tokens": 30,
                                             "output_tokens": 40, "total_tokens": 70}}

        agent = shop(checkpointer=f"sqlite:///{tmp_path}/shop.db")
        for question in (LONG, "And now?"):  # the second turn starts with a summary
            state = await recorder.run("shop", agent, question, thread_id="t")
        # The record waited for the memory's extraction, made after the reply.
        second = kinds(agent.model)[5:]
        assert sorted(set(second)) == ["Extract", "Rewrite", "Summarise", "Write one SQL",
                                       "reply"]
        record = await recorder.record(state["run_id"])
        calls = len(second)
        assert record.usage == {"scripted": {"calls": calls, "input_tokens": 3 * calls,
                                             "output_tokens": 4 * calls,
                                             "total_tokens": 7 * calls}}
        await agent.aclose()
    finally:
        await recorder.aclose()


def tokens_in_metrics(url: str, agent: str) -> int:
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith(f'ponder_tokens_total{{agent="{agent}"}}'):
            return int(line.split()[-1])
    return 0


def test_served_usage_metrics_and_a_planner(tmp_path):
    db = f"sqlite:///{tmp_path}/served.db"
    planner, store = thinker(db), shop(db)
    with BackgroundServer(create_app([planner, store], database_url=db)) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused")
        reply = client.chat.completions.create(
            model="thinker", messages=[{"role": "user", "content": "What is 3 times 6?"}])
        assert reply.choices[0].message.content == "18"
        assert len(planner.model.calls) == 10
        assert (reply.usage.prompt_tokens, reply.usage.completion_tokens,
                reply.usage.total_tokens) == (30, 40, 70)
        stream = client.chat.completions.create(
            model="thinker", stream=True, stream_options={"include_usage": True},
            messages=[{"role": "user", "content": "And 6 times 3?"}])
        assert [c.usage.total_tokens for c in stream if c.usage] == [70]
        assert tokens_in_metrics(url, "thinker") == 140

        answered = client.chat.completions.create(
            model="shop", messages=[{"role": "user", "content": "How many tins?"}])
        # The reply's usage: rewriting, two replies and the tool's SQL; the memory's extraction
        # comes after it, and is charged once it is made.
        assert answered.usage.total_tokens == 7 * 4
        deadline = time.monotonic() + 10
        while kinds(store.model).count("Extract") < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert tokens_in_metrics(url, "shop") == 7 * len(store.model.calls) == 7 * 5

        from langgraph_sdk import get_sync_client

        client = get_sync_client(url=url, api_key=None, timeout=60)
        thread = client.threads.create()["thread_id"]
        out = client.runs.wait(thread, "thinker", input={
            "messages": [{"role": "user", "content": "3 times 6?"}]})
        assert out["messages"][-1]["content"] == "18"
        assert tokens_in_metrics(url, "thinker") == 210


@pytest.mark.parametrize("stream", [False, True])
async def test_a_small_token_limit_throttles_a_planner(tmp_path, stream):
    db = f"sqlite:///{tmp_path}/limited.db"
    store = KeyStore(db)
    _, secret = await store.create("thrifty", tokens_per_minute=50)
    await store.aclose()
    async with BackgroundServer(create_app([thinker(db)], database_url=db)) as url:
        client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=secret, max_retries=0)
        ask = {"model": "thinker", "messages": [{"role": "user", "content": "3 times 6?"}]}
        if stream:
            async for _ in await client.chat.completions.create(**ask, stream=True):
                pass
        else:
            await client.chat.completions.create(**ask)
        with pytest.raises(openai.RateLimitError) as limited:  # 70 tokens spent of 50
            await client.chat.completions.create(**ask)
        assert "tokens per minute" in limited.value.message
        assert 1 <= int(limited.value.response.headers["retry-after"]) <= 60


async def test_the_agent_server_api_counts_and_charges_a_run(tmp_path):
    from langgraph_sdk import get_client

    db = f"sqlite:///{tmp_path}/agent_server.db"
    store = KeyStore(db)
    _, secret = await store.create("thrifty", tokens_per_minute=50)
    _, ops = await store.create("ops")
    await store.aclose()
    async with BackgroundServer(create_app([thinker(db)], database_url=db)) as url:
        client = get_client(url=url, api_key=secret)
        thread = (await client.threads.create())["thread_id"]
        out = await client.runs.wait(thread, "thinker", input={
            "messages": [{"role": "user", "content": "3 times 6?"}]})
        assert out["messages"][-1]["content"] == "18"
        with pytest.raises(httpx.HTTPStatusError) as limited:  # the key's 50 tokens are spent
            await client.runs.wait(thread, "thinker", input={
                "messages": [{"role": "user", "content": "again?"}]})
        assert limited.value.response.status_code == 429
        async with httpx.AsyncClient(base_url=url) as http:
            metrics = await http.get("/metrics", headers={"x-api-key": ops})
        assert 'ponder_tokens_total{agent="thinker"} 70' in metrics.text
    recorder = RunRecorder(db)
    try:
        [record] = await recorder.list()
    finally:
        await recorder.aclose()
    assert record.usage["scripted"]["total_tokens"] == 70 and record.usage["scripted"][
        "calls"] == 10


async def test_ponder_run_reports_and_records_a_planners_calls(tmp_path):
    (tmp_path / "planner_target.py").write_text(
        "from tests.helpers.priced import thinker\nthinker = thinker()\n")
    db = f"sqlite:///{tmp_path}/runs.db"
    done = ponder("run", f"{tmp_path}/planner_target.py:thinker", "What is 3 times 6?",
                  "--json", env={"PONDER_DATABASE_URL": db})
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["output"] == "18"
    assert (result["usage"]["calls"], result["usage"]["total_tokens"]) == (10, 70)
    recorder = RunRecorder(db)
    try:
        [run] = await recorder.list()
    finally:
        await recorder.aclose()
    assert run.usage["scripted"]["total_tokens"] == 70
    shown = ponder("runs", "show", run.id, env={"PONDER_DATABASE_URL": db})
    assert "scripted: 10 calls, 30 in, 40 out" in shown.stdout, shown.stdout
