"""``response_format`` on /v1/chat/completions: typed answers over HTTP, with the official
client's ``chat.completions.parse``, against a real server."""

import json

import openai
import pytest
from langchain_core.messages import AIMessage
from langgraph.graph import START, MessagesState, StateGraph
from pydantic import BaseModel

from ponder import Agent
from ponder.config import Settings
from ponder.models import ResiliencePolicy, chat_model
from ponder.server import create_app
from ponder.testing import BackgroundServer, FakeOpenAIServer, ScriptedChatModel


class Movie(BaseModel):
    title: str
    year: int


def movie_replies(messages):
    """The upstream model: an answer without its year first, then one that fits when it is
    told what was missing."""
    if "year" in messages[-1].content and "does not fit" in messages[-1].content:
        return {"title": "Alien", "year": 1979}
    return {"title": "Alien"}


@pytest.fixture
def upstream():
    with FakeOpenAIServer(movie_replies) as srv:
        yield srv


@pytest.fixture
def server(tmp_path, upstream):
    model = chat_model("openai:upstream-model", base_url=upstream.base_url, settings=Settings(),
                       policy=ResiliencePolicy(max_attempts=1, timeout_s=20))
    agents = [Agent("films", model, checkpointer=f"sqlite:///{tmp_path}/server.db"),
              Agent("texter", ScriptedChatModel(replies=lambda m: 'Sure! {"ok": true} Enjoy.'),
                    checkpointer=False)]
    with BackgroundServer(create_app(agents)) as url:
        yield url


def test_parse_with_a_pydantic_model_gets_a_repaired_typed_answer(server, upstream):
    client = openai.OpenAI(base_url=f"{server}/v1", api_key="unused")
    completion = client.chat.completions.parse(
        model="films", messages=[{"role": "user", "content": "a film about a space monster"}],
        response_format=Movie)
    message = completion.choices[0].message
    assert message.parsed == Movie(title="Alien", year=1979)
    assert json.loads(message.content) == {"title": "Alien", "year": 1979}
    # The client's format reached the model as its structured output, strict as the client
    # asked; the first answer lacked "year" and the model was shown that.
    first, repair = upstream.requests
    assert first["response_format"]["type"] == "json_schema"
    assert first["response_format"]["json_schema"]["name"] == "Movie"
    assert first["response_format"]["json_schema"]["strict"] is True
    assert "year: Field required" in repair["messages"][-1]["content"] or \
        "'year' is a required property" in repair["messages"][-1]["content"]
    assert completion.usage.total_tokens > 0


async def test_a_streamed_typed_answer_is_its_json(server):
    client = openai.AsyncOpenAI(base_url=f"{server}/v1", api_key="unused")
    schema = {"type": "object", "properties": {"title": {"type": "string"},
                                               "year": {"type": "integer"}},
              "required": ["title", "year"]}
    stream = await client.chat.completions.create(
        model="films", stream=True, messages=[{"role": "user", "content": "a film"}],
        response_format={"type": "json_schema",
                         "json_schema": {"name": "film", "schema": schema}})
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert json.loads(text) == {"title": "Alien", "year": 1979}  # the repaired one only


def test_json_object_from_a_model_without_structured_output(server):
    """The model wraps its JSON in prose: the reply's content is the JSON alone."""
    client = openai.OpenAI(base_url=f"{server}/v1", api_key="unused")
    reply = client.chat.completions.create(
        model="texter", messages=[{"role": "user", "content": "ok?"}],
        response_format={"type": "json_object"})
    assert json.loads(reply.choices[0].message.content) == {"ok": True}


@pytest.mark.parametrize("response_format, words", [
    ({"type": "xml"}, "'xml' is not supported"),
    ({"type": "json_schema"}, "json_schema must be an object"),
    ({"type": "json_schema", "json_schema": {"schema": {"type": "object"}}}, "name must be"),
    ({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nonsense"}}},
     "not valid at type"),
    ({"type": "json_schema", "json_schema": {"name": "x", "schema": {"title": "no keywords"}}},
     "is not a JSON Schema"),
    ({"type": "json_schema", "json_schema": {"name": "x", "strict": "yes",
                                             "schema": {"type": "object"}}}, "strict must be"),
])
def test_a_bad_response_format_is_a_400_that_says_why(server, upstream, response_format, words):
    client = openai.OpenAI(base_url=f"{server}/v1", api_key="unused")
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="films", response_format=response_format,
                                       messages=[{"role": "user", "content": "a film"}])
    assert refused.value.param == "response_format"
    assert words in refused.value.body["message"]
    assert upstream.requests == []  # nothing ran


def test_a_graph_refuses_a_response_format(tmp_path):
    builder = StateGraph(MessagesState)
    builder.add_node("answer", lambda state: {"messages": [AIMessage("plain text")]})
    builder.add_edge(START, "answer")
    app = create_app([builder.compile(name="plain")], database_url=f"sqlite:///{tmp_path}/g.db")
    with BackgroundServer(app) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused")
        with pytest.raises(openai.BadRequestError, match="only an agent answers in a format"):
            client.chat.completions.create(
                model="plain", messages=[{"role": "user", "content": "x"}],
                response_format={"type": "json_object"})


def test_an_answer_that_never_fits_is_an_error_that_says_so(tmp_path):
    agent = Agent("stubborn", ScriptedChatModel(replies=lambda m: "no JSON here"),
                  checkpointer=False)
    with BackgroundServer(create_app([agent])) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        with pytest.raises(openai.InternalServerError) as failed:
            client.chat.completions.parse(model="stubborn", response_format=Movie,
                                          messages=[{"role": "user", "content": "x"}])
    assert "did not fit the output schema 'Movie' after 3 tries" in \
        failed.value.body["message"]


def test_responses_parse_with_text_format_gets_a_typed_answer(server, upstream):
    client = openai.OpenAI(base_url=f"{server}/v1", api_key="unused")
    response = client.responses.parse(model="films", input="a film about a space monster",
                                      text_format=Movie)
    assert response.output_parsed == Movie(title="Alien", year=1979)
    assert upstream.requests[0]["response_format"]["json_schema"]["name"] == "Movie"
    answer = client.responses.create(model="texter", input="anything",
                                     text={"format": {"type": "json_object"}})
    assert json.loads(answer.output_text) == {"ok": True}
    for bad in ({"format": {"type": "json_schema", "name": "x", "schema": 3}}, {"format": 7}):
        with pytest.raises(openai.BadRequestError) as refused:
            client.responses.create(model="films", input="x", text=bad)
        assert refused.value.body["param"] in ("text", "text.format")


def test_a_response_whose_answer_never_fits_says_why(server):
    client = openai.OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.InternalServerError) as failed:
        client.responses.create(model="texter", input="x", text={"format": {
            "type": "json_schema", "name": "n", "schema": {
                "type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}}})
    assert failed.value.body["code"] == "invalid_output"
