"""Usage records: each model call's tokens, cost, latency and attempts, and the scopes that
collect them (``track_usage``), for any LangChain model called inside."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from langchain_core.callbacks import (
    BaseCallbackHandler,
)
from langchain_core.outputs import LLMResult
from langchain_core.tracers.context import register_configure_hook

from ponder.models.prices import cost_usd


@dataclass(frozen=True)
class ModelCall:
    """One completed model call: what it cost and how long it took (retries included).
    ``cost_usd`` is its price in US dollars from genai-prices (``models.prices``); None when
    the model has no known price."""

    provider: str
    model: str
    input_tokens: int
    output_tokens: int
    total_tokens: int
    latency_s: float
    attempts: int
    cost_usd: float | None = None


_adding = threading.Lock()


@dataclass
class UsageLog:
    """Token usage, cost and latency of model calls: running totals, totals per model, and the
    most recent calls. ``on_call`` is told of each call as it is recorded (to charge it at
    once). ``cost_usd`` sums the calls whose price is known (None while there is none);
    ``unpriced_calls`` counts the others. A model's entry in ``by_model`` has a ``cost_usd``
    once one of its calls is priced."""

    recent: deque[ModelCall] = field(default_factory=lambda: deque(maxlen=1000))
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    latency_s: float = 0.0
    cost_usd: float | None = None
    unpriced_calls: int = 0
    by_model: dict[str, dict[str, Any]] = field(default_factory=dict)
    on_call: Callable[[ModelCall], None] | None = field(default=None, repr=False)
    # Background work started in a scope of this log (an agent's memory writes): its calls
    # count here too, once it finishes (see settled()).
    background: set[asyncio.Task] = field(default_factory=set, repr=False)

    def add(self, call: ModelCall) -> None:
        """Record one call (thread-safe)."""
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
            if call.cost_usd is None:
                self.unpriced_calls += 1
            else:
                self.cost_usd = (self.cost_usd or 0.0) + call.cost_usd
                entry["cost_usd"] = entry.get("cost_usd", 0.0) + call.cost_usd
        if self.on_call is not None:
            self.on_call(call)

    def as_dict(self) -> dict[str, Any]:
        """Calls, tokens (input, output, total), latency and cost as JSON-ready numbers."""
        return {
            "calls": self.calls,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "total_tokens": self.total_tokens,
            "latency_s": round(self.latency_s, 6),
            "cost_usd": self.cost_usd,
            "unpriced_calls": self.unpriced_calls,
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
    their attempts (see PolicyRunner.finish)."""

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
            usage = add_usage(usage, first) if first else usage
        input_tokens = int(usage.get("input_tokens", 0))
        output_tokens = int(usage.get("output_tokens", 0))
        total = int(usage.get("total_tokens", input_tokens + output_tokens))
        call = ModelCall(provider, model, input_tokens, output_tokens, total,
                         time.perf_counter() - begun, 1,
                         cost_usd(provider, model, input_tokens, output_tokens))
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


def record_call(call: ModelCall, own: UsageLog) -> None:
    """Record ``call`` in the model's own log and every ``track_usage`` scope around it."""
    own.add(call)
    for log in _usage_scopes.get():
        log.add(call)


def add_usage(total: dict | None, extra: dict) -> dict:
    """Token counts added key by key (LangChain's ``usage_metadata`` dictionaries)."""
    if total is None:
        return dict(extra)
    return {k: total.get(k, 0) + extra.get(k, 0)
            for k in ("input_tokens", "output_tokens", "total_tokens")}
