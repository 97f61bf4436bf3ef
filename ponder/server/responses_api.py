"""OpenAI's Responses API: ``POST /v1/responses`` and ``GET /v1/responses/{id}``.

``model`` is an agent's name. A response without ``previous_response_id`` starts a new thread,
opened with its ``input`` (a text, or messages whose earlier ones seed the thread); one with
``previous_response_id`` goes on in that response's thread (404
``previous_response_not_found`` when no stored response of the caller's key has that id). The
agent's profile is its system message: ``instructions``, and system or developer messages in
``input``, are ignored. Responses are stored unless ``store: false``; a stored response is read
back with ``GET /v1/responses/{id}``. The thread comes back in ``x-thread-id``.

Every response is a turn recorded as a run under its thread's lease, as chat completions are
(``openai_api.Turn``). Its output is the reply as a message, after a ``function_call`` item for
each tool call the agent made (already run: the client has nothing to execute). With
``stream: true`` it is sent as Server-Sent Events: ``response.created``,
``response.in_progress``, ``response.output_item.added`` / ``.done`` (tool calls, the
message), ``response.content_part.added``, ``response.output_text.delta`` / ``.done``,
``response.content_part.done``, then ``response.completed`` (``response.failed`` when the agent
fails).

``text.format`` (``json_schema``, with ``strict``, or ``json_object``) makes the agent's answer
typed, as ``response_format`` does on chat completions (``formats.py``): the message's text is
the answer's JSON. Anything else a request asks that an agent cannot honour is refused with a
400 naming it (client tools, token limits, ...).
"""

from __future__ import annotations

import itertools
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Literal, get_args

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from openai.types.responses import (
    Response,
    ResponseCompletedEvent,
    ResponseContentPartAddedEvent,
    ResponseContentPartDoneEvent,
    ResponseCreatedEvent,
    ResponseError,
    ResponseFailedEvent,
    ResponseFunctionToolCall,
    ResponseInProgressEvent,
    ResponseOutputItemAddedEvent,
    ResponseOutputItemDoneEvent,
    ResponseOutputMessage,
    ResponseOutputText,
    ResponseStreamEvent,
    ResponseTextDeltaEvent,
    ResponseTextDoneEvent,
    ResponseUsage,
)
from openai.types.responses.response_usage import InputTokensDetails, OutputTokensDetails
from pydantic import BaseModel, ConfigDict, Field
from sse_starlette.sse import EventSourceResponse

from ponder.agents.output import OutputError
from ponder.agents.reply import Piece
from ponder.graphs.runs import RunRecorder
from ponder.graphs.targets import Target
from ponder.server.errors import APIError
from ponder.server.formats import run_format
from ponder.server.openai_api import Turn, charging, safe_error, served_agent
from ponder.server.response_store import ResponseStore
from ponder.server.turn_events import ToolCall, ToolResult, turn_events


class ResponseRequest(BaseModel):
    """A Responses API request: ``model`` is an agent's name; ``input`` a text or 1 to 1,000
    input items (messages). Options that would change the answer are refused (see
    ``refuse_unsupported``); sampling options are accepted and left to the agent."""
    model_config = ConfigDict(extra="allow")

    model: str
    input: str | list[dict[str, Any]] = Field(min_length=1, max_length=1000)
    instructions: str | None = None  # ignored: the agent's profile is its system message
    previous_response_id: str | None = None
    store: bool = True
    stream: bool = False
    metadata: dict[str, str] | None = None
    user: str | None = None


