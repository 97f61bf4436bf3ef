"""What a TARGET names, and the one protocol everything that runs one goes through.

A target is an ``Agent`` or any compiled LangGraph graph; a graph is wrapped once, when it is
loaded, in a ``GraphTarget`` that runs it the way an Agent runs: by thread, with text input,
on the database's checkpointer, with the same checkpoint retention. So no caller asks which
kind it holds. TARGET strings are ``module:attr``, ``path/to/file.py:attr`` or a spec file.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from langchain_core.messages import BaseMessage
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import StateGraph
from langgraph.pregel import Pregel
from langgraph.types import Interrupt

from ponder.agents.agent import Agent, _as_input, resume_input
from ponder.agents.reply import ReplyStream
from ponder.config import ConfigurationError, Settings, missing_extra
from ponder.db.persistence import (
    Persistence,
    copy_checkpoints,
    open_persistence,
    prune_checkpoints,
    rewind_checkpoints,
)
from ponder.loading import load_object

log = logging.getLogger(__name__)


@runtime_checkable
class Target(Protocol):
    """What runs a turn on a thread: an ``Agent``, or a graph wrapped in a ``GraphTarget``.

    ``input`` is text, a message, a list of messages, a state dict, a ``Command`` or None
    (continue the thread from its last checkpoint). States are dicts of the graph's channels.
    """

    name: str
    graph: Pregel  # the compiled graph, for composing it into another one

    async def ainvoke(self, input: Any, *, thread_id: str | None = None,
                      user_id: str | None = None, config: RunnableConfig | None = None
                      ) -> dict[str, Any]:
        """Run one turn to its end on the thread (a new one when None); the thread's state."""

    def astream(self, input: Any, *, thread_id: str | None = None, user_id: str | None = None,
                stream_mode: str | Sequence[str] = "updates", subgraphs: bool = False,
                config: RunnableConfig | None = None) -> AsyncIterator[Any]:
        """Run one turn, yielding what LangGraph's ``astream`` yields for ``stream_mode``."""

    async def aget_state(self, thread_id: str) -> Any:
        """The thread's current LangGraph ``StateSnapshot``."""

    def aget_state_history(self, thread_id: str) -> AsyncIterator[Any]:
        """Every checkpoint of the thread as a ``StateSnapshot``, newest first."""

    async def ainterrupts(self, thread_id: str) -> list[Interrupt]:
        """The interrupts the thread waits on (none when it waits on nothing)."""

    async def aupdate_state(self, thread_id: str, values: Any, as_node: str | None = None
                            ) -> RunnableConfig:
        """Write ``values`` to the thread as if ``as_node`` had; the new checkpoint's config."""

    async def resume_input(self, thread_id: str, value: Any) -> Any:
        """The input that resumes the thread's pending interrupts with ``value`` (None: go on
        without answers); ResumeError when ``value`` does not fit them."""

    async def adelete_thread(self, thread_id: str) -> None:
        """Delete every checkpoint of the thread."""

    async def arewind(self, thread_id: str, checkpoint_id: str | None) -> None:
        """Discard what the thread saved after ``checkpoint_id`` (None: everything)."""

    async def acopy_thread(self, source: str, target: str) -> None:
        """Give thread ``target`` the checkpoints of thread ``source`` (state and history)."""

    def reply_stream(self) -> ReplyStream:
        """A ReplyStream that picks the reply's text out of a turn's stream."""

    async def aclose(self) -> None:
        """Flush background work and close the databases the target opened (they reopen on
        the next turn)."""


def _input_keys(graph: Pregel) -> set[str]:
    """The keys a graph's input may set, read from its channels, not from a JSON schema.

    Schema generation is pydantic's, which refuses a ``typing.TypedDict`` state on Python 3.11
    although LangGraph runs one; the builder already holds each schema's channels.
    """
    builder = getattr(graph, "builder", None)
    if isinstance(builder, StateGraph):
        return set(builder.schemas[builder.input_schema])
    channels = graph.input_channels  # a Pregel built by hand
    return {channels} if isinstance(channels, str) else set(channels)


