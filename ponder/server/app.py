"""The FastAPI app that serves agents: ``create_app([agent, ...])``."""

from __future__ import annotations

import os
from collections.abc import Sequence
from contextlib import asynccontextmanager

from fastapi import FastAPI

from ponder.agents.agent import Agent
from ponder.config import ConfigurationError
from ponder.server import errors, openai_api

SERVE_TARGETS_ENV = "PONDER_SERVE_TARGETS"


def create_app(agents: Sequence[Agent]) -> FastAPI:
    """An ASGI app serving ``agents`` under their names (mount it in your own app, or run it)."""
    by_name: dict[str, Agent] = {}
    for agent in agents:
        if not isinstance(agent, Agent):
            raise ConfigurationError(f"{agent!r} is not an Agent: the server serves agents")
        if agent.name in by_name:
            raise ConfigurationError(f"two agents are named {agent.name!r}: names must differ")
        by_name[agent.name] = agent

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        for agent in by_name.values():  # flush memory writes, close databases
            await agent.aclose()

    app = FastAPI(title="ponder", lifespan=lifespan)
    errors.install(app)
    app.include_router(openai_api.router(by_name))

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


def app_from_env() -> FastAPI:
    """The app for ``ponder serve --workers N``: each worker process loads the targets."""
    from ponder.graphs.targets import load_target

    refs = [r for r in os.environ.get(SERVE_TARGETS_ENV, "").split(",") if r]
    if not refs:
        raise ConfigurationError(f"{SERVE_TARGETS_ENV} names no target")
    return create_app([load_target(ref) for ref in refs])
