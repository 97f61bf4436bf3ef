"""The offline test kit: ScriptedChatModel and FakeOpenAIServer, against the official client."""

import asyncio
import json

import openai
import pytest
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.tools import tool
from pydantic import BaseModel

from ponder.testing import (
    FakeOpenAIServer,
    Fault,
    ScriptedChatModel,
    ScriptExhausted,
    fake_embedding,
    tool_calls,
)


@tool
def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


class Verdict(BaseModel):
    answer: str
    confidence: float


# -- ScriptedChatModel -----------------------------------------------------------------------


async def test_replies_are_used_in_turn_and_calls_recorded():
    model = ScriptedChatModel(replies=["first", AIMessage(content="second")])
    assert (await model.ainvoke("a")).content == "first"
    assert model.invoke("b").content == "second"
    assert [m[-1].content for m in model.calls] == ["a", "b"]
    with pytest.raises(ScriptExhausted, match="ran out of replies: it had 2"):
        await model.ainvoke("c")


async def test_a_function_script_sees_the_messages():
    async def echo(messages):
        await asyncio.sleep(0)
        return messages[-1].content.upper()

    model = ScriptedChatModel(replies=echo)
    assert (await model.ainvoke([HumanMessage("shout")])).content == "SHOUT"


async def test_tool_calls_with_bound_tools():
    model = ScriptedChatModel(replies=[tool_calls(("add", {"a": 1, "b": 2}))]).bind_tools([add])
    reply = await model.ainvoke("add 1 and 2")
    assert reply.tool_calls[0]["name"] == "add" and reply.tool_calls[0]["args"] == {"a": 1, "b": 2}
    assert reply.tool_calls[0]["id"]


async def test_structured_output():
    model = ScriptedChatModel(replies=[{"answer": "yes", "confidence": 0.9}, '{"answer": "no", '
                                       '"confidence": 0.1}'])
    structured = model.with_structured_output(Verdict)
    assert await structured.ainvoke("?") == Verdict(answer="yes", confidence=0.9)
    assert await structured.ainvoke("?") == Verdict(answer="no", confidence=0.1)


async def test_streaming_yields_word_chunks_tool_calls_and_usage():
    model = ScriptedChatModel(replies=[AIMessage(content="a b c", tool_calls=[
        {"name": "add", "args": {"a": 1, "b": 2}, "id": "c1"}])])
    chunks = [c async for c in model.astream("x")]
    assert [c.content for c in chunks[:3]] == ["a", " b", " c"]
    total = chunks[0]
    for c in chunks[1:]:
        total += c
    assert total.content == "a b c"
    assert total.tool_calls[0]["args"] == {"a": 1, "b": 2}
    assert total.usage_metadata["output_tokens"] > 0


async def test_concurrent_calls_each_get_one_reply():
    model = ScriptedChatModel(replies=[str(i) for i in range(100)], latency=0.01)
    replies = await asyncio.gather(*(model.ainvoke("x") for _ in range(100)))
    assert sorted(int(r.content) for r in replies) == list(range(100))


# -- FakeOpenAIServer with the official client ------------------------------------------------


def test_official_sync_client_non_stream_and_stream():
    with FakeOpenAIServer(["hello world", "streamed reply here"]) as srv:
        client = openai.OpenAI(base_url=srv.base_url, api_key="x")
        done = client.chat.completions.create(model="scripted",
                                              messages=[{"role": "user", "content": "hi"}])
        assert done.choices[0].message.content == "hello world"
        assert done.choices[0].finish_reason == "stop"
        assert done.usage.completion_tokens == 2
        stream = client.chat.completions.create(
            model="scripted", messages=[{"role": "user", "content": "hi"}], stream=True,
            stream_options={"include_usage": True})
        chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == (
        "streamed reply here")
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens > 0


