"""The OpenAI-compatible API: ``GET /v1/models`` and ``POST /v1/chat/completions``.

``model`` is an agent's name. Chat clients resend the whole conversation each turn, so each
conversation maps to one persistent thread: the ``X-Thread-Id`` header, ``metadata.thread_id`` or
``user`` when given (scoped to the caller's key), else the thread whose latest conversation
equals everything before the new messages (see ``conversations.py``), else a new thread, seeded
with the client's history. Only the messages after the last reply are applied to a continued
thread; the agent's profile is its system message. The thread comes back in ``x-thread-id``.

Every turn is a recorded run (``ponder runs list``) that holds its thread's lease: turns of one
thread run one at a time, in arrival order, across server processes sharing the database
(``multitask_strategy="enqueue"``, ``PONDER_MULTITASK_STRATEGY``), or a turn on a busy thread is
refused with 409 ``thread_busy`` (``"reject"``).

A request is answered as asked or refused with a 400 naming what cannot be honoured (``n > 1``,
client tools, stop sequences, images ...): never silently answered differently. A
``response_format`` (JSON Schema or JSON object) is honoured by agents (``formats.py``): the
reply's content is the answer's JSON.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    ToolMessage,
    convert_to_openai_messages,
)
from pydantic import BaseModel, ConfigDict, Field
from sse_starlette.sse import EventSourceResponse

from ponder.agents.agent import final_text
from ponder.agents.output import OutputError
from ponder.agents.reply import STREAM_MODES, ReplyStream
from ponder.graphs.runs import RunRecorder, ThreadBusy
from ponder.graphs.targets import Target
from ponder.models import BudgetExceeded, ModelCall, ModelCallError, UsageLog, track_usage
from ponder.server.conversations import ConversationStore, digest
from ponder.server.errors import APIError
from ponder.server.formats import run_format


class ChatMessage(BaseModel):
    """One message of a chat completion request, in OpenAI's shape (extra fields allowed)."""
    model_config = ConfigDict(extra="allow")

    # "function" is the legacy shape of a tool result (it answers an assistant function_call).
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_call_id: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    function_call: dict[str, Any] | None = None


class StreamOptions(BaseModel):
    """OpenAI's ``stream_options``: ``include_usage`` adds a last chunk with the token usage."""
    include_usage: bool = False


class ChatRequest(BaseModel):
    """A chat completion request: ``model`` is an agent's name; 1 to 1,000 messages.

    Options that would change the answer are refused by ``refuse_unsupported``; others are accepted
    and left to the agent.
    """
    # Sampling options (temperature, top_p, seed, penalties) are the agent's business: they are
    # accepted and left to it. Options that would change what the answer is are refused, see
    # refuse_unsupported.
    model_config = ConfigDict(extra="allow")

    model: str
    messages: list[ChatMessage] = Field(min_length=1, max_length=1000)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    metadata: dict[str, Any] | None = None
    n: int | None = None


# Options an agent cannot honour, with why. Answering anyway would hand the client something
# other than what it asked for (an ignored stop sequence, plain text for a JSON schema, no tool
# calls for its own tools) without a word; so each is refused, unless its value asks for nothing
# beyond the default.
_UNSUPPORTED = {
    "tools": "an agent runs its own tools; tools defined by the client are not supported",
    "functions": "an agent runs its own tools; functions defined by the client are not "
                 "supported",
    "tool_choice": "an agent chooses its own tools; only 'auto' and 'none' are accepted",
    "function_call": "an agent chooses its own tools; only 'auto' and 'none' are accepted",
    "stop": "an agent decides where its reply ends; stop sequences are not supported",
    "max_tokens": "an agent's reply is not cut to a token budget (it may make several model "
                  "calls); remove the limit",
    "max_completion_tokens": "an agent's reply is not cut to a token budget (it may make "
                             "several model calls); remove the limit",
    "logprobs": "an agent's reply has no token log probabilities",
    "top_logprobs": "an agent's reply has no token log probabilities",
    "logit_bias": "an agent's model calls cannot be biased per request",
    "modalities": "an agent answers in text only",
    "audio": "an agent answers in text only",
    "web_search_options": "an agent searches only with its own tools",
}
_DEFAULTS = {"tool_choice": ("auto", "none"), "function_call": ("auto", "none"),
             "modalities": (["text"],)}


