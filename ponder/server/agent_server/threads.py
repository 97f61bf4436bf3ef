"""The Agent Server's threads: id, the graph that runs on them, the caller's key, metadata and
times, in ``ponder_agent_threads``. Their state lives in the graph's checkpoints; their runs in
``ponder_runs``. A thread made under one key does not exist for another.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Column, Float, MetaData, String, Table, Text, and_, select, update
from sqlalchemy.dialects.postgresql import insert as postgres_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from ponder.db.tables import Tables

metadata = MetaData()
agent_threads = Table(
    "ponder_agent_threads", metadata,
    Column("id", String(200), primary_key=True),
    Column("graph_id", String(200), nullable=True),  # set by the thread's first run
    Column("key_id", String(32), nullable=True, index=True),
    Column("metadata", Text, nullable=False),  # JSON object
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)


@dataclass
class ThreadRow:
    """One thread: ``metadata`` decoded, times in Unix seconds."""
    id: str
    graph_id: str | None
    key_id: str | None
    metadata: dict[str, Any] = field(default_factory=dict)
    created_at: float = 0.0
    updated_at: float = 0.0


def _row(row: Any) -> ThreadRow:
    values = dict(row._mapping)
    values["metadata"] = json.loads(values["metadata"] or "{}")
    return ThreadRow(**values)


class AgentThreads(Tables):
    """The Agent Server's threads in ponder's database (``url``, default
    ``PONDER_DATABASE_URL``)."""

    metadata = metadata

    def _mine(self, key: str | None):
        return agent_threads.c.key_id.is_(None) if key is None else agent_threads.c.key_id == key

    async def get(self, thread_id: str, key: str | None) -> ThreadRow | None:
        """The thread, if it exists for ``key``."""
        engine = await self.engine()
        async with engine.connect() as conn:
            row = (await conn.execute(select(agent_threads).where(
                agent_threads.c.id == thread_id, self._mine(key)))).first()
        return _row(row) if row else None

    async def create(self, key: str | None, thread_id: str | None = None,
                     metadata: dict[str, Any] | None = None,
                     graph_id: str | None = None) -> ThreadRow | None:
        """A new thread (a new UUID when ``thread_id`` is None); None when the id is taken."""
        now = time.time()
        thread = ThreadRow(thread_id or str(uuid.uuid4()), graph_id, key, dict(metadata or {}),
                           now, now)
        engine = await self.engine()
        async with engine.begin() as conn:
            insert = sqlite_insert if conn.dialect.name == "sqlite" else postgres_insert
            made = await conn.execute(insert(agent_threads).values(
                id=thread.id, graph_id=graph_id, key_id=key,
                metadata=json.dumps(thread.metadata), created_at=now, updated_at=now,
            ).on_conflict_do_nothing(index_elements=["id"]).returning(agent_threads.c.id))
            return thread if made.first() is not None else None  # None: the id is taken

    async def update(self, thread: ThreadRow, *, metadata: dict[str, Any] | None = None,
                     graph_id: str | None = None) -> ThreadRow:
        """Merge ``metadata`` into the thread's, set its graph; the thread as it now is."""
        thread.metadata = {**thread.metadata, **(metadata or {})}
        thread.graph_id = graph_id or thread.graph_id
        thread.updated_at = time.time()
        engine = await self.engine()
        async with engine.begin() as conn:
            await conn.execute(update(agent_threads).where(
                agent_threads.c.id == thread.id).values(
                metadata=json.dumps(thread.metadata), graph_id=thread.graph_id,
                updated_at=thread.updated_at))
        return thread

    async def search(self, key: str | None, *, metadata: dict[str, Any] | None = None,
                     ids: list[str] | None = None, limit: int = 10,
                     offset: int = 0) -> list[ThreadRow]:
        """``key``'s threads whose metadata contains ``metadata``, newest update first."""
        condition = self._mine(key)
        if ids:
            condition = and_(condition, agent_threads.c.id.in_(ids))
        engine = await self.engine()
        async with engine.connect() as conn:
            rows = await conn.execute(select(agent_threads).where(condition).order_by(
                agent_threads.c.updated_at.desc()))
            found = [_row(r) for r in rows]
        wanted = (metadata or {}).items()
        found = [t for t in found if all(t.metadata.get(k) == v for k, v in wanted)]
        return found[offset:offset + limit]

    async def delete(self, thread_id: str) -> None:
        """Forget the thread."""
        engine = await self.engine()
        async with engine.begin() as conn:
            await conn.execute(agent_threads.delete().where(agent_threads.c.id == thread_id))
