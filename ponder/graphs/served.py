"""Any compiled LangGraph graph, run the way an Agent is, so it can be served and chatted with.

The graph's state must have a ``messages`` channel (``MessagesState`` or alike): input text
becomes a human message there. A graph compiled without a checkpointer gets the one from
``PONDER_DATABASE_URL``, opened on first use.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

from langgraph.graph import StateGraph
from langgraph.pregel import Pregel

from ponder.agents.agent import _as_input
from ponder.config import ConfigurationError
from ponder.db.persistence import Persistence, open_persistence


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


class ServedGraph:
    """A compiled LangGraph graph run the way an Agent is: by thread, with text input.

    A graph without a checkpointer gets the one (and the store) of ``database_url`` (None:
    ``PONDER_DATABASE_URL``), opened on first use. ``name`` defaults to the graph's. Raises
    ConfigurationError when the graph's input has no ``messages`` key.
    """
    def __init__(self, graph: Pregel, name: str | None = None,
                 database_url: str | None = None) -> None:
        if "messages" not in _input_keys(graph):
            raise ConfigurationError(
                f"the graph {graph.name!r} takes no 'messages' in its input, so it cannot "
                "chat: give its state (and input schema, if it has one) a messages key, e.g. "
                "StateGraph(MessagesState) or messages: Annotated[list, add_messages]")
        self.name = name or graph.name
        self._graph = graph
        self._database_url = database_url
        self._persistence: Persistence | None = None
        self._ready = graph if graph.checkpointer else None
        self._opening = asyncio.Lock()

    async def _compiled(self) -> Pregel:
        if self._ready is None:
            async with self._opening:
                if self._ready is None:
                    self._persistence = await open_persistence(self._database_url)
                    self._ready = self._graph.copy(
                        {"checkpointer": self._persistence.checkpointer,
                         "store": self._graph.store or self._persistence.store})
        return self._ready

    @staticmethod
    def _config(thread_id: str | None, user_id: str | None = None, **_: Any) -> dict[str, Any]:
        configurable = {"thread_id": thread_id or str(uuid.uuid4())}
        if user_id is not None:
            configurable["user_id"] = user_id
        return {"configurable": configurable}

    async def ainvoke(self, input: Any, *, thread_id: str | None = None,
                      user_id: str | None = None) -> dict[str, Any]:
        """Run the graph to its end on the thread (a new one when None); the final state.

        ``input`` is text or a message (a human message in ``messages``), a list of messages, a
        state dict, a ``Command`` or None (resume). Raises TypeError for anything else.
        """
        graph = await self._compiled()
        return await graph.ainvoke(_as_input(input), self._config(thread_id, user_id))

    async def astream(self, input: Any, *, thread_id: str | None = None,
                      user_id: str | None = None, stream_mode: str | Sequence[str] = "updates",
                      subgraphs: bool = False) -> AsyncIterator[Any]:
        """Run the graph on the thread, yielding LangGraph's stream in ``stream_mode``."""
        graph = await self._compiled()
        async for item in graph.astream(_as_input(input), self._config(thread_id, user_id),
                                        stream_mode=stream_mode, subgraphs=subgraphs):
            yield item

    async def aget_state(self, thread_id: str):
        """The thread's current LangGraph ``StateSnapshot``."""
        return await (await self._compiled()).aget_state(self._config(thread_id))

    async def aget_state_history(self, thread_id: str) -> AsyncIterator[Any]:
        """Every checkpoint of the thread as a ``StateSnapshot``, newest first."""
        async for snapshot in (await self._compiled()).aget_state_history(
                self._config(thread_id)):
            yield snapshot

    async def adelete_thread(self, thread_id: str) -> None:
        """Delete every checkpoint of the thread."""
        await (await self._compiled()).checkpointer.adelete_thread(thread_id)

    async def aclose(self) -> None:
        """Close the database connections this wrapper opened (a graph's own checkpointer is left
        open)."""
        if self._persistence is not None:
            await self._persistence.aclose()
            self._persistence, self._ready = None, None
