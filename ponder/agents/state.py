"""The state an agent's graph carries from node to node."""

from __future__ import annotations

from typing import Annotated, Any, NotRequired, TypedDict

from langchain_core.messages import AnyMessage
from langgraph.graph.message import add_messages


def allow_tools(allowed: list[str] | None, more: list[str] | None) -> list[str]:
    """The reducer of ``allowed_tools``: the union, sorted (a tool once allowed stays so)."""
    return sorted({*(allowed or ()), *(more or ())})


class AgentState(TypedDict):
    """The state of an agent's graph: the conversation and what is rendered into its system
    message."""
    # The conversation: persisted by the checkpointer, appended to (or edited by id) by nodes.
    messages: Annotated[list[AnyMessage], add_messages]
    # Earlier turns folded by conversation memory, rendered into the system message.
    summary: NotRequired[str | None]
    # What memory recalled for this turn, rendered into the system message.
    context: NotRequired[str | None]
    # The planner's plan for this turn, rendered into the system message.
    plan: NotRequired[str | None]
    # The turn's typed answer as JSON (agents/output.py), when an output schema applies.
    structured_response: NotRequired[Any]
    # The tools a person allowed for the whole thread ("always" in an approval answer).
    allowed_tools: NotRequired[Annotated[list[str], allow_tools]]
