"""Running awaitables side by side without leaving any behind."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any


async def gather_cancelling(*awaitables: Awaitable[Any]) -> list[Any]:
    """Like ``asyncio.gather``, but the first failure cancels the others (and waits for them)
    before it propagates, unchanged: no work keeps running after its caller has moved on.

    (``asyncio.TaskGroup`` would wrap the failure in an ExceptionGroup; LangGraph's interrupts
    must reach it as they are.)
    """
    tasks = [asyncio.ensure_future(a) for a in awaitables]
    if not tasks:
        return []
    try:
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    except BaseException:  # we were cancelled ourselves
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    failed = next((t for t in tasks if t.done() and not t.cancelled() and t.exception()), None)
    if failed is not None:
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        raise failed.exception()
    return [t.result() for t in tasks]
