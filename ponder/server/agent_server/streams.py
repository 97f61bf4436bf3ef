"""Each run's stream of events, kept while it runs and for a while after, so that the request
that made the run, and any client joining it later (with ``Last-Event-ID`` to replay what it
missed), read the same sequence: ``metadata`` first, then each stream mode's events, then an
``error`` event if the run failed. Event ids count from 1 within a run.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

KEEP_S = 600.0  # how long a finished run's events stay for late joiners


@dataclass
class RunStream:
    """The events of one run, in order, and whether it has ended."""
    events: list[tuple[str, Any]] = field(default_factory=list)
    ended: bool = False
    ended_at: float = 0.0
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def add(self, event: str, data: Any) -> None:
        """Append an event and wake the readers."""
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
        seen = after
        while True:
            async with self._changed:
                await self._changed.wait_for(lambda seen=seen: self.ended or
                                             len(self.events) > seen)
                batch, ended = self.events[seen:], self.ended
            for event, data in batch:
                seen += 1
                if modes is None or event in ("metadata", "error") or \
                        event.split("|")[0] in modes:
                    yield seen, event, data
            if ended and seen >= len(self.events):
                return


class Streams:
    """The run streams of this process, by run id; finished ones are dropped after
    ``KEEP_S`` seconds."""

    def __init__(self) -> None:
        self._streams: dict[str, RunStream] = {}

    def open(self, run_id: str) -> RunStream:
        """A new stream for ``run_id`` (dropping long-finished ones)."""
        now = time.monotonic()
        for old in [k for k, s in self._streams.items() if s.ended and now - s.ended_at > KEEP_S]:
            del self._streams[old]
        stream = self._streams[run_id] = RunStream()
        return stream

    def get(self, run_id: str) -> RunStream | None:
        """The stream of ``run_id``, if this process has it."""
        return self._streams.get(run_id)


def sse(event_id: int | None, event: str, data: Any) -> dict[str, str]:
    """One server-sent event for sse-starlette: event name, compact JSON data, its id."""
    message = {"event": event, "data": json.dumps(data, separators=(",", ":"), default=str)}
    if event_id is not None:
        message["id"] = str(event_id)
    return message
