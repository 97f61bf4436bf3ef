"""Scripted replies: what a fake model says, shared by ScriptedChatModel and FakeOpenAIServer.

A script is a list of replies used in turn, or a function of the incoming messages. A reply is
a string, an ``AIMessage`` (text, tool calls, usage), or — when a tool is forced, as
``with_structured_output`` does — a dict or pydantic object that becomes that tool's arguments.
"""

from __future__ import annotations

import inspect
import itertools
import json
import threading
from collections.abc import Callable, Sequence
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage
from pydantic import BaseModel

from ponder.errors import PonderError

Reply = str | AIMessage | dict | BaseModel
ReplyFunction = Callable[[list[BaseMessage]], Any]  # returns a Reply, or an awaitable of one


class ScriptExhausted(PonderError, RuntimeError):
    """Every scripted reply has been used."""


_call_ids = itertools.count(1)


def tool_calls(*calls: tuple[str, dict[str, Any]], content: str = "") -> AIMessage:
    """A reply that calls tools: ``tool_calls(("add", {"a": 1, "b": 2}), ("now", {}))``."""
    return AIMessage(
        content=content,
        tool_calls=[
            {"name": name, "args": args, "id": f"call_{next(_call_ids)}", "type": "tool_call"}
            for name, args in calls
        ],
    )


class Script:
    """Hands out replies in order (or from a function), safely under concurrency."""

    def __init__(self, replies: Sequence[Reply] | ReplyFunction) -> None:
        if isinstance(replies, (str, AIMessage)):
            raise TypeError("replies must be a list of replies or a function, not one reply")
        self._function = replies if callable(replies) else None
        self._replies = None if callable(replies) else list(replies)
        self._lock = threading.Lock()
        self._used = 0
        self.received: list[list[BaseMessage]] = []

    @property
    def used(self) -> int:
        """How many replies have been asked for so far."""
        return self._used

    def _take(self, messages: list[BaseMessage]) -> Any:
        with self._lock:
            self.received.append(list(messages))
            index = self._used
            self._used += 1
            if self._function is not None:
                return self._function
            if index >= len(self._replies):
                raise ScriptExhausted(
                    f"the script ran out of replies: it had {len(self._replies)}, and call "
                    f"{index + 1} asked for one more; add replies or pass a function"
                )
            return self._replies[index]

    async def anext(self, messages: list[BaseMessage], forced_tool: str | None = None,
                    as_json: bool = False) -> AIMessage:
        """The next reply to ``messages`` as an AIMessage (a reply function may be async);
        with ``as_json`` (a JSON response format was asked for) a dict or pydantic reply is
        the message's JSON text.

        Raises ScriptExhausted when the list of replies is used up.
        """
        reply = self._take(messages)
        if reply is self._function:
            reply = reply(list(messages))
            if inspect.isawaitable(reply):
                reply = await reply
        return to_message(reply, forced_tool, as_json)

    def next(self, messages: list[BaseMessage], forced_tool: str | None = None) -> AIMessage:
        """The next reply to ``messages`` as an AIMessage.

        Raises ScriptExhausted when the list of replies is used up, and TypeError when the reply
        function is async (use ``anext``).
        """
        reply = self._take(messages)
        if reply is self._function:
            reply = reply(list(messages))
            if inspect.isawaitable(reply):
                raise TypeError("an async reply function needs the async API (ainvoke/astream)")
        return to_message(reply, forced_tool)


def to_message(reply: Any, forced_tool: str | None = None, as_json: bool = False) -> AIMessage:
    """Turn one scripted reply into the AIMessage the model returns (with ``as_json``, a dict
    or pydantic reply is its JSON text)."""
    if isinstance(reply, BaseModel) and not isinstance(reply, AIMessage):
        reply = reply.model_dump(mode="json")
    if as_json and isinstance(reply, dict) and not forced_tool:
        return AIMessage(content=json.dumps(reply))
    if isinstance(reply, str) and forced_tool:
        try:
            parsed = json.loads(reply)
        except json.JSONDecodeError:
            parsed = None
        if isinstance(parsed, dict):
            reply = parsed
    if isinstance(reply, dict):
        if not forced_tool:
            raise TypeError(
                "a dict reply is a tool's arguments, but no tool was forced: return an "
                "AIMessage (or use tool_calls(...)) to call tools"
            )
        return tool_calls((forced_tool, reply))
    if isinstance(reply, str):
        return AIMessage(content=reply)
    if isinstance(reply, AIMessage):
        calls = [
            {**call, "id": call.get("id") or f"call_{next(_call_ids)}"} for call in reply.tool_calls
        ]
        return reply.model_copy(update={"tool_calls": calls, "id": None})
    raise TypeError(
        f"a scripted reply must be a str, AIMessage, dict or pydantic object, "
        f"not {type(reply).__name__}"
    )


def forced_tool_name(tool_choice: Any, tools: Sequence[dict] | None) -> str | None:
    """The name of the tool a request forces, in any of the OpenAI / LangChain spellings."""
    if isinstance(tool_choice, dict):
        return (tool_choice.get("function") or {}).get("name") or tool_choice.get("name")
    if isinstance(tool_choice, str) and tool_choice not in ("auto", "none"):
        if tool_choice in ("any", "required", "true") and tools and len(tools) == 1:
            return _tool_name(tools[0])
        return tool_choice if tool_choice not in ("any", "required", "true") else None
    if tool_choice is True and tools and len(tools) == 1:
        return _tool_name(tools[0])
    return None


def _tool_name(tool: dict) -> str | None:
    return (tool.get("function") or {}).get("name") or tool.get("name")


def count_tokens(text: str) -> int:
    """A deterministic stand-in for a tokenizer: whitespace-separated words."""
    return len(text.split())
