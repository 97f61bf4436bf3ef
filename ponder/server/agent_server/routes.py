"""The routes of the LangGraph Agent Server API over ponder's served agents and graphs.

Assistants are the served targets (one each, id ``uuid5`` of its name as LangGraph makes it;
a run may name its graph instead). Threads live in ``ponder_agent_threads`` and their graph's
checkpoints; runs are executed by ``AgentServer`` (``runner.py``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from importlib.metadata import version
from typing import Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from sse_starlette.sse import EventSourceResponse

from ponder.graphs.runs import RunRecord
from ponder.graphs.targets import Target
from ponder.models import ModelCall
from ponder.server.agent_server import shapes
from ponder.server.agent_server.requests import (
    MAX_OFFSET,
    AssistantSearch,
    HistoryRequest,
    RunCreate,
    StateUpdate,
    ThreadCreate,
    ThreadPatch,
    ThreadSearch,
    caller_key,
)
from ponder.server.agent_server.runner import AgentServer
from ponder.server.agent_server.streams import RunStream, sse, wanted
from ponder.server.agent_server.threads import ThreadRow
from ponder.server.errors import APIError
from ponder.server.openai_api import charging


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
        async with server.events.following(run_id) as changed:
            while True:
                record = await server.runs.record(run_id)
                for seq, event, data in await server.events.after(run_id, seq=seen):
                    seen, stored = seq, True
                    if wanted(event, modes):
                        yield sse(seq, event, data)
                if record is None or record.finished:
                    break
                await changed(1.0)  # a lost notification costs a second, never an event
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

    @api.post("/threads/{thread_id}/copy")
    async def copy_thread(thread_id: str, request: Request) -> dict[str, Any]:
        """A new thread with the source's metadata, graph and checkpoints (its runs stay)."""
        source = await server.thread(thread_id, request)
        copied = await server.threads.create(caller_key(request), None, source.metadata,
                                             source.graph_id)
        if source.graph_id in server.targets:
            try:
                await server.targets[source.graph_id].acopy_thread(source.id, copied.id)
            except BaseException:
                await server.threads.delete(copied.id)  # no half-made copy
                raise
        return await server.thread_json(copied)

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
        return JSONResponse(server.run_json(record), headers=_run_headers(record, False))

    @api.post("/threads/{thread_id}/runs/stream")
    async def stream_run(thread_id: str, body: RunCreate, request: Request):
        record = await server.start(await thread_for_run(thread_id, body, request), body,
                                    waited=True, charge=charge_for(body, request))
        return EventSourceResponse(events(server.streams.get(record.id)), ping=5,
                                   headers=_run_headers(record, True))

    @api.post("/threads/{thread_id}/runs/wait")
    async def wait_run(thread_id: str, body: RunCreate, request: Request) -> JSONResponse:
        record = await server.start(await thread_for_run(thread_id, body, request), body,
                                    waited=True, charge=charge_for(body, request))
        return JSONResponse(await server.output(record.id), headers={
            "Content-Location": f"/threads/{thread_id}/runs/{record.id}",
            "Location": f"/threads/{thread_id}/runs/{record.id}/join"})

    @api.get("/threads/{thread_id}/runs")
    async def list_runs(thread_id: str, request: Request,
                        limit: int = Query(10, ge=1, le=1000),
                        offset: int = Query(0, ge=0, le=MAX_OFFSET),
                        status: str | None = None) -> list[dict[str, Any]]:
        await server.thread(thread_id, request)
        shown = map(server.run_json, await server.runs.of_thread(thread_id, limit, offset))
        return [r for r in shown if status is None or r["status"] == status]

    @api.get("/threads/{thread_id}/runs/{run_id}")
    async def get_run(thread_id: str, run_id: str, request: Request) -> dict[str, Any]:
        await server.thread(thread_id, request)
        return server.run_json(await server.run_of(thread_id, run_id))

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

    async def temporary(body: RunCreate, request: Request, waited: bool = True) -> RunRecord:
        thread = await server.threads.create(caller_key(request))
        return await server.start(thread, body, temporary=True, waited=waited,
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
        record = await temporary(body, request, waited=False)
        return JSONResponse(server.run_json(record),
                            headers={"Content-Location": f"/runs/{record.id}"})

    return api
