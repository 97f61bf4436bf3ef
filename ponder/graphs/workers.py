"""Executors: what runs background and scheduled runs.

- **embedded** (the default): ``Worker(url)`` — or ``ponder worker`` — fires due schedules and
  runs pending runs in this process, on SQLite or Postgres; ``submit`` runs a run in the
  calling process at once.
- **queue** (scale-out, Postgres): ``Worker(url, queue=True)`` on any number of machines takes
  runs from procrastinate. Fires are claimed once however many workers poll (see
  ``scheduler.py``); a job is deferred per run (``queueing_lock`` = the run, ``lock`` = its thread,
  so one thread's runs go one at a time); a worker that stops sending heartbeats has its jobs
  retried elsewhere, and the run resumes from its last checkpoint.

Either way a run is claimed on its record before it executes (``RunRecorder.claim``), a
failed run is retried with backoff from its last checkpoint, and shutdown is graceful: current
runs get ``shutdown_grace_s`` to finish; what is still running is handed back, checkpointed, for
the next worker.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import socket
import time
import uuid
from typing import Any

from ponder.agents.agent import final_text
from ponder.config import ConfigurationError
from ponder.db.url import parse_url
from ponder.errors import PonderError
from ponder.graphs.runs import RunRecord, RunRecorder
from ponder.graphs.scheduler import Scheduler
from ponder.graphs.targets import Target, as_target, load_target
from ponder.graphs.tracing import RunTracer
from ponder.models import Budget, BudgetExceeded, spending
from ponder.models.budget_store import SharedLedger

log = logging.getLogger("ponder.workers")
TASK = "ponder.run"


class RunBusy(PonderError):
    """The run, or its thread, is held by a live worker: try again later."""


class Worker:
    """Fires schedules and executes runs from the database at ``url`` (default
    ``PONDER_DATABASE_URL``) until ``stop()``.

    ``concurrency``: runs at once. ``heartbeat_s``: how often claims are renewed (and cancel
    requests noticed). ``stale_s``: how long without a heartbeat before a run is taken over.
    ``retries``/``backoff_s``: a failed run is retried after ``backoff_s``, doubling.
    """

    def __init__(self, url: str | None = None, *, queue: bool = False, concurrency: int = 8,
                 poll_s: float = 0.1, heartbeat_s: float = 1.0, stale_s: float = 10.0,
                 retries: int = 2, backoff_s: float = 1.0, shutdown_grace_s: float = 30.0,
                 schedules: bool = True) -> None:
        db = parse_url(url).require(("sqlite", "postgres"), "a worker")
        if queue:
            db.require("postgres", "a queue worker (procrastinate runs on Postgres; on SQLite "
                                   "run embedded workers)")
        self.url = db.url
        self.queue, self.concurrency, self.poll_s = queue, concurrency, poll_s
        self.heartbeat_s, self.stale_s = heartbeat_s, stale_s
        self.retries, self.backoff_s = retries, backoff_s
        self.shutdown_grace_s, self.fires_schedules = shutdown_grace_s, schedules
        self.id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.scheduler = Scheduler(self.url)
        self.runs = self.scheduler.runs  # the run records, on the scheduler's engine
        self._targets: dict[str, Target] = {}  # what this worker loaded (and closes)
        self._running: dict[str, asyncio.Task] = {}
        self._stopping = asyncio.Event()
        self._shutting_down = False
        # Made here, not in run(): a missing procrastinate shows when the worker is made.
        self._app = open_queue(self.url, self) if queue else None
        self._beating: asyncio.Task | None = None
        self._requeued_at = 0.0
        self._task: asyncio.Task | None = None  # run(), when used as a context manager

    # -- running ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Work until ``stop()``; then finish (or hand back) what is running, and close."""
        if self.queue:
            await self._app.open_async()
            await apply_schema(self._app)
        # Made once the queue is open: a coroutine that a failed start never awaits is a warning.
        loops = [self._heartbeats(forever=True)]
        if self.queue:
            loops.append(self._app.run_worker_async(
                concurrency=self.concurrency, install_signal_handlers=False,
                update_heartbeat_interval=self.heartbeat_s, stalled_worker_timeout=self.stale_s,
                fetch_job_polling_interval=self.poll_s, name=self.id))
        background = [asyncio.create_task(loop) for loop in loops]
        try:
            while not self._stopping.is_set():
                await self._tick()
                try:
                    await asyncio.wait_for(self._stopping.wait(), self.poll_s)
                except TimeoutError:
                    pass
        finally:
            await self._shutdown(background)

    def stop(self) -> None:
        """Ask the worker to stop: its runs get ``shutdown_grace_s`` seconds to finish, then the
        ones still running are handed back for another worker to resume."""
        self._stopping.set()

    async def _tick(self) -> None:
        try:
            fires = await self.scheduler.claim_due() if self.fires_schedules else []
            if self.queue:
                for fire in fires:
                    await defer(self._app, fire.run_id, fire.thread_id)
                await self._requeue()
            else:
                free = self.concurrency - len(self._running)
                for run_id in await self.runs.claimable(free, self.stale_s) if free else []:
                    if run_id in self._running:
                        continue  # ours, its heartbeat late (a busy machine): not abandoned
                    record = await self.runs.claim(run_id, self.id, self.stale_s)
                    if record is not None:
                        self._start(record)
        except Exception:  # a database hiccup must not end the worker: log, next tick
            log.exception("worker %s: tick failed", self.id)

    async def _requeue(self) -> None:
        """Queue mode: runs without a live job are queued: pending ones (a fire claimed by a
        worker that died before queueing it; ``run-now``; a run handed back) and ones whose
        worker stopped sending heartbeats after their job gave up on them; every
        ``stale_s / 2``, jobs of workers that stopped sending heartbeats go back to the
        queue."""
        engine = await self.scheduler.engine()
        async with engine.connect() as conn:
            orphans = (await conn.exec_driver_sql(
                "SELECT id, thread_id FROM ponder_runs r WHERE executor IS NULL AND "
                "(status = 'pending' OR "
                "(status = 'running' AND heartbeat_at < %(stale)s)) AND NOT EXISTS (SELECT 1 "
                "FROM procrastinate_jobs j WHERE j.queueing_lock = r.id AND j.status IN "
                "('todo', 'doing')) LIMIT 1000",
                {"stale": time.time() - self.stale_s})).all()
        for run_id, thread_id in orphans:
            await defer(self._app, run_id, thread_id)
        if time.monotonic() - self._requeued_at < self.stale_s / 2:
            return
        self._requeued_at = time.monotonic()
        from procrastinate.exceptions import UniqueViolation
        from procrastinate.jobs import Status

        for job in await self._app.job_manager.get_stalled_jobs(
                seconds_since_heartbeat=self.stale_s):
            log.warning("worker %s: job %s of a stalled worker goes back to the queue",
                        self.id, job.id)
            try:
                await self._app.job_manager.retry_job(job)
            except UniqueViolation:
                # The run has a second job waiting: a worker found the run without a job to
                # run it (it read the run pending just before this job was taken) and queued
                # one. That job waits behind this one (the same lock, the run's thread), and
                # the queue holds one waiting job per run: this one ends, so the other runs.
                log.warning("worker %s: the run of job %s is queued again; the job ends",
                            self.id, job.id)
                await self._app.job_manager.finish_job(job, Status.FAILED, delete_job=False)

    def _start(self, record: RunRecord) -> None:
        task = asyncio.create_task(self.execute(record))
        self._running[record.id] = task
        task.add_done_callback(lambda _: self._running.pop(record.id, None))

    def ensure_heartbeats(self) -> None:
        """Renew this process's claims while it has runs (``submit`` starts it)."""
        if self._beating is None or self._beating.done():
            self._beating = asyncio.create_task(self._heartbeats(forever=False))

    async def _heartbeats(self, forever: bool) -> None:
        while forever or self._running:
            await asyncio.sleep(self.heartbeat_s)
            if not (forever or self._running):
                return  # the last run ended while we slept (and may have closed the engine)
            try:
                for run_id in await self.runs.heartbeat(self.id, list(self._running)):
                    task = self._running.get(run_id)
                    if task is not None:
                        task.cancel()
            except Exception:
                log.exception("worker %s: heartbeat failed", self.id)

    async def _shutdown(self, background: list[asyncio.Task]) -> None:
        if self._running:
            await asyncio.wait(list(self._running.values()), timeout=self.shutdown_grace_s)
        self._shutting_down = True  # what still runs is handed back, not cancelled
        for task in list(self._running.values()):
            task.cancel()
        await asyncio.gather(*self._running.values(), return_exceptions=True)
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        if self._app is not None:
            await self._app.close_async()
        for target in self._targets.values():
            await target.aclose()
        await self.scheduler.aclose()

    async def __aenter__(self) -> Worker:
        self._task = asyncio.create_task(self.run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop()
        await self._task

    # -- executing one run -----------------------------------------------------------------

    async def execute_queued(self, run_id: str) -> None:
        """The queue's task: claim the run, execute it. ``RunBusy`` makes the queue retry."""
        record = await self.runs.claim(run_id, self.id, self.stale_s)
        if record is None:
            current = await self.runs.record(run_id)
            if current is not None and not current.finished:
                raise RunBusy(f"run {run_id} or its thread is held by a live worker")
            return  # finished or cancelled meanwhile: nothing to do
        task = asyncio.current_task()
        self._running[run_id] = task
        try:
            await self.execute(record)
        finally:
            self._running.pop(run_id, None)

    async def run_local(self, run_id: str, target: Target) -> str | None:
        """A run ``submit`` started here. The last one to end closes what the worker opened
        (its database engine, the agents it loaded): an open SQLite connection's thread
        would keep the process from exiting. Everything reopens on the next submit."""
        try:
            return await self.execute_when_free(run_id, target)
        finally:
            self._running.pop(run_id, None)
            if not self._running:
                for loaded in self._targets.values():
                    await loaded.aclose()
                self._targets.clear()
                await self.scheduler.aclose()

    async def execute_when_free(self, run_id: str, target: Target) -> str | None:
        """Claim the run as soon as its thread is free (runs of one thread go one at a time),
        then execute it; None if it was cancelled or finished meanwhile."""
        while (record := await self.runs.claim(run_id, self.id, self.stale_s)) is None:
            current = await self.runs.record(run_id)
            if current is None or current.finished:
                return None
            await asyncio.sleep(self.poll_s)
        return await self.execute(record, target)

    async def execute(self, record: RunRecord, target: Target | None = None) -> str | None:
        """Run a claimed run to its end, retrying failures from the last checkpoint; the
        status it ended with (None when handed back or taken over)."""
        run_id = record.id
        trace, attempt = RunTracer(), 0
        try:
            runnable = target or self._load(record.target)
            while True:
                try:
                    status, state = await self._attempt(runnable, record, trace)
                    break
                except (asyncio.CancelledError, ConfigurationError, BudgetExceeded):
                    raise  # a retry would fail the same way
                except Exception as exc:
                    attempt += 1
                    if attempt > self.retries:
                        raise
                    delay = self.backoff_s * 2 ** (attempt - 1)
                    log.warning("run %s failed (%s); retry %d in %.1f s from its last "
                                "checkpoint", run_id, exc, attempt, delay)
                    await asyncio.sleep(delay)
                    record = dataclasses.replace(record, attempts=max(record.attempts, 1) + 1)
        except asyncio.CancelledError:
            if self._shutting_down:
                await self.runs.release(run_id, self.id)
                return None
            await self._finish(run_id, "cancelled", trace, error="cancelled")
            raise
        except Exception as exc:
            await self._finish(run_id, "error", trace, error=f"{type(exc).__name__}: {exc}")
            return "error"
        await self._finish(run_id, status, trace, state=state)
        return status

    async def _finish(self, run_id: str, status: str, trace: RunTracer, *,
                      error: str | None = None, state: dict | None = None) -> None:
        kept = await asyncio.shield(self.runs.finish(
            run_id, status, error=error, trace=trace, worker=self.id,
            output=final_text(state) if state else None))
        if not kept:
            log.warning("run %s was taken over by another worker; its outcome here is dropped",
                        run_id)

    async def _attempt(self, runnable: Target, record: RunRecord, trace: RunTracer
                       ) -> tuple[str, dict]:
        thread_id, user_id = record.thread_id, record.user_id
        head = await _head(runnable, thread_id)
        if max(record.attempts, 1) == 1:
            await self.runs.set_base_checkpoint(record.id, head[0] or "")
            started = False
        else:  # a retry, or a run taken over: did an earlier attempt make progress?
            base = (await self.runs.record(record.id)).base_checkpoint
            # A head still at __start__ holds the input but ran nothing: start over.
            started = (base is not None and head[0] not in (None, base)
                       and head[1] != ("__start__",))
        if started and not head[1]:  # it had finished: only its record was not written
            state = head[2]
        else:
            # None resumes a thread: a first attempt without input starts an empty one.
            value = None if started else {} if record.input is None else record.input
            async with trace.collecting():
                with spending(*await self._ledgers(record)):
                    state = await runnable.ainvoke(value, thread_id=thread_id,
                                                   user_id=user_id,
                                                   config={"callbacks": [trace]})
        return ("interrupted" if state.get("__interrupt__") else "success"), state

    async def _ledgers(self, record: RunRecord) -> list[SharedLedger]:
        """The shared budgets a run is charged to: its own, and its schedule's (kept in the
        database, so a retry or a takeover goes on counting from what was spent)."""
        budgets = self.scheduler.budgets
        ledgers = []
        if record.budget:
            ledgers.append(budgets.ledger(f"run:{record.id}", Budget.from_dict(record.budget),
                                          f"run {record.id}"))
        schedule = await self.scheduler.get(record.schedule) if record.schedule else None
        if schedule is not None and schedule.budget is not None:
            ledgers.append(budgets.ledger(schedule.scope, schedule.budget,
                                          f"schedule {schedule.name!r}"))
        return ledgers

    def _load(self, target: str) -> Target:
        if target not in self._targets:
            self._targets[target] = load_target(target, database_url=self.url)
        return self._targets[target]


async def _head(runnable: Target, thread_id: str | None) -> tuple[str | None, tuple, dict]:
    """The thread's latest checkpoint: (id, next nodes, values); (None, (), {}) if none."""
    if thread_id is None:
        return None, (), {}
    snapshot = await runnable.aget_state(thread_id)
    checkpoint = (snapshot.config or {}).get("configurable", {}).get("checkpoint_id")
    return checkpoint, tuple(snapshot.next), dict(snapshot.values or {})


# -- the queue (procrastinate) ---------------------------------------------------------------


def open_queue(url: str, worker: Worker | None = None):
    """A procrastinate app on ``url``; with ``worker``, one that executes runs there."""
    try:
        import procrastinate
    except ImportError:
        raise ConfigurationError("queue workers need procrastinate: pip install "
                                 "'ponder[postgres]'") from None
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(
        conninfo=parse_url(url).conninfo))
    if worker is not None:
        @app.task(name=TASK, retry=procrastinate.RetryStrategy(
            # A busy run is tried again 1, 2, 3... s later: its holder's heartbeat goes stale
            # within stale_s if it died.
            max_attempts=30, linear_wait=1, retry_exceptions={RunBusy}))
        async def run(run_id: str) -> None:
            await worker.execute_queued(run_id)
    return app


