"""MCP servers' tools for agents: ``Agent(tools=[..., MCPServer(...)])``, or ``mcp_tools(server)``.

The protocol is the official ``mcp`` SDK's (``ClientSession`` over stdio or streamable HTTP) and
the conversion to LangChain tools is langchain-mcp-adapters' (each tool's JSON schema and
description; its annotations — ``readOnlyHint``, ``destructiveHint``, ... — in ``tool.metadata``;
results as content blocks, images and resources included, with structured content as the
artifact; a result the server marks ``isError`` as an error ToolMessage). What this module adds
is how long sessions live, because stateful servers (a browser, a counter, a login) need their
session for the whole conversation:

- One MCP session per (server, thread), opened at the thread's first model step and kept across
  turns and tool calls; closed after ``idle_timeout_s`` without use, and by ``aclose``
  (``Agent.aclose`` closes its servers). Each session runs in a task of its own, since the SDK's
  transports are anyio scopes that the task which entered them must leave.
- Its tool list is cached and listed again after the server's ``notifications/tools/list_changed``.
- A session whose server went away (a stdio process that exited, a closed connection) is
  dropped: the call that failed gets an error saying so, and the next use starts a new session
  (a new process).
- A server that cannot be reached is *down*: its tools are left out, a warning names it, and it
  is tried again with backoff (up to every ``retry_after_s``); the agent goes on with its other
  tools.
- An elicitation request (the server asks the user something during a call) becomes a LangGraph
  ``interrupt`` of the tool call; the turn pauses, and the answer given to ``Agent.aresume`` (or
  ``ponder run``'s questions, or the Agent Server's ``command.resume``) goes back to the server.
  As with every interrupt, the tool call runs again on resume: the first call's question is
  answered ``cancel``, and the call made on resume gets the answer. (The protocol does not say
  which call a question is for: the oldest call in flight on the thread's session takes it.)
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import json
import logging
import re
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import httpx
from langchain_core.tools import BaseTool
from langchain_mcp_adapters.sessions import Connection, create_session
from langchain_mcp_adapters.tools import load_mcp_tools
from langgraph.errors import GraphBubbleUp
from langgraph.types import interrupt
from mcp import ClientSession, McpError, types

from ponder.config import ConfigurationError
from ponder.errors import PonderError

__all__ = ["MCPServer", "MCPServerError", "elicit_result", "mcp_tools"]

log = logging.getLogger("ponder.tools.mcp")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_GONE = (anyio.ClosedResourceError, anyio.BrokenResourceError, anyio.EndOfStream,
         BrokenPipeError, ConnectionError, httpx.TransportError)


class MCPServerError(PonderError, ConnectionError):
    """An MCP server cannot be reached, or its session ended during a request. The message names
    the server, says why, and what happens next."""


class MCPServer:
    """An MCP server whose tools an agent uses: ``MCPServer("files", command="npx", args=[...])``
    (stdio: the server is a process ponder starts, with ``env`` added to a minimal environment
    and ``cwd``) or ``MCPServer("search", url="http://host/mcp", headers={...})`` (streamable
    HTTP).

    ``name`` (letters, digits, ``_``, ``-``) names it in messages and, with
    ``tool_name_prefix=True``, prefixes its tools' names (``files_read``). ``max_concurrency``
    caps its calls in flight (all threads together; None: no cap). Seconds:
    ``idle_timeout_s`` closes a thread's session unused that long, ``connect_timeout_s`` bounds
    starting a session, ``retry_after_s`` the longest a server that is down is left alone (it
    is tried again after 1 s, then after twice as long each time).
    Each call is bounded by the agent's ``tool_timeout_s``. Sessions are kept by thread id, so
    agents given the same MCPServer share a thread's session. Raises ConfigurationError for a
    bad setting.
    """

    def __init__(self, name: str, *, command: str | None = None, args: Sequence[str] = (),
                 env: Mapping[str, str] | None = None, cwd: str | Path | None = None,
                 url: str | None = None, headers: Mapping[str, str] | None = None,
                 tool_name_prefix: bool = False, max_concurrency: int | None = None,
                 idle_timeout_s: float = 600.0, connect_timeout_s: float = 30.0,
                 retry_after_s: float = 30.0) -> None:
        if not isinstance(name, str) or not _NAME.match(name):
            raise ConfigurationError(f"MCP server name {name!r} is not valid: use 1-64 letters, "
                                     "digits, '_' or '-', starting with a letter or digit")
        if (command is None) == (url is None):
            raise ConfigurationError(f"MCP server {name!r}: give command= (stdio) or url= "
                                     "(streamable HTTP), exactly one of them")
        if url is not None and not re.match(r"^https?://", url):
            raise ConfigurationError(f"MCP server {name!r}: url must start with http:// or "
                                     f"https://, got {url!r}")
        if isinstance(args, str) or not all(isinstance(a, str) for a in args):
            raise ConfigurationError(f"MCP server {name!r}: args must be a list of strings")
        if url is None and headers:
            raise ConfigurationError(f"MCP server {name!r}: headers are for url= servers")
        if command is None and (args or env or cwd):
            raise ConfigurationError(f"MCP server {name!r}: args, env and cwd are for command= "
                                     "servers")
        for setting, value in (("idle_timeout_s", idle_timeout_s),
                               ("connect_timeout_s", connect_timeout_s),
                               ("retry_after_s", retry_after_s)):
            if value <= 0:
                raise ConfigurationError(f"MCP server {name!r}: {setting} must be greater than "
                                         f"zero, got {value}")
        if max_concurrency is not None and max_concurrency < 1:
            raise ConfigurationError(f"MCP server {name!r}: max_concurrency must be at least 1")
        self.name = name
        self.command, self.args = command, list(args)
        self.env = dict(env) if env is not None else None
        self.cwd = str(cwd) if cwd is not None else None
        self.url, self.headers = url, dict(headers or {})
        self.tool_name_prefix = tool_name_prefix
        self.max_concurrency = max_concurrency
        self.idle_timeout_s = idle_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.retry_after_s = retry_after_s
        #: Why the server is down, one line (None: it is not known to be).
        self.down: str | None = None
        self._retry_at = self._retry_s = 0.0
        self._sessions: dict[str | None, _Session] = {}
        self._starting: dict[str | None, asyncio.Task] = {}
        self._gate: asyncio.Semaphore | None = None

    def __repr__(self) -> str:
        where = self.url or " ".join([self.command or "", *self.args])
        return f"MCPServer({self.name!r}, {where!r})"

    def connection(self, **session_kwargs: Any) -> Connection:
        """The server as a langchain-mcp-adapters connection (``session_kwargs`` go to the SDK's
        ClientSession)."""
        if self.url is not None:
            return {"transport": "streamable_http", "url": self.url, "headers": self.headers,
                    "timeout": timedelta(seconds=self.connect_timeout_s),
                    "session_kwargs": session_kwargs}
        return {"transport": "stdio", "command": self.command, "args": self.args,
                "env": self.env, "cwd": self.cwd, "session_kwargs": session_kwargs}

    async def thread_tools(self, thread_id: str | None) -> list[BaseTool]:
        """The tools of the thread's session as LangChain tools, starting the session when the
        thread has none (or its server went away); empty while the server is down (a warning
        says so once)."""
        try:
            return await self.tools(thread_id)
        except MCPServerError as exc:
            if self.down is None:  # not a start that failed: that one has been warned about
                log.warning("%s", exc)
            return []

    async def tools(self, thread_id: str | None = None) -> list[BaseTool]:
        """The tools of the thread's session (``thread_id`` None: a session of its own), as
        LangChain tools. MCPServerError when the server cannot be reached."""
        session = await self._session(thread_id)
        try:
            return await session.tools()
        except MCPServerError:  # the server went away since the session opened: a new one
            return await (await self._session(thread_id)).tools()

    async def aclose(self) -> None:
        """Close every session (a stdio server's processes end); later use opens new ones."""
        sessions = [s for s in self._sessions.values()]
        self._sessions.clear()
        for session in sessions:
            session.close()
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(s.closed() for s in sessions if s.loop is loop),
                             return_exceptions=True)

    # -- sessions -------------------------------------------------------------------------------

    async def _session(self, key: str | None) -> _Session:
        session = self._sessions.get(key)
        loop = asyncio.get_running_loop()
        if session is not None and session.open and session.loop is loop:
            return session
        if self.down is not None and loop.time() < self._retry_at:
            raise MCPServerError(self.down)
        starting = self._starting.get(key)
        if starting is None or starting.get_loop() is not loop:
            # One start per thread, however many calls ask for it at once.
            starting = self._starting[key] = loop.create_task(self._start(key))
            starting.add_done_callback(functools.partial(self._started, key))
        # Shielded: a caller that gives up (a timeout) does not stop the start others wait on.
        return await asyncio.shield(starting)

    def _started(self, key: str | None, task: asyncio.Task) -> None:
        if self._starting.get(key) is task:
            del self._starting[key]
        if not task.cancelled():
            task.exception()  # retrieved here: every caller may have given up

    async def _start(self, key: str | None) -> _Session:
        session = _Session(self, key)
        try:
            await session.start()
        except MCPServerError as exc:
            # Tried again after 1 s, then twice as long each time, up to retry_after_s.
            self._retry_s = min(self._retry_s * 2 if self.down else 1.0, self.retry_after_s)
            if self.down is None:
                log.warning("%s. Its tools are left out until it answers (tried again after "
                            "%g s, then less often, up to every %g s).", exc, self._retry_s,
                            self.retry_after_s)
            self.down = str(exc)
            self._retry_at = asyncio.get_running_loop().time() + self._retry_s
            raise
        if self.down is not None:
            log.warning("MCP server %r is up again", self.name)
            self.down = None
        self._sessions[key] = session
        return session

    def _forget(self, session: _Session) -> None:
        if self._sessions.get(session.key) is session:
            del self._sessions[session.key]

    def _concurrency(self):
        if self.max_concurrency is None:
            return nullcontext()
        if self._gate is None:
            self._gate = asyncio.Semaphore(self.max_concurrency)
        return self._gate

    def _why(self, exc: BaseException) -> str:
        """One line on why a session could not start."""
        exc = _leaf(exc)
        if isinstance(exc, FileNotFoundError) and self.command is not None:
            return (f"the command {self.command!r} was not found: check its name and PATH, or "
                    "give its full path")
        if isinstance(exc, httpx.ConnectError):
            return f"cannot connect to {self.url} ({exc or 'connection refused'})"
        if isinstance(exc, httpx.HTTPStatusError):
            return f"{self.url} answered {exc.response.status_code}: is it an MCP endpoint?"
        if isinstance(exc, McpError) and self.command is not None:
            return (f"{exc.error.message} (did {self.command!r} exit? it should speak MCP "
                    "over stdin and stdout)")
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class _Session:
    """One MCP session of a server for one thread, run by a task of its own.

    To langchain-mcp-adapters it is the session its tools call (``list_tools``, ``call_tool``),
    so every request passes through here: checked for a server that went away, capped by the
    server's ``max_concurrency``, and questions asked during a call turned into interrupts.
    """

    def __init__(self, server: MCPServer, key: str | None) -> None:
        self.server, self.key = server, key
        self.loop = asyncio.get_running_loop()
        self.client: ClientSession | None = None
        self.last_used = self.loop.time()
        # The calls in flight, oldest first: each a queue of the server's questions to it.
        self.calls: list[asyncio.Queue] = []
        self._tools: list[BaseTool] | None = None
        self._version = self._listed = 0  # tools/list_changed notifications: got, listed
        self._closing: asyncio.Future = self.loop.create_future()
        self._task: asyncio.Task | None = None

    @property
    def open(self) -> bool:
        return self.client is not None and not self._closing.done()

    async def start(self) -> None:
        ready = self.loop.create_future()
        # A context of its own: the session outlives the run that opened it (its config and
        # callbacks stay with that run).
        self._task = self.loop.create_task(self._run(ready), context=contextvars.Context(),
                                           name=f"MCP session {self.server.name}/{self.key}")
        try:
            async with asyncio.timeout(self.server.connect_timeout_s):
                await asyncio.shield(ready)
        except TimeoutError:
            ready.cancel()
            self.close()
            self._task.cancel()  # stuck before the session opened: end the process too
            raise MCPServerError(
                f"MCP server {self.server.name!r} is down: it did not answer within "
                f"{self.server.connect_timeout_s:g} s") from None

    async def _run(self, ready: asyncio.Future) -> None:
        connection = self.server.connection(message_handler=self._on_message,
                                            elicitation_callback=self._on_elicitation)
        try:
            async with create_session(connection) as client:
                await client.initialize()
                self.client = client
                self.last_used = self.loop.time()  # idle from now, not from the spawn
                if not ready.done():
                    ready.set_result(None)
                await self._until_closed()
        except Exception as exc:
            if not ready.done():
                ready.set_exception(MCPServerError(
                    f"MCP server {self.server.name!r} is down: {self.server._why(exc)}"))
            else:
                log.info("MCP session %s/%s ended: %s", self.server.name, self.key,
                         self.server._why(exc))
        finally:
            self.client = None
            if not self._closing.done():
                self._closing.set_result(None)
            self.server._forget(self)

    async def _until_closed(self) -> None:
        idle = self.server.idle_timeout_s
        while not self._closing.done():
            left = self.last_used + idle - self.loop.time()
            if left <= 0 and not self.calls:
                log.debug("MCP session %s/%s idle for %g s: closed", self.server.name, self.key,
                          idle)
                return
            # asyncio.wait cancels nothing, so no cancellation crosses the SDK's anyio scopes.
            await asyncio.wait([self._closing], timeout=max(left, 1.0))

    def close(self) -> None:
        """Ask the session's task to close it (see ``closed``)."""
        if not self._closing.done():
            self._closing.set_result(None)
        self.server._forget(self)

    async def closed(self) -> None:
        """Wait until the session's task has closed it (a stdio server's process has ended)."""
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)

    # -- what the server sends ------------------------------------------------------------------

    async def _on_message(self, message: Any) -> None:
        if isinstance(message, types.ServerNotification) and isinstance(
                message.root, types.ToolListChangedNotification):
            self._version += 1

    async def _on_elicitation(self, context: Any, params: types.ElicitRequestParams
                              ) -> types.ElicitResult | types.ErrorData:
        # The protocol does not say which call a question belongs to: the oldest one in flight
        # takes it (one call at a time in a thread's session is the common case).
        if not self.calls:
            return types.ErrorData(code=types.INVALID_REQUEST,
                                   message="no tool call is in progress to ask the user for")
        reply = self.loop.create_future()
        self.calls[0].put_nowait((params, reply))
        return await reply

    # -- what langchain-mcp-adapters asks for ---------------------------------------------------

    async def tools(self) -> list[BaseTool]:
        """The session's tools, listed again after the server said they changed."""
        self.last_used = self.loop.time()
        if self._tools is None or self._listed != self._version:
            version = self._version
            try:
                tools = await load_mcp_tools(self, server_name=self.server.name,
                                             tool_name_prefix=self.server.tool_name_prefix)
            except McpError as exc:
                raise MCPServerError(f"MCP server {self.server.name!r} did not list its "
                                     f"tools: {exc.error.message}") from None
            self._tools, self._listed = tools, version
        return self._tools

    async def list_tools(self, cursor: str | None = None, **options: Any
                         ) -> types.ListToolsResult:
        return await self._request(lambda client: client.list_tools(cursor=cursor, **options))

    async def call_tool(self, name: str, arguments: dict[str, Any] | None = None,
                        read_timeout_seconds: timedelta | None = None,
                        progress_callback: Any = None, **options: Any) -> types.CallToolResult:
        async with self.server._concurrency():
            questions: asyncio.Queue = asyncio.Queue()
            self.calls.append(questions)
            request = asked = None
            try:
                request = asyncio.ensure_future(self._request(lambda client: client.call_tool(
                    name, arguments, read_timeout_seconds, progress_callback, **options)))
                while True:
                    asked = asyncio.ensure_future(questions.get())
                    await asyncio.wait([request, asked], return_when=asyncio.FIRST_COMPLETED)
                    if not asked.done():
                        return request.result()
                    params, reply = asked.result()
                    reply.set_result(self._ask(name, params, reply))
            finally:
                self.calls.remove(questions)
                self.last_used = self.loop.time()
                for pending in (request, asked):
                    if pending is not None and not pending.done():
                        pending.cancel()
                # Questions the call ended before answering (a timeout, the server's reply
                # first): the server waits on them, and no one else will answer.
                unanswered = [questions.get_nowait() for _ in range(questions.qsize())]
                if asked is not None and asked.done() and not asked.cancelled():
                    unanswered.append(asked.result())
                for _, reply in unanswered:
                    if not reply.done():
                        reply.set_result(types.ElicitResult(action="cancel"))

    def _ask(self, tool: str, params: types.ElicitRequestParams,
             reply: asyncio.Future) -> types.ElicitResult:
        """The user's answer to the server's question, by a LangGraph interrupt: the first time
        the interrupt pauses the turn (the question is answered ``cancel``: the call runs again
        on resume), on resume it returns the answer."""
        question = {"type": "mcp_elicitation", "server": self.server.name, "tool": tool,
                    **params.model_dump(mode="json", exclude_none=True, exclude={"meta"})}
        try:
            answer = interrupt(question)
        except GraphBubbleUp:
            reply.set_result(types.ElicitResult(action="cancel"))
            raise
        except Exception:
            reply.set_result(types.ElicitResult(action="cancel"))
            raise MCPServerError(
                f"MCP server {self.server.name!r} asked a question during {tool!r} "
                f"({params.message!r}); only a tool call in an agent's turn, with a "
                "checkpointer, can ask the user (an interrupt)") from None
        try:
            return elicit_result(answer, params)
        except ValueError as exc:
            reply.set_result(types.ElicitResult(action="cancel"))
            raise MCPServerError(f"the answer to {self.server.name!r}'s question "
                                 f"{params.message!r} does not fit: {exc}") from None

    async def _request(self, send) -> Any:
        client = self.client
        if client is None or self._closing.done():
            raise self._gone()
        self.last_used = self.loop.time()
        request = asyncio.ensure_future(send(client))
        try:
            # A session that ends (its transport failed) leaves its requests unanswered.
            await asyncio.wait([request, self._closing], return_when=asyncio.FIRST_COMPLETED)
        except BaseException:  # the call was cancelled (a timeout): so is its request
            request.cancel()
            raise
        if not request.done():
            request.cancel()
            raise self._gone()
        try:
            return request.result()
        except McpError as exc:
            if exc.error.code != types.CONNECTION_CLOSED:
                raise
            raise self._gone() from None
        except _GONE:
            raise self._gone() from None

    def _gone(self) -> MCPServerError:
        self.close()
        again = ("the server is started again" if self.server.command is not None else
                 "a new session is opened")
        return MCPServerError(
            f"the MCP server {self.server.name!r} ended its session during the call (the "
            f"server process exited or the connection closed): {again} on the next call, "
            "and what it held from earlier calls may be gone")


