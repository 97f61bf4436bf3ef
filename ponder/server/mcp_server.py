"""Served agents as Model Context Protocol tools, on the official ``mcp`` SDK's server.

Each agent is a tool named after it, taking a ``message`` and an optional ``thread_id``; its
result is the reply (text), with ``{"reply", "thread_id"}`` as structured content so the client
can go on in the same thread. While the agent works, the call sends progress notifications:
one per tool call it makes, per tool result and per piece of its reply. Every call is a turn
recorded as a run under its thread's lease, as chat completions are (``openai_api.Turn``).
Each knowledge base an agent uses is a tool too, ``search_<name>``, returning the best chunks.

``ponder serve`` mounts it at ``/mcp`` (streamable HTTP) behind the server's API keys and
rate limits; ``ponder mcp`` serves it over stdio. HTTP sessions are stateless (a thread, not a
session, carries a conversation), so any worker process of a server answers any request.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from langchain_core.messages import HumanMessage
from mcp.server.fastmcp import Context, FastMCP
from mcp.server.fastmcp.exceptions import ToolError
from mcp.server.transport_security import TransportSecuritySettings
from mcp.types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel, Field
from starlette.requests import Request
from starlette.routing import Route

from ponder.agents.reply import Piece
from ponder.errors import ConfigurationError, PonderError
from ponder.graphs.runs import RunRecorder
from ponder.graphs.targets import Target
from ponder.memory.base import Memories
from ponder.memory.knowledge.base import KnowledgeBase
from ponder.server.errors import APIError, error_response
from ponder.server.openai_api import Turn, charging, safe_error
from ponder.server.security import Guard
from ponder.server.turn_events import ToolCall, ToolResult, turn_events

log = logging.getLogger("ponder.server")


class AgentReply(BaseModel):
    """An agent tool's structured result: the reply, and the thread to continue with."""

    reply: str = Field(description="The agent's reply.")
    thread_id: str = Field(description="The conversation's thread: pass it back to go on.")


class KnowledgeHit(BaseModel):
    """One chunk a knowledge base search found (a higher score is better)."""

    source: str
    title: str | None = None
    text: str
    score: float


class KnowledgeHits(BaseModel):
    """A knowledge base search tool's structured result, best first."""

    hits: list[KnowledgeHit]


def tool_name(name: str) -> str:
    """An agent's name as an MCP tool name (letters, digits, ``_``, ``-``, ``.``)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:128] or "agent"


def knowledge_bases(agent: Target) -> list[KnowledgeBase]:
    """The knowledge bases in an agent's memory (a graph has none)."""
    memory = getattr(agent, "memory", None)
    memories = memory.memories if isinstance(memory, Memories) else [memory]
    return [m for m in memories if isinstance(m, KnowledgeBase)]


def mcp_server(agents: dict[str, Target], runs: RunRecorder, multitask_strategy: str = "enqueue"
               ) -> FastMCP:
    """An MCP server whose tools are ``agents`` (by name) and their knowledge bases; calls are
    recorded by ``runs``. A busy thread makes the call wait (``"enqueue"``) or fail
    (``"reject"``)."""
    # Keys and CORS guard the whole server; the SDK's own Host check would refuse every host
    # name but localhost, where ``ponder serve --host`` may listen anywhere.
    server = FastMCP("ponder", log_level="WARNING", stateless_http=True,
                     transport_security=TransportSecuritySettings(
                         enable_dns_rebinding_protection=False))
    searches: dict[str, KnowledgeBase] = {}
    named: dict[str, str] = {}  # tool name -> the agent (or knowledge base) it is
    for name, agent in agents.items():
        _claim(named, tool_name(name), repr(name))
        server.add_tool(_agent_tool(agent, runs, multitask_strategy), name=tool_name(name),
                        title=name, description=_describe(agent),
                        annotations=ToolAnnotations(readOnlyHint=False, destructiveHint=False,
                                                    openWorldHint=True))
        for kb in knowledge_bases(agent):
            searches.setdefault(kb.store.name, kb)
    for kb_name, kb in searches.items():
        _claim(named, f"search_{kb_name}", f"the knowledge base {kb_name!r}'s search")
        server.add_tool(_search_tool(kb), name=f"search_{kb_name}",
                        description=f"Search the knowledge base {kb_name!r}: the chunks of its "
                                    "documents that best match the query, best first.",
                        annotations=ToolAnnotations(readOnlyHint=True, openWorldHint=False))
    return server


def _claim(named: dict[str, str], tool: str, what: str) -> None:
    if tool in named:
        raise ConfigurationError(f"{named[tool]} and {what} would both be the MCP tool "
                                 f"{tool!r}: rename one of them")
    named[tool] = what


