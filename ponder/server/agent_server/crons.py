"""Crons of the Agent Server API, on ponder's scheduler: cron expressions in any time zone
(daylight-saving changes included), fired exactly once however many workers poll, each fire a
run in ``ponder_runs`` that a worker (``ponder serve --schedules`` or ``ponder worker``)
executes by the target's TARGET string. A thread's cron runs every fire on that thread; a
stateless one on a new thread each time.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import Field
from sqlalchemy import Column, Float, MetaData, String, Table, Text, select, update

from ponder.db.tables import Tables
from ponder.graphs.scheduler import Schedule, ScheduleError, Scheduler, Trigger
from ponder.server.agent_server import shapes
from ponder.server.agent_server.requests import MAX_OFFSET, RequestBody, caller_key
from ponder.server.agent_server.runner import AgentServer
from ponder.server.errors import APIError

metadata = MetaData()
agent_crons = Table(
    "ponder_agent_crons", metadata,
    Column("cron_id", String(64), primary_key=True),  # also its schedule's name
    Column("graph_id", String(200), nullable=False),
    Column("thread_id", String(200), nullable=True),
    Column("key_id", String(32), nullable=True, index=True),
    Column("payload", Text, nullable=False),  # JSON: the request that made it, as updated
    Column("metadata", Text, nullable=False),  # JSON object
    Column("on_run_completed", String(10), nullable=True),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)


def absolute_ref(ref: str) -> str:
    """A TARGET string any worker can load: a file path made absolute."""
    path, sep, attr = ref.rpartition(":")
    if sep and path.endswith(".py") and Path(path).is_file():
        return f"{Path(path).resolve()}:{attr}"
    if ref.endswith((".yaml", ".yml")) and Path(ref).is_file():
        return str(Path(ref).resolve())
    return ref


class CronCreate(RequestBody):
    """A cron: which assistant, on what schedule (5-field cron, in ``timezone``), with what
    input."""
    assistant_id: str
    schedule: str = Field(max_length=200)
    timezone: str | None = Field(default=None, max_length=64)
    input: dict[str, Any] | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    enabled: bool = True
    end_time: str | None = None
    on_run_completed: str | None = None


class CronPatch(RequestBody):
    """What a ``PATCH /runs/crons/{id}`` may change."""
    schedule: str | None = Field(default=None, max_length=200)
    timezone: str | None = Field(default=None, max_length=64)
    input: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    enabled: bool | None = None
    end_time: str | None = None


class CronSearch(RequestBody):
    """``POST /runs/crons/search`` and ``/runs/crons/count``."""
    assistant_id: str | None = None
    thread_id: str | None = None
    enabled: bool | None = None
    limit: int = Field(default=10, ge=1, le=1000)
    offset: int = Field(default=0, ge=0, le=MAX_OFFSET)


class AgentCrons(Tables):
    """The crons of an Agent Server: their rows, and the schedules that fire them."""

    metadata = metadata

    def __init__(self, server: AgentServer, scheduler: Scheduler) -> None:
        super().__init__(share=None, url=scheduler.url)
        self.server, self.scheduler = server, scheduler

    def _trigger(self, expr: str, tz: str | None) -> Trigger:
        try:
            return Trigger.cron(expr, tz or "UTC")
        except ScheduleError as exc:
            raise APIError(422, f"Invalid cron schedule {expr!r}: {exc}",
                           param="schedule") from None

    def _ref(self, assistant: str) -> tuple[str, str]:
        target = self.server.target(assistant)
        ref = self.server.refs.get(target.name)
        if ref is None:
            raise APIError(422, f"crons of {target.name!r} need the server to load it by a "
                                "TARGET string (ponder serve TARGET, or create_app with "
                                "TARGET strings): a worker loads it to run each fire",
                           param="assistant_id")
        return target.name, ref

    async def create(self, body: CronCreate, key: str | None, thread_id: str | None
                     ) -> dict[str, Any]:
        """A new cron (checked whole before anything is stored)."""
        if body.end_time is not None:
            raise APIError(422, "end_time is not supported: delete the cron when it should "
                                "stop", param="end_time")
        name, ref = self._ref(body.assistant_id)
        trigger = self._trigger(body.schedule, body.timezone)
        cron_id, now = str(uuid.uuid4()), time.time()
        await self.scheduler.add(cron_id, ref, trigger, input=body.input, check=False,
                                 on_thread=thread_id)
        if not body.enabled:
            await self.scheduler.pause(cron_id)
        payload = body.model_dump(exclude_none=True)
        engine = await self.engine()
        async with engine.begin() as conn:
            await conn.execute(agent_crons.insert().values(
                cron_id=cron_id, graph_id=name, thread_id=thread_id, key_id=key,
                payload=json.dumps(payload), metadata=json.dumps(body.metadata),
                on_run_completed=None if thread_id else body.on_run_completed or "keep",
                created_at=now, updated_at=now))
        return await self.get(cron_id, key)

    async def _row(self, cron_id: str, key: str | None) -> Any:
        engine = await self.engine()
        async with engine.connect() as conn:
            row = (await conn.execute(select(agent_crons).where(
                agent_crons.c.cron_id == cron_id))).first()
        if row is None or row.key_id != key:
            raise APIError(404, f"Cron with ID {cron_id} not found")
        return row

    def _json(self, row: Any, schedule: Schedule | None) -> dict[str, Any]:
        payload = json.loads(row.payload)
        return {"cron_id": row.cron_id, "assistant_id": shapes.assistant_id(row.graph_id),
                "thread_id": row.thread_id, "user_id": None, "end_time": None,
                "schedule": payload["schedule"], "timezone": payload.get("timezone"),
                "payload": payload, "metadata": json.loads(row.metadata),
                "next_run_date": shapes.iso(schedule.next_fire_at if schedule else None),
                "on_run_completed": row.on_run_completed,
                "enabled": bool(schedule and not schedule.paused),
                "created_at": shapes.iso(row.created_at),
                "updated_at": shapes.iso(row.updated_at)}

    async def get(self, cron_id: str, key: str | None) -> dict[str, Any]:
        """One cron (404 when it is not the caller's)."""
        row = await self._row(cron_id, key)
        return self._json(row, await self.scheduler.get(cron_id))

    async def update(self, cron_id: str, body: CronPatch, key: str | None) -> dict[str, Any]:
        """Change a cron's schedule, time zone, input, metadata or enabled state."""
        changes = body.model_dump(exclude_unset=True)
        if not changes:
            raise APIError(400, "Request body cannot be empty: send what to change")
        if changes.get("end_time") is not None:
            raise APIError(422, "end_time is not supported: delete the cron when it should "
                                "stop", param="end_time")
        row = await self._row(cron_id, key)
        payload = {**json.loads(row.payload), **{k: v for k, v in changes.items()
                                                  if k not in ("metadata", "end_time")}}
        schedule = await self.scheduler.get(cron_id)
        trigger = self._trigger(payload["schedule"], payload.get("timezone"))
        enabled = payload.get("enabled", True)
        await self.scheduler.add(cron_id, schedule.target, trigger, input=payload.get("input"),
                                 check=False, on_thread=row.thread_id, replace=True)
        if not enabled:
            await self.scheduler.pause(cron_id)
        merged = {**json.loads(row.metadata), **(changes.get("metadata") or {})}
        engine = await self.engine()
        async with engine.begin() as conn:
            await conn.execute(update(agent_crons).where(agent_crons.c.cron_id == cron_id).values(
                payload=json.dumps(payload), metadata=json.dumps(merged),
                updated_at=time.time()))
        return await self.get(cron_id, key)

    async def delete(self, cron_id: str, key: str | None) -> None:
        """Remove a cron and its schedule."""
        await self._row(cron_id, key)
        if await self.scheduler.get(cron_id) is not None:
            await self.scheduler.remove(cron_id)
        engine = await self.engine()
        async with engine.begin() as conn:
            await conn.execute(agent_crons.delete().where(agent_crons.c.cron_id == cron_id))

    async def search(self, body: CronSearch, key: str | None) -> list[dict[str, Any]]:
        """The caller's crons that match, newest first."""
        condition = (agent_crons.c.key_id.is_(None) if key is None
                     else agent_crons.c.key_id == key)
        engine = await self.engine()
        async with engine.connect() as conn:
            rows = (await conn.execute(select(agent_crons).where(condition).order_by(
                agent_crons.c.created_at.desc()))).all()
        graph = self.server.target(body.assistant_id).name if body.assistant_id else None
        found = []
        for row in rows:
            if (graph and row.graph_id != graph) or (
                    body.thread_id and row.thread_id != body.thread_id):
                continue
            shown = self._json(row, await self.scheduler.get(row.cron_id))
            if body.enabled is None or shown["enabled"] == body.enabled:
                found.append(shown)
        return found


def router(crons: AgentCrons) -> APIRouter:
    """The cron routes: per thread and stateless; search, count, get, update, delete."""
    api = APIRouter()

    @api.post("/threads/{thread_id}/runs/crons")
    async def create_for_thread(thread_id: str, body: CronCreate, request: Request):
        thread = await crons.server.thread(thread_id, request)
        made = await crons.create(body, caller_key(request), thread_id)
        await crons.server.threads.update(thread, graph_id=crons.server.target(
            body.assistant_id).name)
        return made

    @api.post("/runs/crons")
    async def create_stateless(body: CronCreate, request: Request):
        return await crons.create(body, caller_key(request), None)

    @api.post("/runs/crons/search")
    async def search(body: CronSearch, request: Request) -> list[dict[str, Any]]:
        return (await crons.search(body, caller_key(request)))[body.offset:body.offset + body.limit]

    @api.post("/runs/crons/count")
    async def count(body: CronSearch, request: Request) -> int:
        return len(await crons.search(body, caller_key(request)))

    @api.get("/runs/crons/{cron_id}")
    async def get(cron_id: str, request: Request) -> dict[str, Any]:
        return await crons.get(cron_id, caller_key(request))

    @api.patch("/runs/crons/{cron_id}")
    async def patch(cron_id: str, body: CronPatch, request: Request) -> dict[str, Any]:
        return await crons.update(cron_id, body, caller_key(request))

    @api.delete("/runs/crons/{cron_id}", status_code=204)
    async def delete(cron_id: str, request: Request) -> Response:
        await crons.delete(cron_id, caller_key(request))
        return Response(status_code=204)

    return api
