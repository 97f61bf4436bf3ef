"""Workers and background runs: submit / wait / cancel, runs of one thread in turn, each fire
run exactly once by two workers, the queue (procrastinate) on Postgres, graceful shutdown, and a
worker killed mid-run whose run another worker resumes from its last checkpoint."""

import asyncio
import collections
import functools
import os
import subprocess
import sys
import textwrap
import time

import pytest

from ponder import Agent
from ponder.graphs import cancel, submit, wait
from ponder.graphs.runs import FINISHED, RunRecorder
from ponder.graphs.scheduler import Scheduler, Trigger
from ponder.graphs.workers import Worker
from ponder.testing import ScriptedChatModel

TARGETS = textwrap.dedent("""
    import asyncio, os
    from langchain_core.tools import tool
    from ponder import Agent
    from ponder.testing import ScriptedChatModel, tool_calls

    echo = Agent("echo", ScriptedChatModel(replies=lambda m: f"echo: {m[-1].content}",
                                           latency=0.02))

    @tool
    async def slow_step(n: int) -> str:
        \"\"\"A step that takes a while (the worker is killed during it).\"\"\"
        with open(os.environ["STEPS_LOG"], "a") as log:
            log.write(f"{n}\\n")
        await asyncio.sleep(float(os.environ.get("STEP_S", "0.1")))
        return f"step {n} done"

    def _steps(messages):
        done = sum(1 for m in messages if m.type == "tool")
        if done < 3:
            return tool_calls(("slow_step", {"n": done + 1}))
        return "all three steps done"

    steps = Agent("steps", ScriptedChatModel(replies=_steps), tools=[slow_step])
""")


async def eventually(check) -> None:
    """Wait until ``check()`` (sync or async) holds."""
    while True:
        result = check()
        if await result if asyncio.iscoroutine(result) else result:
            return
        await asyncio.sleep(0.05)


@pytest.fixture
def targets(tmp_path, monkeypatch) -> str:
    (tmp_path / "targets.py").write_text(TARGETS)
    monkeypatch.setenv("STEPS_LOG", str(tmp_path / "steps.log"))
    return str(tmp_path / "targets.py")


async def test_submit_wait_and_cancel(database_url):
    agent = Agent("echo", ScriptedChatModel(replies=lambda m: f"echo: {m[-1].content}"),
                  checkpointer=database_url)
    run_id = await submit(agent, "hello", thread_id="t1", url=database_url, queue=False)
    async with asyncio.timeout(20):
        done = await wait(run_id, url=database_url)
    assert (done.status, done.output, done.thread_id) == ("success", "echo: hello", "t1")
    assert (await agent.aget_state("t1")).values["messages"][-1].content == "echo: hello"

    slow = Agent("slow", ScriptedChatModel(replies=["too late"], latency=30),
                 checkpointer=database_url)
    run_id = await submit(slow, "take your time", url=database_url, queue=False)
    async with asyncio.timeout(20):
        recorder = RunRecorder(database_url)

        async def running() -> bool:
            return (await recorder.record(run_id)).status == "running"

        await eventually(running)
        started = time.monotonic()
        assert await cancel(run_id, url=database_url) == "running"
        cancelled = await wait(run_id, url=database_url)
    # Within a heartbeat (1 s); the bound is far from both that and the model's 30 s.
    assert cancelled.status == "cancelled" and time.monotonic() - started < 15
    await recorder.aclose()
    await agent.aclose()
    await slow.aclose()


async def test_runs_of_one_thread_go_one_at_a_time(tmp_path):
    url = f"sqlite:///{tmp_path}/ponder.db"
    model = ScriptedChatModel(replies=lambda m: f"seen {sum(x.type == 'human' for x in m)}",
                              latency=0.2)
    agent = Agent("counter", model, checkpointer=url)
    ids = [await submit(agent, f"message {i}", thread_id="shared", url=url) for i in range(3)]
    async with asyncio.timeout(30):
        done = [await wait(i, url=url) for i in ids]
    assert [d.output for d in done] == ["seen 1", "seen 2", "seen 3"]
    spans = sorted((d.started_at, d.ended_at) for d in done)
    assert all(spans[i][1] <= spans[i + 1][0] for i in range(2))  # no overlap
    await agent.aclose()


async def run_workers(url: str, count: int, seconds: float = 0.0, until=None,
                      **options) -> None:
    """``count`` workers for ``seconds``, or until ``until()`` holds: how many runs a few
    seconds hold depends on how busy the machine is. Enough concurrency that a worker starts
    every fire it claims in the same tick, so none is left pending when they stop."""
    workers = [Worker(url, poll_s=0.05, concurrency=64, **options) for _ in range(count)]
    tasks = [asyncio.create_task(w.run()) for w in workers]
    try:
        if until is None:
            await asyncio.sleep(seconds)
        else:
            async with asyncio.timeout(90):  # seconds at most; the bound is for a failure
                await eventually(until)
    finally:
        for w in workers:
            w.stop()
        await asyncio.gather(*tasks)


