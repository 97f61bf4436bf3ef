"""The Responses API over a real HTTP server, with the official openai client."""

import asyncio

import httpx
import openai
import pytest

from ponder import Agent, Profile
from ponder.graphs.runs import RunRecorder
from ponder.server import create_app
from ponder.testing import BackgroundServer, ScriptedChatModel
from ponder.tools import calculator
from tests.helpers.models import echo_model


@pytest.fixture
def db(tmp_path):
    return f"sqlite:///{tmp_path}/server.db"


@pytest.fixture
def server(db):
    agents = [Agent("helper", echo_model(), Profile(role="a helper"), tools=[calculator],
                    checkpointer=db),
              Agent("other", ScriptedChatModel(replies=lambda m: "other"), checkpointer=db)]
    with BackgroundServer(create_app(agents, database_url=db)) as url:
        yield url


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0)


def test_create_and_continue_with_previous_response_id(client):
    first = client.responses.create(model="helper", input="hello",
                                    instructions="ignored: the profile rules")
    assert first.status == "completed" and first.output_text == "turn 1: you said hello"
    assert first.id.startswith("resp_") and first.model == "helper"
    assert first.usage.input_tokens > 0 and first.usage.output_tokens > 0
    assert first.usage.total_tokens == first.usage.input_tokens + first.usage.output_tokens
    second = client.responses.create(model="helper", input="again",
                                     previous_response_id=first.id)
    assert second.output_text == "turn 2: you said again"  # it saw the first turn
    assert second.previous_response_id == first.id
    # A new response without previous_response_id is a new thread.
    assert client.responses.create(model="helper", input="x").output_text == \
        "turn 1: you said x"


def test_input_messages_seed_a_new_thread(client):
    response = client.responses.create(model="helper", input=[
        {"role": "system", "content": "the profile is the system message"},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "turn 1: you said first"},
        {"role": "user", "content": [{"type": "input_text", "text": "second"}]}])
    assert response.output_text == "turn 2: you said second"


def test_retrieve_a_stored_response_and_store_false(client):
    made = client.responses.create(model="helper", input="keep me")
    got = client.responses.retrieve(made.id)
    assert got.id == made.id and got.output_text == "turn 1: you said keep me"
    assert got.usage.total_tokens == made.usage.total_tokens

    unstored = client.responses.create(model="helper", input="forget me", store=False)
    assert unstored.output_text == "turn 1: you said forget me"
    with pytest.raises(openai.NotFoundError) as caught:
        client.responses.retrieve(unstored.id)
    assert "store: false" in caught.value.message
    with pytest.raises(openai.NotFoundError) as caught:  # nor can it be continued
        client.responses.create(model="helper", input="on", previous_response_id=unstored.id)
    assert caught.value.code == "previous_response_not_found"


def test_unknown_previous_response_id_is_a_clear_error(client):
    with pytest.raises(openai.NotFoundError) as caught:
        client.responses.create(model="helper", input="hi", previous_response_id="resp_nope")
    error = caught.value.body
    assert error["param"] == "previous_response_id"
    assert error["code"] == "previous_response_not_found"
    assert "'resp_nope' not found" in error["message"]


def test_a_response_continues_only_with_its_own_agent(client):
    first = client.responses.create(model="helper", input="hi")
    with pytest.raises(openai.BadRequestError, match="continue it with model 'helper'"):
        client.responses.create(model="other", input="hi", previous_response_id=first.id)


def test_stream_sends_the_responses_events_in_order(client):
    events = list(client.responses.create(model="helper", input="stream me", stream=True))
    kinds = [e.type for e in events]
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert len(deltas) > 3 and "".join(deltas) == "turn 1: you said stream me"
    assert kinds == ["response.created", "response.in_progress", "response.output_item.added",
                     "response.content_part.added", *["response.output_text.delta"] * len(deltas),
                     "response.output_text.done", "response.content_part.done",
                     "response.output_item.done", "response.completed"]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    done = events[-1].response
    assert done.status == "completed" and done.output_text == "turn 1: you said stream me"
    assert done.usage.total_tokens > 0
    assert client.responses.retrieve(done.id).output_text == done.output_text


