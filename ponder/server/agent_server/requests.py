"""The request bodies of the Agent Server API, checked on arrival, and who is asking."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import Request
from pydantic import BaseModel, ConfigDict, Field

from ponder.server.errors import APIError

MAX_OFFSET = 10**9  # larger offsets overflow the databases' integers
STREAM_MODES = ("values", "updates", "messages-tuple", "custom", "debug", "tasks", "checkpoints")


class RequestBody(BaseModel):
    """A request body of the API: keys it does not use are accepted (LangGraph clients send
    some, e.g. ``langsmith_tracer``)."""
    model_config = ConfigDict(extra="allow")


class ThreadCreate(RequestBody):
    """``POST /threads``."""
    thread_id: str | None = Field(default=None, max_length=200, pattern=r"^[^\x00]+$")
    metadata: dict[str, Any] = Field(default_factory=dict)
    if_exists: Literal["raise", "do_nothing"] = "raise"


class ThreadSearch(RequestBody):
    """``POST /threads/search`` and ``/threads/count``."""
    ids: list[str] | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    status: Literal["idle", "busy", "interrupted", "error"] | None = None
    limit: int = Field(default=10, ge=1, le=1000)
    offset: int = Field(default=0, ge=0, le=MAX_OFFSET)


class ThreadPatch(RequestBody):
    """``PATCH /threads/{id}``: metadata merged into the thread's."""
    metadata: dict[str, Any] = Field(default_factory=dict)


class StateUpdate(RequestBody):
    """``POST /threads/{id}/state``."""
    values: dict[str, Any] | list[Any] | None = None
    as_node: str | None = None


class HistoryRequest(RequestBody):
    """``POST /threads/{id}/history``: the newest ``limit`` checkpoints."""
    limit: int = Field(default=10, ge=1, le=1000)


class AssistantSearch(RequestBody):
    """``POST /assistants/search`` and ``/assistants/count``."""
    graph_id: str | None = None
    name: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    limit: int = Field(default=10, ge=1, le=1000)
    offset: int = Field(default=0, ge=0, le=MAX_OFFSET)


class ResumeCommand(RequestBody):
    """A run's ``command``: ``resume`` answers pending interrupts (one value, or
    ``{interrupt_id: value}``); ``update`` and ``goto`` are LangGraph's."""
    resume: Any = None
    update: dict[str, Any] | list[Any] | None = None
    goto: str | list[str] | None = None


class RunCreate(RequestBody):
    """A run: on which assistant, with what input or command, streamed how, and what to do
    when its thread is busy (``multitask_strategy``)."""
    assistant_id: str
    input: dict[str, Any] | None = None
    command: ResumeCommand | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    config: dict[str, Any] = Field(default_factory=dict)
    stream_mode: str | list[str] = "values"
    multitask_strategy: Literal["reject", "enqueue", "interrupt", "rollback"] = "enqueue"
    if_not_exists: Literal["reject", "create"] = "reject"
    on_completion: Literal["delete", "keep"] = "delete"
    webhook: str | None = Field(default=None, max_length=2000)
    stream_resumable: bool = False

    def modes(self) -> list[str]:
        """The requested stream modes, checked."""
        modes = [self.stream_mode] if isinstance(self.stream_mode, str) else self.stream_mode
        unknown = [m for m in modes if m not in STREAM_MODES]
        if unknown:
            raise APIError(422, f"stream_mode {', '.join(map(repr, unknown))} is not "
                                f"supported: use {', '.join(STREAM_MODES)}",
                           param="stream_mode")
        return modes or ["values"]


def caller_key(request: Request) -> str | None:
    """The id of the caller's API key (None when keys are not in use)."""
    return getattr(request.state, "api_key_id", None)
