"""A turn's reply: its text once the turn is over (``final_text``), or as it streams
(``ReplyStream``), the two always the same.

Streamed tokens alone cannot say which model call's text is the reply: a model writes "Let me
check." and only then the tool call that makes it a step rather than the answer; a conversation
summary, a reranker or a text-to-SQL call streams tokens too. So the reply is decided the way
``final_text`` decides it, on the state: the last AI message once the turn is over. Each model
call's chunks are held, by message id, until then, and the reply's are released as they came.

Only where a node's model call can be nothing but the reply (an agent without tools: its ``act``
call ends the turn) are its tokens passed on as they arrive.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage

# What ReplyStream reads: model tokens, and the state after each step. "updates" is optional
# (it names the node that wrote a message that was not streamed).
STREAM_MODES = ["messages", "values"]  # a list: LangGraph pairs items with modes only for lists


def final_text(state: dict[str, Any]) -> str:
    """The text of the last AI message of a state."""
    message = _last_ai(state.get("messages", []))
    return message.text if message is not None else ""


def _last_ai(messages: Sequence[BaseMessage]) -> AIMessage | None:
    for message in reversed(messages):
        if isinstance(message, AIMessage):
            return message
    return None


@dataclass(frozen=True)
class Piece:
    """A piece of the reply's text, and the graph node that wrote it (when known)."""

    text: str
    node: str | None


class ReplyStream:
    """Picks a turn's reply out of its LangGraph stream, piece by piece.

    Feed it every ``(mode, data)`` item of a stream run with (at least) ``STREAM_MODES``; each
    call returns the pieces of the reply that can be passed on now, and ``end()`` the rest once
    the stream is over. Joined, they are exactly ``final_text`` of the turn's final state.

    ``live_node`` names a top-level node whose model stream is always the reply (see
    ``Agent.live_reply_node``): its tokens are passed on at once instead of held.
    """

    def __init__(self, live_node: str | None = None) -> None:
        self.live_node = live_node
        self._held: dict[str, list[Piece]] = {}  # per message id, the chunks not yet passed on
        self._live: dict[str, str] = {}  # per message id, the text already passed on
        self._writers: dict[str, str] = {}  # per message id, the node that wrote it
        self._state: dict[str, Any] = {}

    def feed(self, mode: str, data: Any) -> list[Piece]:
        """Take one stream item; the reply's pieces that can be passed on now."""
        if mode == "values":
            self._state = data if isinstance(data, dict) else {}
        elif mode == "updates" and isinstance(data, dict):
            for node, change in data.items():
                for message in _messages_of(change):
                    if message.id:
                        self._writers[message.id] = node
        elif mode == "messages":
            chunk, meta = data
            if isinstance(chunk, AIMessageChunk) and chunk.id:
                return self._chunk(chunk, meta)
        return []

    def _chunk(self, chunk: AIMessageChunk, meta: dict[str, Any]) -> list[Piece]:
        node = meta.get("langgraph_node")
        text = chunk.text
        # A top-level node's namespace is "node:task"; a subgraph's nodes add "|...".
        top_level = "|" not in (meta.get("langgraph_checkpoint_ns") or "")
        if self.live_node is not None and node == self.live_node and top_level:
            if text:
                self._live[chunk.id] = self._live.get(chunk.id, "") + text
                return [Piece(text, node)]
            return []
        if text:
            self._held.setdefault(chunk.id, []).append(Piece(text, node))
        return []

    def end(self) -> list[Piece]:
        """The rest of the reply, once the stream is over."""
        reply = _last_ai(self._state.get("messages", []))
        if reply is None or not reply.text:
            return []
        text, node = reply.text, self._writers.get(reply.id or "")
        if reply.id in self._live:
            # Passed on as it streamed; the merged message can only add to it (whitespace a
            # provider sends in its last chunk, say), never take back.
            sent = self._live[reply.id]
            rest = text[len(sent):] if text.startswith(sent) else ""
            return [Piece(rest, node)] if rest else []
        held = self._held.get(reply.id or "", [])
        if held and "".join(p.text for p in held) == text:
            return held  # as it was streamed, chunk by chunk
        return [Piece(text, node)]  # not streamed (a planner's answer, a plain node's message)


def _messages_of(change: Any) -> list[BaseMessage]:
    """The messages a node's update writes (an update may be a dict, a list of them, or None)."""
    changes = change if isinstance(change, list) else [change]
    found: list[BaseMessage] = []
    for one in changes:
        written = one.get("messages", []) if isinstance(one, dict) else []
        written = written if isinstance(written, list) else [written]
        found += [m for m in written if isinstance(m, BaseMessage)]
    return found
