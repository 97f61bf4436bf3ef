"""Fallback models: when a model fails for good, the next one answers, and says so."""

import pytest
from langchain_core.tools import tool

from ponder.agents.agent import Agent
from ponder.config import ConfigurationError, Settings
from ponder.models import (
    ModelCallError,
    ResiliencePolicy,
    ResilientChatModel,
    chat_model,
    track_usage,
)
from ponder.testing import FakeOpenAIServer, Fault, ScriptedChatModel, tool_calls

NO_ENV = Settings()
ONE_TRY = ResiliencePolicy(max_attempts=1, timeout_s=10)
FAST = ResiliencePolicy(max_attempts=2, backoff_initial_s=0.01, backoff_max_s=0.02,
                        timeout_s=10)


def served(srv, name: str, policy=FAST, **options) -> ResilientChatModel:
    return chat_model(f"openai:{name}", base_url=srv.base_url, policy=policy, settings=NO_ENV,
                      **options)


async def test_a_500_left_after_the_retries_goes_to_the_next_model():
    async with FakeOpenAIServer(["never"], faults=[Fault.server_error(500)] * 2) as first, \
            FakeOpenAIServer(["from the fallback"]) as second:
        model = served(first, "gpt-a", fallbacks=[served(second, "gpt-b")])
        with track_usage() as log:
            reply = await model.ainvoke("hi")
    assert reply.content == "from the fallback"
    assert len(first.requests) == 2  # the retry policy ran out first
    assert second.requests[0]["model"] == "gpt-b"
    # Which model answered: in the usage record (scope and the model's own log) and the reply.
    assert [(c.provider, c.model) for c in log.recent] == [("openai", "gpt-b")]
    assert [c.model for c in model.usage.recent] == ["gpt-b"]
    assert reply.response_metadata["model_name"] == "gpt-b"


@pytest.mark.parametrize("fault", [Fault.hang(60), Fault.rate_limit(0.01)],
                         ids=["timeout", "rate limit"])
async def test_a_timeout_or_rate_limit_left_after_the_retries_falls_back(fault):
    policy = ResiliencePolicy(max_attempts=1, timeout_s=1)
    async with FakeOpenAIServer(["from b"], faults=[fault]) as srv:
        model = served(srv, "a", policy, fallbacks=["openai:b"])
        reply = await model.ainvoke("hi")
    assert reply.content == "from b"
    assert [r["model"] for r in srv.requests] == ["a", "b"]


async def test_a_context_length_error_goes_to_the_next_model_at_once():
    # One endpoint, two models: the second is named by a string, on the same base URL.
    async with FakeOpenAIServer(["long context answer"],
                                faults=[Fault.context_length()]) as srv:
        model = served(srv, "small", fallbacks=["openai:large"])
        reply = await model.ainvoke("a long question")
    assert reply.content == "long context answer"
    assert [r["model"] for r in srv.requests] == ["small", "large"]  # not retried: moved on
    assert reply.response_metadata["model_name"] == "large"


@pytest.mark.parametrize("fault", [Fault.content_filter(), Fault.content_filter(in_prompt=True)],
                         ids=["answer filtered", "prompt refused"])
async def test_a_content_filter_goes_to_the_next_model(fault):
    async with FakeOpenAIServer(["unfiltered"], faults=[fault]) as srv:
        model = served(srv, "strict", fallbacks=["openai:lenient"])
        reply = await model.ainvoke("hi")
    assert reply.content == "unfiltered"
    assert [r["model"] for r in srv.requests] == ["strict", "lenient"]


async def test_a_bad_request_does_not_fall_back():
    async with FakeOpenAIServer(["x"], faults=[Fault.server_error(400)]) as srv:
        model = served(srv, "a", fallbacks=["openai:b"])
        with pytest.raises(ModelCallError, match="openai:a failed after 1 attempt.*400"):
            await model.ainvoke("hi")
    assert len(srv.requests) == 1


async def test_when_every_model_fails_the_error_names_each():
    faults = [Fault.server_error(503)] * 2 + [Fault.context_length()]
    async with FakeOpenAIServer(["never"], faults=faults) as srv:
        model = served(srv, "a", fallbacks=["openai:b"])
        with pytest.raises(ModelCallError) as caught:
            await model.ainvoke("hi")
    message = str(caught.value)
    assert message.startswith("every model failed: openai:a: ")
    assert "503" in message and "openai:b failed" in message and "context length" in message


async def test_streams_fall_back_before_their_first_output():
    async with FakeOpenAIServer(["streamed by b"],
                                faults=[Fault.server_error(502)] * 2) as srv:
        model = served(srv, "a", fallbacks=["openai:b"])
        chunks = [chunk async for chunk in model.astream("hi")]
    merged = chunks[0]
    for chunk in chunks[1:]:
        merged += chunk
    assert merged.content == "streamed by b"
    assert merged.response_metadata["model_name"] == "b"
    assert [r["model"] for r in srv.requests] == ["a", "a", "b"]


async def test_a_filtered_stream_falls_back():
    async with FakeOpenAIServer(["clean stream"], faults=[Fault.content_filter()]) as srv:
        model = served(srv, "a", fallbacks=["openai:b"])
        text = "".join([chunk.text async for chunk in model.astream("hi")])
    assert text == "clean stream"


async def test_a_stream_broken_after_output_does_not_fall_back():
    async with FakeOpenAIServer(["one two three four"], faults=[Fault.cut_stream(2)]) as srv:
        model = served(srv, "a", ONE_TRY, fallbacks=["openai:b"])
        with pytest.raises(ModelCallError, match="after output had started"):
            async for _ in model.astream("hi"):
                pass
    assert [r["model"] for r in srv.requests] == ["a"]


async def test_an_agent_with_tools_falls_back_to_a_model_of_another_kind():
    """The tools reach each model in its own provider's format; the run goes on."""

    @tool
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    fallback = ScriptedChatModel(replies=[tool_calls(("add", {"a": 2, "b": 3})), "5"])
    async with FakeOpenAIServer(["never"], faults=[Fault.server_error(500)] * 4) as srv:
        model = served(srv, "a", fallbacks=[fallback])
        agent = Agent("calc", model, tools=[add], checkpointer=False)
        assert await agent.aask("2+3?") == "5"
    assert "tools" in srv.requests[0]  # the primary got the tools in OpenAI's format
    assert fallback.calls[1][-1].content == "5"  # the tool ran between the two calls


def test_an_unknown_fallback_is_refused_at_construction():
    with pytest.raises(ConfigurationError, match=r"fallbacks\[1\] 'nope:m'.*unknown model "
                                                 r"provider 'nope'"):
        chat_model("openai:a", base_url="http://127.0.0.1:9/v1", settings=NO_ENV,
                   fallbacks=["openai:b", "nope:m"])
    with pytest.raises(ConfigurationError, match=r"fallbacks\[0\] 'gpt-4o'.*not a "
                                                 "provider:model string"):
        chat_model("openai:a", base_url="http://127.0.0.1:9/v1", settings=NO_ENV,
                   fallbacks=["gpt-4o"])
    with pytest.raises(ConfigurationError, match=r"fallbacks\[0\] is a int"):
        chat_model("openai:a", base_url="http://127.0.0.1:9/v1", settings=NO_ENV,
                   fallbacks=[3])