def refuse_unsupported(request: ChatRequest) -> None:
    """A 400 naming the first option, or message part, the agent cannot honour."""
    if request.n is not None and request.n != 1:
        raise APIError(400, f"n={request.n} is not supported: an agent gives one reply per "
                            "request (send the request again for another)", param="n")
    for name, value in (request.model_extra or {}).items():
        if name in _UNSUPPORTED and value not in (None, False, 0, "", [], {}) \
                and value not in _DEFAULTS.get(name, ()):
            raise APIError(400, f"{name} is not supported: {_UNSUPPORTED[name]}", param=name)
    for i, message in enumerate(request.messages):
        if not isinstance(message.content, list):
            continue
        for j, part in enumerate(message.content):
            kind = part.get("type")
            if kind != "text" and not (kind == "refusal" and message.role == "assistant"):
                raise APIError(400, f"{kind or 'untyped'} content is not supported: the agent "
                                    f"{request.model!r} reads text only (send the "
                                    f"{kind or 'part'} as text, or leave it out)",
                               param=f"messages[{i}].content[{j}]")


def _text(message: ChatMessage) -> str:
    if isinstance(message.content, list):  # content parts: text only (see refuse_unsupported)
        return "".join(p.get("text", "") for p in message.content if p.get("type") == "text")
    return message.content or ""


def _pair(message: ChatMessage) -> list[Any]:
    """A message as its conversation digest reads it."""
    return [message.role, _text(message), message.tool_calls or message.function_call]


def _history(messages: list[ChatMessage]) -> list[BaseMessage]:
    """A client's earlier messages as a new thread's opening (system messages are the agent's
    profile's business, so they are left out)."""
    history: list[BaseMessage] = []
    for i, message in enumerate(messages):
        if message.role == "user":
            history.append(HumanMessage(_text(message)))
        elif message.role == "assistant":
            history.append(AIMessage(_text(message), tool_calls=_calls(message, i)))
        elif message.role in ("tool", "function"):
            history.append(ToolMessage(_text(message), name=message.name,
                                       tool_call_id=message.tool_call_id or f"call_{i}"))
    return history


async def conversation(body: ChatRequest, header: str | None, key: str | None,
                       store: ConversationStore) -> tuple[str, list[BaseMessage], bool]:
    """The thread a request's conversation lives in, the messages this turn adds to it, and
    whether the thread was found by the conversation's content (then its digest is stored
    again after the turn)."""
    turn = new_messages(body)
    explicit = header or (body.metadata or {}).get("thread_id") or body.user
    if explicit:
        return (f"{key}:{explicit}" if key else str(explicit)), turn, False
    last = max((i for i, m in enumerate(body.messages) if m.role == "assistant"), default=-1)
    if last >= 0:
        earlier = body.messages[:last + 1]
        found = await store.find(digest(key, body.model, map(_pair, earlier)))
        if found:
            return found, turn, True
        # Unknown: a new thread, opened with what the client says came before.
        seeded = _history(earlier[:last] if isinstance(turn[0], AIMessage) else earlier)
        turn = seeded + turn
    return f"chat-{uuid.uuid4().hex}", turn, True


