"""HTTP clients for provider SDKs that work from any event loop.

A pool of open connections belongs to the event loop that opened them. One ponder model is
used from several loops: the caller's, the shared loop behind its sync methods (``invoke``),
each ``asyncio.run`` of a script or test. langchain-openai shares one cached client per base
URL between all its models, so a connection opened on one loop was reused on another and the
call failed with "bound to a different event loop" or "Event loop is closed".
"""

from __future__ import annotations

import asyncio
import weakref

import httpx2  # the HTTP library the openai SDK (>= 3) is built on
import openai


class LoopLocalTransport(httpx2.AsyncBaseTransport):
    """An HTTP transport that keeps one connection pool per running event loop.

    ``options`` go to each loop's ``httpx2.AsyncHTTPTransport``. A loop's pool is dropped with
    the loop; ``aclose`` closes the calling loop's pool.
    """

    def __init__(self, **options: object) -> None:
        self._options = options
        self._pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop,
                                               httpx2.AsyncHTTPTransport] = (
            weakref.WeakKeyDictionary())

    def _pool(self) -> httpx2.AsyncHTTPTransport:
        loop = asyncio.get_running_loop()
        pool = self._pools.get(loop)
        if pool is None:
            pool = self._pools[loop] = httpx2.AsyncHTTPTransport(**self._options)
        return pool

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        """Send ``request`` over the running loop's pool."""
        return await self._pool().handle_async_request(request)

    async def aclose(self) -> None:
        """Close the running loop's pool (the others close with their loops)."""
        pool = self._pools.pop(asyncio.get_running_loop(), None)
        if pool is not None:
            await pool.aclose()


def openai_async_client() -> openai.DefaultAsyncHttpxClient:
    """The OpenAI SDK's default async client (its timeouts, redirects and pool limits), on a
    LoopLocalTransport; one per model, given as ``http_async_client``."""
    return openai.DefaultAsyncHttpxClient(
        transport=LoopLocalTransport(limits=openai.DEFAULT_CONNECTION_LIMITS))
