"""The OpenAI-compatible API over a real HTTP server, with the official client and ChatOpenAI."""

import httpx
import openai
import pytest
from langchain_openai import ChatOpenAI
from langgraph_sdk import get_client

from ponder import Agent, Profile
from ponder.server import create_app
from ponder.testing import BackgroundServer, ScriptedChatModel
from ponder.tools import calculator
from tests.helpers.graphs import TYPED_DICT_GRAPH
from tests.helpers.models import echo_model


@pytest.fixture
def server(tmp_path):
    agents = [Agent("helper", echo_model(), Profile(role="a helper"), tools=[calculator],
                    checkpointer=f"sqlite:///{tmp_path}/server.db"),
              Agent("other", ScriptedChatModel(replies=lambda m: "other"), checkpointer=False)]
    with BackgroundServer(create_app(agents)) as url:
        yield url


def test_models_and_health(server):
    client = openai.OpenAI(base_url=f"{server}/v1", api_key="unused")
    assert [m.id for m in client.models.list().data] == ["helper", "other"]
    assert httpx.get(f"{server}/health").json() == {"status": "ok"}


def test_non_stream_and_a_persistent_thread(server):
    client = openai.OpenAI(base_url=f"{server}/v1", api_key="unused")
    history = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}]
    first = client.chat.completions.create(model="helper", messages=history)
    assert first.choices[0].message.content == "turn 1: you said hello"
    assert first.choices[0].finish_reason == "stop" and first.usage.total_tokens > 0
    # The client resends the whole conversation; only the new message is applied.
    history += [{"role": "assistant", "content": first.choices[0].message.content},
                {"role": "user", "content": "again"}]
    second = client.chat.completions.create(model="helper", messages=history)
    assert second.choices[0].message.content == "turn 2: you said again"


def test_tools_run_inside_the_turn(server):
    client = openai.OpenAI(base_url=f"{server}/v1", api_key="unused")
    done = client.chat.completions.create(
        model="helper", messages=[{"role": "user", "content": "compute 6 times 7"}])
    assert done.choices[0].message.content == "The result is 42."


