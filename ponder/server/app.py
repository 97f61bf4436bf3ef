"""The FastAPI app that serves agents: ``create_app([agent, ...])``."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, PlainTextResponse

from ponder.config import ConfigurationError
from ponder.graphs.runs import RunRecorder
from ponder.graphs.scheduler import Scheduler
from ponder.graphs.targets import GraphTarget, Target, as_target, load_target
from ponder.models.budget_store import BudgetStore
from ponder.server import agent_server, errors, openai_api, responses_api
from ponder.server.agent_server import AgentServer, AgentThreads
from ponder.server.agent_server.crons import AgentCrons, absolute_ref
from ponder.server.agent_server.crons import router as cron_router
from ponder.server.agent_server.store import AgentStore
from ponder.server.agent_server.store import router as store_router
from ponder.server.agent_server.streams import StoredEvents
from ponder.server.conversations import ConversationStore
from ponder.server.keys import KeyStore
from ponder.server.mcp_server import MCPEndpoint
from ponder.server.metrics import Metrics, MetricsMiddleware
from ponder.server.response_store import ResponseStore
from ponder.server.security import BodySizeLimit, Guard

SERVE_TARGETS_ENV = "PONDER_SERVE_TARGETS"
SERVE_SCHEDULES_ENV = "PONDER_SERVE_SCHEDULES"
SERVE_QUEUE_ENV = "PONDER_SERVE_QUEUE"
STATIC = Path(__file__).parent / "static"


def create_app(agents: Sequence[Any], *, database_url: str | None = None,
               cors_origins: Sequence[str] | None = None, max_body_bytes: int = 1_000_000,
               multitask_strategy: str | None = None,
               run_schedules: bool = False, queue: bool = False) -> FastAPI:
    """An ASGI app serving ``agents`` (Agents, compiled LangGraph graphs with a ``messages``
    state, or TARGET strings naming them) under their names; mount it in your own app, or run
    it. Crons of the Agent Server API need their target named by a TARGET string.

    API keys live in ``database_url`` (default ``PONDER_DATABASE_URL``); once one exists, every
    route but ``/health`` requires one. ``cors_origins`` (default ``PONDER_CORS_ORIGINS``, comma
    separated) may call from browsers. ``multitask_strategy`` (default
    ``PONDER_MULTITASK_STRATEGY``, else ``"enqueue"``): a chat completion on a busy thread
    waits its turn, or is refused with 409 (``"reject"``), across every process serving the
    database (Agent Server runs name theirs per run). ``run_schedules``: the
    app is also an embedded worker (``ponder worker``): it fires due schedules and executes
    background runs of the same database. ``queue`` (Postgres): background Agent Server runs
    of targets named by TARGET strings go through procrastinate to ``ponder worker --queue``
    instead of running in this process.
    """
    by_name: dict[str, Target] = {}
    refs: dict[str, str] = {}  # TARGET strings, by name, for crons (workers load them)
    for served in agents:
        if isinstance(served, str):
            agent = load_target(served, database_url=database_url)
            refs[agent.name] = absolute_ref(served)
        else:
            agent = as_target(served, database_url=database_url)
        if isinstance(agent, GraphTarget) and not agent.chats:
            raise ConfigurationError(
                f"the graph {agent.name!r} takes no 'messages' in its input, so it cannot "
                "chat: give its state (and input schema, if it has one) a messages key, e.g. "
                "StateGraph(MessagesState) or messages: Annotated[list, add_messages]")
        if agent.name in by_name:
            raise ConfigurationError(f"two agents are named {agent.name!r}: names must differ")
        by_name[agent.name] = agent

    strategy = multitask_strategy or os.environ.get("PONDER_MULTITASK_STRATEGY") or "enqueue"
    if strategy not in ("enqueue", "reject"):
        raise ConfigurationError(f"PONDER_MULTITASK_STRATEGY must be 'enqueue' or 'reject', not "
                                 f"{strategy!r}")
    keys = KeyStore(database_url)
    budgets = BudgetStore(keys.url)
    guard = Guard(keys, budgets)
    runs = RunRecorder(keys.url)
    conversations = ConversationStore(keys.url)
    agent_threads = AgentThreads(keys.url)
    responses = ResponseStore(keys.url)
    stores = [keys, budgets, runs, conversations, agent_threads, responses]
    events = StoredEvents(keys.url)
    if queue:
        keys.db.require("postgres", "a server that queues its background runs (procrastinate "
                                    "runs on Postgres)")
    runner = AgentServer(by_name, runs, agent_threads, events, refs=refs)
    crons = AgentCrons(runner, Scheduler(keys.url))
    stores += [crons, crons.scheduler, events]
    items = AgentStore(keys.url)
    mcp = MCPEndpoint(by_name, runs, strategy, guard)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        for store in stores:  # every table made before the first request, never lazily
            await store.engine()
        # Runs of a server process that died are taken over by the others.
        sweeping = asyncio.create_task(runner.sweep())
        async with AsyncExitStack() as stack:
            await stack.enter_async_context(mcp.running())
            if queue:
                from ponder.graphs.workers import apply_schema, open_queue

                runner.queue = await stack.enter_async_context(open_queue(keys.url)
                                                               .open_async())
                await apply_schema(runner.queue)
            if run_schedules:
                from ponder.graphs.workers import Worker

                await stack.enter_async_context(Worker(keys.url))
            yield
        sweeping.cancel()
        await runner.aclose()  # runs still going stop, recorded as cancelled
        for agent in by_name.values():  # flush memory writes, close databases
            await agent.aclose()
        for store in stores:
            await store.aclose()
        await items.aclose()

    app = FastAPI(title="ponder", lifespan=lifespan)
    app.state.guard = guard
    app.state.served = list(by_name)
    app.state.mcp = mcp  # for ponder mcp, which serves it over stdio
    app.state.metrics = metrics = Metrics()
    errors.install(app)
    secured = [Depends(guard.authenticate)]
    app.include_router(openai_api.router(by_name, runs, conversations, strategy),
                       dependencies=secured)
    app.include_router(responses_api.router(by_name, runs, responses, strategy),
                       dependencies=secured)
    app.include_router(agent_server.router(runner), dependencies=secured)
    app.router.routes.append(mcp.route("/mcp"))  # its own ASGI app: checks keys itself
    app.include_router(cron_router(crons), dependencies=secured)
    app.include_router(store_router(items), dependencies=secured)
    origins = cors_origins if cors_origins is not None else [
        o.strip() for o in os.environ.get("PONDER_CORS_ORIGINS", "").split(",") if o.strip()]
    if origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(origins), allow_methods=["*"],
                           allow_headers=["*"], expose_headers=["x-thread-id"])
    app.add_middleware(BodySizeLimit, max_bytes=max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics", include_in_schema=False, dependencies=secured)
    async def prometheus() -> PlainTextResponse:
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/", include_in_schema=False)
    async def chat_page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    return app


def app_from_env() -> FastAPI:
    """The app for ``ponder serve --workers N``: each worker process loads the targets."""
    refs = [r for r in os.environ.get(SERVE_TARGETS_ENV, "").split(",") if r]
    if not refs:
        raise ConfigurationError(f"{SERVE_TARGETS_ENV} names no target")
    return create_app(refs, run_schedules=os.environ.get(SERVE_SCHEDULES_ENV) == "1",
                      queue=os.environ.get(SERVE_QUEUE_ENV) == "1")
