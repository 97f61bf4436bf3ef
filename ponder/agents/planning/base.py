"""The planner slot of an agent: what an object must do to plan an agent's turn."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import SystemMessage
from langchain_core.runnables import RunnableConfig


@runtime_checkable
class Planner(Protocol):
    """Plans a turn before the action module acts.

    ``plan`` returns a state update: ``{"plan": text}`` to guide the tool loop (it is rendered
    into the system message), or ``{"messages": [AIMessage(...)]}`` to answer the turn itself
    (then the tool loop does not run). ``system`` is the agent's profile message: use it in every
    model call so the profile holds in every step.
    """

    async def plan(self, state: dict[str, Any], *, model: BaseChatModel, system: SystemMessage,
                   config: RunnableConfig) -> dict[str, Any]:
        ...