# Options an agent cannot honour, with why; each is refused unless its value asks for nothing
# beyond the default (as in openai_api).
_UNSUPPORTED = {
    "tools": "an agent runs its own tools; tools defined by the client are not supported",
    "tool_choice": "an agent chooses its own tools; only 'auto' and 'none' are accepted",
    "max_output_tokens": "an agent's reply is not cut to a token budget (it may make several "
                         "model calls); remove the limit",
    "max_tool_calls": "an agent decides how many tool calls it makes; remove the limit",
    "top_logprobs": "an agent's reply has no token log probabilities",
    "include": "an agent's response has no extra output data to include",
    "background": "responses are answered while the request waits (or streams); run agents in "
                  "the background with the Agent Server API (/threads/{id}/runs)",
    "conversation": "a response continues a thread through previous_response_id; "
                    "conversation objects are not supported",
    "prompt": "an agent's prompt is its profile; prompt templates are not supported",
}
_DEFAULTS = {"tool_choice": ("auto", "none")}


def text_format(request: ResponseRequest) -> Any:
    """``text.format`` as a chat completion's ``response_format`` (the Responses API has the
    JSON schema's name, schema and strict beside its type), for ``formats.run_format``; None
    for text."""
    text = (request.model_extra or {}).get("text")
    if text is None:
        return None
    if not isinstance(text, dict) or not isinstance(text.get("format", {}), dict):
        raise APIError(400, "text must be an object whose format is an object, e.g. "
                            '{"format": {"type": "json_schema", "name": ..., "schema": ...}}',
                       param="text")
    value = text.get("format")
    if isinstance(value, dict) and value.get("type") == "json_schema":
        return {"type": "json_schema",
                "json_schema": {k: v for k, v in value.items() if k != "type"}}
    return value


def refuse_unsupported(request: ResponseRequest) -> None:
    """A 400 naming the first option the agent cannot honour."""
    for name, value in (request.model_extra or {}).items():
        if name in _UNSUPPORTED and value not in (None, False, 0, "", [], {}) \
                and value not in _DEFAULTS.get(name, ()):
            raise APIError(400, f"{name} is not supported: {_UNSUPPORTED[name]}", param=name)


def input_messages(value: str | list[dict[str, Any]]) -> list[BaseMessage]:
    """A request's ``input`` as the messages its turn adds to the thread: a text is one user
    message; items are user and assistant messages (system and developer ones are left to the
    agent's profile). 400 for items or content parts that are not text messages, and for input
    that does not end with a user message."""
    if isinstance(value, str):
        return [HumanMessage(value)]
    messages: list[BaseMessage] = []
    for i, item in enumerate(value):
        kind, role = item.get("type", "message"), item.get("role")
        if kind != "message" or role not in ("user", "assistant", "system", "developer"):
            raise APIError(400, f"input[{i}] is a {kind!r} item: an agent reads messages "
                                "(role user or assistant) only; it runs its own tools, so "
                                "tool calls and outputs from the client are not supported",
                           param=f"input[{i}]")
        text = _text(item.get("content"), f"input[{i}].content")
        if role == "user":
            messages.append(HumanMessage(text))
        elif role == "assistant":
            messages.append(AIMessage(text))
    if not messages or not isinstance(messages[-1], HumanMessage):
        raise APIError(400, "input must end with a user message", param="input")
    return messages


