"""Typed answers: Agent(output=...) returns a validated object, repaired when it does not fit."""

import json
import typing

import pytest
import typing_extensions
from pydantic import BaseModel, Field

from ponder import Agent
from ponder.agents.output import OutputError, OutputSchema
from ponder.agents.planning.cot import ZeroShotCoT
from ponder.agents.spec import SpecError
from ponder.config import ConfigurationError, Settings
from ponder.models import ResiliencePolicy, chat_model
from ponder.testing import FakeOpenAIServer, ScriptedChatModel, tool_calls
from ponder.tools import calculator


class Movie(BaseModel):
    title: str
    year: int = Field(ge=1888)


class MovieDict(typing.TypedDict):  # typing's: pydantic reads it only from Python 3.12
    title: str
    year: int


class MovieExt(typing_extensions.TypedDict):
    title: str
    year: int


MOVIE_SCHEMA = {"type": "object", "properties": {"title": {"type": "string"},
                                                 "year": {"type": "integer"}},
                "required": ["title", "year"], "additionalProperties": False}


async def test_a_typed_answer_that_needs_one_repair(tmp_path):
    model = ScriptedChatModel(replies=['Here it is: {"title": "Alien", "year": 79}',
                                       '{"title": "Alien", "year": 1979}'])
    agent = Agent("films", model, output=Movie, checkpointer=f"sqlite:///{tmp_path}/a.db")
    answer = await agent.aask("a film about a space monster", thread_id="t")
    assert answer == Movie(title="Alien", year=1979)
    # The schema was in the system message; the repair showed the model what was wrong.
    assert '"required": ["title", "year"]' in model.calls[0][0].content
    repair = model.calls[1]
    assert repair[-2].content == 'Here it is: {"title": "Alien", "year": 79}'
    assert "year: Input should be greater than or equal to 1888" in repair[-1].content
    # The thread keeps the repaired answer only, and the answer's JSON in its state.
    state = (await agent.aget_state("t")).values
    assert state["structured_response"] == {"title": "Alien", "year": 1979}
    assert [m.content for m in state["messages"]] == [
        "a film about a space monster", '{"title": "Alien", "year": 1979}']
    await agent.aclose()


@pytest.mark.parametrize("output", [MovieDict, MovieExt, MOVIE_SCHEMA],
                         ids=["typing.TypedDict", "typing_extensions.TypedDict", "JSON Schema"])
async def test_typed_dicts_and_json_schemas_give_dicts(output):
    model = ScriptedChatModel(replies=['{"title": "Alien"}', '{"title": "Alien", "year": 1979}'])
    agent = Agent("films", model, output=output, checkpointer=False)
    assert await agent.aask("a film") == {"title": "Alien", "year": 1979}
    problem = model.calls[1][-1].content
    assert "year" in problem and ("required" in problem or "missing" in problem)


async def test_the_answer_comes_after_the_tools():
    model = ScriptedChatModel(replies=[tool_calls(("calculator", {"expression": "6 * 7"})),
                                       '```json\n{"value": 42}\n```'])
    agent = Agent("calc", model, tools=[calculator], checkpointer=False,
                  output={"type": "object", "properties": {"value": {"type": "number"}}})
    state = await agent.ainvoke("6 times 7?")
    assert state["structured_response"] == {"value": 42}
    assert state["messages"][-1].content == '{"value": 42}'  # the JSON, out of its fence
    assert len(model.calls) == 2


async def test_structured_output_is_asked_of_models_that_have_it():
    async with FakeOpenAIServer([{"title": "Alien", "year": 1979}]) as srv:
        model = chat_model("openai:gpt", base_url=srv.base_url, settings=Settings(),
                           policy=ResiliencePolicy(max_attempts=1))
        agent = Agent("films", model, output=Movie, checkpointer=False)
        assert await agent.aask("a film") == Movie(title="Alien", year=1979)
    response_format = srv.requests[0]["response_format"]
    assert response_format["type"] == "json_schema"
    assert response_format["json_schema"]["name"] == "Movie"
    assert response_format["json_schema"]["schema"]["required"] == ["title", "year"]


async def test_with_tools_structured_output_is_kept_for_the_repair():
    """OpenAI takes structured output only with strict tools: the calls with tools go
    without it, the repair (no tools) with it."""
    replies = [tool_calls(("calculator", {"expression": "6 * 7"})), "It is 42.", {"value": 42}]
    async with FakeOpenAIServer(replies) as srv:
        model = chat_model("openai:gpt", base_url=srv.base_url, settings=Settings(),
                           policy=ResiliencePolicy(max_attempts=1))
        agent = Agent("calc", model, tools=[calculator], checkpointer=False,
                      output={"type": "object", "properties": {"value": {"type": "number"}},
                              "required": ["value"]})
        assert await agent.aask("6 times 7?") == {"value": 42}
    assert ["response_format" in r for r in srv.requests] == [False, False, True]
    assert "tools" not in srv.requests[2]


async def test_a_run_may_ask_for_its_own_format():
    """The run's response_format (as ponder serve passes it) over the agent's output."""
    model = ScriptedChatModel(replies=lambda messages: '{"ok": true}')
    agent = Agent("plain", model, checkpointer=False)
    state = await agent.ainvoke("ok?", config={"configurable": {
        "response_format": {"type": "json_object"}}})
    assert state["structured_response"] == {"ok": True}
    assert "JSON object" in model.calls[0][0].content
    plain = await agent.ainvoke("again")  # the next run without one answers in text
    assert "JSON" not in model.calls[1][0].content and "structured_response" not in plain


