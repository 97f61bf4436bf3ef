"""A streamed reply is exactly the reply: on every surface (Agent.astream_text, the OpenAI SSE
stream, the threads API's tokens, `ponder chat`), the streamed text joins to what the same turn
answers unstreamed. Text a model writes before a tool call, summaries, a tool's own model calls,
a planner's samples and a plain graph's earlier messages are not the reply."""

import textwrap
import time

import openai
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver

from ponder import Agent
from ponder.graphs.runs import RunRecorder
from ponder.models import chat_model
from ponder.server import create_app
from ponder.testing import BackgroundServer, FakeOpenAIServer, tool_calls
from tests.helpers.cli import ponder
from tests.helpers.shop import (
    ANSWER,
    NARRATION,
    chatty_agent,
    drafting_graph,
    plain_agent,
    shop_agent,
    stubborn_agent,
    thinker_agent,
)

# The first question is long enough that the second turn starts by folding it into a summary.
QUESTIONS = ["How many tins of Sencha do you have? " + "I drink a lot of green tea. " * 20,
             "And how many now?"]
STEP_LIMIT = "I stopped after 1 tool steps"


def summarised(agent: Agent) -> bool:
    return any(call[0].content.startswith("Summarise") for call in agent.model.calls)


async def streamed(agent: Agent, question: str, thread_id: str) -> str:
    return "".join([piece async for piece in agent.astream_text(question, thread_id=thread_id)])


async def test_astream_text_is_the_reply_in_every_kind_of_turn():
    shop = shop_agent(checkpointer=InMemorySaver())
    for question in QUESTIONS:
        whole = await shop.aask(question, thread_id="whole")
        assert whole == ANSWER
        assert await streamed(shop, question, "streamed") == whole
    # The second turns folded the first into a summary; each turn's tool asked for SQL.
    assert summarised(shop)
    assert sum(c[0].content.startswith("Write one SQL") for c in shop.model.calls) == 4

    chatty = chatty_agent(checkpointer=InMemorySaver())  # streamed live, summary and all
    for question in QUESTIONS:
        whole = await chatty.aask(question, thread_id="whole")
        assert await streamed(chatty, question, "streamed") == whole
    assert whole == "Green tea keeps well in a dark tin." and summarised(chatty)

    for agent in (thinker_agent(), stubborn_agent()):
        whole = await agent.aask("What is 3 times 6?")
        assert await streamed(agent, "What is 3 times 6?", "t") == whole
    assert whole.startswith(STEP_LIMIT) and NARRATION not in whole


async def test_text_before_a_tool_call_through_a_real_provider_stream():
    @tool
    def stock(item: str) -> str:
        """How many tins of a tea are in stock."""
        return "7"

    def reply(messages):
        if messages[-1].type == "tool":
            return ANSWER
        return tool_calls(("stock", {"item": "sencha"}), content=NARRATION)

    async with FakeOpenAIServer(reply, tokens_per_second=500) as srv:
        agent = Agent("shop", chat_model("openai:scripted", base_url=srv.base_url),
                      tools=[stock], checkpointer=False)
        pieces = [piece async for piece in agent.astream_text("How many tins?")]
    assert "".join(pieces) == ANSWER
    assert len(pieces) > 1  # still in the pieces the provider streamed


async def test_without_tools_the_reply_streams_as_it_is_written():
    agent = plain_agent(tokens_per_second=20)  # 15 words: about 0.7 s of streaming
    arrivals = []
    async for piece in agent.astream_text("Course?"):
        arrivals.append((time.monotonic(), piece))
    assert "".join(p for _, p in arrivals) == await plain_agent().aask("Course?")
    # Held until the end, every piece would arrive at once.
    assert arrivals[-1][0] - arrivals[0][0] > 0.3


def served_app(tmp_path):
    db = f"sqlite:///{tmp_path}/served.db"
    agents = [shop_agent(db), thinker_agent(db), stubborn_agent(db), plain_agent(db),
              chatty_agent(db), drafting_graph()]
    return create_app(agents, database_url=db), agents[0]


TURNS = {"shop": QUESTIONS, "thinker": ["What is 3 times 6?"], "stubborn": ["Find it."],
         "plain": ["Course?"], "chatty": QUESTIONS, "drafter": ["Write it."]}


async def test_openai_stream_is_the_non_streamed_reply(tmp_path):
    app, shop = served_app(tmp_path)
    async with BackgroundServer(app) as url:
        client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused")
        for model, questions in TURNS.items():
            history = []
            for question in questions:
                history.append({"role": "user", "content": question})
                whole = await client.chat.completions.create(
                    model=model, messages=history, extra_headers={"X-Thread-Id": "whole"})
                stream = await client.chat.completions.create(
                    model=model, messages=history, stream=True,
                    extra_headers={"X-Thread-Id": "streamed"})
                text = "".join([c.choices[0].delta.content or "" async for c in stream
                                if c.choices])
                reply = whole.choices[0].message.content
                assert text == reply, model
                history.append({"role": "assistant", "content": reply})
            if model == "shop":
                assert reply == ANSWER
            if model == "drafter":
                assert reply == "The polished answer."
    assert summarised(shop)


async def test_agent_server_streams_the_reply_as_the_wait_returns_it(tmp_path):
    """Over the Agent Server API, the model tokens of a turn's last message (its
    ``messages-tuple`` chunks) are exactly the reply that ``runs.wait`` returns."""
    from langgraph_sdk import get_client

    app, shop = served_app(tmp_path)
    async with BackgroundServer(app) as url:
        client = get_client(url=url, api_key=None, timeout=60)
        for agent, questions in TURNS.items():
            whole, streaming = [(await client.threads.create())["thread_id"] for _ in range(2)]
            for question in questions:
                said = {"messages": [{"role": "user", "content": question}]}
                reply = (await client.runs.wait(whole, agent, input=said))["messages"][-1]
                pieces: dict[str, list[str]] = {}
                async for part in client.runs.stream(streaming, agent, input=said,
                                                     stream_mode=["messages-tuple", "values"]):
                    if part.event == "messages":
                        message = part.data[0]
                        if message["type"] in ("AIMessageChunk", "ai"):
                            pieces.setdefault(message["id"], []).append(message["content"])
                    elif part.event == "values":
                        last = part.data["messages"][-1]
                streamed = "".join(pieces.get(last["id"], [last["content"]]))
                assert streamed == last["content"] == reply["content"], agent
            if agent == "shop":
                assert reply["content"] == ANSWER
    assert summarised(shop)


async def test_ponder_chat_prints_the_reply_only(tmp_path):
    (tmp_path / "shop_target.py").write_text(textwrap.dedent("""
        from tests.helpers.shop import shop_agent
        shop = shop_agent(checkpointer=None)
    """))
    db = f"sqlite:///{tmp_path}/chat.db"
    done = ponder("chat", f"{tmp_path}/shop_target.py:shop",
                  input="\n".join(QUESTIONS) + "\n", env={"PONDER_DATABASE_URL": db})
    assert done.returncode == 0, done.stderr
    assert done.stdout.count(ANSWER) == 2 and "→ calling stock" in done.stdout
    assert NARRATION not in done.stdout and "SELECT" not in done.stdout
    assert "tea stocks" not in done.stdout  # the summary of the second turn
    recorder = RunRecorder(db)
    try:
        outputs = [run.output for run in await recorder.list()]
    finally:
        await recorder.aclose()
    assert outputs == [ANSWER, ANSWER]