class GraphTarget:
    """A compiled LangGraph graph run the way an Agent is: by thread, with text input.

    A graph compiled without a checkpointer gets the one (and the store) of ``database_url``
    (None: ``PONDER_DATABASE_URL``), opened on first use. After each turn the thread keeps
    its ``keep_checkpoints`` newest checkpoints (default ``PONDER_CHECKPOINTS_PER_THREAD``).
    ``name`` defaults to the graph's. ``chats`` tells whether its input has ``messages``: text
    input needs them (ConfigurationError otherwise).
    """

    def __init__(self, graph: Pregel, name: str | None = None, database_url: str | None = None,
                 keep_checkpoints: int | None = None) -> None:
        self.graph = graph
        self.name = name or graph.name
        self.chats = "messages" in _input_keys(graph)
        self._database_url = database_url
        self._keep = keep_checkpoints or Settings.from_env().checkpoints_per_thread
        self._persistence: Persistence | None = None
        self._ready = graph if graph.checkpointer else None
        self._opening = asyncio.Lock()
        self._background: set[asyncio.Task] = set()  # the one pruning task, while it runs
        self._unpruned: set[str] = set()  # threads with turns since their last prune

    async def _compiled(self) -> Pregel:
        if self._ready is None:
            async with self._opening:
                if self._ready is None:
                    self._persistence = await open_persistence(self._database_url)
                    self._ready = self.graph.copy(
                        {"checkpointer": self._persistence.checkpointer,
                         "store": self.graph.store or self._persistence.store})
        return self._ready

    def _input(self, value: Any) -> Any:
        if isinstance(value, (str, BaseMessage, list)) and not self.chats:
            raise ConfigurationError(
                f"the graph {self.name!r} takes no 'messages' in its input, so it cannot take "
                "text: give it a JSON object of its state's keys, or give its state a messages "
                "key (StateGraph(MessagesState), or messages: Annotated[list, add_messages])")
        return _as_input(value)

    @staticmethod
    def _config(thread_id: str | None, user_id: str | None,
                config: RunnableConfig | None = None) -> RunnableConfig:
        merged: dict[str, Any] = dict(config or {})
        configurable = {**merged.get("configurable", {}),
                        "thread_id": thread_id or str(uuid.uuid4())}
        if user_id is not None:
            configurable["user_id"] = user_id
        merged["configurable"] = configurable
        return merged

    async def ainvoke(self, input: Any, *, thread_id: str | None = None,
                      user_id: str | None = None, config: RunnableConfig | None = None
                      ) -> dict[str, Any]:
        """Run the graph to its end on the thread (a new one when None); the final state."""
        graph = await self._compiled()
        cfg = self._config(thread_id, user_id, config)
        try:
            return await graph.ainvoke(self._input(input), cfg)
        finally:
            self._prune(cfg)

    async def astream(self, input: Any, *, thread_id: str | None = None,
                      user_id: str | None = None, stream_mode: str | Sequence[str] = "updates",
                      subgraphs: bool = False, config: RunnableConfig | None = None
                      ) -> AsyncIterator[Any]:
        """Run the graph on the thread, yielding LangGraph's stream in ``stream_mode``."""
        graph = await self._compiled()
        cfg = self._config(thread_id, user_id, config)
        try:
            async for item in graph.astream(self._input(input), cfg, stream_mode=stream_mode,
                                            subgraphs=subgraphs):
                yield item
        finally:
            self._prune(cfg)

    async def aget_state(self, thread_id: str) -> Any:
        """The thread's current LangGraph ``StateSnapshot``."""
        return await (await self._compiled()).aget_state(self._config(thread_id, None))

    async def aget_state_history(self, thread_id: str) -> AsyncIterator[Any]:
        """Every checkpoint of the thread as a ``StateSnapshot``, newest first."""
        async for snapshot in (await self._compiled()).aget_state_history(
                self._config(thread_id, None)):
            yield snapshot

    async def ainterrupts(self, thread_id: str) -> list[Interrupt]:
        """The interrupts the thread waits on."""
        return list((await self.aget_state(thread_id)).interrupts)

    async def aupdate_state(self, thread_id: str, values: Any, as_node: str | None = None
                            ) -> RunnableConfig:
        """Write ``values`` to the thread as if ``as_node`` had; the new checkpoint's config."""
        return await (await self._compiled()).aupdate_state(
            self._config(thread_id, None), values, as_node=as_node)

    async def resume_input(self, thread_id: str, value: Any) -> Any:
        """The input that resumes the thread with ``value`` (see ``Agent.aresume``)."""
        if value is None:
            return None
        return resume_input(thread_id, await self.ainterrupts(thread_id), value)

    async def adelete_thread(self, thread_id: str) -> None:
        """Delete every checkpoint of the thread."""
        await (await self._compiled()).checkpointer.adelete_thread(thread_id)

    async def arewind(self, thread_id: str, checkpoint_id: str | None) -> None:
        """Discard what the thread saved after ``checkpoint_id`` (None: everything)."""
        await rewind_checkpoints((await self._compiled()).checkpointer, thread_id,
                                 checkpoint_id)

    async def acopy_thread(self, source: str, target: str) -> None:
        """Give thread ``target`` the checkpoints of thread ``source`` (state and history)."""
        await copy_checkpoints((await self._compiled()).checkpointer, source, target)

    def reply_stream(self) -> ReplyStream:
        """A graph's replies are known only once their message is complete."""
        return ReplyStream()

    def _prune(self, config: RunnableConfig) -> None:
        """Retention, in the background: a graph's turn may save any number of checkpoints.
        Threads whose turns end while a prune runs are pruned together after it, so a busy
        server prunes in a few transactions, not one per turn."""
        saver = self._ready.checkpointer if self._ready is not None else None
        if isinstance(saver, BaseCheckpointSaver):
            self._unpruned.add(config["configurable"]["thread_id"])
            if not self._background:
                task = asyncio.get_running_loop().create_task(self._prune_all(saver))
                self._background.add(task)
                task.add_done_callback(self._pruned)

    async def _prune_all(self, saver: BaseCheckpointSaver) -> None:
        while self._unpruned:
            threads, self._unpruned = self._unpruned, set()
            await prune_checkpoints(saver, threads, self._keep)

    def _pruned(self, task: asyncio.Task) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("pruning the checkpoints of graph %r failed", self.name,
                      exc_info=task.exception())

    async def aclose(self) -> None:
        """Wait for retention, and close the database connections this wrapper opened (a
        graph's own checkpointer is left open)."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)
        if self._persistence is not None:
            await self._persistence.aclose()
            self._persistence, self._ready = None, None

    def __repr__(self) -> str:
        return f"GraphTarget({self.name!r})"


def as_target(obj: Any, *, database_url: str | None = None) -> Target:
    """``obj`` as a Target: an Agent (or any Target) as it is, a compiled LangGraph graph
    wrapped in a GraphTarget on ``database_url``. ConfigurationError for anything else."""
    if isinstance(obj, Pregel):
        return GraphTarget(obj, database_url=database_url)
    if isinstance(obj, Target):
        return obj
    raise ConfigurationError(f"{obj!r} is a {type(obj).__name__}, not an Agent or a compiled "
                             "LangGraph graph")


def load_target(ref: str, *, model: str | None = None,
                database_url: str | None = None) -> Target:
    """The Target that ``ref`` names: an agent, a compiled LangGraph graph, or a function
    returning one (called without arguments). ``model`` overrides an agent's; a graph's
    checkpoints go to ``database_url`` (None: ``PONDER_DATABASE_URL``) unless it has its own
    checkpointer. ConfigurationError says what is wrong with ``ref``."""
    if ref.endswith((".yaml", ".yml")):
        return Agent.from_spec(ref, model=model)
    try:
        target = load_object(ref)
    except ConfigurationError:
        if Path(ref).is_file():
            raise ConfigurationError(
                f"{ref!r} is a file: add the name of the agent in it (e.g. {ref}:agent), "
                "or pass a .yaml spec") from None
        raise
    except Exception as exc:  # the user's module failed to import: say where, briefly
        why = isinstance(exc, ModuleNotFoundError) and missing_extra(exc)
        raise ConfigurationError(
            f"cannot load {ref!r}: {why or f'{type(exc).__name__}: {exc}'}") from None
    if inspect.isfunction(target):  # a factory: def build() -> Agent
        required = [p for p in inspect.signature(target).parameters.values()
                    if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        if required:
            raise ConfigurationError(
                f"{ref!r} is a function that takes arguments: name an Agent, a compiled "
                "LangGraph graph, or a function without arguments that returns one")
        target = target()
    if model and isinstance(target, Agent):
        return target.with_model(model)
    if model:
        raise ConfigurationError(f"--model applies to agents, and {ref!r} is a LangGraph "
                                 "graph: set the model where the graph is built")
    try:
        return as_target(target, database_url=database_url)
    except ConfigurationError:
        raise ConfigurationError(f"{ref!r} is a {type(target).__name__}, not an Agent or a "
                                 "compiled LangGraph graph") from None
