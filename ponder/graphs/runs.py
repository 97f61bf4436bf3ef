"""Run records: every recorded run gets a row (target, input, thread, status, timings, tokens
per model, error) and a trace of its steps (node, model and tool spans with latency and tokens),
stored through SQLAlchemy in the one database.

    recorder = RunRecorder()
    state = await recorder.run("support", agent, "Where is my order?", thread_id="t1")

A background or scheduled run starts ``pending``; a worker claims it (``running``, with a
heartbeat), and it ends ``success``, ``error``, ``interrupted`` or ``cancelled``. A claim is a
compare-and-swap on the row, so one run is executed by one worker at a time, and a run whose
worker stopped sending heartbeats may be claimed again (it resumes from its last checkpoint).
``wait(run_id)`` and ``cancel(run_id)`` work from any process.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import socket
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    and_,
    bindparam,
    exists,
    func,
    or_,
    select,
    update,
)

from ponder.agents.agent import final_text
from ponder.config import ConfigurationError, Settings
from ponder.db.tables import Tables
from ponder.errors import NotFoundError, PonderError
from ponder.graphs.targets import Target
from ponder.graphs.tracing import RunTracer, export_spans, otel_configured

log = logging.getLogger(__name__)
_CLAIMS_LOCK = 7240920  # the advisory lock class of thread claims (tables.py has 7240919)
metadata = MetaData()
runs_table = Table(
    "ponder_runs", metadata,
    Column("id", String(40), primary_key=True),
    Column("target", String(200), nullable=False),
    Column("input", Text, nullable=True),
    Column("thread_id", String(200), nullable=True, index=True),
    Column("status", String(20), nullable=False, index=True),
    Column("created_at", Float, nullable=False),
    Column("ended_at", Float, nullable=True),
    # JSON: {model: {calls, input_tokens, output_tokens, total_tokens}}
    Column("usage", Text, nullable=True),
    Column("error", Text, nullable=True),
    Column("user_id", String(200), nullable=True),
    Column("output", Text, nullable=True),  # the final reply's text
    Column("schedule", String(200), nullable=True),     # the schedule that fired it
    Column("scheduled_for", Float, nullable=True),      # the fire time it was due at
    Column("attempts", Integer, nullable=True),
    Column("worker", String(100), nullable=True),       # who holds the claim
    Column("started_at", Float, nullable=True),
    Column("heartbeat_at", Float, nullable=True),
    Column("cancel_requested", Boolean, nullable=True),
    Column("base_checkpoint", String(100), nullable=True),  # the thread's head before the run
    # JSON: how the run was asked for over the Agent Server API (stream modes, metadata, ...)
    Column("kwargs", Text, nullable=True),
    # "caller": executed by the process that made it (a turn, an Agent Server run), whose
    # target is an object there; None: by any worker, which loads the target by its TARGET string
    Column("executor", String(20), nullable=True),
    # JSON: the run's own Budget (models.budgets), charged in ponder_budgets as "run:ID"
    Column("budget", Text, nullable=True),
    # One run per fire, whoever claims it.
    UniqueConstraint("schedule", "scheduled_for", name="ponder_runs_one_per_fire"),
)
FINISHED = ("success", "error", "interrupted", "cancelled")
steps_table = Table(
    "ponder_run_steps", metadata,
    Column("run_id", String(40), primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("parent", Integer, nullable=True),
    Column("kind", String(10), nullable=False),  # node, model, tool
    Column("name", String(200), nullable=False),
    Column("started_at", Float, nullable=False),
    Column("latency_s", Float, nullable=True),
    Column("input_tokens", Integer, nullable=True),
    Column("output_tokens", Integer, nullable=True),
    Column("error", Text, nullable=True),
)


@dataclass(frozen=True)
class RunRecord:
    """One row of ``ponder_runs``, decoded. Times are Unix seconds; ``input`` is the run's
    input as given (JSON); ``usage`` is ``{model: {calls, input_tokens, output_tokens,
    total_tokens}}``; ``output`` the final reply's text; ``worker`` who holds the claim;
    ``base_checkpoint`` the thread's head before the first attempt ("" for none); ``kwargs``
    how it was asked for over the Agent Server API; ``budget`` the run's own limits
    (``Budget.as_dict()``), None without."""

    id: str
    target: str
    input: Any
    thread_id: str | None
    status: str
    created_at: float
    ended_at: float | None = None
    usage: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)
    error: str | None = None
    user_id: str | None = None
    output: str | None = None
    schedule: str | None = None
    scheduled_for: float | None = None
    attempts: int = 0
    worker: str | None = None
    started_at: float | None = None
    heartbeat_at: float | None = None
    cancel_requested: bool = False
    base_checkpoint: str | None = None
    kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    executor: str | None = None
    budget: dict[str, Any] | None = None

    @classmethod
    def from_row(cls, row: Any) -> RunRecord:
        """Decode a ``ponder_runs`` row (its JSON columns, its NULLs)."""
        values = dict(row._mapping)
        values["input"] = json.loads(values["input"]) if values["input"] else None
        values["usage"] = json.loads(values["usage"] or "{}")
        values["kwargs"] = json.loads(values["kwargs"] or "{}")
        values["budget"] = json.loads(values["budget"]) if values.get("budget") else None
        values["attempts"] = values["attempts"] or 0
        values["cancel_requested"] = bool(values["cancel_requested"])
        return cls(**values)

    @property
    def finished(self) -> bool:
        """Whether the run has ended (``FINISHED``)."""
        return self.status in FINISHED

    def as_dict(self) -> dict[str, Any]:
        """The record as a JSON-ready dict."""
        return dataclasses.asdict(self)


class ThreadBusy(PonderError):
    """A run was sent with ``multitask_strategy="reject"`` to a thread another run holds."""


class RunRecorder(Tables):
    """Records runs in ``ponder_runs`` and ``ponder_run_steps``, in the database at ``url``
    (default ``PONDER_DATABASE_URL``).

    Runs it executes itself (``run``, ``recording``) hold their thread's lease as ``holder``
    (host:pid:random); ``heartbeat_s``, ``stale_s`` (default ``PONDER_RUN_STALE_S``) and
    ``poll_s`` (seconds) are how often the lease is renewed, how long a silent holder keeps it,
    and how often a waiting run asks. A run waiting for its thread is heartbeated too, so
    that one whose caller died can be told from one that waits.
    """

    metadata = metadata

    def __init__(self, url: str | None = None, *, share: Tables | None = None,
                 heartbeat_s: float = 1.0, stale_s: float | None = None,
                 poll_s: float = 0.02) -> None:
        super().__init__(url, share=share)
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.heartbeat_s, self.poll_s = heartbeat_s, poll_s
        self.stale_s = stale_s or Settings.from_env().run_stale_s
        # Set when the process shuts down: leased runs cancelled now are handed back, not ended.
        self.handing_back = False

    async def run(self, target: str, agent: Target, input: Any, *,
                  thread_id: str | None = None, user_id: str | None = None,
                  multitask_strategy: str = "enqueue") -> dict[str, Any]:
        """Run one turn of ``agent`` (an Agent or graph) here, once its thread is free (see
        ``recording``), and record it (also when it fails); the thread's state, with the
        record's ``run_id``."""
        async with self.recording(target, input, thread_id, user_id,
                                  multitask_strategy=multitask_strategy) as (
                run_id, trace, finish):
            state = await agent.ainvoke(input, thread_id=thread_id, user_id=user_id,
                                        config={"callbacks": [trace]})
            finish("interrupted" if state.get("__interrupt__") else "success", state)
            state["run_id"] = run_id
            return state

    @asynccontextmanager
    async def recording(self, target: str, input: Any, thread_id: str | None,
                        user_id: str | None = None, *, multitask_strategy: str = "enqueue"):
        """Run what is inside the block as a recorded run holding its thread's lease:
        ``(run_id, trace, finish)``, where ``finish(status, state)`` sets the outcome.

        The run is recorded ``pending`` and waits until it may claim its thread: runs of one
        thread go one at a time, in arrival order, across processes sharing the database
        (``multitask_strategy="enqueue"``); with ``"reject"`` a busy thread raises ThreadBusy
        and nothing is kept. While the block runs, the claim is heartbeated (every
        ``heartbeat_s``; a holder silent for ``stale_s`` loses it) and a ``cancel`` from any
        process cancels the block. The outcome is written on every exit path.
        """
        if multitask_strategy not in ("enqueue", "reject"):
            raise ConfigurationError(f"multitask_strategy must be 'enqueue' or 'reject', not "
                                     f"{multitask_strategy!r}")
        run_id, claimed = await self.create_claimed(target, input, thread_id=thread_id,
                                                    user_id=user_id)
        if not claimed:
            await self.acquire(run_id, reject=multitask_strategy == "reject")
        async with self.lease(run_id) as (trace, finish):
            yield run_id, trace, finish

    @asynccontextmanager
    async def lease(self, run_id: str):
        """Hold the claim on ``run_id`` (made by ``acquire``) while the block runs:
        ``(trace, finish)``, where ``finish(status, state)`` sets the outcome. The claim is
        heartbeated, a cancel request cancels the block, and the outcome (``cancelled`` or
        ``error`` when the block raises) is written on every exit path."""
        trace, outcome = RunTracer(), {"status": "success", "output": None}

        def finish(status: str, state: dict[str, Any] | None = None) -> None:
            outcome.update(status=status, output=final_text(state) if state else None)

        beating = asyncio.create_task(self._heartbeats(run_id, asyncio.current_task()))
        error = None
        try:
            async with trace.collecting():
                yield trace, finish
        except BaseException as exc:
            cancelled = isinstance(exc, asyncio.CancelledError)
            outcome["status"] = "cancelled" if cancelled else "error"
            error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            beating.cancel()
            if outcome["status"] == "cancelled" and self.handing_back:
                # Shutting down: another process goes on with it, from its last checkpoint.
                await asyncio.shield(self.release(run_id, self.holder))
            else:
                await asyncio.shield(self.finish(run_id, outcome["status"], error=error,
                                                 output=outcome["output"], trace=trace,
                                                 worker=self.holder))

    async def acquire(self, run_id: str, *, reject: bool = False) -> None:
        """Claim the pending ``run_id`` for this recorder once its thread is free (runs of one
        thread in arrival order). With ``reject``, a busy thread raises ThreadBusy at once and
        the record is removed; a caller that gives up waiting leaves it ``cancelled``."""
        beat = time.monotonic()
        try:
            while await self.claim(run_id, self.holder, self.stale_s) is None:
                if reject:
                    raise ThreadBusy(f"the thread of run {run_id} is busy with another run: "
                                     "wait for it to end, or send with the enqueue strategy")
                if time.monotonic() - beat > self.heartbeat_s:  # still waiting, still here
                    beat = time.monotonic()
                    await self._touch(run_id)
                await asyncio.sleep(self.poll_s)
        except BaseException as exc:
            await asyncio.shield(self._withdraw(run_id, keep=not isinstance(exc, ThreadBusy)))
            raise

    async def _touch(self, run_id: str) -> None:
        engine = await self.engine()
        async with engine.begin() as conn:
            await conn.execute(update(runs_table).where(
                runs_table.c.id == run_id, runs_table.c.status == "pending").values(
                heartbeat_at=time.time()))

    async def orphans(self, targets: list[str], limit: int = 50) -> list[RunRecord]:
        """Runs their caller executes whose caller is gone (running, or waiting for their
        thread, without a heartbeat for ``stale_s``), of the given targets, oldest first."""
        stale = time.time() - self.stale_s
        engine = await self.engine()
        async with engine.connect() as conn:
            rows = await conn.execute(select(runs_table).where(
                runs_table.c.executor == "caller", runs_table.c.target.in_(targets),
                runs_table.c.status.in_(("pending", "running")),
                func.coalesce(runs_table.c.heartbeat_at, runs_table.c.created_at) < stale,
            ).order_by(runs_table.c.created_at).limit(limit))
            return [RunRecord.from_row(r) for r in rows]

    async def _withdraw(self, run_id: str, keep: bool) -> None:
        """A run that never started: cancelled (``keep``), or gone without a trace."""
        engine = await self.engine()
        async with engine.begin() as conn:
            pending = and_(runs_table.c.id == run_id, runs_table.c.status == "pending")
            if keep:
                await conn.execute(update(runs_table).where(pending).values(
                    status="cancelled", ended_at=time.time(), error="cancelled while waiting "
                    "for its thread"))
            else:
                await conn.execute(runs_table.delete().where(pending))

    async def _heartbeats(self, run_id: str, holder: asyncio.Task | None) -> None:
        """Renew the claim on ``run_id`` until cancelled; cancel ``holder`` when asked to."""
        while True:
            await asyncio.sleep(self.heartbeat_s)
            try:
                if await self.heartbeat(self.holder, [run_id]) and holder is not None:
                    holder.cancel()
                    return
            except Exception:
                log.exception("run %s: heartbeat failed", run_id)

    async def create(self, target: str, input: Any, *, thread_id: str | None = None,
                     user_id: str | None = None, status: str = "pending",
                     kwargs: dict[str, Any] | None = None, executor: str | None = None,
                     budget: dict[str, Any] | None = None) -> str:
        """A new run record (``pending``: for a worker to claim, unless ``executor`` is
        ``"caller"``: the caller runs it); its id. ``budget``: the run's limits
        (``Budget.as_dict()``)."""
        engine = await self.engine()
        async with engine.begin() as conn:
            return await self._insert(conn, target, input, thread_id, user_id, status, kwargs,
                                      executor, budget)

    async def create_claimed(self, target: str, input: Any, *, thread_id: str | None = None,
                             user_id: str | None = None, kwargs: dict[str, Any] | None = None
                             ) -> tuple[str, bool]:
        """A new run its caller executes, claimed for this recorder in the same transaction
        when its thread is free; its id, and whether it is claimed (else ``acquire`` it)."""
        engine = await self.engine()
        async with engine.begin() as conn:
            run_id = await self._insert(conn, target, input, thread_id, user_id, "pending",
                                        kwargs, "caller")
            claimed = await self._claim_on(conn, run_id, self.holder, self.stale_s)
        return run_id, claimed is not None

    @staticmethod
    async def _insert(conn: Any, target: str, input: Any, thread_id: str | None,
                      user_id: str | None, status: str, kwargs: dict[str, Any] | None,
                      executor: str | None, budget: dict[str, Any] | None = None) -> str:
        run_id = f"run_{uuid.uuid4().hex[:16]}"
        now = time.time()
        await conn.execute(runs_table.insert().values(
            id=run_id, target=target, input=json.dumps(input, default=str),
            thread_id=thread_id, user_id=user_id, status=status, created_at=now,
            started_at=now if status == "running" else None, attempts=0,
            kwargs=json.dumps(kwargs, default=str) if kwargs else None, executor=executor,
            budget=json.dumps(budget) if budget else None))
        return run_id

    async def of_thread(self, thread_id: str, limit: int = 10, offset: int = 0,
                        status: str | None = None) -> list[RunRecord]:
        """A thread's runs, newest first."""
        condition = runs_table.c.thread_id == thread_id
        if status is not None:
            condition = and_(condition, runs_table.c.status == status)
        engine = await self.engine()
        async with engine.connect() as conn:
            rows = await conn.execute(select(runs_table).where(condition).order_by(
                runs_table.c.created_at.desc()).limit(limit).offset(offset))
            return [RunRecord.from_row(r) for r in rows]

    async def forget(self, run_id: str) -> None:
        """Delete a run's record and its steps (a rolled-back run leaves no trace)."""
        engine = await self.engine()
        async with engine.begin() as conn:
            await conn.execute(steps_table.delete().where(steps_table.c.run_id == run_id))
            await conn.execute(runs_table.delete().where(runs_table.c.id == run_id))

    async def forget_thread(self, thread_id: str) -> None:
        """Delete a thread's run records and their steps."""
        engine = await self.engine()
        async with engine.begin() as conn:
            ids = select(runs_table.c.id).where(runs_table.c.thread_id == thread_id)
            await conn.execute(steps_table.delete().where(steps_table.c.run_id.in_(ids)))
            await conn.execute(runs_table.delete().where(runs_table.c.thread_id == thread_id))

    async def finish(self, run_id: str, status: str, *, error: str | None = None,
                     output: str | None = None, trace: RunTracer | None = None,
                     worker: str | None = None) -> bool:
        """End a run (only if ``worker`` still holds it, when given); write its trace."""
        condition = runs_table.c.id == run_id
        if worker is not None:
            condition = and_(condition, runs_table.c.worker == worker,
                             runs_table.c.status == "running")
        engine = await self.engine()
        async with engine.begin() as conn:
            done = await conn.execute(update(runs_table).where(condition).values(
                status=status, ended_at=time.time(), error=error, output=output,
                usage=json.dumps(trace.usage_by_model() if trace else {})))
            if done.rowcount != 1:
                return False  # the claim was lost (another worker took the run over)
            if trace and trace.spans:
                await conn.execute(steps_table.delete().where(steps_table.c.run_id == run_id))
                await conn.execute(steps_table.insert(), [
                    {"run_id": run_id, **{k: getattr(s, k) for k in (
                        "seq", "parent", "kind", "name", "started_at", "latency_s",
                        "input_tokens", "output_tokens", "error")}} for s in trace.spans])
            if otel_configured():
                run = (await conn.execute(select(runs_table).where(
                    runs_table.c.id == run_id))).first()
                export_spans(RunRecord.from_row(run), trace.spans if trace else [])
        return True

    # -- claims, for workers -------------------------------------------------------------------

    async def claimable(self, limit: int, stale_s: float) -> list[str]:
        """Ids of runs a worker may claim now, oldest first (runs their caller executes are
        not a worker's)."""
        engine = await self.engine()
        async with engine.connect() as conn:
            rows = await conn.execute(select(runs_table.c.id).where(
                runs_table.c.executor.is_(None),
                _claimable(time.time() - stale_s)).order_by(
                runs_table.c.created_at).limit(limit))
            return [r.id for r in rows]

    async def claim(self, run_id: str, worker: str, stale_s: float) -> RunRecord | None:
        """Take a run for ``worker``; its record, or None when it is not claimable (done,
        held by a live worker, or its thread is busy)."""
        engine = await self.engine()
        async with engine.begin() as conn:
            return await self._claim_on(conn, run_id, worker, stale_s)

    async def _claim_on(self, conn: Any, run_id: str, worker: str, stale_s: float
                        ) -> RunRecord | None:
        if conn.dialect.name == "postgresql":
            # Claims of one thread, one at a time: under READ COMMITTED two claims of two
            # runs of a thread would each miss the other's uncommitted claim (write skew),
            # and both run. SQLite writes one transaction at a time anyway.
            thread = (await conn.execute(select(runs_table.c.thread_id).where(
                runs_table.c.id == run_id))).scalar()
            if thread is not None:
                await conn.execute(select(func.pg_advisory_xact_lock(
                    _CLAIMS_LOCK, func.hashtext(thread))))
        now = time.time()
        row = (await conn.execute(_CLAIM, {"claim_id": run_id, "stale_before": now - stale_s,
                                           "claim_worker": worker, "claim_now": now})).first()
        return RunRecord.from_row(row) if row is not None else None

    async def set_base_checkpoint(self, run_id: str, checkpoint_id: str) -> None:
        """Record the thread's head checkpoint id before the run's first attempt ("" for none),
        so a retry can tell whether an earlier attempt made progress."""
        engine = await self.engine()
        async with engine.begin() as conn:
            await conn.execute(update(runs_table).where(runs_table.c.id == run_id).values(
                base_checkpoint=checkpoint_id))

    async def heartbeat(self, worker: str, run_ids: list[str]) -> list[str]:
        """Renew ``worker``'s claims on ``run_ids``, the runs it is executing; the ids of those
        someone asked to cancel. A claim of ``worker`` whose execution ended without writing
        its outcome is not renewed: it goes stale, and another worker takes the run over."""
        if not run_ids:
            return []
        engine = await self.engine()
        async with engine.begin() as conn:
            mine = and_(runs_table.c.id.in_(run_ids), runs_table.c.worker == worker,
                        runs_table.c.status == "running")
            await conn.execute(update(runs_table).where(mine).values(heartbeat_at=time.time()))
            rows = await conn.execute(select(runs_table.c.id).where(
                mine, runs_table.c.cancel_requested.is_(True)))
            return [r.id for r in rows]

    async def release(self, run_id: str, worker: str) -> None:
        """Give a claimed run back (a worker shutting down mid-run): another resumes it."""
        engine = await self.engine()
        async with engine.begin() as conn:
            await conn.execute(update(runs_table).where(
                runs_table.c.id == run_id, runs_table.c.worker == worker,
                runs_table.c.status == "running").values(status="pending", worker=None))

    # -- waiting and cancelling ---------------------------------------------------------------

    async def cancel(self, run_id: str) -> str:
        """Cancel a run: at once when pending; a running one is stopped by its worker within
        a heartbeat. Returns the status it had."""
        engine = await self.engine()
        async with engine.begin() as conn:
            row = (await conn.execute(select(runs_table.c.status).where(
                runs_table.c.id == run_id))).first()
            if row is None:
                raise NotFoundError(f"no run has the id {run_id!r}: see ponder runs list")
            await conn.execute(update(runs_table).where(
                runs_table.c.id == run_id, runs_table.c.status == "pending").values(
                status="cancelled", ended_at=time.time()))
            await conn.execute(update(runs_table).where(
                runs_table.c.id == run_id, runs_table.c.status == "running").values(
                cancel_requested=True))
            return row.status

    async def wait(self, run_id: str, poll_s: float = 0.05) -> RunRecord:
        """The run's record once it has finished (bound it with ``asyncio.timeout``)."""
        while True:
            found = await self.record(run_id)
            if found is None:
                raise NotFoundError(f"no run has the id {run_id!r}: see ponder runs list")
            if found.finished:
                return found
            await asyncio.sleep(poll_s)

    # -- reading ------------------------------------------------------------------------------

    async def record(self, run_id: str) -> RunRecord | None:
        """The run's record; None when no run has the id."""
        engine = await self.engine()
        async with engine.connect() as conn:
            row = (await conn.execute(select(runs_table).where(
                runs_table.c.id == run_id))).first()
            return RunRecord.from_row(row) if row else None

    async def list(self, limit: int = 20) -> list[RunRecord]:
        """The ``limit`` newest runs' records, newest first."""
        engine = await self.engine()
        async with engine.connect() as conn:
            rows = await conn.execute(select(runs_table).order_by(
                runs_table.c.created_at.desc()).limit(limit))
            return [RunRecord.from_row(r) for r in rows]

    async def get(self, run_id: str) -> tuple[RunRecord, list[dict[str, Any]]] | None:
        """A run's record and its steps (``ponder_run_steps`` rows, in order)."""
        run = await self.record(run_id)
        if run is None:
            return None
        engine = await self.engine()
        async with engine.connect() as conn:
            steps = await conn.execute(select(steps_table).where(
                steps_table.c.run_id == run_id).order_by(steps_table.c.seq))
            return run, [dict(s._mapping) for s in steps]