async def test_official_async_client_streams_tool_calls_by_index():
    reply = tool_calls(("add", {"a": 1, "b": 2}), ("add", {"a": 3, "b": 4}))
    async with FakeOpenAIServer([reply, reply]) as srv:
        client = openai.AsyncOpenAI(base_url=srv.base_url, api_key="x")
        msgs = [{"role": "user", "content": "add"}]
        done = await client.chat.completions.create(model="scripted", messages=msgs)
        stream = await client.chat.completions.create(model="scripted", messages=msgs,
                                                      stream=True)
        args: dict[int, str] = {}
        names: dict[int, str] = {}
        finish = None
        async for chunk in stream:
            choice = chunk.choices[0]
            finish = choice.finish_reason or finish
            for call in choice.delta.tool_calls or []:
                args[call.index] = args.get(call.index, "") + (call.function.arguments or "")
                names[call.index] = names.get(call.index) or call.function.name
    assert done.choices[0].finish_reason == "tool_calls"
    assert [json.loads(c.function.arguments) for c in done.choices[0].message.tool_calls] == [
        {"a": 1, "b": 2}, {"a": 3, "b": 4}]
    assert names == {0: "add", 1: "add"}
    assert {i: json.loads(a) for i, a in args.items()} == {0: {"a": 1, "b": 2},
                                                             1: {"a": 3, "b": 4}}
    assert finish == "tool_calls"


def test_n_choices_and_logprobs():
    scripted_logprobs = {"content": [{"token": "Yes", "logprob": -0.1, "bytes": None,
                                      "top_logprobs": [{"token": "Yes", "logprob": -0.1},
                                                       {"token": "No", "logprob": -2.4}]}]}
    judged = AIMessage(content="Yes", response_metadata={"logprobs": scripted_logprobs})
    replies = ["4", "5", judged]
    with FakeOpenAIServer(replies) as srv:
        client = openai.OpenAI(base_url=srv.base_url, api_key="x")
        msgs = [{"role": "user", "content": "?"}]
        two = client.chat.completions.create(model="scripted", messages=msgs, n=2, logprobs=True,
                                             top_logprobs=1)
        third = client.chat.completions.create(model="scripted", messages=msgs, logprobs=True,
                                               top_logprobs=2)
    assert [c.message.content for c in two.choices] == ["4", "5"]
    assert two.choices[0].logprobs.content[0].token == "4"
    top = third.choices[0].logprobs.content[0].top_logprobs
    assert [(t.token, t.logprob) for t in top] == [("Yes", -0.1), ("No", -2.4)]


async def test_models_and_embeddings_endpoints():
    async with FakeOpenAIServer(models=["agent-a", "agent-b"], embedding_dimensions=16) as srv:
        client = openai.AsyncOpenAI(base_url=srv.base_url, api_key="x")
        models = await client.models.list()
        as_base64 = await client.embeddings.create(model="e", input=["red apple", "green"])
        as_floats = await client.embeddings.create(model="e", input="red apple",
                                                   encoding_format="float")
    assert [m.id for m in models.data] == ["agent-a", "agent-b"]
    assert as_base64.data[0].embedding == pytest.approx(fake_embedding("red apple", 16), abs=1e-6)
    assert as_floats.data[0].embedding == pytest.approx(fake_embedding("red apple", 16))
    assert len(as_base64.data) == 2


def test_similar_texts_get_similar_fake_embeddings():
    def cosine(a, b):
        return sum(x * y for x, y in zip(a, b, strict=True))

    base = fake_embedding("the cat sat on the mat")
    near, far = fake_embedding("the cat sat"), fake_embedding("stock prices")
    assert cosine(base, near) > cosine(base, far)


def test_injected_faults_reach_the_official_client():
    with FakeOpenAIServer(["ok", "a b c d e"], faults=[
        Fault.rate_limit(retry_after=7), Fault.server_error(502), None, Fault.cut_stream(2),
    ]) as srv:
        client = openai.OpenAI(base_url=srv.base_url, api_key="x", max_retries=0)
        msgs = [{"role": "user", "content": "hi"}]
        with pytest.raises(openai.RateLimitError) as limited:
            client.chat.completions.create(model="scripted", messages=msgs)
        assert limited.value.response.headers["retry-after"] == "7"
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(model="scripted", messages=msgs)
        assert client.chat.completions.create(model="s", messages=msgs).choices[0].message.content
        with pytest.raises(openai.APIError):
            list(client.chat.completions.create(model="s", messages=msgs, stream=True))


def test_bad_requests_get_openai_style_errors():
    with FakeOpenAIServer(["x"]) as srv:
        client = openai.OpenAI(base_url=srv.base_url, api_key="x", max_retries=0)
        with pytest.raises(openai.BadRequestError, match="non-empty"):
            client.chat.completions.create(model="s", messages=[])
        with pytest.raises(openai.InternalServerError, match="ran out of replies"):
            client.chat.completions.create(model="s", messages=[{"role": "user", "content": "1"}])
            client.chat.completions.create(model="s", messages=[{"role": "user", "content": "2"}])
