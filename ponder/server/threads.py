"""The threads and runs API (JSON + SSE), for clients that manage conversations themselves.

A thread belongs to one agent and, when keys are in use, to one key: another key gets 404 for it.
A run is one turn on a thread: it streams tokens, node updates, tool calls and interrupts;
an interrupted run is resumed with a value; a running one can be cancelled. Interrupts are
listed as ``{"id", "value"}``; a resume is ``{interrupt_id: answer, ...}`` (or one answer when
one interrupt is pending), refused with 400 when it does not fit the pending interrupts. Two
runs at once on one thread follow the app's policy: ``reject`` (409) or ``enqueue`` (the
second waits).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from fastapi import APIRouter, Request
from langchain_core.messages import AIMessage, ToolMessage, convert_to_openai_messages
from langgraph.types import Interrupt
from pydantic import BaseModel, Field
from sqlalchemy import Column, Float, MetaData, String, Table, delete, select
from sse_starlette.sse import EventSourceResponse

from ponder.agents.agent import ResumeError, final_text
from ponder.agents.reply import Piece
from ponder.db.tables import Tables
from ponder.graphs.targets import Target
from ponder.models import UsageLog, track_usage
from ponder.server.errors import APIError
from ponder.server.openai_api import charging

metadata = MetaData()
threads_table = Table(
    "ponder_threads", metadata,
    Column("id", String(64), primary_key=True),
    Column("agent", String(64), nullable=False),
    Column("key_id", String(32), nullable=True, index=True),
    Column("title", String(200), nullable=True),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)


class NewThread(BaseModel):
    """The body of ``POST /v1/threads``: the agent's name and an optional title (200 characters)."""
    agent: str
    title: str | None = Field(default=None, max_length=200)


class NewRun(BaseModel):
    """The body of ``POST /v1/threads/{id}/runs``: a message (``input``, up to 100,000
    characters), or ``resume``, an answer to pending interrupts; ``stream`` answers with SSE
    events."""
    input: str | None = Field(default=None, max_length=100_000)
    resume: Any = None
    stream: bool = False


@dataclass
class Run:
    """One turn on a thread, kept in the server's memory: its status, times (epoch seconds),
    output text, pending interrupts, error and model usage."""
    id: str
    thread_id: str
    status: Literal["pending", "running", "success", "error", "interrupted", "cancelled"]
    created_at: float = field(default_factory=time.time)
    ended_at: float | None = None
    output: str | None = None
    interrupts: list[dict[str, Any]] = field(default_factory=list)  # {"id", "value"} each
    error: str | None = None
    task: asyncio.Task | None = field(default=None, repr=False)
    # Every model call of the run so far: memory writes after the reply show up once made.
    usage: UsageLog = field(default_factory=UsageLog, repr=False)

    def public(self) -> dict[str, Any]:
        """The run as JSON-ready data; ``usage`` as calls, input, output and total tokens and
        seconds."""
        shown = {f.name: getattr(self, f.name) for f in fields(self)
                 if f.name not in ("task", "usage")}
        return {**shown, "usage": self.usage.as_dict()}


class ThreadStore(Tables):
    """The threads table in the database at ``url`` (default ``PONDER_DATABASE_URL``)."""
    metadata = metadata