def _describe(agent: Target) -> str:
    profile = getattr(agent, "profile", None)
    who = f"the agent {agent.name!r}" + (f", {profile.role}" if profile else "")
    goal = f" Its goal: {profile.goal}" if profile is not None and profile.goal else ""
    return (f"Send a message to {who}, and get its reply.{goal} Pass the thread_id of a reply "
            "back to continue that conversation; leave it out to start a new one.")


def _agent_tool(agent: Target, runs: RunRecorder, strategy: str):
    async def ask(
        message: Annotated[str, Field(description="What to say to the agent.")],
        thread_id: Annotated[str | None, Field(
            description="The thread of an earlier reply, to continue that conversation.")
        ] = None,
        *, ctx: Context,
    ) -> Annotated[CallToolResult, AgentReply]:
        thread = thread_id or f"mcp-{uuid.uuid4().hex}"
        request = ctx.request_context.request  # the HTTP request; None over stdio
        key = getattr(request.state, "api_key_id", None) if request is not None else None
        charge = charging(request, agent.name) if request is not None else _free
        # A caller's threads are its key's, as for chat completions' X-Thread-Id.
        turn = Turn(agent, runs, f"{key}:{thread}" if key else thread, [HumanMessage(message)],
                    charge, strategy)
        try:
            await turn.start(stream=True)
        except APIError as exc:  # a busy thread, under "reject"
            raise ToolError(exc.message) from None
        step = 0
        try:
            async for happened in turn_events(turn):
                step += 1
                await ctx.report_progress(step, message=_progress(happened))
            text, _ = await turn.result()
        except Exception as exc:
            log.exception("the MCP call of %s failed", agent.name)
            raise ToolError(safe_error(exc)) from None
        finally:
            turn.cancel()  # the call was cancelled: stop the turn (a no-op once it has ended)
        return CallToolResult(content=[TextContent(type="text", text=text)],
                              structuredContent={"reply": text, "thread_id": thread})

    return ask


def _free(call: Any) -> None:
    """Over stdio there is no key to charge."""


def _progress(happened: ToolCall | ToolResult | Piece) -> str:
    if isinstance(happened, ToolCall):
        return f"calling {happened.name}"
    if isinstance(happened, ToolResult):
        return f"{happened.name} answered"
    return happened.text


def _search_tool(kb: KnowledgeBase):
    async def search(
        query: Annotated[str, Field(description="What to look for.")],
        k: Annotated[int, Field(ge=1, le=50, description="How many chunks to return.")] = kb.k,
    ) -> Annotated[CallToolResult, KnowledgeHits]:
        try:
            hits = await kb.retrieve(query, k)
        except PonderError as exc:
            raise ToolError(str(exc)) from None
        found = [KnowledgeHit(source=h.chunk.source, title=h.chunk.title, text=h.chunk.text,
                              score=h.score) for h in hits]
        text = "\n\n".join(f"[{i}] {hit.title or hit.source} ({hit.source})\n{hit.text}"
                           for i, hit in enumerate(found, 1))
        return CallToolResult(
            content=[TextContent(type="text", text=text or "Nothing matched the query.")],
            structuredContent=KnowledgeHits(hits=found).model_dump(mode="json"))

    return search


class MCPEndpoint:
    """The MCP server of ``ponder serve``: an ASGI app for streamable HTTP that checks the
    caller's key with ``guard`` (401 and 429 as every route) before the SDK sees the request.
    ``running()`` must wrap the app's life (the SDK's session manager runs in it)."""

    def __init__(self, agents: dict[str, Target], runs: RunRecorder, multitask_strategy: str,
                 guard: Guard) -> None:
        self.server = mcp_server(agents, runs, multitask_strategy)
        self.server.streamable_http_app()  # makes the session manager
        self.guard = guard

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """The session manager, running (once per endpoint)."""
        async with self.server.session_manager.run():
            yield

    def route(self, path: str) -> Route:
        """A Starlette route serving the endpoint at ``path`` (every method)."""
        return Route(path, endpoint=self)

    async def __call__(self, scope, receive, send) -> None:
        """Answer one HTTP request: refused as the guard says, else the SDK's."""
        request = Request(scope, receive)
        try:
            await self.guard.authenticate(request)
        except APIError as exc:
            response = error_response(exc.status, exc.message, param=exc.param, code=exc.code,
                                      headers=exc.headers)
            return await response(scope, receive, send)
        await self.server.session_manager.handle_request(scope, receive, send)


async def serve_stdio(app: Any) -> None:
    """Serve the MCP server of ``app`` (from ``create_app``) over stdin and stdout until the
    client closes them, inside the app's lifespan (tables made, agents closed at the end)."""
    async with app.router.lifespan_context(app):
        await app.state.mcp.server.run_stdio_async()
