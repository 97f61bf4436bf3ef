"""The routes of the LangGraph Agent Server API over ponder's served agents and graphs.

Assistants are the served targets (one each, id ``uuid5`` of its name as LangGraph makes it;
a run may name its graph instead). Threads live in ``ponder_agent_threads`` and their graph's
checkpoints; runs are records in ``ponder_runs``, executed here under their thread's lease, so
runs of one thread go one at a time across every process sharing the database. Streams carry
``metadata`` first, then the requested stream modes, then ``error`` if the run failed; the
stream closes once the run's record is final.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import nullcontext
from importlib.metadata import version
from typing import Any, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from langgraph.types import Command
from pydantic import BaseModel, ConfigDict, Field
from sse_starlette.sse import EventSourceResponse

from ponder.agents.agent import ResumeError
from ponder.graphs.runs import RunRecord, RunRecorder, ThreadBusy
from ponder.graphs.targets import Target
from ponder.models import ModelCall, UsageLog, track_usage
from ponder.server.agent_server import shapes
from ponder.server.agent_server.streams import RunStream, StoredEvents, Streams, sse, wanted
from ponder.server.agent_server.threads import AgentThreads, ThreadRow
from ponder.server.agent_server.webhooks import check_webhook, deliver
from ponder.server.errors import APIError
from ponder.server.openai_api import charging

log = logging.getLogger("ponder.server")
MAX_OFFSET = 10**9  # larger offsets overflow the databases' integers
STREAM_MODES = ("values", "updates", "messages-tuple", "custom", "debug", "tasks", "checkpoints")


class RequestBody(BaseModel):
    """A request body of the API: keys it does not use are accepted (LangGraph clients send
    some, e.g. ``langsmith_tracer``)."""
    model_config = ConfigDict(extra="allow")


class ThreadCreate(RequestBody):
    """``POST /threads``."""
    thread_id: str | None = Field(default=None, max_length=200, pattern=r"^[^\x00]+$")
    metadata: dict[str, Any] = Field(default_factory=dict)
    if_exists: Literal["raise", "do_nothing"] = "raise"


class ThreadSearch(RequestBody):
    """``POST /threads/search`` and ``/threads/count``."""
    ids: list[str] | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    status: Literal["idle", "busy", "interrupted", "error"] | None = None
    limit: int = Field(default=10, ge=1, le=1000)
    offset: int = Field(default=0, ge=0, le=MAX_OFFSET)


class ThreadPatch(RequestBody):
    """``PATCH /threads/{id}``: metadata merged into the thread's."""
    metadata: dict[str, Any] = Field(default_factory=dict)


class StateUpdate(RequestBody):
    """``POST /threads/{id}/state``."""
    values: dict[str, Any] | list[Any] | None = None
    as_node: str | None = None


class HistoryRequest(RequestBody):
    """``POST /threads/{id}/history``: the newest ``limit`` checkpoints."""
    limit: int = Field(default=10, ge=1, le=1000)


class AssistantSearch(RequestBody):
    """``POST /assistants/search`` and ``/assistants/count``."""
    graph_id: str | None = None
    name: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    limit: int = Field(default=10, ge=1, le=1000)
    offset: int = Field(default=0, ge=0, le=MAX_OFFSET)


class ResumeCommand(RequestBody):
    """A run's ``command``: ``resume`` answers pending interrupts (one value, or
    ``{interrupt_id: value}``); ``update`` and ``goto`` are LangGraph's."""
    resume: Any = None
    update: dict[str, Any] | list[Any] | None = None
    goto: str | list[str] | None = None


class RunCreate(RequestBody):
    """A run: on which assistant, with what input or command, streamed how, and what to do
    when its thread is busy (``multitask_strategy``)."""
    assistant_id: str
    input: dict[str, Any] | None = None
    command: ResumeCommand | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    config: dict[str, Any] = Field(default_factory=dict)
    stream_mode: str | list[str] = "values"
    multitask_strategy: Literal["reject", "enqueue", "interrupt", "rollback"] = "enqueue"
    if_not_exists: Literal["reject", "create"] = "reject"
    on_completion: Literal["delete", "keep"] = "delete"
    webhook: str | None = Field(default=None, max_length=2000)
    stream_resumable: bool = False

    def modes(self) -> list[str]:
        """The requested stream modes, checked."""
        modes = [self.stream_mode] if isinstance(self.stream_mode, str) else self.stream_mode
        unknown = [m for m in modes if m not in STREAM_MODES]
        if unknown:
            raise APIError(422, f"stream_mode {', '.join(map(repr, unknown))} is not "
                                f"supported: use {', '.join(STREAM_MODES)}",
                           param="stream_mode")
        return modes or ["values"]