def router(agents: dict[str, Target], store: ThreadStore, policy: str) -> APIRouter:
    """The threads and runs routes under ``/v1/threads`` over ``agents`` (by name).

    Create, list, read, read the history of and delete threads; start (JSON or SSE), list and cancel
    runs. A thread of another key is 404. ``policy`` is "reject" (409 for a second run at once on a
    thread) or "enqueue" (it waits).
    """
    api = APIRouter(prefix="/v1/threads")
    runs: dict[str, Run] = {}
    locks: dict[str, asyncio.Lock] = {}

    async def owned(request: Request, thread_id: str) -> dict[str, Any]:
        engine = await store.engine()
        async with engine.connect() as conn:
            row = (await conn.execute(select(threads_table).where(
                threads_table.c.id == thread_id))).first()
        if row is None or row.key_id != getattr(request.state, "api_key_id", None):
            raise APIError(404, f"No thread {thread_id!r}", param="thread_id",
                           code="thread_not_found")
        return dict(row._mapping)

    @api.post("")
    async def create_thread(body: NewThread, request: Request) -> dict[str, Any]:
        if body.agent not in agents:
            raise APIError(404, f"No agent {body.agent!r}: use one of {', '.join(agents)}",
                           param="agent")
        now = time.time()
        row = {"id": f"thread_{uuid.uuid4().hex}", "agent": body.agent, "title": body.title,
               "key_id": getattr(request.state, "api_key_id", None), "created_at": now,
               "updated_at": now}
        engine = await store.engine()
        async with engine.begin() as conn:
            await conn.execute(threads_table.insert().values(**row))
        return row

    @api.get("")
    async def list_threads(request: Request) -> dict[str, Any]:
        engine = await store.engine()
        key_id = getattr(request.state, "api_key_id", None)
        query = select(threads_table).where(
            threads_table.c.key_id.is_(None) if key_id is None else
            threads_table.c.key_id == key_id).order_by(threads_table.c.updated_at.desc())
        async with engine.connect() as conn:
            rows = await conn.execute(query)
            return {"data": [dict(r._mapping) for r in rows]}

    @api.get("/{thread_id}")
    async def get_thread(thread_id: str, request: Request) -> dict[str, Any]:
        thread = await owned(request, thread_id)
        snapshot = await agents[thread["agent"]].aget_state(thread_id)
        messages = snapshot.values.get("messages", []) if snapshot.values else []
        return {**thread, "messages": convert_to_openai_messages(messages),
                "next": list(snapshot.next),
                "interrupts": _public(snapshot.interrupts)}

    @api.get("/{thread_id}/history")
    async def history(thread_id: str, request: Request) -> dict[str, Any]:
        thread = await owned(request, thread_id)
        states = []
        async for snapshot in agents[thread["agent"]].aget_state_history(thread_id):
            states.append({"checkpoint_id": snapshot.config["configurable"]["checkpoint_id"],
                           "next": list(snapshot.next),
                           "messages": len((snapshot.values or {}).get("messages", [])),
                           "created_at": snapshot.created_at})
        return {"data": states}

    @api.delete("/{thread_id}")
    async def delete_thread(thread_id: str, request: Request) -> dict[str, Any]:
        thread = await owned(request, thread_id)
        await agents[thread["agent"]].adelete_thread(thread_id)
        engine = await store.engine()
        async with engine.begin() as conn:
            await conn.execute(delete(threads_table).where(threads_table.c.id == thread_id))
        return {"id": thread_id, "deleted": True}

    @api.get("/{thread_id}/runs")
    async def list_runs(thread_id: str, request: Request) -> dict[str, Any]:
        await owned(request, thread_id)
        return {"data": [r.public() for r in runs.values() if r.thread_id == thread_id]}

    @api.post("/{thread_id}/runs/{run_id}/cancel")
    async def cancel_run(thread_id: str, run_id: str, request: Request) -> dict[str, Any]:
        await owned(request, thread_id)
        run = runs.get(run_id)
        if run is None or run.thread_id != thread_id:
            raise APIError(404, f"No run {run_id!r} on this thread", param="run_id")
        if run.task is not None and not run.task.done():
            run.task.cancel()
            await asyncio.gather(run.task, return_exceptions=True)
        return run.public()

    @api.post("/{thread_id}/runs")
    async def start_run(thread_id: str, body: NewRun, request: Request):
        thread = await owned(request, thread_id)
        agent = agents[thread["agent"]]
        if body.input is None and body.resume is None:
            raise APIError(400, "a run needs 'input' (a message) or 'resume' (an answer to an "
                                "interrupt)", param="input")
        lock = locks.setdefault(thread_id, asyncio.Lock())
        if policy == "reject" and lock.locked():
            raise APIError(409, "a run is already in progress on this thread: wait for it, "
                                "or cancel it", code="thread_busy")
        payload: Any = body.input
        if body.resume is not None:
            try:
                payload = await agent.resume_input(thread_id, body.resume)
            except ResumeError as exc:
                raise APIError(400, str(exc), param="resume", code=(
                    "interrupt_not_pending" if exc.unknown else "ambiguous_resume")) from None
        run = Run(f"run_{uuid.uuid4().hex}", thread_id, "pending",
                  usage=UsageLog(on_call=charging(request, thread["agent"])))
        runs[run.id] = run
        events: asyncio.Queue = asyncio.Queue()
        # The task starts with a copy of this context: every model call of the turn, its
        # background work included, is counted in the run's usage and charged as it is made.
        with track_usage(run.usage):
            run.task = asyncio.create_task(_execute(agent, run, payload, lock, events, store))
        if body.stream:
            return EventSourceResponse(_relay(run, events), ping=15)
        try:
            await asyncio.shield(run.task)
        except asyncio.CancelledError:
            pass
        return run.public()

    return api


