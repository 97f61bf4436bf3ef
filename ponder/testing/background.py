"""Serve an ASGI app with uvicorn on 127.0.0.1, on a thread of its own, for tests."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import Any

import uvicorn


class BackgroundServer:
    """``with BackgroundServer(app) as url:`` — the app answers at ``url`` until the block ends.

    Its own thread and event loop, so sync clients and clients on the caller's loop both work.
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        self.port: int | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The server's base URL, ``http://127.0.0.1:PORT`` (the port is set by ``start``)."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> str:
        """Serve the app on a free port of 127.0.0.1, on a new thread; its URL once it answers.

        Raises RuntimeError when it has not started within 10 seconds.
        """
        # proto=IPPROTO_TCP: asyncio sets TCP_NODELAY only on sockets that say they are TCP;
        # without it Nagle and delayed ACKs add 40 ms to every request.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self.app, log_level="critical", access_log=False,
                                timeout_graceful_shutdown=1)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._server.serve(sockets=[sock])),
            name="ponder-test-server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the server did not start within 10 s")
            time.sleep(0.005)
        return self.url

    def stop(self) -> None:
        """Stop the server (waiting up to 10 seconds for its thread); a no-op when not started."""
        if self._server is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
            self._server = None

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> str:
        return await asyncio.to_thread(self.start)

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.stop)