def elicit_result(answer: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
    """An MCP ElicitResult from a resume value: ``{"action": "accept"|"decline"|"cancel",
    "content": {...}}``; the content alone (a mapping, or its JSON text), accepted; or, for a
    question with one field, that field's value (text is read as JSON when it parses, and as
    the text itself when the field is a string). ValueError when it fits none of these."""
    if isinstance(answer, types.ElicitResult):
        return answer
    if isinstance(answer, str):
        try:
            parsed = json.loads(answer)
        except ValueError:
            parsed = answer
        if isinstance(parsed, dict):
            answer = parsed
    if isinstance(answer, Mapping):
        if answer.get("action") in ("accept", "decline", "cancel"):
            return types.ElicitResult(action=answer["action"], content=answer.get("content"))
        return types.ElicitResult(action="accept", content=dict(answer))
    schema = getattr(params, "requestedSchema", None) or {}
    fields = schema.get("properties") or {}
    if len(fields) != 1:
        wanted = ", ".join(fields) or "an accept or decline"
        raise ValueError(f'answer with a JSON object of {wanted}, or {{"action": "decline"}}')
    (name, spec), = fields.items()
    value = answer
    if isinstance(answer, str) and spec.get("type") != "string":
        try:
            value = json.loads(answer)
        except ValueError:
            raise ValueError(f"{name!r} is a {spec.get('type')}, not {answer!r}") from None
    elif spec.get("type") == "string" and not isinstance(answer, str):
        value = json.dumps(answer)
    return types.ElicitResult(action="accept", content={name: value})


def _leaf(exc: BaseException) -> BaseException:
    """The first exception inside (nested) exception groups: the SDK's anyio task groups wrap
    what went wrong."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


async def mcp_tools(server: MCPServer, thread_id: str | None = None) -> list[BaseTool]:
    """The tools of ``server`` as LangChain tools, on one session of their own (for
    ``thread_id``): for scripts and other LangChain code. An Agent given the server itself
    keeps a session per thread instead. MCPServerError when the server cannot be reached."""
    return await server.tools(thread_id)