def new_messages(request: ChatRequest) -> list[BaseMessage]:
    """What this turn adds to the thread: the messages after the last assistant reply (the
    thread holds the rest). User messages are applied; tool results (``tool``, or the legacy
    ``function``) come with the assistant message whose calls they answer, so the thread reads
    call, then result."""
    messages = request.messages
    last = max((i for i, m in enumerate(messages) if m.role == "assistant"), default=-1)
    results = [i for i in range(last + 1, len(messages))
               if messages[i].role in ("tool", "function")]
    calls = _calls(messages[last], last) if last >= 0 else []
    if results and not calls:
        raise APIError(400, f"messages[{results[0]}] is a tool result, but no assistant "
                            "message before it calls a tool", param=f"messages[{results[0]}]")
    turn: list[BaseMessage] = []
    if results:
        turn.append(AIMessage(_text(messages[last]), tool_calls=calls))
    unanswered = [call["id"] for call in calls]
    for i in range(last + 1, len(messages)):
        message = messages[i]
        if message.role == "user":
            turn.append(HumanMessage(_text(message)))
        elif message.role in ("tool", "function"):
            if isinstance(turn[-1], HumanMessage):  # models need a call's results right after it
                raise APIError(400, f"messages[{i}] is a tool result after a user message: "
                                    "results follow the assistant message that made the calls",
                               param=f"messages[{i}]")
            call_id = _answered(message, i, calls, unanswered)
            turn.append(ToolMessage(_text(message), tool_call_id=call_id,
                                    name=message.name or _name_of(calls, call_id)))
    if results and unanswered:
        raise APIError(400, f"messages[{last}] calls {', '.join(unanswered)}, but no tool "
                            "result answers it", param=f"messages[{last}]")
    if not any(isinstance(m, (HumanMessage, ToolMessage)) for m in turn):
        raise APIError(400, "the conversation must end with a user message (or tool results)",
                       param="messages")
    return turn


def _calls(message: ChatMessage, index: int) -> list[dict[str, Any]]:
    """The tool calls of an assistant message, from ``tool_calls`` or a legacy
    ``function_call`` (which has no id: it gets one from its position)."""
    wire = [c.get("function") or {} for c in message.tool_calls or []]
    ids = [c.get("id") for c in message.tool_calls or []]
    if message.function_call:
        wire, ids = [message.function_call], [f"function_call_{index}"]
    calls = []
    for j, (function, call_id) in enumerate(zip(wire, ids, strict=True)):
        where = (f"messages[{index}].function_call" if message.function_call
                 else f"messages[{index}].tool_calls[{j}]")
        try:
            args = json.loads(function.get("arguments") or "{}")
        except (TypeError, json.JSONDecodeError):
            args = None
        if not function.get("name") or not call_id or not isinstance(args, dict):
            raise APIError(400, f"{where} needs a name, an id and arguments that are a JSON "
                                "object", param=where)
        calls.append({"name": function["name"], "args": args, "id": call_id,
                      "type": "tool_call"})
    return calls


def _answered(message: ChatMessage, index: int, calls: list[dict[str, Any]],
              unanswered: list[str]) -> str:
    """The id of the call a tool result answers: its ``tool_call_id``, or for a legacy
    ``function`` message, the first unanswered call of its name."""
    if message.role == "tool":
        call_id = message.tool_call_id
    else:
        call_id = next((c["id"] for c in calls
                        if c["id"] in unanswered and c["name"] == message.name), None)
    if call_id not in unanswered:
        raise APIError(400, f"messages[{index}] answers no open tool call of the assistant "
                            f"message before it (tool_call_id or name)",
                       param=f"messages[{index}]")
    unanswered.remove(call_id)
    return call_id


def _name_of(calls: list[dict[str, Any]], call_id: str) -> str:
    return next(c["name"] for c in calls if c["id"] == call_id)


