"""The reference Agent Server: ``langgraph dev`` (LangGraph's in-memory server, from
``langgraph-cli[inmem]``), installed by the test command in ``.venv-reference`` beside ponder's
own environment (its pinned libraries differ from our test tools'), serving a graph module."""

import json
import os
import subprocess
from pathlib import Path

from tests.helpers.serving import free_port, wait_until_up

LANGGRAPH = Path(__file__).resolve().parents[2] / ".venv-reference" / "bin" / "langgraph"


class ReferenceServer:
    """``langgraph dev`` over the ``graphs`` (attributes) of ``module``, written to ``folder``,
    with more ``args`` (e.g. ``--n-jobs-per-worker 16``); a context manager that waits until
    it answers."""

    def __init__(self, folder: Path, module: str, graphs: list[str], *args: str) -> None:
        assert LANGGRAPH.is_file(), (
            f"{LANGGRAPH} is missing: python3 -m venv .venv-reference && "
            ".venv-reference/bin/pip install 'langgraph-cli[inmem]' (the README's test command "
            "does it)")
        (folder / "graphs.py").write_text(module)
        (folder / "langgraph.json").write_text(json.dumps({
            "dependencies": ["."], "graphs": {g: f"./graphs.py:{g}" for g in graphs}}))
        self.port = free_port()
        env = {**os.environ, "LANGSMITH_TRACING": "false", "LANGCHAIN_TRACING_V2": "false",
               "LANGGRAPH_CLI_NO_ANALYTICS": "1", "LANGSMITH_API_KEY": ""}
        self.process = subprocess.Popen(
            [str(LANGGRAPH), "dev", "--no-browser", "--no-reload", "--host", "127.0.0.1",
             "--port", str(self.port), *args],
            cwd=folder, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self):
        wait_until_up(self.process, f"{self.url}/ok")
        return self

    def __exit__(self, *exc):
        self.process.terminate()
        self.process.wait(timeout=30)

