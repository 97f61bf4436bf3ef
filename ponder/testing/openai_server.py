"""FakeOpenAIServer: a real HTTP server on 127.0.0.1 that speaks the OpenAI API from a script.

It runs uvicorn on its own thread and event loop, so it answers sync clients and clients on
the caller's loop alike. Use it as a context manager (sync or async); ``base_url`` ends in /v1.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import re
import struct
import threading
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.messages import AIMessage, convert_to_messages
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ponder.testing.background import BackgroundServer
from ponder.testing.embeddings import fake_embedding
from ponder.testing.script import Reply, ReplyFunction, Script, count_tokens, forced_tool_name

__all__ = ["FakeOpenAIServer", "Fault", "fake_embedding"]


@dataclass(frozen=True)
class Fault:
    """One injected failure, consumed by one request. Build with the class methods."""

    kind: str
    status: int = 500
    retry_after: float | None = None
    seconds: float = 60.0
    after_chunks: int = 2
    # The error body of a "status" fault: None picks the usual ones for its status.
    message: str | None = None
    code: str | None = None
    error_type: str | None = None

    @classmethod
    def rate_limit(cls, retry_after: float | None = 1.0) -> Fault:
        """429 Too Many Requests, with a Retry-After header (seconds) unless None."""
        return cls("status", status=429, retry_after=retry_after)

    @classmethod
    def quota_exhausted(cls, status: int = 429, code: str | None = "insufficient_quota",
                        error_type: str | None = "insufficient_quota",
                        message: str = "You exceeded your current quota, please check your plan "
                                       "and billing details.") -> Fault:
        """The account has no quota or credit left: by default OpenAI's 429, whose status is a
        rate limit's but whose body's ``code`` and ``type`` are ``insufficient_quota``."""
        return cls("status", status=status, code=code, error_type=error_type, message=message)

    @classmethod
    def server_error(cls, status: int = 500) -> Fault:
        """An HTTP error of ``status`` (default 500) with the usual error body for it."""
        return cls("status", status=status)

    @classmethod
    def context_length(cls) -> Fault:
        """OpenAI's 400 for a request longer than the model's context window
        (``context_length_exceeded``)."""
        return cls("status", status=400, code="context_length_exceeded",
                   message="This model's maximum context length is 128 tokens. However, your "
                           "messages resulted in 4096 tokens. Please reduce the length of the "
                           "messages.")

    @classmethod
    def content_filter(cls, in_prompt: bool = False) -> Fault:
        """A content filter: the answer stopped (200, no content, ``finish_reason``
        ``content_filter``), or with ``in_prompt`` the request refused (Azure OpenAI's 400 with
        the code ``content_filter``)."""
        if in_prompt:
            return cls("status", status=400, code="content_filter",
                       message="The response was filtered due to the prompt triggering the "
                               "content management policy.")
        return cls("content_filter")

    @classmethod
    def hang(cls, seconds: float = 60.0) -> Fault:
        """Say nothing for ``seconds``, then answer normally: a client timeout should fire first."""
        return cls("hang", seconds=seconds)

    @classmethod
    def malformed_json(cls) -> Fault:
        """Answer 200 with a body that is not JSON."""
        return cls("malformed_json")

    @classmethod
    def cut_stream(cls, after_chunks: int = 2) -> Fault:
        """Drop the connection after ``after_chunks`` chunks of a stream (a non-stream request
        passes)."""
        return cls("cut_stream", after_chunks=after_chunks)


class _CutStream(Exception):
    pass


class FakeOpenAIServer:
    """An OpenAI-compatible HTTP server whose chat replies come from ``replies``.

    ``replies`` is scripted like ``ScriptedChatModel``. ``latency`` is the time to the first
    token, ``tokens_per_second`` paces streamed chunks, ``faults`` is consumed one per POST
    request (``None`` entries let a request through). ``api_key``, when given, is required.
    ``requests`` records every request body with its path and arrival time.
    """

    def __init__(
        self,
        replies: Sequence[Reply] | ReplyFunction = (),
        *,
        latency: float = 0.0,
        tokens_per_second: float | None = None,
        faults: Sequence[Fault | None] = (),
        models: Sequence[str] = ("scripted",),
        embedding_dimensions: int = 64,
        api_key: str | None = None,
    ) -> None:
        self.script = Script(replies)
        self.latency = latency
        self.tokens_per_second = tokens_per_second
        self.models = list(models)
        self.embedding_dimensions = embedding_dimensions
        self.api_key = api_key
        self.requests: list[dict[str, Any]] = []
        self._faults = list(faults)
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._background = BackgroundServer(self._app())

    @property
    def base_url(self) -> str:
        """The OpenAI base URL, ``http://127.0.0.1:PORT/v1``. Raises RuntimeError unless started."""
        if self._background.port is None:
            raise RuntimeError("the server is not running: use it as a context manager")
        return f"{self._background.url}/v1"

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> FakeOpenAIServer:
        """Start serving on a thread of its own (see BackgroundServer); the server itself."""
        self._background.start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        self._background.stop()

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> FakeOpenAIServer:
        return await asyncio.to_thread(self.start)

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.stop)

    # -- the app --------------------------------------------------------------------------------

    def _app(self) -> Starlette:
        return Starlette(routes=[
            Route("/v1/chat/completions", self._chat, methods=["POST"]),
            Route("/v1/embeddings", self._embeddings, methods=["POST"]),
            Route("/v1/models", self._models, methods=["GET"]),
        ])

    async def _admit(self, request: Request) -> tuple[dict | None, Fault | None, Response | None]:
        """Authenticate, parse, record and pick the fault for one request."""
        if self.api_key and request.headers.get("authorization") != f"Bearer {self.api_key}":
            return None, None, _error(401, "Incorrect API key provided.", "invalid_api_key")
        try:
            body = json.loads(await request.body())
        except json.JSONDecodeError:
            return None, None, _error(400, "The request body is not valid JSON.", "invalid_json")
        if not isinstance(body, dict):
            return None, None, _error(400, "The request body must be a JSON object.")
        with self._lock:
            self.requests.append({"path": request.url.path, "time": time.monotonic(), **body})
            fault = self._faults.pop(0) if self._faults else None
        if fault is None:
            return body, None, None
        if fault.kind == "status":
            headers = {}
            if fault.retry_after is not None:
                headers["retry-after"] = f"{fault.retry_after:g}"
            message = fault.message or (
                "Rate limit reached." if fault.status == 429 else "Internal server error.")
            return None, fault, _error(fault.status, message, fault.code, headers=headers,
                                       error_type=fault.error_type)
        if fault.kind == "hang":
            await asyncio.sleep(fault.seconds)
            return body, None, None
        if fault.kind == "malformed_json":
            return None, fault, Response('{"id": "chatcmpl-1", "choices": [', status_code=200,
                                         media_type="application/json")
        return body, fault, None  # cut_stream, content_filter: acted on while answering

    async def _models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [
            {"id": m, "object": "model", "created": 0, "owned_by": "ponder"} for m in self.models
        ]})

    async def _embeddings(self, request: Request) -> Response:
        body, fault, response = await self._admit(request)
        if response is not None:
            return response
        texts = body.get("input")
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            return _error(400, "'input' must be a string or a list of strings.", param="input")
        dimensions = int(body.get("dimensions") or self.embedding_dimensions)
        data = []
        for index, text in enumerate(texts):
            vector = fake_embedding(text, dimensions)
            if body.get("encoding_format") == "base64":
                vector = base64.b64encode(struct.pack(f"<{dimensions}f", *vector)).decode()
            data.append({"object": "embedding", "index": index, "embedding": vector})
        tokens = sum(count_tokens(t) for t in texts)
        return JSONResponse({"object": "list", "data": data, "model": body.get("model"),
                             "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    async def _chat(self, request: Request) -> Response:
        body, fault, response = await self._admit(request)
        if response is not None:
            return response
        try:
            messages = convert_to_messages(body.get("messages") or [])
        except (ValueError, TypeError, KeyError, NotImplementedError) as exc:
            return _error(400, f"Invalid 'messages': {exc}", param="messages")
        if not messages:
            return _error(400, "'messages' must be a non-empty list.", param="messages")
        n = int(body.get("n") or 1)
        forced = forced_tool_name(body.get("tool_choice"), body.get("tools"))
        # A JSON response format makes a dict or pydantic reply the message's JSON text.
        as_json = (body.get("response_format") or {}).get("type") in ("json_schema",
                                                                      "json_object")
        try:
            if fault is not None and fault.kind == "content_filter":  # no scripted reply used
                replies = [AIMessage("", response_metadata={"finish_reason": "content_filter"})
                           for _ in range(n)]
            else:
                replies = [await self.script.anext(messages, forced, as_json) for _ in range(n)]
        except Exception as exc:  # a bug or an exhausted script: tell the client what it was
            return _error(500, f"the scripted reply failed: {type(exc).__name__}: {exc}")
        prompt_tokens = count_tokens(" ".join(str(m.content) for m in messages))
        if not body.get("stream"):
            if self.latency:
                await asyncio.sleep(self.latency)
            return JSONResponse(self._completion(body, replies, prompt_tokens))
        return StreamingResponse(self._stream(body, replies, prompt_tokens, fault),
                                 media_type="text/event-stream")

    def _completion(self, body: dict, replies: list[AIMessage], prompt_tokens: int) -> dict:
        choices = []
        for index, reply in enumerate(replies):
            message: dict[str, Any] = {"role": "assistant", "content": reply.content or None}
            if reply.tool_calls:
                message["tool_calls"] = [_wire_call(call) for call in reply.tool_calls]
            choices.append({
                "index": index,
                "message": message,
                "finish_reason": _finish_reason(reply),
                "logprobs": _logprobs(reply, body) if body.get("logprobs") else None,
            })
        return {
            "id": f"chatcmpl-{next(self._ids)}", "object": "chat.completion",
            "created": int(time.time()), "model": body.get("model", "scripted"),
            "choices": choices, "usage": _usage(replies, prompt_tokens),
        }

    async def _stream(self, body: dict, replies: list[AIMessage], prompt_tokens: int,
                      fault: Fault | None) -> AsyncIterator[str]:
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        head = {"id": f"chatcmpl-{next(self._ids)}", "object": "chat.completion.chunk",
                "created": int(time.time()), "model": body.get("model", "scripted")}
        if include_usage:
            head["usage"] = None
        gap = 1 / self.tokens_per_second if self.tokens_per_second else 0.0
        if self.latency:
            await asyncio.sleep(self.latency)
        sent = 0
        for index, reply in enumerate(replies):
            for delta, finish, logprobs in _deltas(reply, body):
                if fault is not None and fault.kind == "cut_stream" \
                        and sent >= fault.after_chunks:
                    raise _CutStream("stream cut by an injected fault")
                if gap and sent:
                    await asyncio.sleep(gap)
                choice = {"index": index, "delta": delta, "finish_reason": finish,
                          "logprobs": logprobs}
                yield f"data: {json.dumps({**head, 'choices': [choice]})}\n\n"
                sent += 1
        if include_usage:
            yield f"data: {json.dumps({**head, 'choices': [], 'usage': _usage(replies, prompt_tokens)})}\n\n"  # noqa: E501
        yield "data: [DONE]\n\n"


def _deltas(reply: AIMessage, body: dict):
    """The stream chunks of one choice: role, content pieces, tool calls by index, finish."""
    yield {"role": "assistant", "content": ""}, None, None
    pieces = re.findall(r"\s*\S+", str(reply.content or ""))
    token_logprobs = _logprobs(reply, body)["content"] if body.get("logprobs") else None
    for i, piece in enumerate(pieces):
        entry = {"content": token_logprobs[i : i + 1]} if token_logprobs else None
        yield {"content": piece}, None, entry
    for index, call in enumerate(reply.tool_calls):
        wire = _wire_call(call)
        arguments = wire["function"]["arguments"]
        half = len(arguments) // 2
        yield {"tool_calls": [{"index": index, "id": wire["id"], "type": "function",
                               "function": {"name": wire["function"]["name"], "arguments": ""}}]}, None, None  # noqa: E501
        for part in (arguments[:half], arguments[half:]):
            yield {"tool_calls": [{"index": index, "function": {"arguments": part}}]}, None, None
    yield {}, _finish_reason(reply), None


def _finish_reason(reply: AIMessage) -> str:
    return reply.response_metadata.get("finish_reason") or (
        "tool_calls" if reply.tool_calls else "stop")


def _wire_call(call: dict) -> dict:
    return {"id": call["id"], "type": "function",
            "function": {"name": call["name"], "arguments": json.dumps(call["args"])}}


def _usage(replies: list[AIMessage], prompt_tokens: int) -> dict:
    completion = 0
    for reply in replies:
        if reply.usage_metadata:
            prompt_tokens = reply.usage_metadata["input_tokens"]
            completion += reply.usage_metadata["output_tokens"]
        else:
            completion += count_tokens(str(reply.content)) + sum(
                count_tokens(json.dumps(c["args"])) for c in reply.tool_calls)
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion,
            "total_tokens": prompt_tokens + completion}


def _logprobs(reply: AIMessage, body: dict) -> dict:
    """The reply's own ``response_metadata["logprobs"]``, or certainty for every token."""
    if reply.response_metadata.get("logprobs"):
        return reply.response_metadata["logprobs"]
    top = int(body.get("top_logprobs") or 0)
    content = []
    for token in re.findall(r"\s*\S+", str(reply.content or "")):
        entry = {"token": token, "logprob": 0.0, "bytes": list(token.encode())}
        content.append({**entry, "top_logprobs": [entry] if top else []})
    return {"content": content}


def _error(status: int, message: str, code: str | None = None, *, param: str | None = None,
           headers: dict | None = None, error_type: str | None = None) -> JSONResponse:
    kind = {400: "invalid_request_error", 401: "authentication_error", 429: "rate_limit_error"}
    return JSONResponse(
        {"error": {"message": message, "type": error_type or kind.get(status, "server_error"),
                   "param": param, "code": code}},
        status_code=status, headers=headers,
    )