def router(agents: dict[str, Target], runs: RunRecorder, conversations: ConversationStore,
           multitask_strategy: str = "enqueue") -> APIRouter:
    """The OpenAI-compatible routes over ``agents`` (by name): ``GET /v1/models`` and
    ``POST /v1/chat/completions`` (JSON, or SSE chunks with ``stream``).

    A completion answers 404 for an unknown model, 400 for what cannot be honoured and 409
    ``thread_busy`` on a busy thread under ``"reject"``; its ``x-thread-id`` header names the
    thread the conversation maps to. Turns are recorded by ``runs``.
    """
    api = APIRouter()

    @api.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [
            {"id": name, "object": "model", "created": 0, "owned_by": "ponder"}
            for name in agents]}

    @api.post("/v1/chat/completions")
    async def chat_completions(body: ChatRequest, request: Request):
        agent = served_agent(agents, body.model)
        refuse_unsupported(body)
        configurable = run_format((body.model_extra or {}).get("response_format"), agent)
        key = getattr(request.state, "api_key_id", None)
        thread_id, messages, implicit = await conversation(
            body, request.headers.get("x-thread-id"), key, conversations)
        turn = Turn(agent, runs, thread_id, messages, charging(request, body.model),
                     multitask_strategy)
        turn.configurable = configurable
        if implicit:  # where the conversation is now, for the client's next turn to find
            turn.on_reply = lambda text: conversations.remember(
                digest(key, body.model, [*map(_pair, body.messages), ["assistant", text, None]]),
                thread_id)
        await turn.start(stream=body.stream)
        headers = {"x-thread-id": thread_id}
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return EventSourceResponse(_stream(turn, body.model, include_usage), ping=15,
                                       headers=headers)
        try:
            text, usage = await turn.result()
        except OutputError as exc:  # the model could not give the answer in the format
            raise APIError(500, str(exc), code="invalid_output") from None
        return JSONResponse(_completion(body.model, text, usage), headers=headers)

    return api


class Turn:
    """One turn (of a chat completion, a response or an MCP tool call), as a recorded run
    holding its thread's lease, in a task of its own: its usage scope is set and reset in one
    context, whichever task consumes (or abandons) the stream. ``start`` returns once the run
    holds the thread (409 under ``reject`` when it is busy)."""

    def __init__(self, agent: Target, runs: RunRecorder, thread_id: str,
                 messages: list[BaseMessage], charge: Callable[[ModelCall], None],
                 strategy: str) -> None:
        self.agent, self.runs, self.thread_id, self.messages = agent, runs, thread_id, messages
        self.charge, self.strategy = charge, strategy
        self.events: asyncio.Queue = asyncio.Queue()  # (mode, data) items, then None
        self.on_reply: Callable[[str], Awaitable[None]] | None = None
        self.configurable: dict[str, Any] | None = None  # e.g. the answer's response_format
        self._stream = False
        self._holding: asyncio.Future = asyncio.get_running_loop().create_future()
        self._reply: asyncio.Future = asyncio.get_running_loop().create_future()
        self._task: asyncio.Task | None = None

    async def start(self, stream: bool) -> None:
        """Start the turn (``stream``: its LangGraph stream items go to ``events``, then None);
        returns once it holds its thread, raises what failed before."""
        self._stream = stream
        self._task = asyncio.create_task(self._run())
        # Its failure reaches the caller through result(); read it here too, so asyncio does not
        # also log it as never retrieved.
        self._task.add_done_callback(lambda task: task.cancelled() or task.exception())
        await asyncio.wait([self._holding, self._task], return_when=asyncio.FIRST_COMPLETED)
        if not self._holding.done():
            await self._task  # it failed before it held the thread: raise that
        self._holding.result()

    async def _run(self) -> None:
        recorded = convert_to_openai_messages(self.messages)
        try:
            async with self.runs.recording(self.agent.name, recorded, self.thread_id,
                                           multitask_strategy=self.strategy) as (
                    _, trace, finish):
                self._holding.set_result(None)
                with track_usage(UsageLog(on_call=self.charge)) as log:
                    text = await (self._streamed(trace) if self._stream
                                  else self._invoked(trace))
                    finish("success", {"messages": [AIMessage(text)]})
                    if self.on_reply is not None:
                        await self.on_reply(text)
                    # The reply goes out now; work after it (memory extraction) is still
                    # charged as it is made, and the record waits for it.
                    self._reply.set_result((text, _usage(log)))
                    self.events.put_nowait(None)
        except ThreadBusy as exc:
            raise APIError(409, str(exc), code="thread_busy") from None
        except BaseException as exc:
            if not self._reply.done():
                self._reply.set_exception(exc)
            raise
        finally:
            self.events.put_nowait(None)

    def _config(self, trace: Any) -> dict[str, Any]:
        return {"callbacks": [trace], **({"configurable": self.configurable}
                                         if self.configurable else {})}

    def reply_stream(self) -> ReplyStream:
        """The ReplyStream of this turn: a typed answer's text is known only at its end (its
        first try may be repaired)."""
        return ReplyStream(None) if self.configurable else self.agent.reply_stream()

    async def _invoked(self, trace: Any) -> str:
        state = await self.agent.ainvoke(self.messages, thread_id=self.thread_id,
                                         config=self._config(trace))
        return final_text(state)

    async def _streamed(self, trace: Any) -> str:
        reply, pieces = self.reply_stream(), []
        async for item in self.agent.astream(self.messages, thread_id=self.thread_id,
                                             stream_mode=STREAM_MODES,
                                             config=self._config(trace)):
            pieces += [p.text for p in reply.feed(*item)]
            self.events.put_nowait(item)
        return "".join(pieces + [p.text for p in reply.end()])

    async def result(self) -> tuple[str, dict[str, int]]:
        """The reply's text and the turn's usage up to it (OpenAI's keys), once it is known."""
        return await asyncio.shield(self._reply)

    def cancel(self) -> None:
        """Stop the turn (the client left before its reply); a no-op once the reply is known,
        so the work after it (memory extraction, the record) is not lost."""
        if self._task is not None and not self._reply.done():
            self._task.cancel()


