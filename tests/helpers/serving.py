"""``ponder serve`` as users run it: processes of their own on a free port."""

import os
import socket
import subprocess
import time

import httpx

from ponder.graphs.targets import load_target
from tests.helpers.cli import PONDER


def free_port() -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(process: subprocess.Popen, url: str, timeout_s: float = 120) -> None:
    """Wait until ``url`` answers 200 (AssertionError, with the server's stderr, if the
    process exits first or the time runs out)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, (process.stderr.read() if process.stderr
                                        else "the process ended")
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise AssertionError(f"{url} did not answer within {timeout_s} s")


class Served:
    """``ponder serve graph.py:NAME... --workers N [options]`` over ``url``, ``graph.py`` holding
    ``module`` (the names default to ``graph``); a context manager that waits for /health."""

    def __init__(self, tmp_path, url: str, module: str, *names: str, workers: int = 2,
                 options: tuple[str, ...] = (), **env: str) -> None:
        (tmp_path / "graph.py").write_text(module)
        self.cwd, self.db, self.port = tmp_path, url, free_port()
        self.name = (names or ("graph",))[0]
        # The server's log, shown when the block fails: a 500's traceback is in it.
        self.log = tmp_path / f"serve-{self.port}.log"
        self.process = subprocess.Popen(
            [*PONDER, "serve", *[f"graph.py:{n}" for n in names or ("graph",)],
             "--port", str(self.port), "--workers", str(workers), *options],
            cwd=tmp_path, env={**os.environ, "PONDER_DATABASE_URL": url, **env},
            stdout=subprocess.DEVNULL, stderr=self.log.open("w"), text=True)
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self):
        try:
            wait_until_up(self.process, f"{self.url}/health", 60)
        except AssertionError:
            self.process.kill()
            raise AssertionError(self.log.read_text()[-4000:]) from None
        return self

    def __exit__(self, kind, *exc):
        self.process.terminate()
        self.process.wait(timeout=30)
        if kind is not None:
            print(f"ponder serve's log ({self.log}):\n{self.log.read_text()[-4000:]}")

    async def thread(self, thread_id: str) -> list[str]:
        """The contents of the thread's messages, read from the database."""
        target = load_target(f"{self.cwd}/graph.py:{self.name}", database_url=self.db)
        try:
            return [m.content for m in (await target.aget_state(thread_id)).values["messages"]]
        finally:
            await target.aclose()
