"""Orchestration overhead of a ponder agent against LangChain's create_agent, side by side.

    python -m benchmarks.overhead --json

Both run the same ReAct turn (model -> tool -> model) on the same in-process scripted model and
tool, with the same system prompt. ``sequential``: milliseconds per turn with a zero-latency model,
without and with a SQLite checkpointer, measured in interleaved rounds (median of rounds) so noise
hits both alike. ``concurrency``: 1,000 turns at once with 0.2 s per model call, each framework in a
fresh process so its peak RSS is its own, in three interleaved rounds (medians); ``floor_s`` is
two model calls' latency.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

from langchain_core.tools import tool

from ponder import Agent, Profile
from ponder.testing import ScriptedChatModel, tool_calls

PROFILE = Profile(role="a benchmark assistant", goal="answer with the tool's result")
LATENCY_S = 0.2


@tool
def lookup(key: str) -> str:
    """Look a key up."""
    return f"value of {key}"


def model(latency: float = 0.0) -> ScriptedChatModel:
    def reply(messages):
        if messages[-1].type == "tool":
            return f"The answer is {messages[-1].content}."
        return tool_calls(("lookup", {"key": "k"}))

    return ScriptedChatModel(replies=reply, latency=latency)


def build(framework: str, latency: float, checkpointer):
    if framework == "ponder":
        agent = Agent("bench", model(latency), PROFILE, tools=[lookup],
                      checkpointer=checkpointer or False)

        async def turn() -> None:
            await agent.ainvoke("question", thread_id=str(uuid.uuid4()))
    else:
        from langchain.agents import create_agent

        graph = create_agent(model(latency), [lookup], system_prompt=PROFILE.render("bench"),
                             checkpointer=checkpointer)

        async def turn() -> None:
            await graph.ainvoke({"messages": [("user", "question")]},
                                {"configurable": {"thread_id": str(uuid.uuid4())}})
    return turn


async def sequential(sqlite: bool, turns_per_round: int, rounds: int) -> dict[str, float]:
    savers = {}
    closers = []
    for framework in ("ponder", "create_agent"):
        if sqlite:
            from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

            path = os.path.join(tempfile.mkdtemp(), f"{framework}.db")
            cm = AsyncSqliteSaver.from_conn_string(path)
            savers[framework] = await cm.__aenter__()
            closers.append(cm)
        else:
            savers[framework] = None
    turns = {f: build(f, 0.0, savers[f]) for f in savers}
    for turn in turns.values():  # warm up: imports, caches, first compiles
        for _ in range(20):
            await turn()
    per_round: dict[str, list[float]] = {f: [] for f in turns}
    for _ in range(rounds):
        for framework, turn in turns.items():
            started = time.perf_counter()
            for _ in range(turns_per_round):
                await turn()
            per_round[framework].append((time.perf_counter() - started) / turns_per_round * 1e3)
    for cm in closers:
        await cm.__aexit__(None, None, None)
    return {f: statistics.median(v) for f, v in per_round.items()}


async def concurrent_turns(framework: str, n: int) -> dict[str, float]:
    turn = build(framework, LATENCY_S, None)
    started = time.perf_counter()
    await asyncio.gather(*(turn() for _ in range(n)))
    wall = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"wall_s": wall, "peak_rss_mb": peak_mb}


def in_child(framework: str, n: int) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-m", "benchmarks.overhead", "--child", framework,
                          "--n", str(n)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--n", type=int, default=1000, help="concurrent turns")
    parser.add_argument("--turns", type=int, default=100, help="turns per round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--concurrency-rounds", type=int, default=3)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(asyncio.run(concurrent_turns(args.child, args.n))))
        return

    plain = asyncio.run(sequential(False, args.turns, args.rounds))
    with_sqlite = asyncio.run(sequential(True, args.turns, args.rounds))
    # Interleaved rounds, medians: one noisy moment must not decide the comparison.
    runs: dict[str, list[dict[str, float]]] = {"ponder": [], "create_agent": []}
    for _ in range(args.concurrency_rounds):
        for framework in runs:
            runs[framework].append(in_child(framework, args.n))
    ponder_wall = statistics.median(r["wall_s"] for r in runs["ponder"])
    create_agent_wall = statistics.median(r["wall_s"] for r in runs["create_agent"])
    result = {
        "ponder_ms_per_turn": round(plain["ponder"], 3),
        "create_agent_ms_per_turn": round(plain["create_agent"], 3),
        "ratio": round(plain["ponder"] / plain["create_agent"], 3),
        "ponder_ms_per_turn_sqlite": round(with_sqlite["ponder"], 3),
        "create_agent_ms_per_turn_sqlite": round(with_sqlite["create_agent"], 3),
        "ratio_sqlite": round(with_sqlite["ponder"] / with_sqlite["create_agent"], 3),
        "concurrency": {
            "n": args.n,
            "floor_s": 2 * LATENCY_S,
            "ponder_wall_s": round(ponder_wall, 3),
            "create_agent_wall_s": round(create_agent_wall, 3),
            "ponder_peak_rss_mb": round(max(r["peak_rss_mb"] for r in runs["ponder"]), 1),
        },
    }
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:34} {value}")


if __name__ == "__main__":
    main()