def test_tool_calls_the_agent_made_are_function_call_items(client):
    events = list(client.responses.create(model="helper", input="compute 6 times 7",
                                          stream=True))
    kinds = [e.type for e in events]
    assert kinds[:4] == ["response.created", "response.in_progress",
                         "response.output_item.added", "response.output_item.done"]
    call = events[3].item
    assert call.type == "function_call" and call.name == "calculator"
    assert call.arguments == '{"expression": "6 * 7"}' and call.status == "completed"
    assert events[2].item.status == "in_progress" and events[2].output_index == 0
    assert kinds[-1] == "response.completed"
    done = events[-1].response
    assert [item.type for item in done.output] == ["function_call", "message"]
    assert done.output_text == "The result is 42."
    # Not streamed: the same output.
    plain = client.responses.create(model="helper", input="compute again")
    assert [item.type for item in plain.output] == ["function_call", "message"]
    assert plain.output[0].call_id and plain.output_text == "The result is 42."


async def test_the_sdk_stream_helper_accumulates_the_response(server):
    client = openai.AsyncOpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0)
    async with client.responses.stream(model="helper", input="helper stream") as stream:
        async for _ in stream:
            pass
        final = await stream.get_final_response()
    assert final.output_text == "turn 1: you said helper stream"


async def test_every_response_is_a_recorded_run_and_one_thread_runs_one_at_a_time(server, db):
    client = openai.AsyncOpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0)
    first = await client.responses.create(model="helper", input="start")
    # Two continuations of one response at once: both answered, one after the other.
    replies = await asyncio.gather(*(client.responses.create(
        model="helper", input=text, previous_response_id=first.id) for text in ("a", "b")))
    assert sorted(r.output_text for r in replies) in (
        ["turn 2: you said a", "turn 3: you said b"], ["turn 2: you said b", "turn 3: you said a"])
    runs = RunRecorder(db)
    try:
        recorded = [r for r in await runs.list() if r.target == "helper"]
    finally:
        await runs.aclose()
    assert len(recorded) == 3 and {r.status for r in recorded} == {"success"}
    assert len({r.thread_id for r in recorded}) == 1


@pytest.mark.parametrize("body, status, fragment", [
    ({"model": "nobody", "input": "x"}, 404, "does not exist"),
    ({"model": "helper", "input": []}, 400, "input"),
    ({"model": "helper", "input": [{"role": "assistant", "content": "x"}]}, 400,
     "must end with a user message"),
    ({"model": "helper", "input": [{"type": "function_call_output", "call_id": "c",
                                    "output": "1"}]}, 400, "'function_call_output' item"),
    ({"model": "helper", "input": [{"role": "user", "content": [
        {"type": "input_image", "image_url": "http://x/y.png"}]}]}, 400, "text only"),
    ({"model": "helper", "input": "x", "tools": [{"type": "function", "name": "f"}]}, 400,
     "tools is not supported"),
    ({"model": "helper", "input": "x", "max_output_tokens": 5}, 400, "max_output_tokens"),
    ({"model": "helper", "input": "x",
      "text": {"format": {"type": "json_schema", "name": "s", "schema": 3}}}, 400,
     "text.format is not valid"),
])
def test_bad_requests_get_openai_style_errors(server, body, status, fragment):
    response = httpx.post(f"{server}/v1/responses", json=body)
    assert response.status_code == status, response.text
    assert fragment in response.json()["error"]["message"]


def test_unknown_response_is_404(server):
    response = httpx.get(f"{server}/v1/responses/resp_missing")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "response_not_found"


def test_an_agent_that_fails_gives_a_failed_response(db):
    def broken(messages):
        raise RuntimeError("the model's secret internals")
    agent = Agent("broken", ScriptedChatModel(replies=broken), checkpointer=db)
    with BackgroundServer(create_app([agent], database_url=db)) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        events = list(client.responses.create(model="broken", input="hi", stream=True))
        assert [e.type for e in events] == ["response.created", "response.in_progress",
                                            "response.failed"]
        failed = events[-1].response
        assert failed.status == "failed" and failed.error.code == "server_error"
        assert "secret" not in failed.error.message
        with pytest.raises(openai.InternalServerError) as caught:
            client.responses.create(model="broken", input="hi")
        assert "secret" not in caught.value.message
        with pytest.raises(openai.NotFoundError):  # a failed response is not kept
            client.responses.retrieve(failed.id)
