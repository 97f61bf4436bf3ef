"""A streamed turn as what it does, in order: the tool calls its model makes, their results,
and the pieces of its reply. The Responses API turns these into its events, the MCP server
into progress notifications.

A tool call is read off the turn's states (LangGraph's ``values`` stream), not off the model's
tokens: a call is known whole, with its arguments, once the step that made it has ended.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from langchain_core.messages import AIMessage, ToolMessage

from ponder.agents.reply import Piece
from ponder.server.openai_api import Turn


@dataclass(frozen=True)
class ToolCall:
    """A tool call the agent's model made in this turn: its id, the tool and the arguments."""

    id: str
    name: str
    args: dict[str, Any]


@dataclass(frozen=True)
class ToolResult:
    """The result of a tool call of this turn (``call_id`` names the call), as text."""

    call_id: str
    name: str
    text: str


TurnEvent = ToolCall | ToolResult | Piece


async def turn_events(turn: Turn) -> AsyncIterator[TurnEvent]:
    """What ``turn`` (started with ``stream=True``) does, as it happens; ends once its reply is
    whole. Raises what the turn raised. Messages the thread held before the turn are not
    reported again: the turn's first state is the thread with the turn's input in it."""
    reply = turn.reply_stream()
    before: set[str] | None = None
    while (item := await turn.events.get()) is not None:
        mode, data = item
        if mode == "values" and isinstance(data, dict):
            messages = data.get("messages") or []
            if before is None:
                before = {m.id for m in messages}
            for message in messages:
                if message.id in before:
                    continue
                before.add(message.id)
                if isinstance(message, AIMessage):
                    for call in message.tool_calls:
                        yield ToolCall(call["id"] or "", call["name"], call["args"])
                elif isinstance(message, ToolMessage):
                    yield ToolResult(message.tool_call_id, message.name or "", message.text)
        for piece in reply.feed(mode, data):
            yield piece
    await turn.result()  # the turn's failure, if it failed
    for piece in reply.end():
        yield piece