async def test_async_streaming_with_usage(server):
    client = openai.AsyncOpenAI(base_url=f"{server}/v1", api_key="unused")
    stream = await client.chat.completions.create(
        model="helper", messages=[{"role": "user", "content": "stream me"}], stream=True,
        stream_options={"include_usage": True}, user="ann")
    chunks = [c async for c in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "turn 1: you said stream me"
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 3
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens > 0


def test_explicit_threads_separate_conversations(server):
    client = openai.OpenAI(base_url=f"{server}/v1", api_key="unused")
    messages = [{"role": "user", "content": "hi"}]
    for thread in ("a", "b"):
        reply = client.chat.completions.create(model="helper", messages=messages,
                                               extra_headers={"X-Thread-Id": thread})
        assert reply.choices[0].message.content == "turn 1: you said hi"
    again = client.chat.completions.create(model="helper", messages=messages,
                                           extra_headers={"X-Thread-Id": "a"})
    assert again.choices[0].message.content == "turn 2: you said hi"


def test_langchain_chat_openai_against_the_server(server):
    model = ChatOpenAI(model="helper", base_url=f"{server}/v1", api_key="unused")
    assert model.invoke("from langchain").content == "turn 1: you said from langchain"
    streamed = "".join(c.content for c in model.stream("streamed too"))
    assert streamed == "turn 1: you said streamed too"


@pytest.mark.parametrize("body, status, fragment", [
    ({"model": "nobody", "messages": [{"role": "user", "content": "x"}]}, 404, "does not exist"),
    ({"model": "helper", "messages": []}, 400, "messages"),
    ({"model": "helper", "messages": [{"role": "wizard", "content": "x"}]}, 400, "role"),
    ({"model": "helper", "messages": [{"role": "assistant", "content": "x"}]}, 400,
     "must end with a user message"),
    ({"messages": [{"role": "user", "content": "x"}]}, 400, "model"),
])
def test_bad_requests_get_openai_style_errors(server, body, status, fragment):
    response = httpx.post(f"{server}/v1/chat/completions", json=body)
    assert response.status_code == status
    error = response.json()["error"]
    assert fragment in error["message"] and error["type"] == "invalid_request_error"


def test_malformed_json(server):
    response = httpx.post(f"{server}/v1/chat/completions", content=b"{not json",
                          headers={"content-type": "application/json"})
    assert response.status_code == 400 and "error" in response.json()
    assert "Traceback" not in response.text


def test_metrics_count_requests_errors_and_tokens(server):
    client = openai.OpenAI(base_url=f"{server}/v1", api_key="unused")
    client.chat.completions.create(model="helper", messages=[{"role": "user", "content": "m"}])
    httpx.post(f"{server}/v1/chat/completions", json={"model": "nobody", "messages": []})
    text = httpx.get(f"{server}/metrics").text
    assert ('ponder_requests_total{method="POST",route="/v1/chat/completions",status="200"} 1'
            in text)
    assert 'ponder_errors_total{method="POST",route="/v1/chat/completions",status="400"} 1' in text
    tokens = next(line for line in text.splitlines()
                  if line.startswith('ponder_tokens_total{agent="helper"}'))
    assert int(tokens.split()[-1]) > 0
    assert 'ponder_request_seconds_count{method="POST",route="/v1/chat/completions"} 2' in text


def test_a_compiled_langgraph_graph_is_served_too(tmp_path):
    from langgraph.graph import START, MessagesState, StateGraph

    def answer(state: MessagesState):
        users = [m for m in state["messages"] if m.type == "human"]
        return {"messages": [("ai", f"graph turn {len(users)}")]}

    builder = StateGraph(MessagesState)
    builder.add_node("answer", answer)
    builder.add_edge(START, "answer")
    graph = builder.compile(name="plain-graph")
    app = create_app([graph], database_url=f"sqlite:///{tmp_path}/graph.db")
    with BackgroundServer(app) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused")
        assert [m.id for m in client.models.list().data] == ["plain-graph"]
        history = [{"role": "user", "content": "one"}]
        first = client.chat.completions.create(model="plain-graph", messages=history)
        history += [{"role": "assistant", "content": first.choices[0].message.content},
                    {"role": "user", "content": "two"}]
        second = client.chat.completions.create(model="plain-graph", messages=history)
        streamed = client.chat.completions.create(model="plain-graph", stream=True,
                                                  messages=[{"role": "user", "content": "s"}])
        text = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
    assert first.choices[0].message.content == "graph turn 1"
    assert second.choices[0].message.content == "graph turn 2"  # persisted between requests
    assert text == "graph turn 1"


def _typed_dict_module(tmp_path):
    from ponder.loading import load_object

    path = tmp_path / "typed_graph.py"
    path.write_text(TYPED_DICT_GRAPH)
    return lambda attr: load_object(f"{path}:{attr}")


async def test_a_graph_with_a_typing_typeddict_state_is_served(tmp_path):
    graph = _typed_dict_module(tmp_path)("graph")
    app = create_app([graph], database_url=f"sqlite:///{tmp_path}/typed.db")
    async with BackgroundServer(app) as url:
        client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused")
        history = [{"role": "user", "content": "one"}]
        first = await client.chat.completions.create(model="typed-graph", messages=history)
        history += [{"role": "assistant", "content": first.choices[0].message.content},
                    {"role": "user", "content": "two"}]
        second = await client.chat.completions.create(model="typed-graph", messages=history)
        agent_server = get_client(url=url, api_key=None)
        thread = (await agent_server.threads.create())["thread_id"]
        out = await agent_server.runs.wait(thread, "typed-graph", input={
            "messages": [{"role": "user", "content": "hello"}]})
        [run] = await agent_server.runs.list(thread)
    assert first.choices[0].message.content == "typed turn 1"
    assert second.choices[0].message.content == "typed turn 2"
    assert run["status"] == "success" and out["turns"] == 1
    assert [m["content"] for m in out["messages"]] == ["hello", "typed turn 1"]


@pytest.mark.parametrize("attr", ["no_messages", "messages_not_in_input"])
def test_a_graph_without_messages_in_its_input_is_refused_clearly(tmp_path, attr):
    from ponder.config import ConfigurationError

    graph = _typed_dict_module(tmp_path)(attr)
    with pytest.raises(ConfigurationError, match=rf"the graph '{graph.name}' takes no "
                                                 r"'messages' in its input.*add_messages"):
        create_app([graph], database_url=f"sqlite:///{tmp_path}/typed.db")


# -- requests: what is honoured, and what is refused with a 400 naming the parameter ----------

WEATHER = {"name": "weather", "arguments": '{"city": "Oslo"}'}


def test_legacy_function_messages_are_tool_results(server):
    client = openai.OpenAI(base_url=f"{server}/v1", api_key="unused")
    asked = [{"role": "user", "content": "weather in Oslo?"},
             {"role": "assistant", "content": None, "function_call": WEATHER}]
    legacy = client.chat.completions.create(model="helper", user="legacy", messages=[
        *asked, {"role": "function", "name": "weather", "content": "sunny"}])
    # The result reached the model as a tool result answering the call, the last message.
    assert legacy.choices[0].message.content == "The result is sunny."
    current = client.chat.completions.create(model="helper", user="current", messages=[
        asked[0], {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_9", "type": "function", "function": WEATHER}]},
        {"role": "tool", "tool_call_id": "call_9", "content": "rainy"}])
    assert current.choices[0].message.content == "The result is rainy."
    # Legacy messages earlier in the history are accepted too; the new user message is applied.
    later = client.chat.completions.create(model="helper", user="legacy", messages=[
        *asked, {"role": "function", "name": "weather", "content": "sunny"},
        {"role": "assistant", "content": "The result is sunny."},
        {"role": "user", "content": "thanks"}])
    assert later.choices[0].message.content == "turn 1: you said thanks"


@pytest.mark.parametrize("messages, param", [
    ([{"role": "user", "content": "hi"}, {"role": "function", "name": "f", "content": "x"}],
     "messages[1]"),
    ([{"role": "user", "content": "hi"},
      {"role": "assistant", "content": None, "function_call": WEATHER},
      {"role": "function", "name": "other", "content": "x"}], "messages[2]"),
    ([{"role": "user", "content": "hi"},
      {"role": "assistant", "content": None, "function_call": {"name": "f", "arguments": "{"}},
      {"role": "function", "name": "f", "content": "x"}], "messages[1].function_call"),
])
def test_tool_results_that_answer_no_call_are_refused(server, messages, param):
    client = openai.OpenAI(base_url=f"{server}/v1", api_key="unused")
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="helper", messages=messages)
    assert refused.value.param == param


@pytest.mark.parametrize("options, param", [
    ({"n": 2}, "n"),
    ({"n": 0}, "n"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}, "tools"),
    ({"functions": [{"name": "f", "parameters": {}}]}, "functions"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"stop": ["\n"]}, "stop"),
    ({"max_tokens": 5}, "max_tokens"),
    ({"max_completion_tokens": 5}, "max_completion_tokens"),
    ({"logprobs": True}, "logprobs"),
    ({"logit_bias": {"50256": -100}}, "logit_bias"),
    ({"modalities": ["text", "audio"]}, "modalities"),
])
def test_options_an_agent_cannot_honour_are_refused(server, options, param):
    client = openai.OpenAI(base_url=f"{server}/v1", api_key="unused")
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError) as refused:
            client.chat.completions.create(
                model="helper", messages=[{"role": "user", "content": "hi"}], stream=stream,
                **options)
        assert refused.value.param == param
        assert refused.value.body["type"] == "invalid_request_error"
        assert f"{param}" in refused.value.body["message"]


@pytest.mark.parametrize("part", [
    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
    {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
    {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0=",
                              "filename": "a.pdf"}},
])
def test_parts_other_than_text_are_refused_not_dropped(server, part):
    client = openai.OpenAI(base_url=f"{server}/v1", api_key="unused")
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="helper", messages=[
            {"role": "user", "content": [{"type": "text", "text": "what is this?"}, part]}])
    assert refused.value.param == "messages[0].content[1]"
    assert part["type"] in refused.value.body["message"] and "text only" in \
        refused.value.body["message"]


def test_options_that_ask_nothing_an_agent_cannot_do_are_accepted(server):
    client = openai.OpenAI(base_url=f"{server}/v1", api_key="unused")
    reply = client.chat.completions.create(
        model="helper", n=1, temperature=0.2, top_p=0.9, seed=7, presence_penalty=0.1,
        tool_choice="auto", response_format={"type": "text"}, logprobs=False,
        modalities=["text"], messages=[
            {"role": "user", "content": [{"type": "text", "text": "in "},
                                         {"type": "text", "text": "parts"}]}])
    assert reply.choices[0].message.content == "turn 1: you said in parts"
    assert len(reply.choices) == 1
