"""The memory slot of an agent: what an object must do to be an agent's memory."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from langchain_core.messages import BaseMessage


@runtime_checkable
class Memory(Protocol):
    """Recall before the turn (on the critical path); remember after it (in the background)."""

    async def recall(self, query: str, *, user_id: str | None, thread_id: str | None
                     ) -> str | None:
        """Context for this query, as text for the system message, or None for nothing."""
        ...

    async def remember(self, messages: Sequence[BaseMessage], *, user_id: str | None,
                       thread_id: str | None) -> None:
        """Learn from the messages of a finished turn."""
        ...
