"""Run traces: a LangChain tracer (``RunTracer``, a callback handler) that records each step of a
run (node, model and tool spans with latency and tokens), and their export as OpenTelemetry spans
when the application configures an SDK."""

from __future__ import annotations

import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING
from uuid import UUID

from langchain_core.callbacks import AsyncCallbackHandler

from ponder.models import UsageLog, track_usage

if TYPE_CHECKING:
    from ponder.graphs.runs import RunRecord


@dataclass
class Span:
    """One step of a run's trace: its number (``seq``), its parent's number, kind (node, model
    or tool), name, start (epoch seconds), latency (seconds), tokens (model spans) and error."""
    seq: int
    parent: int | None
    kind: str
    name: str
    started_at: float
    latency_s: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    error: str | None = None


class RunTracer(AsyncCallbackHandler):
    """A run's tracer: a LangChain callback handler that turns a run's events into a tree of
    spans; and the run's usage, of every model call made while it is ``collecting()`` (also calls
    that do not pass the run's callbacks on: they make no span, but they are paid for)."""

    def __init__(self) -> None:
        super().__init__()
        self.usage = UsageLog()
        self.spans: list[Span] = []
        self._open: dict[UUID, Span] = {}
        self._parents: dict[UUID, UUID | None] = {}  # every run, spans or plumbing

    def _start(self, run_id: UUID, parent_run_id: UUID | None, kind: str, name: str) -> None:
        self._parents[run_id] = parent_run_id
        while parent_run_id is not None and parent_run_id not in self._open:
            parent_run_id = self._parents.get(parent_run_id)
        parent = self._open.get(parent_run_id) if parent_run_id else None
        span = Span(len(self.spans), parent.seq if parent else None, kind, name, time.time())
        self.spans.append(span)
        self._open[run_id] = span

    def _end(self, run_id: UUID, error: BaseException | None = None) -> Span | None:
        span = self._open.pop(run_id, None)
        if span is not None:
            span.latency_s = time.time() - span.started_at
            if error is not None:
                span.error = f"{type(error).__name__}: {error}"
        return span

    async def on_chain_start(self, serialized, inputs, *, run_id, parent_run_id=None,
                             metadata=None, **kwargs) -> None:
        """Open a node span when the chain is a graph node; otherwise only remember its parent."""
        node = (metadata or {}).get("langgraph_node")
        if node and kwargs.get("name") == node:  # a graph node, not LangGraph's plumbing
            self._start(run_id, parent_run_id, "node", node)
        else:
            self._parents[run_id] = parent_run_id

    async def on_chain_end(self, outputs, *, run_id, **kwargs) -> None:
        """Close the chain's span, if it has one."""
        self._end(run_id)

    async def on_chain_error(self, error, *, run_id, **kwargs) -> None:
        """Close the chain's span with the error."""
        self._end(run_id, error)

    async def on_chat_model_start(self, serialized, messages, *, run_id, parent_run_id=None,
                                  invocation_params=None, **kwargs) -> None:
        """Open a model span named after the model."""
        params = invocation_params or {}
        model = params.get("model_name") or params.get("model") or params.get("_type", "model")
        self._start(run_id, parent_run_id, "model", str(model))

    async def on_llm_end(self, response, *, run_id, **kwargs) -> None:
        """Close the model span and add its reported input and output tokens."""
        span = self._end(run_id)
        if span is None:
            return
        for generations in response.generations:
            for generation in generations:
                usage = getattr(getattr(generation, "message", None), "usage_metadata", None)
                if usage:
                    span.input_tokens = (span.input_tokens or 0) + usage.get("input_tokens", 0)
                    span.output_tokens = (span.output_tokens or 0) + usage.get("output_tokens", 0)

    async def on_llm_error(self, error, *, run_id, **kwargs) -> None:
        """Close the model span with the error."""
        self._end(run_id, error)

    async def on_tool_start(self, serialized, input_str, *, run_id, parent_run_id=None,
                            **kwargs) -> None:
        """Open a tool span named after the tool."""
        self._start(run_id, parent_run_id, "tool", (serialized or {}).get("name", "tool"))

    async def on_tool_end(self, output, *, run_id, **kwargs) -> None:
        """Close the tool span."""
        self._end(run_id)

    async def on_tool_error(self, error, *, run_id, **kwargs) -> None:
        """Close the tool span with the error."""
        self._end(run_id, error)

    def usage_by_model(self) -> dict[str, dict[str, int]]:
        """Usage per model: {model: {"calls", "input_tokens", "output_tokens", "total_tokens"}}."""
        return {model: dict(entry) for model, entry in self.usage.by_model.items()}

    @asynccontextmanager
    async def collecting(self):
        """Count the usage of every model call made in the block, and, when it ends without an
        error, wait for the background work it started (memory writes) so theirs counts too."""
        with track_usage(self.usage):
            yield
        await self.usage.settled()


def otel_configured() -> bool:
    """Whether the application set up an OpenTelemetry SDK (and so, an exporter)."""
    try:
        from opentelemetry import trace
    except ImportError:
        return False
    return not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


def export_spans(run: RunRecord, spans: list[Span]) -> None:
    """A finished run as OpenTelemetry spans: one for the run, one per step beneath it (with
    their real start and end times), to the exporter the application configured."""
    from opentelemetry import trace
    from opentelemetry.trace import Status, StatusCode

    def ns(seconds: float) -> int:
        return int(seconds * 1e9)

    tracer = trace.get_tracer("ponder")
    root = tracer.start_span(f"run {run.target}", start_time=ns(
        run.started_at or run.created_at), attributes={
        "ponder.run.id": run.id, "ponder.run.status": run.status,
        "ponder.run.target": run.target, "ponder.thread.id": run.thread_id or ""})
    opened = {}
    for step in spans:
        parent = opened.get(step.parent, root)
        span = tracer.start_span(f"{step.kind} {step.name}", trace.set_span_in_context(parent),
                                 start_time=ns(step.started_at), attributes={
                                     "ponder.step.kind": step.kind,
                                     "ponder.step.name": step.name})
        if step.input_tokens is not None:
            span.set_attribute("gen_ai.usage.input_tokens", step.input_tokens)
            span.set_attribute("gen_ai.usage.output_tokens", step.output_tokens or 0)
        if step.error:
            span.set_status(Status(StatusCode.ERROR, step.error))
        opened[step.seq] = span
    for step in spans:
        opened[step.seq].end(end_time=ns(step.started_at + (step.latency_s or 0)))
    if run.error:
        root.set_status(Status(StatusCode.ERROR, run.error))
    root.end(end_time=ns(run.ended_at))
