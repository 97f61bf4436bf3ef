"""Run records: every recorded run gets a row (target, input, thread, status, timings, tokens
per model, error) and a trace of its steps (node, model and tool spans with latency and tokens),
stored through SQLAlchemy in the one database.

    async with RunRecorder() as recorder:
        state = await recorder.run("support", agent, "Where is my order?", thread_id="t1")
"""

from __future__ import annotations

import json
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from langchain_core.callbacks import AsyncCallbackHandler
from sqlalchemy import Column, Float, Integer, MetaData, String, Table, Text, select

from ponder.agents.agent import Agent
from ponder.graphs.tables import Tables

metadata = MetaData()
runs_table = Table(
    "ponder_runs", metadata,
    Column("id", String(40), primary_key=True),
    Column("target", String(200), nullable=False),
    Column("input", Text, nullable=True),
    Column("thread_id", String(200), nullable=True),
    Column("status", String(20), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("ended_at", Float, nullable=True),
    Column("usage", Text, nullable=True),   # JSON: {model: {input_tokens, output_tokens, calls}}
    Column("error", Text, nullable=True),
)
steps_table = Table(
    "ponder_run_steps", metadata,
    Column("run_id", String(40), primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("parent", Integer, nullable=True),
    Column("kind", String(10), nullable=False),  # node, model, tool
    Column("name", String(200), nullable=False),
    Column("started_at", Float, nullable=False),
    Column("latency_s", Float, nullable=True),
    Column("input_tokens", Integer, nullable=True),
    Column("output_tokens", Integer, nullable=True),
    Column("error", Text, nullable=True),
)


@dataclass
class Span:
    seq: int
    parent: int | None
    kind: str
    name: str
    started_at: float
    latency_s: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    error: str | None = None


class Trace(AsyncCallbackHandler):
    """A LangChain callback handler that turns a run's events into a tree of spans."""

    def __init__(self) -> None:
        super().__init__()
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
        node = (metadata or {}).get("langgraph_node")
        if node and kwargs.get("name") == node:  # a graph node, not LangGraph's plumbing
            self._start(run_id, parent_run_id, "node", node)
        else:
            self._parents[run_id] = parent_run_id

    async def on_chain_end(self, outputs, *, run_id, **kwargs) -> None:
        self._end(run_id)

    async def on_chain_error(self, error, *, run_id, **kwargs) -> None:
        self._end(run_id, error)

    async def on_chat_model_start(self, serialized, messages, *, run_id, parent_run_id=None,
                                  invocation_params=None, **kwargs) -> None:
        params = invocation_params or {}
        model = params.get("model_name") or params.get("model") or params.get("_type", "model")
        self._start(run_id, parent_run_id, "model", str(model))

    async def on_llm_end(self, response, *, run_id, **kwargs) -> None:
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
        self._end(run_id, error)

    async def on_tool_start(self, serialized, input_str, *, run_id, parent_run_id=None,
                            **kwargs) -> None:
        self._start(run_id, parent_run_id, "tool", (serialized or {}).get("name", "tool"))

    async def on_tool_end(self, output, *, run_id, **kwargs) -> None:
        self._end(run_id)

    async def on_tool_error(self, error, *, run_id, **kwargs) -> None:
        self._end(run_id, error)

    def usage_by_model(self) -> dict[str, dict[str, int]]:
        usage: dict[str, dict[str, int]] = {}
        for span in self.spans:
            if span.kind == "model":
                entry = usage.setdefault(span.name, {"calls": 0, "input_tokens": 0,
                                                     "output_tokens": 0})
                entry["calls"] += 1
                entry["input_tokens"] += span.input_tokens or 0
                entry["output_tokens"] += span.output_tokens or 0
        return usage


class RunRecorder(Tables):
    """Records runs in ``ponder_runs`` and ``ponder_run_steps``."""

    metadata = metadata

    async def run(self, target: str, agent: Agent, input: Any, *, thread_id: str | None = None,
                  user_id: str | None = None) -> dict[str, Any]:
        """Run one turn of ``agent`` and record it (also when it fails)."""
        async with self.recording(target, input, thread_id) as (run_id, trace, finish):
            state = await agent.ainvoke(input, thread_id=thread_id, user_id=user_id,
                                        config={"callbacks": [trace]})
            finish("interrupted" if state.get("__interrupt__") else "success")
            state["run_id"] = run_id
            return state

    @asynccontextmanager
    async def recording(self, target: str, input: Any, thread_id: str | None):
        run_id = f"run_{uuid.uuid4().hex[:16]}"
        trace, outcome = Trace(), {"status": "success"}
        engine = await self.engine()
        async with engine.begin() as conn:
            await conn.execute(runs_table.insert().values(
                id=run_id, target=target, input=json.dumps(input, default=str),
                thread_id=thread_id, status="running", created_at=time.time()))
        error = None
        try:
            yield run_id, trace, lambda status: outcome.update(status=status)
        except BaseException as exc:
            cancelled = type(exc).__name__ == "CancelledError"
            outcome["status"] = "cancelled" if cancelled else "error"
            error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            async with engine.begin() as conn:
                await conn.execute(runs_table.update().where(runs_table.c.id == run_id).values(
                    status=outcome["status"], ended_at=time.time(), error=error,
                    usage=json.dumps(trace.usage_by_model())))
                if trace.spans:
                    await conn.execute(steps_table.insert(), [
                        {"run_id": run_id, **{k: getattr(s, k) for k in (
                            "seq", "parent", "kind", "name", "started_at", "latency_s",
                            "input_tokens", "output_tokens", "error")}} for s in trace.spans])

    async def list(self, limit: int = 20) -> list[dict[str, Any]]:
        engine = await self.engine()
        async with engine.connect() as conn:
            rows = await conn.execute(select(runs_table).order_by(
                runs_table.c.created_at.desc()).limit(limit))
            return [dict(r._mapping) for r in rows]

    async def get(self, run_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
        engine = await self.engine()
        async with engine.connect() as conn:
            row = (await conn.execute(select(runs_table).where(
                runs_table.c.id == run_id))).first()
            if row is None:
                return None
            steps = await conn.execute(select(steps_table).where(
                steps_table.c.run_id == run_id).order_by(steps_table.c.seq))
            return dict(row._mapping), [dict(s._mapping) for s in steps]