class AgentServer:
    """The Agent Server API's state in one app: targets by assistant id and name, the threads,
    the run records, this process's run streams and tasks."""

    def __init__(self, targets: dict[str, Target], runs: RunRecorder,
                 threads: AgentThreads, events: StoredEvents) -> None:
        self.targets = targets
        self.by_id = {shapes.assistant_id(name): t for name, t in targets.items()}
        self.runs, self.threads, self.events = runs, threads, events
        self.streams = Streams()
        self.tasks: dict[str, asyncio.Task] = {}
        self.outputs: dict[str, dict[str, Any]] = {}  # a run's wait/join body, once it ended
        self.deliveries: set[asyncio.Task] = set()  # webhooks being sent

    # -- lookups -------------------------------------------------------------------------------

    def target(self, assistant: str) -> Target:
        """The target an assistant id or graph id names (404 otherwise)."""
        found = self.by_id.get(assistant) or self.targets.get(assistant)
        if found is None:
            raise APIError(404, f"Assistant {assistant!r} not found: use one of "
                                f"{', '.join(self.targets)} (or their assistant ids)")
        return found

    async def thread(self, thread_id: str, request: Request) -> ThreadRow:
        """The caller's thread (404 otherwise)."""
        found = (await self.threads.get(thread_id, caller_key(request))
                 if "\x00" not in thread_id else None)  # Postgres text holds no NUL
        if found is None:
            raise APIError(404, f"Thread with ID {thread_id!r} not found")
        return found

    async def thread_json(self, thread: ThreadRow, new: bool = False) -> dict[str, Any]:
        """A thread as the API shows it, its status and values from its runs and state
        (``new``: just made, so it has neither)."""
        values, interrupts, status, error = None, {}, "idle", None
        if new:
            return self._thread_shape(thread, values, interrupts, status, error)
        if thread.graph_id in self.targets:
            snapshot = await self.targets[thread.graph_id].aget_state(thread.id)
            values = shapes.jsonable(snapshot.values or {})
            for task in snapshot.tasks:
                if task.interrupts:
                    interrupts[task.id] = shapes.jsonable(list(task.interrupts))
            status = "interrupted" if snapshot.next else "idle"
        latest = await self.runs.of_thread(thread.id, limit=1)
        if latest and latest[0].status in ("pending", "running"):
            status = "busy"
        elif latest and latest[0].status == "error":
            status = "error"
            error = {"error": "Error", "message": latest[0].error}
        return self._thread_shape(thread, values, interrupts, status, error)

    @staticmethod
    def _thread_shape(thread: ThreadRow, values: Any, interrupts: dict[str, Any], status: str,
                      error: dict[str, Any] | None) -> dict[str, Any]:
        return {"thread_id": thread.id, "created_at": shapes.iso(thread.created_at),
                "updated_at": shapes.iso(thread.updated_at),
                "state_updated_at": shapes.iso(thread.updated_at),
                "metadata": thread.metadata, "status": status, "config": {},
                "values": values, "interrupts": interrupts, "error": error}

    async def run_of(self, thread_id: str, run_id: str) -> RunRecord:
        """The run ``run_id`` of the thread (404 otherwise)."""
        record = await self.runs.record(run_id) if "\x00" not in run_id else None
        if record is None or record.thread_id != thread_id:
            raise APIError(404, f"Run with ID {run_id} not found on thread {thread_id}")
        return record

    # -- runs ------------------------------------------------------------------------------------

    async def start(self, thread: ThreadRow, body: RunCreate, *, temporary: bool = False,
                    charge: Callable[[ModelCall], None] | None = None) -> RunRecord:
        """Record a run and start executing it here; under ``reject`` a busy thread is refused
        with 409 before anything is kept. ``charge`` is called with each model call the run
        makes (the caller's key and /metrics count them)."""
        target = self.target(body.assistant_id)
        modes = body.modes()
        if body.command is not None and body.command.resume is not None and temporary:
            raise APIError(400, "You must provide a thread_id when resuming: a stateless run "
                                "has no interrupted thread to resume")
        if body.webhook is not None:
            check_webhook(body.webhook)
        value = await self._input(target, thread.id, body)
        if thread.graph_id != target.name:
            await self.threads.update(thread, graph_id=target.name)
        kwargs = {"input": body.input, "command": body.command and body.command.model_dump(),
                  "stream_mode": modes, "config": body.config,
                  "metadata": {**thread.metadata, **body.metadata,
                               "graph_id": target.name,
                               "assistant_id": shapes.assistant_id(target.name)},
                  "multitask_strategy": body.multitask_strategy, "temporary": temporary,
                  "webhook": body.webhook, "stream_resumable": body.stream_resumable}
        run_id = await self.runs.create(target.name, body.input, thread_id=thread.id,
                                        kwargs=kwargs, executor="caller")
        claimed = False
        if body.multitask_strategy == "reject":
            try:
                await self.runs.acquire(run_id, reject=True)
            except ThreadBusy:
                raise APIError(409, "Thread is already running a task. Wait for it to finish "
                                    "or choose a different multitask strategy.",
                               code="thread_busy") from None
            claimed = True
        elif body.multitask_strategy in ("interrupt", "rollback"):
            for other in await self.runs.of_thread(thread.id, limit=100):
                if other.id != run_id and other.status in ("pending", "running"):
                    await (self.cancel(other) if body.multitask_strategy == "interrupt"
                           else self.rollback(other))
        stream = self.streams.open(run_id, self.events if body.stream_resumable else None)
        self.tasks[run_id] = task = asyncio.create_task(self._execute(
            run_id, target, thread.id, value, modes, body.config, claimed, stream,
            temporary and body.on_completion == "delete", body.webhook, charge=charge))
        task.add_done_callback(lambda _: self.tasks.pop(run_id, None))
        return await self.runs.record(run_id)

    async def _input(self, target: Target, thread_id: str, body: RunCreate) -> Any:
        """The run's input: its ``input``, or a Command (a ``resume`` checked against the
        thread's pending interrupts, 400 when it does not fit them)."""
        if body.command is None:
            return body.input
        command = body.command
        resume = None
        if command.resume is not None:
            try:
                resume = (await target.resume_input(thread_id, command.resume)).resume
            except ResumeError as exc:
                raise APIError(400, str(exc), param="command.resume") from None
        return Command(resume=resume, update=command.update, goto=command.goto or ())

    async def _execute(self, run_id: str, target: Target, thread_id: str, value: Any,
                       modes: list[str], config: dict[str, Any], claimed: bool,
                       stream: RunStream, temporary: bool, webhook: str | None,
                       resumed: bool = False,
                       charge: Callable[[ModelCall], None] | None = None) -> None:
        progress: dict[str, Any] = {"values": {}}  # the latest values, as JSON
        handed_back = False  # to another process, at shutdown: it is not over
        try:
            if not claimed:
                await self.runs.acquire(run_id)
            async with self.runs.lease(run_id) as (trace, finish):
                if not resumed:  # where the thread was, for a rollback or a takeover
                    head = (await target.aget_state(thread_id)).config or {}
                    await self.runs.set_base_checkpoint(
                        run_id, head.get("configurable", {}).get("checkpoint_id") or "")
                await stream.add("metadata", {"run_id": run_id, "attempt": 1})
                usage = track_usage(UsageLog(on_call=charge)) if charge else nullcontext()
                with usage:
                    last, interrupts = await self._relay(target, value, thread_id, modes,
                                                         config, trace, stream, progress)
                final = progress["values"]
                if interrupts:
                    final = {**final, "__interrupt__": interrupts}
                finish("interrupted" if interrupts else "success", last)
            self.outputs[run_id] = final
        except asyncio.CancelledError:
            self.outputs[run_id] = progress["values"]
            handed_back = self.runs.handing_back
        except Exception as exc:
            error = {"error": type(exc).__name__, "message": str(exc)}
            self.outputs[run_id] = {"__error__": error}
            await stream.add("error", error)
        finally:
            try:
                if webhook is not None and not handed_back:
                    await self._notify(webhook, run_id)
                if temporary and not handed_back:  # a stateless run leaves nothing behind
                    with contextlib.suppress(Exception):
                        await target.adelete_thread(thread_id)
                    await self.runs.forget_thread(thread_id)
                    await self.threads.delete(thread_id)
                    await self.events.forget([run_id])
            finally:
                await stream.end()  # once the record is final (clients check it after)

    async def _relay(self, target: Target, value: Any, thread_id: str, modes: list[str],
                     config: dict[str, Any], trace: Any, stream: RunStream,
                     progress: dict[str, Any]) -> tuple[Any, list[Any]]:
        """Run the graph, adding what it streams in ``modes`` to ``stream``; the last values
        (as the graph holds them) and the interrupts it stopped at. ``values`` and
        ``updates`` are always followed: the first for ``wait``, the second for interrupts."""
        graph_modes = sorted({"messages" if m == "messages-tuple" else m for m in modes}
                             | {"values", "updates"})
        last, interrupts = None, []
        async for mode, chunk in target.astream(
                value, thread_id=thread_id, stream_mode=graph_modes,
                config={"configurable": config.get("configurable", {}), "callbacks": [trace]}):
            if mode == "values":
                last, progress["values"] = chunk, shapes.jsonable(chunk)
            elif mode == "updates" and isinstance(chunk, dict) and "__interrupt__" in chunk:
                interrupts += shapes.jsonable(list(chunk["__interrupt__"]))
                if "values" in modes and "updates" not in modes:  # as LangGraph's server does
                    await stream.add("values", {**progress["values"],
                                                "__interrupt__": interrupts})
            if mode in modes or (mode == "messages" and "messages-tuple" in modes):
                await stream.add(mode, shapes.jsonable(chunk))
        return last, interrupts

    async def sweep(self) -> None:
        """Forever: take over the runs of this server's targets whose process is gone (no
        heartbeat for ``stale_s``), every ``stale_s / 2`` seconds."""
        while True:
            await asyncio.sleep(self.runs.stale_s / 2)
            try:
                for orphan in await self.runs.orphans(list(self.targets)):
                    record = await self.runs.claim(orphan.id, self.runs.holder,
                                                   self.runs.stale_s)
                    if record is not None:
                        await self._take_over(record)
            except Exception:
                log.exception("taking over runs of a stopped server failed")

    async def _take_over(self, record: RunRecord) -> None:
        """Execute a claimed run whose process is gone: from its last checkpoint when it had
        made progress, else from its input."""
        target = self.targets[record.target]
        kwargs = record.kwargs or {}
        head = (await target.aget_state(record.thread_id)).config or {}
        now = head.get("configurable", {}).get("checkpoint_id") or ""
        if record.base_checkpoint is not None and now != record.base_checkpoint:
            value = None  # it ran: go on from where it stopped
        elif kwargs.get("command"):
            command = kwargs["command"]
            value = Command(resume=command.get("resume"), update=command.get("update"),
                            goto=command.get("goto") or ())
        else:
            value = record.input
        log.warning("run %s of thread %s: its process is gone; going on with it here",
                    record.id, record.thread_id)
        resumable = bool(kwargs.get("stream_resumable"))
        stream = self.streams.open(record.id, self.events if resumable else None,
                                   await self.events.last(record.id) if resumable else 0)
        self.tasks[record.id] = task = asyncio.create_task(self._execute(
            record.id, target, record.thread_id, value, kwargs.get("stream_mode", ["values"]),
            kwargs.get("config", {}), True, stream, bool(kwargs.get("temporary")),
            kwargs.get("webhook"), resumed=record.base_checkpoint is not None))
        task.add_done_callback(lambda _: self.tasks.pop(record.id, None))

    async def rollback(self, record: RunRecord) -> None:
        """Cancel a run, wait for it to stop, and discard what it did: its thread goes back
        to the checkpoint it started from, and its record is deleted."""
        await self.cancel(record)
        ended = await asyncio.wait_for(self.runs.wait(record.id, poll_s=0.05), 60)
        target = self.targets.get(record.target)
        if target is not None and record.thread_id and ended.base_checkpoint is not None:
            await target.arewind(record.thread_id, ended.base_checkpoint or None)
        await self.runs.forget(record.id)
        await self.events.forget([record.id])

    async def _notify(self, webhook: str, run_id: str) -> None:
        """Send the ended run to its webhook, in the background (retries take a while)."""
        record = await self.runs.record(run_id)
        if record is None:
            return
        output = self.outputs.get(run_id, {})
        payload = {**shapes.run(record), **(
            {"error": output["__error__"]} if "__error__" in output else {"values": output})}
        task = asyncio.create_task(deliver(webhook, payload))
        self.deliveries.add(task)
        task.add_done_callback(self.deliveries.discard)

    async def cancel(self, record: RunRecord) -> None:
        """Cancel a run: at once when pending or running here, else by its holder within a
        heartbeat."""
        await self.runs.cancel(record.id)
        task = self.tasks.get(record.id)
        if task is not None:
            task.cancel()

    async def aclose(self) -> None:
        """Stop the runs executing here and hand them back: another server process takes
        them over (from their last checkpoint) once this one is gone."""
        self.runs.handing_back = True
        for task in list(self.tasks.values()):
            task.cancel()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)
        # Webhooks already due get a moment to go out; retries past it are dropped.
        if self.deliveries:
            await asyncio.wait(self.deliveries, timeout=5)
        for task in self.deliveries:
            task.cancel()

    async def output(self, run_id: str) -> dict[str, Any]:
        """What ``wait`` and ``join`` answer, once the run has ended: its final values (with
        ``__interrupt__`` when it stopped at interrupts), or ``{"__error__": ...}``."""
        task = self.tasks.get(run_id)
        if task is not None:
            await asyncio.shield(asyncio.wait([task]))
        if run_id in self.outputs:
            return self.outputs[run_id]
        record = await self.runs.wait(run_id, poll_s=0.1)  # run by another process
        if record.status == "error":
            return {"__error__": {"error": "Error", "message": record.error}}
        target = self.targets.get(record.target)
        if target is None or record.thread_id is None:
            return {}
        return shapes.jsonable((await target.aget_state(record.thread_id)).values or {})