async def _execute(agent: Target, run: Run, payload: Any, lock: asyncio.Lock,
                   events: asyncio.Queue, store: ThreadStore) -> None:
    """Run one turn, posting events; the run record says how it ended."""
    try:
        async with lock:
            run.status = "running"
            await events.put(("run", {"id": run.id, "status": "running"}))
            final: dict[str, Any] | None = None
            interrupted = False
            reply = agent.reply_stream()
            async for mode, data in agent.astream(payload, thread_id=run.thread_id,
                                                  stream_mode=["messages", "updates", "values"]):
                for piece in reply.feed(mode, data):
                    await events.put(("token", _token(piece)))
                if mode == "updates":
                    if data.get("__metadata__", {}).get("cached"):
                        # Writes saved by an earlier run (a tool call that finished before
                        # another interrupted), replayed on resume: reported by that run.
                        continue
                    for node, change in data.items():
                        if node == "__interrupt__":
                            interrupted = True  # listed once the run stops: see below
                            continue
                        for message in (change or {}).get("messages", []):
                            if isinstance(message, AIMessage) and message.tool_calls:
                                await events.put(("tool_call", {"calls": message.tool_calls}))
                            elif isinstance(message, ToolMessage):
                                await events.put(("tool_result", {
                                    "name": message.name, "content": str(message.content)}))
                        await events.put(("update", {"node": node}))
                elif mode == "values":
                    final = data
            for piece in reply.end():
                await events.put(("token", _token(piece)))
            if interrupted:
                # Concurrent tool calls interrupt in no particular order: the thread's state
                # lists all that are pending, in the order of the calls.
                run.interrupts = _public(await agent.ainterrupts(run.thread_id))
                await events.put(("interrupt", {"interrupts": run.interrupts}))
            run.output = final_text(final or {})
            run.status = "interrupted" if run.interrupts else "success"
            await _touch(store, run.thread_id)
            await events.put(("end", run.public()))
    except asyncio.CancelledError:
        run.status = "cancelled"
        await events.put(("end", run.public()))
        raise
    except Exception as exc:
        run.status, run.error = "error", f"{type(exc).__name__}: {exc}"
        await events.put(("end", run.public()))
    finally:
        run.ended_at = time.time()
        await events.put(None)


def _public(interrupts: Sequence[Interrupt]) -> list[dict[str, Any]]:
    """Interrupts as JSON: the id to answer each by, and its value (what it asks)."""
    return [{"id": i.id, "value": i.value} for i in interrupts]


def _token(piece: Piece) -> dict[str, Any]:
    # Every token is the reply's; "reply" stays for clients that filtered on it when tokens
    # of other model calls were sent too.
    return {"text": piece.text, "node": piece.node, "reply": True}


async def _touch(store: ThreadStore, thread_id: str) -> None:
    engine = await store.engine()
    async with engine.begin() as conn:
        await conn.execute(threads_table.update().where(
            threads_table.c.id == thread_id).values(updated_at=time.time()))


async def _relay(run: Run, events: asyncio.Queue) -> AsyncIterator[dict[str, str]]:
    while (item := await events.get()) is not None:
        kind, data = item
        yield {"event": kind, "data": json.dumps(data, default=str)}
