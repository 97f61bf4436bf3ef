"""Sync entry points for scripts: every sync call runs on one shared background event loop.

One loop (not ``asyncio.run`` per call) because what async code opens — rate limiters,
database connections — belongs to the loop that opened it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

_loop: asyncio.AbstractEventLoop | None = None
_lock = threading.Lock()


def run_sync(make: Callable[[], Awaitable[T]]) -> T:
    """Run the awaitable that ``make`` builds on the shared loop, and wait for its result."""
    global _loop
    with _lock:
        if _loop is None:
            _loop = asyncio.new_event_loop()
            threading.Thread(target=_loop.run_forever, name="ponder-sync", daemon=True).start()
    if threading.current_thread().name == "ponder-sync":
        raise RuntimeError("a sync ponder call from inside async ponder code would wait on "
                           "itself forever: use the async method (ainvoke, aask, ...)")
    return asyncio.run_coroutine_threadsafe(make(), _loop).result()
