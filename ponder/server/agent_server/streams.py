"""Each run's stream of events, kept while it runs and for a while after, so that the request
that made the run, and any client joining it later (with ``Last-Event-ID`` to replay what it
missed), read the same sequence: ``metadata`` first, then each stream mode's events, then an
``error`` event if the run failed. Event ids count from 1 within a run.

The events of a run made with ``stream_resumable`` are also stored in ``ponder_run_events``, so
that a client joining through another server process (or after the process running it died)
replays and follows them there. On Postgres, where server processes on many machines share one
database, every run's events are stored, and each stored event is announced with ``NOTIFY``:
a process following a run another one executes ``LISTEN``s instead of polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Column, Integer, MetaData, String, Table, Text, func, select

from ponder.db.tables import Tables

KEEP_S = 600.0  # how long a finished run's events stay for late joiners (in memory)
CHANNEL = "ponder_run_events"  # Postgres NOTIFY channel; the payload is a run id
POLL_S = 0.1  # SQLite has no notifications: how often a follower looks
log = logging.getLogger(__name__)

metadata = MetaData()
run_events = Table(
    "ponder_run_events", metadata,
    Column("run_id", String(40), primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("event", String(200), nullable=False),
    Column("data", Text, nullable=False),  # JSON
)


class StoredEvents(Tables):
    """The stored events of runs in ponder's database: resumable runs' on SQLite, every run's
    on Postgres (``shared``), where each is announced on the ``ponder_run_events`` channel."""

    metadata = metadata

    def __init__(self, url: str | None = None, *, share: Tables | None = None) -> None:
        super().__init__(url, share=share)
        self._listener: asyncio.Task | None = None
        self._listening = asyncio.Event()
        self._waiters: dict[str, set[asyncio.Event]] = {}

    @property
    def shared(self) -> bool:
        """Whether every run's events are stored and announced (Postgres)."""
        return self.db.kind == "postgres"

    async def add(self, run_id: str, seq: int, event: str, data: Any) -> None:
        """Store one event (and announce it, on Postgres, when the transaction commits)."""
        engine = await self.engine()
        async with engine.begin() as conn:
            await conn.execute(run_events.insert().values(
                run_id=run_id, seq=seq, event=event, data=json.dumps(data, default=str)))
            if self.shared:
                await conn.execute(select(func.pg_notify(CHANNEL, run_id)))

    async def announce(self, run_id: str) -> None:
        """Wake the followers of ``run_id`` (its record changed: it ended), on Postgres."""
        if self.shared:
            engine = await self.engine()
            async with engine.begin() as conn:
                await conn.execute(select(func.pg_notify(CHANNEL, run_id)))

    @contextlib.asynccontextmanager
    async def following(self, run_id: str) -> AsyncIterator[Any]:
        """While open, ``await changed(timeout_s)`` returns when an event of ``run_id`` was
        stored (or it was announced) since the last call, or after ``timeout_s`` seconds;
        on SQLite after ``POLL_S`` seconds. Notifications that arrive while the follower
        reads are not lost: the flag stays set until the next wait."""
        if not self.shared:
            yield lambda timeout_s: asyncio.sleep(min(timeout_s, POLL_S))
            return
        if self._listener is None or self._listener.done():
            self._listening.clear()
            self._listener = asyncio.create_task(self._listen())
        with contextlib.suppress(TimeoutError):  # a follower still works, by its timeouts
            await asyncio.wait_for(self._listening.wait(), 5)
        flag = asyncio.Event()
        self._waiters.setdefault(run_id, set()).add(flag)

        async def changed(timeout_s: float) -> None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(flag.wait(), timeout_s)
            flag.clear()
        try:
            yield changed
        finally:
            waiters = self._waiters.get(run_id, set())
            waiters.discard(flag)
            if not waiters:
                self._waiters.pop(run_id, None)

    async def _listen(self) -> None:
        """``LISTEN`` on one connection of its own, waking the followers of each run named."""
        import psycopg

        try:
            async with await psycopg.AsyncConnection.connect(self.db.conninfo,
                                                             autocommit=True) as conn:
                await conn.execute(f"LISTEN {CHANNEL}")
                self._listening.set()
                async for note in conn.notifies():
                    for flag in self._waiters.get(note.payload, ()):
                        flag.set()
        except Exception:
            log.exception("listening for run events failed; followers poll until it is back")

    async def aclose(self) -> None:
        """Stop listening, then close the engine."""
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(BaseException):
                await self._listener
            self._listener = None
        await super().aclose()

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