async def apply_schema(app) -> None:
    """procrastinate's tables, made once: workers starting together take turns (an advisory
    lock) and the later ones find them made."""
    async with app.connector.pool.connection() as conn:
        await conn.execute("SELECT pg_advisory_lock(7240917)")
        try:
            made = await (await conn.execute(
                "SELECT to_regclass('procrastinate_jobs') IS NOT NULL")).fetchone()
            if not made[0]:
                await app.schema_manager.apply_schema_async()
        finally:
            await conn.execute("SELECT pg_advisory_unlock(7240917)")


async def defer(app, run_id: str, thread_id: str | None) -> None:
    """Queue one run (once: a second deferral of a queued run is a no-op)."""
    from procrastinate.exceptions import AlreadyEnqueued

    try:
        await app.configure_task(TASK, queueing_lock=run_id, lock=thread_id).defer_async(
            run_id=run_id)
    except AlreadyEnqueued:
        pass


# -- background runs from Python -------------------------------------------------------------

_local: dict[tuple[int, str], Worker] = {}  # per event loop and database


async def submit(target: Any, input: Any = None, *,
                 thread_id: str | None = None, user_id: str | None = None,
                 url: str | None = None, queue: bool | None = None,
                 budget: Budget | None = None) -> str:
    """Start a run in the background; its id (``wait(id)``, ``cancel(id)``).

    ``target`` is a TARGET string, an Agent or a compiled graph. It runs in this process,
    unless ``queue`` (default: a ``postgresql://`` database and a TARGET string), where a
    ``ponder worker --queue`` takes it. ``budget`` limits what the run's model calls spend
    (kept with the run, so whichever worker executes it counts on): over it, the run ends
    ``error`` with a message naming the budget and what was spent.
    """
    if budget is not None and not isinstance(budget, Budget):
        raise ConfigurationError(f"budget must be a ponder.Budget, e.g. Budget(usd=0.5), not "
                                 f"{budget!r}")
    limits = budget.as_dict() if budget is not None else None
    db = parse_url(url)
    url, postgres = db.url, db.kind == "postgres"
    if queue is None:
        queue = postgres and isinstance(target, str)
    if queue:
        if not isinstance(target, str):
            raise ConfigurationError("a queued run names its target as a string "
                                     "(module:attr or a spec file) so any worker can load it")
        load_target(target)
        recorder = RunRecorder(url)
        try:
            run_id = await recorder.create(target, input, thread_id=thread_id or
                                           str(uuid.uuid4()), user_id=user_id, budget=limits)
            record = await recorder.record(run_id)
        finally:
            await recorder.aclose()
        app = open_queue(url)
        async with app.open_async():
            await apply_schema(app)
            await defer(app, run_id, record.thread_id)
        return run_id
    worker = _local_worker(url)
    if isinstance(target, str):
        runnable, name = worker._load(target), target
    else:
        runnable = as_target(target, database_url=url)
        name = runnable.name or "graph"
        if runnable is not target:  # wrapped here: the worker closes it with what it loaded
            worker._targets[f"{name}@{id(runnable)}"] = runnable
    run_id = await worker.runs.create(name, input, thread_id=thread_id or str(uuid.uuid4()),
                                      user_id=user_id, budget=limits)
    worker._running[run_id] = asyncio.create_task(worker.run_local(run_id, runnable))
    worker.ensure_heartbeats()
    return run_id