def _text(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise APIError(400, f"{where} must be a text or a list of text parts", param=where)
    texts = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in ("input_text", "output_text") or not isinstance(part.get("text"), str):
            raise APIError(400, f"{where}[{j}] is {kind or 'not'} a text part: the agent reads "
                                "text only (send it as text, or leave it out)",
                           param=f"{where}[{j}]")
        texts.append(part["text"])
    return "".join(texts)


def router(agents: dict[str, Target], runs: RunRecorder, store: ResponseStore,
           multitask_strategy: str = "enqueue") -> APIRouter:
    """The Responses API over ``agents`` (by name), its responses kept in ``store``.

    ``POST /v1/responses``: 404 for an unknown model or previous response, 400 for what cannot
    be honoured, 409 ``thread_busy`` on a busy thread under ``"reject"``. ``GET
    /v1/responses/{id}``: the stored response, or 404.
    """
    api = APIRouter()

    @api.post("/v1/responses")
    async def create_response(body: ResponseRequest, request: Request):
        agent = served_agent(agents, body.model)
        refuse_unsupported(body)
        configurable = run_format(text_format(body), agent, param="text.format")
        messages = input_messages(body.input)
        key = getattr(request.state, "api_key_id", None)
        if body.previous_response_id:
            previous = await store.get(body.previous_response_id, key)
            if previous is None:
                raise APIError(404, f"Previous response with id {body.previous_response_id!r} "
                                    "not found: name a stored response of this API key "
                                    "(responses made with store: false are not kept)",
                               param="previous_response_id",
                               code="previous_response_not_found")
            if previous.model != body.model:
                raise APIError(400, f"The previous response {previous.id!r} was made by "
                                    f"{previous.model!r}: continue it with model "
                                    f"{previous.model!r}", param="model")
            thread_id = previous.thread_id
        else:
            thread_id = f"response-{uuid.uuid4().hex}"
        turn = Turn(agent, runs, thread_id, messages, charging(request, body.model),
                    multitask_strategy)
        turn.configurable = configurable
        await turn.start(stream=True)
        answer = _Answer(turn, body, lambda done: store.put(key, body.model, thread_id, done))
        headers = {"x-thread-id": thread_id}
        if body.stream:
            return EventSourceResponse(_sse(answer), ping=15, headers=headers)
        async for _ in answer.events():
            pass
        if isinstance(answer.failure, OutputError):  # no answer fit the format
            raise APIError(500, str(answer.failure), code="invalid_output") from None
        if answer.failure is not None:
            raise answer.failure
        return JSONResponse(answer.response.model_dump(mode="json", exclude_none=True),
                            headers=headers)

    @api.get("/v1/responses/{response_id}")
    async def get_response(response_id: str, request: Request):
        found = await store.get(response_id, getattr(request.state, "api_key_id", None))
        if found is None:
            raise APIError(404, f"No response with id {response_id!r}: it was never made, "
                                "was made with store: false, or by another API key",
                           param="response_id", code="response_not_found")
        return JSONResponse(found.body)

    return api


class _Answer:
    """A response being made from a streamed turn: its events, in the Responses API's order,
    and the Response object they build. A failure of the agent ends the events with
    ``response.failed`` and is kept in ``failure``."""

    def __init__(self, turn: Turn, request: ResponseRequest,
                 keep: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        self.turn, self.request = turn, request
        self.keep = keep if request.store else None  # stores the finished Response (a dict)
        self.failure: BaseException | None = None
        self.response = Response(
            id=f"resp_{uuid.uuid4().hex}", object="response", created_at=int(time.time()),
            model=request.model, status="in_progress", output=[], parallel_tool_calls=True,
            tool_choice="auto", tools=[], previous_response_id=request.previous_response_id,
            metadata=request.metadata, user=request.user,
            text=(request.model_extra or {}).get("text"))
        self._sequence = itertools.count()
        self._calls: dict[str, int] = {}  # tool call id -> its output index
        self._message: ResponseOutputMessage | None = None
        self._message_index = 0

    def _event(self, cls: type[ResponseStreamEvent], **fields: Any) -> ResponseStreamEvent:
        kind = get_args(cls.model_fields["type"].annotation)[0]  # its Literal type name
        return cls(type=kind, sequence_number=next(self._sequence), **fields)

    async def events(self) -> AsyncIterator[ResponseStreamEvent]:
        """The response's events, to ``response.completed`` (stored first, unless ``store`` is
        false) or ``response.failed``. Stops the turn when the consumer leaves early."""
        yield self._event(ResponseCreatedEvent, response=self.response.model_copy(deep=True))
        yield self._event(ResponseInProgressEvent, response=self.response.model_copy(deep=True))
        try:
            async for happened in turn_events(self.turn):
                for event in self._on(happened):
                    yield event
            _, usage = await self.turn.result()
        except Exception as exc:
            self.failure = exc
            self.response.status = "failed"
            self.response.error = ResponseError(code="server_error", message=safe_error(exc))
            yield self._event(ResponseFailedEvent, response=self.response)
            return
        finally:
            self.turn.cancel()  # the consumer left: stop the turn (a no-op once it has ended)
        for event in self._finish():
            yield event
        self.response.status, self.response.completed_at = "completed", time.time()
        self.response.usage = ResponseUsage(
            input_tokens=usage["prompt_tokens"], output_tokens=usage["completion_tokens"],
            total_tokens=usage["total_tokens"],
            # Caching and reasoning are not told apart in a turn's usage.
            input_tokens_details=InputTokensDetails(cached_tokens=0, cache_write_tokens=0),
            output_tokens_details=OutputTokensDetails(reasoning_tokens=0))
        if self.keep is not None:
            await self.keep(self.response.model_dump(mode="json", exclude_none=True))
        yield self._event(ResponseCompletedEvent, response=self.response)

    def _on(self, happened: ToolCall | ToolResult | Piece) -> list[ResponseStreamEvent]:
        output = self.response.output
        if isinstance(happened, ToolCall):
            self._calls[happened.id] = len(output)
            output.append(ResponseFunctionToolCall(
                type="function_call", id=f"fc_{uuid.uuid4().hex}", call_id=happened.id,
                name=happened.name, arguments=json.dumps(happened.args), status="in_progress"))
            return [self._event(ResponseOutputItemAddedEvent, item=output[-1].model_copy(),
                                output_index=len(output) - 1)]
        if isinstance(happened, ToolResult):
            index = self._calls.pop(happened.call_id, None)
            return [] if index is None else self._call_done(index, "completed")
        events = self._open_message() if self._message is None else []
        self._message.content[0].text += happened.text
        return events + [self._event(
            ResponseTextDeltaEvent, item_id=self._message.id, output_index=self._message_index,
            content_index=0, delta=happened.text, logprobs=[])]

    def _call_done(self, index: int, status: Literal["completed", "incomplete"]
                   ) -> list[ResponseStreamEvent]:
        call = self.response.output[index]
        call.status = status
        return [self._event(ResponseOutputItemDoneEvent, item=call.model_copy(),
                            output_index=index)]

    def _open_message(self) -> list[ResponseStreamEvent]:
        self._message = ResponseOutputMessage(
            type="message", id=f"msg_{uuid.uuid4().hex}", role="assistant",
            status="in_progress", content=[])
        self.response.output.append(self._message)
        index = self._message_index = len(self.response.output) - 1
        added = self._event(ResponseOutputItemAddedEvent, item=self._message.model_copy(deep=True),
                            output_index=index)
        self._message.content.append(ResponseOutputText(type="output_text", text="",
                                                        annotations=[]))
        return [added, self._event(ResponseContentPartAddedEvent, item_id=self._message.id,
                                   output_index=index, content_index=0,
                                   part=self._message.content[0].model_copy())]

    def _finish(self) -> list[ResponseStreamEvent]:
        """The ends of the items still open: calls without a result (the turn stopped at an
        interrupt) are incomplete; the message (opened now if the reply is empty) is done."""
        events = [e for index in sorted(self._calls.values())
                  for e in self._call_done(index, "incomplete")]
        if self._message is None:
            events += self._open_message()
        message, index = self._message, self._message_index
        part = message.content[0]
        message.status = "completed"
        return events + [
            self._event(ResponseTextDoneEvent, item_id=message.id, output_index=index,
                        content_index=0, text=part.text, logprobs=[]),
            self._event(ResponseContentPartDoneEvent, item_id=message.id, output_index=index,
                        content_index=0, part=part.model_copy()),
            self._event(ResponseOutputItemDoneEvent, item=message.model_copy(deep=True),
                        output_index=index)]


async def _sse(answer: _Answer) -> AsyncIterator[dict[str, str]]:
    """The events as Server-Sent Events, each named by its type, as OpenAI sends them."""
    async for event in answer.events():
        yield {"event": event.type, "data": event.model_dump_json(exclude_none=True)}