def _completion(model: str, text: str, usage: dict[str, int]) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion",
        "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                     "finish_reason": "stop", "logprobs": None}],
        "usage": usage,
    }


def _usage(log: UsageLog) -> dict[str, int]:
    """A turn's usage, OpenAI style: every model call it made up to its reply."""
    return {"prompt_tokens": log.input_tokens, "completion_tokens": log.output_tokens,
            "total_tokens": log.total_tokens}


async def _stream(turn: Turn, model: str, include_usage: bool) -> AsyncIterator[str]:
    """The OpenAI chunk sequence: role first, content deltas, finish, usage, [DONE]."""
    head = {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion.chunk",
            "created": int(time.time()), "model": model}

    def chunk(delta: dict, finish: str | None = None) -> str:
        return json.dumps({**head, "choices": [{"index": 0, "delta": delta,
                                                 "finish_reason": finish}]})

    yield chunk({"role": "assistant", "content": ""})
    reply = turn.reply_stream()
    try:
        while (item := await turn.events.get()) is not None:
            for piece in reply.feed(*item):
                yield chunk({"content": piece.text})
        _, log = await turn.result()
        for piece in reply.end():
            yield chunk({"content": piece.text})
    except Exception as exc:  # the stream has started: report in-band, OpenAI style
        yield json.dumps({"error": {"message": safe_error(exc), "type": "server_error",
                                    "param": None, "code": None}})
        yield "[DONE]"
        return
    finally:
        turn.cancel()  # the client left: stop the turn (a no-op once it has ended)
    yield chunk({}, "stop")
    if include_usage:
        yield json.dumps({**head, "choices": [], "usage": log})
    yield "[DONE]"


def charging(request: Request, agent: str) -> Callable[[ModelCall], None]:
    """Charges each model call of a request's turn, as it is made (background work after the
    reply included), to the caller's key and to the agent's token count in /metrics."""
    guard, metrics = request.app.state.guard, request.app.state.metrics

    def charge(call: ModelCall) -> None:
        guard.charge_tokens(request, call.total_tokens)
        metrics.add_tokens(agent, call.total_tokens)
        if call.cost_usd is not None:
            metrics.add_cost(agent, call.cost_usd)

    return charge


def served_agent(agents: dict[str, Target], model: str) -> Target:
    """The served agent a request's ``model`` names (404 ``model_not_found`` otherwise)."""
    agent = agents.get(model)
    if agent is None:
        raise APIError(404, f"The model {model!r} does not exist: use one of "
                            f"{', '.join(agents)}", param="model", code="model_not_found")
    return agent


def safe_error(exc: Exception) -> str:
    """What a client may read of a turn's failure: a model call's error, else a generic line
    (the details are in the server log)."""
    if isinstance(exc, ModelCallError | OutputError | BudgetExceeded):
        return str(exc)
    return "the agent failed while answering; the server log has the details"
