"""How well the planners overlap independent model calls, with a fixed latency per call.

    python -m benchmarks.planners --json [--data ../shared/data/game24.csv]

``sc``: Self-Consistency with k = 20 paths of one call each; its floor is one call's latency.
``tot``: Tree of Thoughts (BFS, b = 5, n_evaluate = 3) on one Game of 24 puzzle (row 900 of the
data set) with a scripted expert model; its critical path is the number of call phases that must
follow one another (generate, then evaluate, per level) times the latency. The same search run one
call at a time gives ``sequential_wall_s``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

from ponder.agents.planning import ChainOfThought, SelfConsistency, TreeOfThoughts
from ponder.agents.planning.evaluation import GSM8K_EXAMPLES, load_game24
from ponder.config import ConfigurationError
from ponder.models import ResiliencePolicy, ResilientChatModel
from ponder.testing import ScriptedChatModel
from ponder.testing.game24 import game24_expert

LATENCY_S = 0.2
DEFAULT_DATA = Path(os.environ.get("PONDER_DATA_DIR")
                    or Path(__file__).resolve().parents[2] / "shared" / "data") / "game24.csv"


async def self_consistency(k: int) -> dict[str, float]:
    model = ScriptedChatModel(replies=lambda m: "9 * 2 = 18. The answer is 18.", latency=LATENCY_S)
    planner = SelfConsistency(k, base=ChainOfThought(GSM8K_EXAMPLES), early_stop=False)
    started = time.perf_counter()
    solution = await planner.solve("Janet's ducks lay 16 eggs per day...", model)
    wall = time.perf_counter() - started
    assert solution.answer == "18" and solution.calls == k
    return {"k": k, "calls": solution.calls, "wall_s": round(wall, 3), "floor_s": LATENCY_S,
            "wall_over_floor": round(wall / LATENCY_S, 3)}


async def tree_of_thoughts(puzzle: str, breadth: int, n_evaluate: int) -> dict[str, float]:
    tot = TreeOfThoughts(breadth=breadth, n_evaluate=n_evaluate)
    concurrent = ScriptedChatModel(replies=game24_expert, latency=LATENCY_S)
    started = time.perf_counter()
    solution = await tot.solve(puzzle, concurrent)
    wall = time.perf_counter() - started
    # The same search, one call at a time: a concurrency cap of one in front of the same model.
    one_at_a_time = ResilientChatModel(
        inner=ScriptedChatModel(replies=game24_expert, latency=LATENCY_S), provider="scripted",
        model_name="sequential", policy=ResiliencePolicy(max_concurrency=1))
    started = time.perf_counter()
    sequential = await tot.solve(puzzle, one_at_a_time)
    sequential_wall = time.perf_counter() - started
    critical = solution.details["sequential_calls"] * LATENCY_S
    return {"puzzle": puzzle, "breadth": breadth, "n_evaluate": n_evaluate,
            "solved": solution.answer is not None, "answer": solution.answer,
            "calls": solution.calls, "sequential_calls": sequential.calls,
            "cache_hits": solution.details["cache_hits"], "wall_s": round(wall, 3),
            "critical_path_s": round(critical, 3), "wall_over_critical_path": round(
                wall / critical, 3), "sequential_wall_s": round(sequential_wall, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="the Game of 24 CSV")
    parser.add_argument("--row", type=int, default=900, help="the puzzle's row (0-based)")
    args = parser.parse_args()
    try:
        puzzle = load_game24(args.data, args.row, 1)[0]
    except (ConfigurationError, IndexError) as exc:
        sys.exit(f"benchmarks.planners: {exc or 'no such row'}")
    result = {"latency_s": LATENCY_S,
              "sc": asyncio.run(self_consistency(20)),
              "tot": asyncio.run(tree_of_thoughts(puzzle, breadth=5, n_evaluate=3))}
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
