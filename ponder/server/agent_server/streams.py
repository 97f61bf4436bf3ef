"""Each run's stream of events, kept while it runs and for a while after, so that the request
that made the run, and any client joining it later (with ``Last-Event-ID`` to replay what it
missed), read the same sequence: ``metadata`` first, then each stream mode's events, then an
``error`` event if the run failed. Event ids count from 1 within a run.

The events of a run made with ``stream_resumable`` are also stored in ``ponder_run_events``, so
that a client joining through another server process (or after the process running it died)
replays and follows them there.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Column, Integer, MetaData, String, Table, Text, func, select

from ponder.db.tables import Tables

KEEP_S = 600.0  # how long a finished run's events stay for late joiners (in memory)

metadata = MetaData()
run_events = Table(
    "ponder_run_events", metadata,
    Column("run_id", String(40), primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("event", String(200), nullable=False),
    Column("data", Text, nullable=False),  # JSON
)


class StoredEvents(Tables):
    """The stored events of resumable runs, in ponder's database."""

    metadata = metadata

    async def add(self, run_id: str, seq: int, event: str, data: Any) -> None:
        """Store one event."""
        engine = await self.engine()
        async with engine.begin() as conn:
            await conn.execute(run_events.insert().values(
                run_id=run_id, seq=seq, event=event, data=json.dumps(data, default=str)))

    async def after(self, run_id: str, seq: int) -> list[tuple[int, str, Any]]:
        """The run's events after ``seq``, in order, as ``(seq, event, data)``."""
        engine = await self.engine()
        async with engine.connect() as conn:
            rows = await conn.execute(select(run_events).where(
                run_events.c.run_id == run_id, run_events.c.seq > seq).order_by(
                run_events.c.seq))
            return [(r.seq, r.event, json.loads(r.data)) for r in rows]

    async def forget(self, run_ids: list[str]) -> None:
        """Delete the stored events of these runs."""
        if not run_ids:
            return
        engine = await self.engine()
        async with engine.begin() as conn:
            await conn.execute(run_events.delete().where(run_events.c.run_id.in_(run_ids)))

    async def last(self, run_id: str) -> int:
        """The highest stored event id of the run (0 for none)."""
        engine = await self.engine()
        async with engine.connect() as conn:
            return (await conn.execute(select(func.coalesce(func.max(run_events.c.seq), 0))
                                       .where(run_events.c.run_id == run_id))).scalar_one()


@dataclass
class RunStream:
    """The events of one run, in order, and whether it has ended; stored too when ``stored``
    is given (ids then go on from ``offset``, the events stored before, by a process that
    stopped)."""
    run_id: str = ""
    stored: StoredEvents | None = None
    offset: int = 0
    events: list[tuple[str, Any]] = field(default_factory=list)
    ended: bool = False
    ended_at: float = 0.0
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def add(self, event: str, data: Any) -> None:
        """Append an event (storing it first, when stored) and wake the readers."""
        if self.stored is not None:
            await self.stored.add(self.run_id, self.offset + len(self.events) + 1, event, data)
        async with self._changed:
            self.events.append((event, data))
            self._changed.notify_all()

    async def end(self) -> None:
        """Mark the stream ended and wake the readers."""
        async with self._changed:
            self.ended, self.ended_at = True, time.monotonic()
            self._changed.notify_all()

    async def read(self, after: int = 0, modes: set[str] | None = None
                   ) -> AsyncIterator[tuple[int, str, Any]]:
        """``(id, event, data)`` from the event after ``after`` on, live, until the end;
        ``modes`` keeps only those events (``metadata`` and ``error`` always pass)."""
        seen = max(0, after - self.offset)
        while True:
            async with self._changed:
                await self._changed.wait_for(lambda seen=seen: self.ended or
                                             len(self.events) > seen)
                batch, ended = self.events[seen:], self.ended
            for event, data in batch:
                seen += 1
                if wanted(event, modes):
                    yield self.offset + seen, event, data
            if ended and seen >= len(self.events):
                return


class Streams:
    """The run streams of this process, by run id; finished ones are dropped after
    ``KEEP_S`` seconds."""

    def __init__(self) -> None:
        self._streams: dict[str, RunStream] = {}

    def open(self, run_id: str, stored: StoredEvents | None = None, offset: int = 0
             ) -> RunStream:
        """A new stream for ``run_id`` (dropping long-finished ones)."""
        now = time.monotonic()
        for old in [k for k, s in self._streams.items() if s.ended and now - s.ended_at > KEEP_S]:
            del self._streams[old]
        stream = self._streams[run_id] = RunStream(run_id, stored, offset)
        return stream

    def get(self, run_id: str) -> RunStream | None:
        """The stream of ``run_id``, if this process has it."""
        return self._streams.get(run_id)


def wanted(event: str, modes: set[str] | None) -> bool:
    """Whether a joiner asking for ``modes`` gets ``event`` (``metadata`` and ``error``
    always; ``values|ns`` counts as ``values``)."""
    return modes is None or event in ("metadata", "error") or event.split("|")[0] in modes


def sse(event_id: int | None, event: str, data: Any) -> dict[str, str]:
    """One server-sent event for sse-starlette: event name, compact JSON data, its id."""
    message = {"event": event, "data": json.dumps(data, separators=(",", ":"), default=str)}
    if event_id is not None:
        message["id"] = str(event_id)
    return message