def succeeded(url: str, at_least: int):
    """A check that at least ``at_least`` fires have run to success."""
    async def check() -> bool:
        return sum(r.status == "success" for r in await fired_runs(url)) >= at_least
    return check


def all_finished(url: str):
    """A check that no fired run is pending or running."""
    async def check() -> bool:
        return all(r.status in FINISHED for r in await fired_runs(url))
    return check


async def fired_runs(url: str) -> list[dict]:
    recorder = RunRecorder(url)
    try:
        return [r for r in await recorder.list(10_000) if r.schedule]
    finally:
        await recorder.aclose()


async def add_ticks(url: str, target: str, count: int) -> None:
    """``count`` schedules firing every half second."""
    scheduler = Scheduler(url)
    for i in range(count):
        await scheduler.add(f"tick-{i}", target, Trigger.every("0.5s"), input=f"tick {i}",
                            coalesce=False, max_instances=5)
    await scheduler.aclose()


def assert_each_fire_ran_once(done: list[dict], at_least: int) -> None:
    fires = collections.Counter((r.schedule, r.scheduled_for) for r in done)
    assert len(done) >= at_least and max(fires.values()) == 1
    assert {r.status for r in done} == {"success"}


async def test_two_workers_run_each_fire_exactly_once(database_url, targets, monkeypatch):
    monkeypatch.setenv("PONDER_DATABASE_URL", database_url)
    await add_ticks(database_url, f"{targets}:echo", 12)
    await run_workers(database_url, 2, until=succeeded(database_url, 12 * 4))
    done = await fired_runs(database_url)
    assert_each_fire_ran_once(done, 12 * 4)
    assert len({r.worker for r in done}) == 2  # both took part
    assert all(r.started_at >= r.scheduled_for for r in done)  # none before its time
    # Fires are claimed as they come due (workers poll every 0.05 s), not in batches: about
    # 0.1 s late on a quiet machine, 0.7 s on one at load 6; a worker that polled every few
    # seconds would be late by seconds.
    lateness = sorted(r.created_at - r.scheduled_for for r in done)
    assert lateness[len(lateness) // 2] < 2.0


async def test_queue_workers_on_postgres(postgres_url, targets, monkeypatch):
    monkeypatch.setenv("PONDER_DATABASE_URL", postgres_url)
    await add_ticks(postgres_url, f"{targets}:echo", 6)
    queued = await submit(f"{targets}:echo", "queued hello", url=postgres_url)
    await run_workers(postgres_url, 2, until=succeeded(postgres_url, 6 * 4), queue=True)
    # Fires queued in the last tick may not have been taken yet: a worker that fires no
    # schedules drains them.
    await run_workers(postgres_url, 1, until=all_finished(postgres_url), queue=True,
                      schedules=False)
    assert_each_fire_ran_once(await fired_runs(postgres_url), 6 * 4)
    async with asyncio.timeout(5):
        assert (await wait(queued, url=postgres_url)).output == "echo: queued hello"


async def test_shutdown_hands_a_running_run_back_and_another_worker_resumes_it(
        database_url, targets, monkeypatch, tmp_path):
    monkeypatch.setenv("PONDER_DATABASE_URL", database_url)
    # Step 1 must outlast the 0.1 s grace however late the test's loop notices it started.
    monkeypatch.setenv("STEP_S", "2.0")
    recorder = RunRecorder(database_url)
    run_id = await recorder.create(f"{targets}:steps", "do three steps", thread_id="job")
    first = Worker(database_url, poll_s=0.05, shutdown_grace_s=0.1)
    task = asyncio.create_task(first.run())
    log = tmp_path / "steps.log"
    async with asyncio.timeout(20):
        await eventually(log.exists)  # the first step has started
        first.stop()
        await task
        assert (await recorder.record(run_id)).status == "pending"  # handed back
        await run_workers(database_url, 1, 0.1)  # takes it, finishes it while stopping
        done = await recorder.wait(run_id)
    await recorder.aclose()
    assert done.status == "success" and done.output == "all three steps done"
    assert done.attempts == 2
    assert log.read_text().split() == ["1", "1", "2", "3"]  # step 1 was cut; 1-3 once after


async def test_a_run_whose_outcome_could_not_be_written_is_taken_over(
        database_url, targets, monkeypatch):
    """The worker that ran it lives on, so only the claim's heartbeat can free the run: it
    used to renew every claim the worker had ever made, and the run stayed 'running' for as
    long as the worker lived."""
    monkeypatch.setenv("PONDER_DATABASE_URL", database_url)
    recorder = RunRecorder(database_url)
    run_id = await recorder.create(f"{targets}:echo", "hello", thread_id="t")
    worker = Worker(database_url, poll_s=0.05, heartbeat_s=0.1, stale_s=1.0)
    finish, failed = worker.runs.finish, []

    async def finish_fails_once(*args, **kwargs):
        if not failed:
            failed.append(args)
            raise ConnectionError("the database went away")  # a hiccup on a busy machine
        return await finish(*args, **kwargs)

    monkeypatch.setattr(worker.runs, "finish", finish_fails_once)
    async with worker:
        async with asyncio.timeout(30):  # a second or two; the bound is for the failure
            done = await recorder.wait(run_id)
    await recorder.aclose()
    assert failed and failed[0][:2] == (run_id, "success")
    assert (done.status, done.output, done.attempts) == ("success", "echo: hello", 2)


async def test_a_dead_worker_s_job_is_replaced_when_its_run_was_queued_again(
        postgres_url, targets, monkeypatch):
    """A worker read the run pending, another took its job and claimed it, then the first
    queued it again (the queue allows that: the first job was no longer waiting); then the
    holder died. Its job could not go back to the queue beside the second (one waiting job per
    run), every requeue failed on it, and the second waited behind its lock: the run was lost.
    Seen once in the crash benchmark on a busy machine."""
    from ponder.graphs.workers import apply_schema, defer, open_queue

    monkeypatch.setenv("PONDER_DATABASE_URL", postgres_url)
    recorder = RunRecorder(postgres_url)
    run_id = await recorder.create(f"{targets}:echo", "hello", thread_id="t")
    assert await recorder.claim(run_id, "dead-host:1:worker", 1.0) is not None
    app = open_queue(postgres_url)
    async with app.open_async():
        await apply_schema(app)
        await defer(app, run_id, "t")
        dead = await app.job_manager.register_worker()
        assert (await app.job_manager.fetch_job(queues=None, worker_id=dead)) is not None
        await defer(app, run_id, "t")  # queued again: the first job is no longer waiting
        async with app.connector.pool.connection() as conn:  # then its worker died
            await conn.execute("UPDATE procrastinate_workers SET last_heartbeat = "
                               "now() - interval '1 hour'")
    engine = await recorder.engine()
    async with engine.begin() as conn:
        await conn.exec_driver_sql("UPDATE ponder_runs SET heartbeat_at = 0")
    async with Worker(postgres_url, queue=True, poll_s=0.05, heartbeat_s=0.2, stale_s=1.0):
        async with asyncio.timeout(30):  # seconds; the bound is for the failure
            done = await recorder.wait(run_id)
    await recorder.aclose()
    assert (done.status, done.output, done.attempts) == ("success", "echo: hello", 2)


@pytest.mark.parametrize("queue", [False, True], ids=["embedded", "queue"])
async def test_a_killed_worker_s_run_resumes_from_its_last_checkpoint(
        queue, postgres_url, tmp_path, targets, request):
    url = postgres_url if queue else f"sqlite:///{tmp_path}/ponder.db"
    env = {**os.environ, "PONDER_DATABASE_URL": url, "STEP_S": "1.0",
           "STEPS_LOG": str(tmp_path / "steps.log")}
    recorder = RunRecorder(url)
    try:
        scheduler = Scheduler(url)
        await scheduler.add("job", f"{targets}:steps", Trigger.every("1h"),
                            input="do three steps", thread="persistent", check=False)
        fire = await scheduler.run_now("job")
        await scheduler.aclose()
        # A live worker's heartbeat (every second) can lag on a busy machine: a stale bound of
        # 5 s keeps the rescuer's own claim from looking abandoned.
        command = [sys.executable, "-m", "ponder.cli", "worker", "--stale", "5"]
        command += ["--queue"] if queue else []
        start = functools.partial(asyncio.create_subprocess_exec, *command, env=env,
                                  stderr=subprocess.DEVNULL)
        doomed = await start()
        log = tmp_path / "steps.log"
        async with asyncio.timeout(60):
            # In step 2, step 1 is checkpointed.
            await eventually(lambda: log.exists() and "2" in log.read_text().split())
            doomed.kill()  # SIGKILL: no shutdown, no hand-back
            await doomed.wait()
            rescuer = await start()
            try:
                done = await recorder.wait(fire.run_id)
            finally:
                rescuer.terminate()
                await rescuer.wait()
        assert done.status == "success" and done.output == "all three steps done"
        assert done.attempts == 2
        assert log.read_text().split() == ["1", "2", "2", "3"]  # only step 2 ran again
    finally:
        await recorder.aclose()


async def test_the_server_can_be_the_embedded_worker(tmp_path, targets, monkeypatch):
    from ponder.server.app import create_app
    from ponder.testing.background import BackgroundServer

    url = f"sqlite:///{tmp_path}/ponder.db"
    monkeypatch.setenv("PONDER_DATABASE_URL", url)
    scheduler = Scheduler(url)
    await scheduler.add("tick", f"{targets}:echo", Trigger.every("0.3s"), input="tick")
    await scheduler.aclose()
    echo = Agent("echo", ScriptedChatModel(replies=["hi"]), checkpointer=url)
    async with BackgroundServer(create_app([echo], database_url=url, run_schedules=True)):
        async def three_ran() -> bool:
            return sum(r.status == "success" for r in await fired_runs(url)) >= 3

        async with asyncio.timeout(60):  # three fires (about a second) however busy
            await eventually(three_ran)
    done = await fired_runs(url)
    assert len(done) >= 3 and {r.output for r in done if r.status == "success"} == {
        "echo: tick"}