def _claimable(stale_before: Any):
    """Pending, or running under a worker whose last heartbeat is older than ``stale_before``
    (a time, or a bound parameter); and no other live run, nor an earlier pending one, on the
    same thread (runs of one thread go one at a time, in order)."""
    other = runs_table.alias("other")
    busy_thread = exists().where(
        other.c.thread_id == runs_table.c.thread_id, other.c.id != runs_table.c.id,
        or_(and_(other.c.status == "running", other.c.heartbeat_at >= stale_before),
            and_(other.c.status == "pending", other.c.created_at < runs_table.c.created_at)))
    return and_(
        or_(runs_table.c.status == "pending",
            and_(runs_table.c.status == "running", runs_table.c.heartbeat_at < stale_before)),
        or_(runs_table.c.thread_id.is_(None), ~busy_thread))


# A claim, built once: every turn makes one, and building the statement cost more than running
# it (SQLAlchemy reuses the compiled SQL of one statement object).
_CLAIM = update(runs_table).where(
    runs_table.c.id == bindparam("claim_id"), _claimable(bindparam("stale_before"))).values(
    status="running", worker=bindparam("claim_worker"), heartbeat_at=bindparam("claim_now"),
    attempts=runs_table.c.attempts + 1, started_at=bindparam("claim_now"),
).returning(*runs_table.c)
