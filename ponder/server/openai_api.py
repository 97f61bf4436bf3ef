"""The OpenAI-compatible API: ``GET /v1/models`` and ``POST /v1/chat/completions``.

``model`` is an agent's name. Chat clients resend the whole conversation each turn, so each
conversation maps to one persistent thread: the ``X-Thread-Id`` header, ``metadata.thread_id`` or
``user`` when given, else a stable hash of the conversation's first messages (and the caller's
key). Only the messages after the thread's last reply are applied to it; the agent's profile is
its system message, so a client's system messages only help name the thread.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage
from pydantic import BaseModel, ConfigDict, Field
from sse_starlette.sse import EventSourceResponse

from ponder.agents.agent import Agent, final_text, turn_usage
from ponder.agents.reply import STREAM_MODES, reply_stream
from ponder.server.errors import APIError


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # sampling options are the agent's business

    model: str
    messages: list[ChatMessage] = Field(min_length=1, max_length=1000)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    metadata: dict[str, Any] | None = None


def _text(message: ChatMessage) -> str:
    if isinstance(message.content, list):  # content parts: keep the text ones
        return "".join(p.get("text", "") for p in message.content if p.get("type") == "text")
    return message.content or ""


def thread_for(request: ChatRequest, header: str | None, key: str | None) -> str:
    """The thread a conversation lives in: explicit when given, else a stable hash."""
    explicit = header or (request.metadata or {}).get("thread_id") or request.user
    if explicit:
        return f"{key or 'public'}:{explicit}" if key else str(explicit)
    # The opening, up to and including the first user message: the same on every later turn.
    opening = []
    for message in request.messages:
        opening.append((message.role, _text(message)))
        if message.role == "user":
            break
    digest = hashlib.sha256(json.dumps([key, request.model, opening]).encode()).hexdigest()
    return f"chat-{digest[:24]}"


def new_messages(request: ChatRequest) -> list[BaseMessage]:
    """The user's messages after the last assistant reply: what this turn adds."""
    tail: list[BaseMessage] = []
    for message in reversed(request.messages):
        if message.role == "assistant":
            break
        if message.role == "user":
            tail.insert(0, HumanMessage(_text(message)))
    if not tail:
        raise APIError(400, "the conversation must end with a user message", param="messages")
    return tail


def router(agents: dict[str, Agent]) -> APIRouter:
    api = APIRouter()

    @api.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [
            {"id": name, "object": "model", "created": 0, "owned_by": "ponder"}
            for name in agents]}

    @api.post("/v1/chat/completions")
    async def chat_completions(body: ChatRequest, request: Request):
        agent = agents.get(body.model)
        if agent is None:
            raise APIError(404, f"The model {body.model!r} does not exist: use one of "
                                f"{', '.join(agents)}", param="model", code="model_not_found")
        key = getattr(request.state, "api_key_id", None)
        thread_id = thread_for(body, request.headers.get("x-thread-id"), key)
        messages = new_messages(body)
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return EventSourceResponse(_stream(agent, body.model, messages, thread_id,
                                               include_usage, request),
                                       ping=15, headers={"x-thread-id": thread_id})
        state = await agent.ainvoke(messages, thread_id=thread_id)
        usage = turn_usage(state["messages"])
        request.app.state.guard.charge_tokens(request, usage["total_tokens"])
        request.app.state.metrics.add_tokens(body.model, usage["total_tokens"])
        return JSONResponse(_completion(body.model, final_text(state), usage),
                            headers={"x-thread-id": thread_id})

    return api


def _completion(model: str, text: str, usage) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion",
        "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                     "finish_reason": "stop", "logprobs": None}],
        "usage": _usage(usage),
    }


def _usage(usage: dict[str, int]) -> dict[str, int]:
    return {"prompt_tokens": usage["input_tokens"], "completion_tokens": usage["output_tokens"],
            "total_tokens": usage["total_tokens"]}


async def _stream(agent: Agent, model: str, messages: list[BaseMessage], thread_id: str,
                  include_usage: bool, request: Request) -> AsyncIterator[str]:
    """The OpenAI chunk sequence: role first, content deltas, finish, usage, [DONE]."""
    head = {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion.chunk",
            "created": int(time.time()), "model": model}

    def chunk(delta: dict, finish: str | None = None) -> str:
        return json.dumps({**head, "choices": [{"index": 0, "delta": delta,
                                                 "finish_reason": finish}]})

    yield chunk({"role": "assistant", "content": ""})
    usage = {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}
    reply = reply_stream(agent)
    try:
        async for mode, data in agent.astream(messages, thread_id=thread_id,
                                              stream_mode=STREAM_MODES):
            if mode == "messages" and isinstance(data[0], (AIMessage, AIMessageChunk)):
                for key, value in (data[0].usage_metadata or {}).items():
                    if key in usage:
                        usage[key] += value
            for piece in reply.feed(mode, data):
                yield chunk({"content": piece.text})
        for piece in reply.end():
            yield chunk({"content": piece.text})
    except Exception as exc:  # the stream has started: report in-band, OpenAI style
        yield json.dumps({"error": {"message": _safe(exc), "type": "server_error",
                                    "param": None, "code": None}})
        yield "[DONE]"
        return
    request.app.state.guard.charge_tokens(request, usage["total_tokens"])
    request.app.state.metrics.add_tokens(model, usage["total_tokens"])
    yield chunk({}, "stop")
    if include_usage:
        yield json.dumps({**head, "choices": [], "usage": _usage(usage)})
    yield "[DONE]"


def _safe(exc: Exception) -> str:
    from ponder.models import ModelCallError

    if isinstance(exc, ModelCallError):
        return str(exc)
    return "the agent failed while answering; the server log has the details"
