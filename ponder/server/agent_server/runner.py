"""Agent Server runs: recorded, executed here under their thread's lease, streamed, joined,
cancelled, rolled back, and taken over from a server process that died.

A run is a record in ``ponder_runs`` (its request in ``kwargs``) that the process which
accepted it executes (``executor = "caller"``), so runs of one thread go one at a time across
every process sharing the database. Its stream carries ``metadata`` first, then the requested
stream modes, then ``error`` if it failed; the stream closes once the run's record is final.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

from fastapi import Request
from langgraph.types import Command

from ponder.agents.agent import ResumeError
from ponder.config import ConfigurationError
from ponder.graphs.runs import RunRecord, RunRecorder
from ponder.graphs.targets import Target
from ponder.graphs.workers import defer
from ponder.models import ModelCall, UsageLog, track_usage
from ponder.server.agent_server import shapes
from ponder.server.agent_server.requests import RunCreate, caller_key
from ponder.server.agent_server.streams import RunStream, StoredEvents, Streams
from ponder.server.agent_server.threads import AgentThreads, ThreadRow
from ponder.server.agent_server.webhooks import check_webhook, deliver
from ponder.server.errors import APIError

log = logging.getLogger("ponder.server")


class AgentServer:
    """The Agent Server API's state in one app: targets by assistant id and name, the threads,
    the run records, this process's run streams and tasks."""

    def __init__(self, targets: dict[str, Target], runs: RunRecorder,
                 threads: AgentThreads, events: StoredEvents, *,
                 refs: dict[str, str] | None = None, queue: Any = None) -> None:
        self.targets = targets
        self.by_id = {shapes.assistant_id(name): t for name, t in targets.items()}
        # TARGET strings by name, of the targets served by one: what workers load to run them
        # (crons' fires; background runs when ``queue``, an open procrastinate app, is given).
        self.refs = dict(refs or {})
        self._names = {ref: name for name, ref in self.refs.items()}
        self.queue = queue
        self.runs, self.threads, self.events = runs, threads, events
        self.streams = Streams()
        self.tasks: dict[str, asyncio.Task] = {}
        self.outputs: dict[str, dict[str, Any]] = {}  # a run's wait/join body, once it ended
        self.deliveries: set[asyncio.Task] = set()  # webhooks being sent

    # -- lookups -------------------------------------------------------------------------------

    def target(self, assistant: str) -> Target:
        """The target an assistant id or graph id names (404 otherwise)."""
        found = self.by_id.get(assistant) or self.targets.get(assistant)
        if found is None:
            raise APIError(404, f"Assistant {assistant!r} not found: use one of "
                                f"{', '.join(self.targets)} (or their assistant ids)")
        return found

    def name_of(self, record: RunRecord) -> str:
        """The graph a run ran: a worker's runs name theirs by TARGET string."""
        return self._names.get(record.target, record.target)

    def run_json(self, record: RunRecord) -> dict[str, Any]:
        """A run as the API shows it."""
        return shapes.run(record, self.name_of(record))

    async def thread(self, thread_id: str, request: Request) -> ThreadRow:
        """The caller's thread (404 otherwise)."""
        found = (await self.threads.get(thread_id, caller_key(request))
                 if "\x00" not in thread_id else None)  # Postgres text holds no NUL
        if found is None:
            raise APIError(404, f"Thread with ID {thread_id!r} not found")
        return found

    async def thread_json(self, thread: ThreadRow, new: bool = False) -> dict[str, Any]:
        """A thread as the API shows it, its status and values from its runs and state
        (``new``: just made, so it has neither)."""
        values, interrupts, status, error = None, {}, "idle", None
        if new:
            return self._thread_shape(thread, values, interrupts, status, error)
        if thread.graph_id in self.targets:
            snapshot = await self.targets[thread.graph_id].aget_state(thread.id)
            values = shapes.jsonable(snapshot.values or {})
            for task in snapshot.tasks:
                if task.interrupts:
                    interrupts[task.id] = shapes.jsonable(list(task.interrupts))
            status = "interrupted" if snapshot.next else "idle"
        latest = await self.runs.of_thread(thread.id, limit=1)
        if latest and latest[0].status in ("pending", "running"):
            status = "busy"
        elif latest and latest[0].status == "error":
            status = "error"
            error = {"error": "Error", "message": latest[0].error}
        return self._thread_shape(thread, values, interrupts, status, error)

    @staticmethod
    def _thread_shape(thread: ThreadRow, values: Any, interrupts: dict[str, Any], status: str,
                      error: dict[str, Any] | None) -> dict[str, Any]:
        return {"thread_id": thread.id, "created_at": shapes.iso(thread.created_at),
                "updated_at": shapes.iso(thread.updated_at),
                "state_updated_at": shapes.iso(thread.updated_at),
                "metadata": thread.metadata, "status": status, "config": {},
                "values": values, "interrupts": interrupts, "error": error}

    async def run_of(self, thread_id: str, run_id: str) -> RunRecord:
        """The run ``run_id`` of the thread (404 otherwise)."""
        record = await self.runs.record(run_id) if "\x00" not in run_id else None
        if record is None or record.thread_id != thread_id:
            raise APIError(404, f"Run with ID {run_id} not found on thread {thread_id}")
        return record

    # -- runs ------------------------------------------------------------------------------------

    async def start(self, thread: ThreadRow, body: RunCreate, *, temporary: bool = False,
                    waited: bool = False,
                    charge: Callable[[ModelCall], None] | None = None) -> RunRecord:
        """Record a run and start executing it here; under ``reject`` a busy thread is refused
        with 409 before anything is kept. ``waited``: the caller waits for it (stream, wait),
        so nobody sees it pending and it is claimed as it is recorded. ``charge`` is called
        with each model call the run makes (the caller's key and /metrics count them)."""
        target = self.target(body.assistant_id)
        modes = body.modes()
        if body.command is not None and body.command.resume is not None and temporary:
            raise APIError(400, "You must provide a thread_id when resuming: a stateless run "
                                "has no interrupted thread to resume")
        if body.webhook is not None:
            check_webhook(body.webhook)
        value = await self._input(target, thread.id, body)
        if thread.graph_id != target.name:
            await self.threads.update(thread, graph_id=target.name)
        kwargs = {"input": body.input, "command": body.command and body.command.model_dump(),
                  "stream_mode": modes, "config": body.config,
                  "metadata": {**thread.metadata, **body.metadata,
                               "graph_id": target.name,
                               "assistant_id": shapes.assistant_id(target.name)},
                  "multitask_strategy": body.multitask_strategy, "temporary": temporary,
                  "webhook": body.webhook, "stream_resumable": body.stream_resumable}
        if self._queued(target, body, waited, temporary):
            # A worker's run (executor None), by the TARGET string workers load.
            run_id = await self.runs.create(self.refs[target.name], body.input,
                                            thread_id=thread.id, kwargs=kwargs)
            await defer(self.queue, run_id, thread.id)
            return await self.runs.record(run_id)
        if waited or body.multitask_strategy == "reject":
            # Recorded and claimed in one transaction when the thread is free.
            run_id, claimed = await self.runs.create_claimed(target.name, body.input,
                                                             thread_id=thread.id, kwargs=kwargs)
        else:  # a new run is pending, as LangGraph's server answers, until it runs
            run_id, claimed = await self.runs.create(target.name, body.input,
                                                     thread_id=thread.id, kwargs=kwargs,
                                                     executor="caller"), False
        if body.multitask_strategy == "reject" and not claimed:
            await self.runs.forget(run_id)
            raise APIError(409, "Thread is already running a task. Wait for it to finish "
                                "or choose a different multitask strategy.",
                           code="thread_busy")
        if body.multitask_strategy in ("interrupt", "rollback"):
            for other in await self.runs.of_thread(thread.id, limit=100):
                if other.id != run_id and other.status in ("pending", "running"):
                    await (self.cancel(other) if body.multitask_strategy == "interrupt"
                           else self.rollback(other))
        stored = body.stream_resumable or self.events.shared
        stream = self.streams.open(run_id, self.events if stored else None)
        self.tasks[run_id] = task = asyncio.create_task(self._execute(
            run_id, target, thread.id, value, modes, body.config, claimed, stream,
            temporary and body.on_completion == "delete", body.webhook, charge=charge))
        task.add_done_callback(lambda _: self.tasks.pop(run_id, None))
        return await self.runs.record(run_id)

    def _queued(self, target: Target, body: RunCreate, waited: bool, temporary: bool) -> bool:
        """Whether a run goes to ``ponder worker --queue``: a background run (nobody waits
        on it here) of a target served by TARGET string, queued behind its thread's others
        (``enqueue``), with plain input. The rest run here: a resume, an ``interrupt`` or
        ``rollback`` of the running one, a stateless run, a webhook to send."""
        return (self.queue is not None and not waited and not temporary
                and target.name in self.refs and body.multitask_strategy == "enqueue"
                and body.command is None and body.webhook is None)

    async def _input(self, target: Target, thread_id: str, body: RunCreate) -> Any:
        """The run's input: its ``input``, or a Command (a ``resume`` checked against the
        thread's pending interrupts, 400 when it does not fit them)."""
        if body.command is None:
            return body.input
        command = body.command
        resume = None
        if command.resume is not None:
            try:
                resume = (await target.resume_input(thread_id, command.resume)).resume
            except ResumeError as exc:
                raise APIError(400, str(exc), param="command.resume") from None
        return Command(resume=resume, update=command.update, goto=command.goto or ())

    async def _execute(self, run_id: str, target: Target, thread_id: str, value: Any,
                       modes: list[str], config: dict[str, Any], claimed: bool,
                       stream: RunStream, temporary: bool, webhook: str | None,
                       resumed: bool = False,
                       charge: Callable[[ModelCall], None] | None = None) -> None:
        progress: dict[str, Any] = {"values": {}}  # the latest values, as JSON
        handed_back = False  # to another process, at shutdown: it is not over
        try:
            if not claimed:
                await self.runs.acquire(run_id)
            async with self.runs.lease(run_id) as (trace, finish):
                if not resumed:  # where the thread was, for a rollback or a takeover
                    head = (await target.aget_state(thread_id)).config or {}
                    await self.runs.set_base_checkpoint(
                        run_id, head.get("configurable", {}).get("checkpoint_id") or "")
                await stream.add("metadata", {"run_id": run_id, "attempt": 1})
                usage = track_usage(UsageLog(on_call=charge)) if charge else nullcontext()
                with usage:
                    last, interrupts = await self._relay(target, value, thread_id, modes,
                                                         config, trace, stream, progress)
                final = progress["values"]
                if interrupts:
                    final = {**final, "__interrupt__": interrupts}
                finish("interrupted" if interrupts else "success", last)
            self.outputs[run_id] = final
        except asyncio.CancelledError:
            self.outputs[run_id] = progress["values"]
            handed_back = self.runs.handing_back
        except Exception as exc:
            error = {"error": type(exc).__name__, "message": str(exc)}
            self.outputs[run_id] = {"__error__": error}
            await stream.add("error", error)
        finally:
            try:
                if webhook is not None and not handed_back:
                    await self._notify(webhook, run_id)
                if temporary and not handed_back:  # a stateless run leaves nothing behind
                    with contextlib.suppress(Exception):
                        await target.adelete_thread(thread_id)
                    await self.runs.forget_thread(thread_id)
                    await self.threads.delete(thread_id)
                    await self.events.forget([run_id])
            finally:
                await stream.end()  # once the record is final (clients check it after)
                with contextlib.suppress(Exception):  # they would see it within a second
                    await self.events.announce(run_id)

    async def _relay(self, target: Target, value: Any, thread_id: str, modes: list[str],
                     config: dict[str, Any], trace: Any, stream: RunStream,
                     progress: dict[str, Any]) -> tuple[Any, list[Any]]:
        """Run the graph, adding what it streams in ``modes`` to ``stream``; the last values
        (as the graph holds them) and the interrupts it stopped at. ``values`` and
        ``updates`` are always followed: the first for ``wait``, the second for interrupts."""
        graph_modes = sorted({"messages" if m == "messages-tuple" else m for m in modes}
                             | {"values", "updates"})
        last, interrupts = None, []
        async for mode, chunk in target.astream(
                value, thread_id=thread_id, stream_mode=graph_modes,
                config={"configurable": config.get("configurable", {}), "callbacks": [trace]}):
            if mode == "values":
                last, progress["values"] = chunk, shapes.jsonable(chunk)
            elif mode == "updates" and isinstance(chunk, dict) and "__interrupt__" in chunk:
                interrupts += shapes.jsonable(list(chunk["__interrupt__"]))
                if "values" in modes and "updates" not in modes:  # as LangGraph's server does
                    await stream.add("values", {**progress["values"],
                                                "__interrupt__": interrupts})
            if mode in modes or (mode == "messages" and "messages-tuple" in modes):
                await stream.add(mode, shapes.jsonable(chunk))
        return last, interrupts

    async def sweep(self) -> None:
        """Forever: take over the runs of this server's targets whose process is gone (no
        heartbeat for ``stale_s``), every ``stale_s / 2`` seconds."""
        while True:
            await asyncio.sleep(self.runs.stale_s / 2)
            try:
                for orphan in await self.runs.orphans(list(self.targets)):
                    record = await self.runs.claim(orphan.id, self.runs.holder,
                                                   self.runs.stale_s)
                    if record is not None:
                        await self._take_over(record)
            except Exception:
                log.exception("taking over runs of a stopped server failed")

    async def _take_over(self, record: RunRecord) -> None:
        """Execute a claimed run whose process is gone: from its last checkpoint when it had
        made progress, else from its input."""
        target = self.targets[record.target]
        kwargs = record.kwargs or {}
        head = (await target.aget_state(record.thread_id)).config or {}
        now = head.get("configurable", {}).get("checkpoint_id") or ""
        if record.base_checkpoint is not None and now != record.base_checkpoint:
            value = None  # it ran: go on from where it stopped
        elif kwargs.get("command"):
            command = kwargs["command"]
            value = Command(resume=command.get("resume"), update=command.get("update"),
                            goto=command.get("goto") or ())
        else:
            value = record.input
        log.warning("run %s of thread %s: its process is gone; going on with it here",
                    record.id, record.thread_id)
        stored = bool(kwargs.get("stream_resumable")) or self.events.shared
        stream = self.streams.open(record.id, self.events if stored else None,
                                   await self.events.last(record.id) if stored else 0)
        self.tasks[record.id] = task = asyncio.create_task(self._execute(
            record.id, target, record.thread_id, value, kwargs.get("stream_mode", ["values"]),
            kwargs.get("config", {}), True, stream, bool(kwargs.get("temporary")),
            kwargs.get("webhook"), resumed=record.base_checkpoint is not None))
        task.add_done_callback(lambda _: self.tasks.pop(record.id, None))

    async def rollback(self, record: RunRecord) -> None:
        """Cancel a run, wait for it to stop, and discard what it did: its thread goes back
        to the checkpoint it started from, and its record is deleted."""
        await self.cancel(record)
        ended = await asyncio.wait_for(self.runs.wait(record.id, poll_s=0.05), 60)
        target = self.targets.get(self.name_of(record))
        if target is not None and record.thread_id and ended.base_checkpoint is not None:
            try:
                await target.arewind(record.thread_id, ended.base_checkpoint or None)
            except ConfigurationError as exc:  # a checkpointer of the graph's own
                raise APIError(422, f"run {record.id} was stopped, but its progress stays: "
                                    f"{exc}", param="multitask_strategy") from None
        await self.runs.forget(record.id)
        await self.events.forget([record.id])

    async def _notify(self, webhook: str, run_id: str) -> None:
        """Send the ended run to its webhook, in the background (retries take a while)."""
        record = await self.runs.record(run_id)
        if record is None:
            return
        output = self.outputs.get(run_id, {})
        payload = {**self.run_json(record), **(
            {"error": output["__error__"]} if "__error__" in output else {"values": output})}
        task = asyncio.create_task(deliver(webhook, payload))
        self.deliveries.add(task)
        task.add_done_callback(self.deliveries.discard)

    async def cancel(self, record: RunRecord) -> None:
        """Cancel a run: at once when pending or running here, else by its holder within a
        heartbeat."""
        await self.runs.cancel(record.id)
        task = self.tasks.get(record.id)
        if task is not None:
            task.cancel()

    async def aclose(self) -> None:
        """Stop the runs executing here and hand them back: another server process takes
        them over (from their last checkpoint) once this one is gone."""
        self.runs.handing_back = True
        for task in list(self.tasks.values()):
            task.cancel()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)
        # Webhooks already due get a moment to go out; retries past it are dropped.
        if self.deliveries:
            await asyncio.wait(self.deliveries, timeout=5)
        for task in self.deliveries:
            task.cancel()

    async def output(self, run_id: str) -> dict[str, Any]:
        """What ``wait`` and ``join`` answer, once the run has ended: its final values (with
        ``__interrupt__`` when it stopped at interrupts), or ``{"__error__": ...}``."""
        task = self.tasks.get(run_id)
        if task is not None:
            await asyncio.shield(asyncio.wait([task]))
        if run_id in self.outputs:
            return self.outputs[run_id]
        record = await self.runs.wait(run_id, poll_s=0.1)  # run by another process
        if record.status == "error":
            return {"__error__": {"error": "Error", "message": record.error}}
        target = self.targets.get(self.name_of(record))
        if target is None or record.thread_id is None:
            return {}
        return shapes.jsonable((await target.aget_state(record.thread_id)).values or {})
