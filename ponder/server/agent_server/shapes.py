"""The JSON shapes of the LangGraph Agent Server API: assistants, thread states, runs, and the
encoding of what graphs stream (messages as LangChain dicts, interrupts as ``{"value", "id"}``).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from langgraph.types import Interrupt
from pydantic import BaseModel

from ponder.graphs.runs import RunRecord
from ponder.graphs.targets import Target

# LangGraph's namespace for the ids of the assistants a server makes, one per graph, so the same
# graph has the same assistant id on any server (uuid5 of the graph id).
ASSISTANT_NAMESPACE = uuid.UUID("6ba7b821-9dad-11d1-80b4-00c04fd430c8")
EPOCH = "1970-01-01T00:00:00+00:00"


def assistant_id(graph_id: str) -> str:
    """The id of the assistant a server makes for ``graph_id``."""
    return str(uuid.uuid5(ASSISTANT_NAMESPACE, graph_id))


def iso(seconds: float | None) -> str | None:
    """Unix seconds as ISO 8601 with microseconds and ``+00:00``, LangGraph's form."""
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="microseconds")


def jsonable(value: Any) -> Any:
    """What a graph streams or holds, as JSON: messages and other pydantic models dumped,
    interrupts as ``{"value", "id"}``, tuples as lists; anything else unknown as its str."""
    if isinstance(value, Interrupt):
        return {"value": jsonable(value.value), "id": value.id}
    if isinstance(value, BaseModel):
        return jsonable(value.model_dump())
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def assistant(target: Target) -> dict[str, Any]:
    """The assistant a served agent or graph is."""
    return {"assistant_id": assistant_id(target.name), "graph_id": target.name, "config": {},
            "context": {}, "metadata": {"created_by": "system"}, "name": target.name,
            "created_at": EPOCH, "updated_at": EPOCH, "version": 1, "description": None}


def _checkpoint(config: dict[str, Any] | None) -> dict[str, Any] | None:
    if not config:
        return None
    configurable = config.get("configurable", {})
    return {"checkpoint_id": configurable.get("checkpoint_id"),
            "thread_id": configurable.get("thread_id"),
            "checkpoint_ns": configurable.get("checkpoint_ns", "")}


def state(snapshot: Any) -> dict[str, Any]:
    """A LangGraph ``StateSnapshot`` as the API's ThreadState."""
    checkpoint, parent = _checkpoint(snapshot.config), _checkpoint(snapshot.parent_config)
    return {
        "values": jsonable(snapshot.values or {}),
        "next": list(snapshot.next),
        "tasks": [{"id": t.id, "name": t.name, "path": jsonable(t.path), "error": t.error,
                   "interrupts": jsonable(t.interrupts), "checkpoint": None, "state": None,
                   "result": jsonable(t.result)} for t in snapshot.tasks],
        "metadata": jsonable(snapshot.metadata),
        "created_at": snapshot.created_at,
        "checkpoint": checkpoint,
        "parent_checkpoint": parent,
        "interrupts": jsonable(list(snapshot.interrupts)),
        "checkpoint_id": checkpoint and checkpoint["checkpoint_id"],
        "parent_checkpoint_id": parent and parent["checkpoint_id"],
    }


# ponder's run statuses as the API's: a run that stopped at interrupt() ended well, and a
# cancelled one was interrupted.
_STATUS = {"interrupted": "success", "cancelled": "interrupted"}


def run(record: RunRecord, graph_id: str | None = None) -> dict[str, Any]:
    """A run record as the API's Run (``graph_id``: its graph's name, when its record names
    it by TARGET string)."""
    kwargs = record.kwargs or {}
    return {
        "run_id": record.id, "thread_id": record.thread_id,
        "assistant_id": assistant_id(graph_id or record.target),
        "metadata": kwargs.get("metadata", {}),
        "status": _STATUS.get(record.status, record.status),
        "kwargs": {k: v for k, v in kwargs.items() if k != "metadata"},
        "multitask_strategy": kwargs.get("multitask_strategy", "enqueue"),
        "created_at": iso(record.created_at),
        "updated_at": iso(record.ended_at or record.heartbeat_at or record.created_at),
    }
