"""The memory slot of an agent: what an object must do to be an agent's memory."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from langchain_core.messages import BaseMessage

from ponder.tasks import gather_cancelling


@runtime_checkable
class Memory(Protocol):
    """Recall before the turn (on the critical path); remember after it (in the background)."""

    async def recall(self, query: str, *, user_id: str | None, thread_id: str | None
                     ) -> str | None:
        """Context for this query, as text for the system message, or None for nothing."""

    async def remember(self, messages: Sequence[BaseMessage], *, user_id: str | None,
                       thread_id: str | None) -> None:
        """Learn from the messages of a finished turn."""


class Memories:
    """Several memories as one: recalled concurrently (their texts joined), all remember."""

    def __init__(self, memories: Sequence[Memory]) -> None:
        for memory in memories:
            if not isinstance(memory, Memory):
                raise TypeError(f"memory {memory!r} has no async recall() and remember()")
        self.memories = list(memories)

    async def recall(self, query: str, *, user_id: str | None, thread_id: str | None
                     ) -> str | None:
        """Every memory's recall, run concurrently; their texts joined by blank lines, or None.
        One failing cancels the others."""
        texts = await gather_cancelling(*(m.recall(query, user_id=user_id, thread_id=thread_id)
                                       for m in self.memories))
        return "\n\n".join(t for t in texts if t) or None

    async def remember(self, messages: Sequence[BaseMessage], *, user_id: str | None,
                       thread_id: str | None) -> None:
        """Every memory remembers the turn, concurrently."""
        await asyncio.gather(*(m.remember(messages, user_id=user_id, thread_id=thread_id)
                               for m in self.memories))

    async def aclose(self) -> None:
        """Close every memory that has an ``aclose``, in order."""
        for memory in self.memories:
            close = getattr(memory, "aclose", None)
            if close is not None:
                await close()