def caller_key(request: Request) -> str | None:
    """The id of the caller's API key (None when keys are not in use)."""
    return getattr(request.state, "api_key_id", None)


def _run_headers(record: RunRecord, stream: bool) -> dict[str, str]:
    where = f"/threads/{record.thread_id}/runs/{record.id}"
    return {"Content-Location": where, "Location": f"{where}/stream" if stream else where}


def router(server: AgentServer) -> APIRouter:
    """The Agent Server routes (assistants, threads, runs, state) over ``server``."""
    api = APIRouter()

    def charge_for(body: RunCreate, request: Request) -> Callable[[ModelCall], None]:
        return charging(request, server.target(body.assistant_id).name)

    async def events(stream: RunStream | None, after: int = 0, modes: set[str] | None = None
                     ) -> AsyncIterator[dict[str, str]]:
        if stream is None:
            return
        async for event_id, event, data in stream.read(after, modes):
            yield sse(event_id, event, data)

    async def followed(thread_id: str, run_id: str, after: int | None,
                       modes: set[str] | None) -> AsyncIterator[dict[str, str]]:
        """The events of a run another process runs: its stored events after ``after`` (None:
        from now on), followed until it ends; a run whose events are not stored gives its
        final values once it has ended."""
        seen = after if after is not None else await server.events.last(run_id)
        stored = False
        while True:
            record = await server.runs.record(run_id)
            for seq, event, data in await server.events.after(run_id, seq=seen):
                seen, stored = seq, True
                if wanted(event, modes):
                    yield sse(seq, event, data)
            if record is None or record.finished:
                break
            await asyncio.sleep(0.1)
        if not stored and record is not None and await server.events.last(run_id) == 0:
            output = await server.output(run_id)
            yield sse(None, "error" if "__error__" in output else "values",
                      output.get("__error__", output))

    # -- meta --------------------------------------------------------------------------------------

    @api.get("/info")
    async def info() -> dict[str, Any]:
        return {"version": version("ponder"), "flags": {"assistants": True, "crons": False}}

    @api.get("/ok")
    async def ok() -> dict[str, Any]:
        return {"ok": True}

    # -- assistants ----------------------------------------------------------------------------

    def assistants(body: AssistantSearch) -> list[dict[str, Any]]:
        found = [shapes.assistant(t) for t in server.targets.values()]
        return [a for a in found
                if (body.graph_id is None or a["graph_id"] == body.graph_id)
                and (body.name is None or body.name.lower() in a["name"].lower())
                and all(a["metadata"].get(k) == v for k, v in body.metadata.items())]

    @api.post("/assistants/search")
    async def search_assistants(body: AssistantSearch) -> list[dict[str, Any]]:
        return assistants(body)[body.offset:body.offset + body.limit]

    @api.post("/assistants/count")
    async def count_assistants(body: AssistantSearch) -> int:
        return len(assistants(body))

    @api.get("/assistants/{assistant_id}")
    async def get_assistant(assistant_id: str) -> dict[str, Any]:
        return shapes.assistant(server.target(assistant_id))

    @api.get("/assistants/{assistant_id}/graph")
    async def get_graph(assistant_id: str, xray: bool | int = False) -> dict[str, Any]:
        drawn = server.target(assistant_id).graph.get_graph(xray=xray).to_json()
        return {"nodes": [{k: v for k, v in n.items() if k != "data" or not isinstance(v, str)}
                          for n in drawn["nodes"]], "edges": drawn["edges"]}

    @api.get("/assistants/{assistant_id}/schemas")
    async def get_schemas(assistant_id: str) -> dict[str, Any]:
        target = server.target(assistant_id)

        def schema(make) -> Any:
            try:
                return make()
            except Exception:  # pydantic refuses some states (typing.TypedDict on 3.11)
                return None

        graph = target.graph
        return {"graph_id": target.name,
                "input_schema": schema(graph.get_input_jsonschema),
                "output_schema": schema(graph.get_output_jsonschema),
                "state_schema": schema(lambda: graph.get_input_jsonschema()),
                "config_schema": {},
                "context_schema": schema(graph.get_context_jsonschema)}

    # -- threads -------------------------------------------------------------------------------

    @api.post("/threads")
    async def create_thread(body: ThreadCreate, request: Request) -> dict[str, Any]:
        made = await server.threads.create(caller_key(request), body.thread_id, body.metadata,
                                           body.metadata.get("graph_id"))
        if made is None:
            if body.if_exists == "do_nothing":
                return await server.thread_json(await server.thread(body.thread_id, request))
            raise APIError(409, f"Thread with ID {body.thread_id} already exists")
        return await server.thread_json(made, new=True)

    @api.get("/threads/{thread_id}")
    async def get_thread(thread_id: str, request: Request) -> dict[str, Any]:
        return await server.thread_json(await server.thread(thread_id, request))

    @api.patch("/threads/{thread_id}")
    async def update_thread(thread_id: str, body: ThreadPatch, request: Request):
        thread = await server.threads.update(await server.thread(thread_id, request),
                                             metadata=body.metadata)
        if request.headers.get("prefer") == "return=minimal":
            return Response(status_code=204)
        return await server.thread_json(thread)

    @api.delete("/threads/{thread_id}", status_code=204)
    async def delete_thread(thread_id: str, request: Request) -> Response:
        thread = await server.thread(thread_id, request)
        runs = await server.runs.of_thread(thread.id, limit=100_000)
        for record in runs:
            if record.status in ("pending", "running"):
                await server.cancel(record)
        await server.events.forget([r.id for r in runs])
        if thread.graph_id in server.targets:
            await server.targets[thread.graph_id].adelete_thread(thread.id)
        await server.runs.forget_thread(thread.id)
        await server.threads.delete(thread.id)
        return Response(status_code=204)

    async def searched(body: ThreadSearch, request: Request) -> list[dict[str, Any]]:
        rows = await server.threads.search(caller_key(request), metadata=body.metadata,
                                           ids=body.ids, limit=10_000)
        shown = [await server.thread_json(t) for t in rows]
        return [t for t in shown if body.status is None or t["status"] == body.status]

    @api.post("/threads/search")
    async def search_threads(body: ThreadSearch, request: Request) -> list[dict[str, Any]]:
        return (await searched(body, request))[body.offset:body.offset + body.limit]

    @api.post("/threads/count")
    async def count_threads(body: ThreadSearch, request: Request) -> int:
        return len(await searched(body, request))

    def graph_of(thread: ThreadRow) -> Target | None:
        return server.targets.get(thread.graph_id) if thread.graph_id else None

    @api.get("/threads/{thread_id}/state")
    async def get_state(thread_id: str, request: Request) -> dict[str, Any]:
        target = graph_of(await server.thread(thread_id, request))
        if target is None:
            return {"values": {}, "next": [], "tasks": [], "metadata": None, "created_at": None,
                    "checkpoint": None, "parent_checkpoint": None, "interrupts": [],
                    "checkpoint_id": None, "parent_checkpoint_id": None}
        return shapes.state(await target.aget_state(thread_id))

    @api.post("/threads/{thread_id}/state")
    async def update_state(thread_id: str, body: StateUpdate, request: Request
                           ) -> dict[str, Any]:
        thread = await server.thread(thread_id, request)
        target = graph_of(thread)
        if target is None:
            raise APIError(400, f"Thread {thread_id!r} has no graph yet: run it once, or "
                                "create it with metadata.graph_id")
        busy = [r.id for r in await server.runs.of_thread(thread_id, limit=100)
                if r.status in ("pending", "running")]
        if busy:
            raise APIError(409, f"Thread {thread_id} has in-flight runs: {busy}")
        config = await target.aupdate_state(thread_id, body.values, as_node=body.as_node)
        checkpoint = config["configurable"]
        await server.threads.update(thread)
        return {"checkpoint": checkpoint, "configurable": checkpoint,
                "checkpoint_id": checkpoint.get("checkpoint_id")}

    async def history(thread_id: str, limit: int, request: Request) -> list[dict[str, Any]]:
        target = graph_of(await server.thread(thread_id, request))
        if target is None:
            return []
        found = []
        async for snapshot in target.aget_state_history(thread_id):
            found.append(shapes.state(snapshot))
            if len(found) >= limit:
                break
        return found

    @api.post("/threads/{thread_id}/history")
    async def post_history(thread_id: str, body: HistoryRequest, request: Request):
        return await history(thread_id, body.limit, request)

    @api.get("/threads/{thread_id}/history")
    async def get_history(thread_id: str, request: Request,
                          limit: int = Query(10, ge=1, le=1000)):
        return await history(thread_id, limit, request)

    # -- runs on a thread ----------------------------------------------------------------------

    async def thread_for_run(thread_id: str, body: RunCreate, request: Request) -> ThreadRow:
        if "\x00" in thread_id:
            raise APIError(422, "a thread id may not hold NUL characters", param="thread_id")
        found = await server.threads.get(thread_id, caller_key(request))
        if found is None and body.if_not_exists == "create":
            found = await server.threads.create(caller_key(request), thread_id)
        if found is None:
            raise APIError(404, f"Thread with ID {thread_id} not found: create it first, or "
                                "send if_not_exists='create'")
        return found

    @api.post("/threads/{thread_id}/runs")
    async def create_run(thread_id: str, body: RunCreate, request: Request) -> JSONResponse:
        record = await server.start(await thread_for_run(thread_id, body, request), body,
                                    charge=charge_for(body, request))
        return JSONResponse(shapes.run(record), headers=_run_headers(record, False))

    @api.post("/threads/{thread_id}/runs/stream")
    async def stream_run(thread_id: str, body: RunCreate, request: Request):
        record = await server.start(await thread_for_run(thread_id, body, request), body,
                                    charge=charge_for(body, request))
        return EventSourceResponse(events(server.streams.get(record.id)), ping=5,
                                   headers=_run_headers(record, True))

    @api.post("/threads/{thread_id}/runs/wait")
    async def wait_run(thread_id: str, body: RunCreate, request: Request) -> JSONResponse:
        record = await server.start(await thread_for_run(thread_id, body, request), body,
                                    charge=charge_for(body, request))
        return JSONResponse(await server.output(record.id), headers={
            "Content-Location": f"/threads/{thread_id}/runs/{record.id}",
            "Location": f"/threads/{thread_id}/runs/{record.id}/join"})

    @api.get("/threads/{thread_id}/runs")
    async def list_runs(thread_id: str, request: Request,
                        limit: int = Query(10, ge=1, le=1000),
                        offset: int = Query(0, ge=0, le=MAX_OFFSET),
                        status: str | None = None) -> list[dict[str, Any]]:
        await server.thread(thread_id, request)
        return [shapes.run(r) for r in await server.runs.of_thread(thread_id, limit, offset)
                if status is None or shapes.run(r)["status"] == status]

    @api.get("/threads/{thread_id}/runs/{run_id}")
    async def get_run(thread_id: str, run_id: str, request: Request) -> dict[str, Any]:
        await server.thread(thread_id, request)
        return shapes.run(await server.run_of(thread_id, run_id))

    @api.get("/threads/{thread_id}/runs/{run_id}/join")
    async def join_run(thread_id: str, run_id: str, request: Request) -> dict[str, Any]:
        await server.thread(thread_id, request)
        await server.run_of(thread_id, run_id)
        return await server.output(run_id)

    @api.get("/threads/{thread_id}/runs/{run_id}/stream")
    async def join_stream(thread_id: str, run_id: str, request: Request,
                          stream_mode: list[str] | None = None):
        await server.thread(thread_id, request)
        await server.run_of(thread_id, run_id)
        stream = server.streams.get(run_id)
        last = request.headers.get("last-event-id")
        modes = {("messages" if m == "messages-tuple" else m) for m in stream_mode or []}
        if stream is None:  # run by another process, or by one that stopped
            after = int(last) if last and last.isdigit() else None
            return EventSourceResponse(followed(thread_id, run_id, after, modes or None),
                                       ping=5)
        after = (int(last) if last and last.isdigit()
                 else stream.offset + len(stream.events))
        return EventSourceResponse(events(stream, after, modes or None), ping=5)

    @api.post("/threads/{thread_id}/runs/{run_id}/cancel")
    async def cancel_run(thread_id: str, run_id: str, request: Request, wait: bool = False,
                         action: str = "interrupt") -> Response:
        await server.thread(thread_id, request)
        record = await server.run_of(thread_id, run_id)
        if record.finished:
            raise APIError(404, f"Run {run_id} has already ended: nothing to cancel")
        if action == "rollback":
            await server.rollback(record)
            return JSONResponse({}) if wait else Response(status_code=202)
        await server.cancel(record)
        if wait:
            await server.runs.wait(run_id, poll_s=0.1)
            return JSONResponse({})
        return Response(status_code=202)

    # -- stateless runs ------------------------------------------------------------------------

    async def temporary(body: RunCreate, request: Request) -> RunRecord:
        thread = await server.threads.create(caller_key(request))
        return await server.start(thread, body, temporary=True,
                                  charge=charge_for(body, request))

    @api.post("/runs/stream")
    async def stream_stateless(body: RunCreate, request: Request):
        record = await temporary(body, request)
        return EventSourceResponse(events(server.streams.get(record.id)), ping=5,
                                   headers={"Content-Location": f"/runs/{record.id}",
                                            "Location": f"/runs/{record.id}/stream"})

    @api.post("/runs/wait")
    async def wait_stateless(body: RunCreate, request: Request) -> JSONResponse:
        record = await temporary(body, request)
        return JSONResponse(await server.output(record.id),
                            headers={"Content-Location": f"/runs/{record.id}"})

    @api.post("/runs")
    async def create_stateless(body: RunCreate, request: Request) -> JSONResponse:
        record = await temporary(body, request)
        return JSONResponse(shapes.run(record), headers={"Content-Location": f"/runs/{record.id}"})

    return api