async def test_a_later_run_without_a_format_clears_the_typed_answer(tmp_path):
    model = ScriptedChatModel(replies=['{"ok": true}', "plain words"])
    agent = Agent("plain", model, checkpointer=f"sqlite:///{tmp_path}/a.db")
    typed = await agent.ainvoke("ok?", thread_id="t", config={"configurable": {
        "response_format": {"type": "json_object"}}})
    assert typed["structured_response"] == {"ok": True}
    plain = await agent.ainvoke("and now?", thread_id="t")
    assert plain["structured_response"] is None and plain["messages"][-1].content == \
        "plain words"
    await agent.aclose()


async def test_a_streamed_typed_answer_is_the_repaired_one_only():
    model = ScriptedChatModel(replies=['{"title": 1}', '{"title": "Alien", "year": 1979}'])
    agent = Agent("films", model, output=Movie, checkpointer=False)
    text = "".join([piece async for piece in agent.astream_text("a film")])
    assert json.loads(text) == {"title": "Alien", "year": 1979}


async def test_a_planners_answer_is_made_typed():
    model = ScriptedChatModel(replies=["Six sevens are 42.", "42", '{"value": 42}'])
    agent = Agent("calc", model, planner=ZeroShotCoT(), checkpointer=False,
                  output={"type": "object", "properties": {"value": {"type": "integer"}},
                          "required": ["value"]})
    assert await agent.aask("6 times 7?") == {"value": 42}
    # Shown the planner's answer, and why it is not the answer yet.
    assert model.calls[2][-2].content == "42"
    assert "42 is not of type 'object'" in model.calls[2][-1].content


async def test_a_tool_call_in_place_of_a_repair_is_not_run():
    model = ScriptedChatModel(replies=["no JSON", tool_calls(("calculator", {"expression": "1"})),
                                       '{"title": "Alien", "year": 1979}'])
    agent = Agent("films", model, tools=[calculator], output=Movie, checkpointer=False)
    state = await agent.ainvoke("a film")
    assert state["structured_response"] == {"title": "Alien", "year": 1979}
    assert "call no tool now" in model.calls[2][-1].content
    assert not model.calls[2][-2].tool_calls  # a call without its result is not sent
    assert [m.type for m in state["messages"]] == ["human", "ai"]  # no tool ran


async def test_an_answer_that_never_fits_is_a_clear_error():
    model = ScriptedChatModel(replies=['{"title": "A"}', '{"title": "B"}'])
    agent = Agent("films", model, output=Movie, output_retries=1, checkpointer=False)
    with pytest.raises(OutputError) as failed:
        await agent.aask("a film")
    message = str(failed.value)
    assert "did not fit the output schema 'Movie' after 2 tries" in message
    assert "year: Field required" in message and "Raise output_retries" in message
    assert failed.value.problems == ["year: Field required"]
    assert len(model.calls) == 2


async def test_a_turn_that_ends_without_an_answer_says_why():
    model = ScriptedChatModel(replies=lambda m: tool_calls(("calculator", {"expression": "1"})))
    agent = Agent("loop", model, tools=[calculator], max_steps=1, output=Movie,
                  checkpointer=False)
    with pytest.raises(OutputError, match="the turn has no typed answer: it ended with"):
        await agent.aask("loop")


@pytest.mark.parametrize("output, words", [
    (str, "output=<class 'str'> is not an answer schema"),
    (42, "is not an answer schema: give a pydantic model class, a TypedDict class, or a "
         "JSON Schema dict"),
    (Movie(title="x", year=1999), "is not an answer schema"),
    ({"title": "a movie"}, "is not a JSON Schema: it has none of the keywords"),
    ({"type": "nonsense"}, "the JSON Schema is not valid at type"),
    ({"type": "json_schema", "json_schema": {"name": "x"}}, "not valid at type"),
])
def test_an_output_that_is_not_a_schema_is_refused(output, words):
    with pytest.raises(ConfigurationError) as refused:
        Agent("films", ScriptedChatModel(), output=output, checkpointer=False)
    assert words in str(refused.value)


def test_negative_output_retries_are_refused():
    with pytest.raises(ConfigurationError, match="output_retries must be 0 or more"):
        Agent("films", ScriptedChatModel(), output=Movie, output_retries=-1)


async def test_a_spec_declares_its_output_as_a_json_schema(tmp_path):
    path = tmp_path / "films.yaml"
    path.write_text("name: films\noutput:\n  type: object\n  properties:\n"
                    "    title: {type: string}\n  required: [title]\n")
    model = ScriptedChatModel(replies=['{"title": "Alien"}'])
    agent = Agent.from_spec(path, model=model, checkpointer=False)
    assert await agent.aask("a film") == {"title": "Alien"}
    path.write_text("name: films\noutput: {type: nonsense}\n")
    with pytest.raises(SpecError, match=r"films\.yaml: the JSON Schema is not valid"):
        Agent.from_spec(path, model=model, checkpointer=False)


def test_schemas_of_each_kind():
    assert OutputSchema.of(Movie).response_format()["json_schema"]["name"] == "Movie"
    assert OutputSchema.of(MovieDict).schema["required"] == ["title", "year"]
    assert OutputSchema.of(MOVIE_SCHEMA).name == "answer"
    assert OutputSchema.from_response_format({"type": "text"}) is None
    value, problems = OutputSchema.of(MOVIE_SCHEMA).parse('{"title": "A", "year": 1, "x": 2}')
    assert value is None and "Additional properties are not allowed" in problems[0]
    assert OutputSchema.of(Movie).parse("no json")[1] == [
        "the answer is not JSON: write only the JSON value"]
    # The state's JSON comes back as the model's object.
    assert OutputSchema.of(Movie).validate({"title": "A", "year": 1999}) == Movie(
        title="A", year=1999)