async def wait(run_id: str, *, url: str | None = None) -> RunRecord:
    """Wait for a run (from ``ponder.graphs.submit``) to finish; its record. Bound the wait
    with ``asyncio.timeout``."""
    recorder = RunRecorder(url)
    try:
        record = await recorder.wait(run_id)
    finally:
        await recorder.aclose()
    task = local_task(run_id)
    if task is not None:  # running here: let it finish closing what it opened
        await asyncio.wait([task])
    return record


async def cancel(run_id: str, *, url: str | None = None) -> str:
    """Cancel a run; the status it had (a finished run stays as it was)."""
    recorder = RunRecorder(url)
    try:
        return await recorder.cancel(run_id)
    finally:
        await recorder.aclose()


def _local_worker(url: str) -> Worker:
    """This event loop's in-process executor for ``url`` (it fires no schedules)."""
    key = (id(asyncio.get_running_loop()), url)
    if key not in _local:
        _local[key] = Worker(url, schedules=False)
    return _local[key]


def local_task(run_id: str) -> asyncio.Task | None:
    """The task executing ``run_id`` in this process (from ``submit``), if any."""
    loop = id(asyncio.get_running_loop())
    for (worker_loop, _), worker in _local.items():
        if worker_loop == loop and run_id in worker._running:
            return worker._running[run_id]
    return None
