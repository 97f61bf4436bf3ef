"""`ponder`: the command line (typer + rich). It sits on top: nothing imports it."""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from typing import Any

import typer
from langchain_core.messages import AIMessage, AIMessageChunk, ToolMessage
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.pregel import Pregel
from langgraph.types import Command, Interrupt
from rich.console import Console
from rich.markup import escape

import ponder
from ponder.agents.agent import Agent, final_text, resume_command, turn_usage
from ponder.agents.reply import STREAM_MODES, reply_stream
from ponder.config import ConfigurationError, Settings, missing_extra
from ponder.db.url import parse_url
from ponder.errors import NotFoundError, PonderError
from ponder.graphs.targets import load_target
from ponder.models import chat_model, track_usage

app = typer.Typer(
    name="ponder",
    help="Asynchronous agent orchestration on LangGraph: profile, memory, planning, action.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
# Lines are not wrapped: output that is piped or captured keeps one message per line.
console = Console(soft_wrap=True)
errors = Console(stderr=True, soft_wrap=True)

def _version(value: bool) -> None:
    if value:
        console.print(f"ponder {ponder.__version__}")
        raise typer.Exit()


# Commands whose data must outlive the command (threads, run records, schedules, keys, the
# knowledge base, memories), so PONDER_DATABASE_URL cannot be memory:// for them.
_DATABASE_COMMANDS = frozenset({"run", "chat", "serve", "worker", "runs", "schedule", "keys",
                                "kb", "memory"})


@app.callback()
def _root(
    ctx: typer.Context,
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Show the version and exit."),
) -> None:
    if ctx.invoked_subcommand in _DATABASE_COMMANDS:
        parse_url().require(("sqlite", "postgres"), f"ponder {ctx.invoked_subcommand}")


TARGET_HELP = "An agent or graph: module:attr, path/to/file.py:attr, or agent.yaml."


@app.command()
def run(
    target: str = typer.Argument(..., help=TARGET_HELP),
    input: str | None = typer.Argument(None, help="The message to send (not with --resume)."),
    thread: str | None = typer.Option(None, "--thread", help="Continue this thread."),
    model: str | None = typer.Option(None, "--model", help="Override the model: provider:name."),
    user: str | None = typer.Option(None, "--user", help="The user the turn is for."),
    resume: str | None = typer.Option(
        None, "--resume", help="Answer the pending interrupts of --thread instead of sending a "
        'message: JSON {"interrupt_id": answer, ...}, or one answer when one is pending.'),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (and ask no "
                                 "questions: interrupts are listed with their ids)."),
) -> None:
    """Run one turn of TARGET and print the reply. When tools interrupt to ask something, each
    question is shown with its id and its answer asked for in turn (not with --json)."""
    if input is None and resume is None:
        raise ConfigurationError("pass a message to send, or --resume with answers to the "
                                 "pending interrupts of --thread")
    if input is not None and resume is not None:
        raise ConfigurationError("pass a message or --resume, not both: a thread waiting on "
                                 "interrupts needs their answers first")
    if resume is not None and thread is None:
        raise ConfigurationError("--resume answers the interrupts of a thread: pass --thread")
    runnable = load_target(target, model=model)
    thread_id = thread or str(uuid.uuid4())

    async def turn() -> tuple[dict[str, Any], dict[str, Any], list[Interrupt]]:
        try:
            with track_usage() as usage:
                if resume is not None:
                    first = resume_command(thread_id, await _pending(runnable, thread_id),
                                           _parse_answer(resume))
                else:
                    first = input
                state = await _invoke(runnable, first, thread_id, user)
                pending = await _pending(runnable, thread_id, state)
                while pending and not as_json:
                    if said := final_text(state):  # what the agent said with its tool calls
                        console.print(escape(said))
                    answers = await _ask(pending)
                    if answers is None:  # input ended: the questions stay pending
                        break
                    state = await _invoke(runnable, Command(resume=answers), thread_id, user)
                    pending = await _pending(runnable, thread_id, state)
        finally:  # a failed turn too: an open database would keep the process alive
            if isinstance(runnable, Agent):
                await runnable.aclose()
        if usage.calls:  # every LangChain model call of the turn, planners' included
            return state, usage.as_dict(), pending
        # A graph whose nodes write messages without LangChain model calls: their metadata.
        return state, turn_usage(state.get("messages", [])), pending

    state, usage, pending = asyncio.run(turn())
    interrupts = [{"id": i.id, "value": i.value} for i in pending]
    if as_json:
        print(json.dumps({"thread_id": thread_id, "output": final_text(state),
                          "interrupts": interrupts, "usage": usage}, default=str))
        return
    if pending:
        errors.print(f"[yellow]{len(pending)} question(s) wait for an answer:[/] ponder run "
                     f"{escape(target)} --thread {thread_id} --resume "
                     f"'{escape(json.dumps({i.id: '...' for i in pending}))}'")
    else:
        console.print(escape(final_text(state)))
    errors.print(f"[dim]thread {thread_id}[/]")


def _parse_answer(text: str) -> Any:
    """A --resume value: JSON when it parses (a map of answers by id, or one answer), else the
    text itself as the one answer."""
    try:
        return json.loads(text)
    except ValueError:
        return text


async def _pending(runnable: Agent | Pregel, thread_id: str,
                   state: dict[str, Any] | None = None) -> list[Interrupt]:
    """The interrupts ``thread_id`` waits on, in the order of the calls that raised them
    (none when ``state``, the result of the last run, was not interrupted)."""
    if state is not None and not state.get("__interrupt__"):
        return []
    if isinstance(runnable, Agent):
        return await runnable.ainterrupts(thread_id)
    if not isinstance(runnable.checkpointer, BaseCheckpointSaver):
        return []  # nothing is saved, so nothing can wait
    config = {"configurable": {"thread_id": thread_id}}
    return list((await runnable.aget_state(config)).interrupts)


def _question(value: Any) -> str:
    """What an interrupt asks, on one line."""
    return value if isinstance(value, str) else json.dumps(value, default=str)


async def _ask(pending: list[Interrupt]) -> dict[str, str] | None:
    """Show every pending interrupt with its id, then ask for each one's answer in turn: the
    answers by interrupt id, or None when the input ends first."""
    console.print(f"[yellow]{len(pending)} question(s) wait for an answer:[/]")
    for n, interrupt in enumerate(pending, 1):
        console.print(f"  [yellow]{n}.[/] {escape(_question(interrupt.value))} "
                      f"[dim](id {interrupt.id})[/]")
    answers = {}
    for n, interrupt in enumerate(pending, 1):
        try:
            answers[interrupt.id] = await asyncio.to_thread(
                console.input, f"[bold yellow]answer {n} ›[/] ")
        except EOFError:
            console.print()
            return None
    return answers


async def _invoke(runnable: Agent | Pregel, input: str | Command, thread_id: str,
                  user: str | None) -> dict[str, Any]:
    """One recorded turn (ponder runs list / show): a message, or answers to interrupts."""
    from ponder.graphs.runs import RunRecorder

    recorder = RunRecorder()
    try:
        if isinstance(runnable, Agent):
            return await recorder.run(runnable.name, runnable, input, thread_id=thread_id,
                                      user_id=user)
        name = runnable.name or "graph"
        async with recorder.recording(name, input, thread_id, user) as (run_id, trace, finish):
            config = {"configurable": {"thread_id": thread_id, "user_id": user},
                      "callbacks": [trace]}
            state = await runnable.ainvoke(_graph_input(input), config)
            finish("interrupted" if state.get("__interrupt__") else "success", state)
            return state
    finally:
        await recorder.aclose()


@app.command()
def chat(
    target: str = typer.Argument(..., help=TARGET_HELP),
    thread: str | None = typer.Option(None, "--thread", help="Continue this thread."),
    model: str | None = typer.Option(None, "--model", help="Override the model: provider:name."),
    user: str | None = typer.Option(None, "--user", help="The user the chat is for."),
) -> None:
    """Chat with TARGET in the terminal, with streamed replies (Ctrl-D or 'exit' to leave)."""
    runnable = load_target(target, model=model)
    thread_id = thread or str(uuid.uuid4())
    name = getattr(runnable, "name", None) or target
    console.print(f"[dim]chatting with {escape(name)} in thread {thread_id}[/]")
    asyncio.run(_chat(runnable, name, thread_id, user))


async def _chat(runnable: Agent | Pregel, name: str, thread_id: str, user: str | None) -> None:
    from ponder.graphs.runs import RunRecorder

    recorder = RunRecorder()  # each turn is a recorded run: ponder runs list / show
    try:
        while True:
            try:
                text = await asyncio.to_thread(console.input, "[bold cyan]you ›[/] ")
            except EOFError:
                console.print()
                return
            if text.strip().lower() in ("exit", "quit"):
                return
            if not text.strip():
                continue
            console.print(f"[bold green]{escape(name)} ›[/] ", end="")
            async with recorder.recording(name, text, thread_id, user) as (_, trace, finish):
                reply = await _stream_turn(runnable, text, thread_id, user, trace)
                # Tools that asked something: every question with its id, an answer for each,
                # and the turn goes on, until none is left.
                while pending := await _pending(runnable, thread_id):
                    console.print()
                    answers = await _ask(pending)
                    if answers is None:  # input ended: the questions stay pending
                        finish("interrupted", {"messages": [AIMessage(reply)]})
                        return
                    console.print(f"[bold green]{escape(name)} ›[/] ", end="")
                    reply = await _stream_turn(runnable, Command(resume=answers), thread_id,
                                               user, trace)
                finish("success", {"messages": [AIMessage(reply)]})
            console.print()
    finally:
        await recorder.aclose()
        if isinstance(runnable, Agent):
            await runnable.aclose()


async def _stream_turn(runnable: Agent | Pregel, input: str | Command, thread_id: str,
                       user: str | None, trace: Any) -> str:
    """Print the reply as it streams, and each tool call and result on a line of its own; the
    text of the reply (text a model wrote before calling a tool is not part of it). ``input``
    is a message, or answers to interrupts."""
    if isinstance(runnable, Agent):
        events = runnable.astream(input, thread_id=thread_id, user_id=user,
                                  stream_mode=STREAM_MODES, config={"callbacks": [trace]})
    else:
        config = {"configurable": {"thread_id": thread_id, "user_id": user},
                  "callbacks": [trace]}
        events = runnable.astream(_graph_input(input), config, stream_mode=STREAM_MODES)
    reply, stream = [], reply_stream(runnable)

    def show(pieces) -> None:
        for piece in pieces:
            console.print(escape(piece.text), end="", soft_wrap=True)
            reply.append(piece.text)

    async for mode, data in events:
        if mode == "messages":
            chunk = data[0]
            if isinstance(chunk, ToolMessage):
                console.print(f"\n  [dim]↳ {escape(chunk.name or 'tool')}: "
                              f"{escape(str(chunk.content)[:200])}[/]")
            elif isinstance(chunk, AIMessageChunk):
                for call in chunk.tool_call_chunks:
                    if call.get("name"):
                        console.print(f"\n  [dim]→ calling {escape(call['name'])}[/]", end="")
        show(stream.feed(mode, data))
    show(stream.end())
    return "".join(reply)


def _graph_input(input: str | Command) -> dict[str, Any] | Command:
    """A graph's input for a message (its ``messages`` channel) or for answers."""
    return input if isinstance(input, Command) else {"messages": [("user", input)]}


@app.command()
def serve(
    targets: list[str] = typer.Argument(..., help="Agents to serve (see TARGET above)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on."),
    port: int = typer.Option(8000, "--port", help="Port to listen on."),
    workers: int = typer.Option(1, "--workers", min=1, help="Worker processes."),
    schedules: bool = typer.Option(False, "--schedules", help="Also fire due schedules and "
                                   "execute background runs, as ponder worker does."),
) -> None:
    """Serve agents over an OpenAI-compatible API (/v1/chat/completions, /v1/models)."""
    import os

    import uvicorn

    from ponder.server.app import SERVE_SCHEDULES_ENV, SERVE_TARGETS_ENV, create_app

    # Errors show before serving.
    app = create_app([load_target(t) for t in targets], run_schedules=schedules)
    console.print(f"serving {', '.join(app.state.served)} on http://{host}:{port}/v1")
    if workers == 1:
        uvicorn.run(app, host=host, port=port, log_level="warning")
    else:
        os.environ[SERVE_TARGETS_ENV] = ",".join(targets)
        os.environ[SERVE_SCHEDULES_ENV] = "1" if schedules else ""
        uvicorn.run("ponder.server.app:app_from_env", factory=True, host=host, port=port,
                    workers=workers, log_level="warning")


runs_app = typer.Typer(help="Recorded runs: status, timings, tokens and a trace of steps.",
                       no_args_is_help=True)
app.add_typer(runs_app, name="runs")


def _stored(store_class: type, method: str, *args: Any, **kwargs: Any) -> Any:
    """Call one method of one of ponder's stores (keys, run records), then close it."""

    async def call():
        store = store_class()
        try:
            return await getattr(store, method)(*args, **kwargs)
        finally:
            await store.aclose()

    return asyncio.run(call())


def _recorded(method: str, *args: Any) -> Any:
    from ponder.graphs.runs import RunRecorder

    return _stored(RunRecorder, method, *args)


@runs_app.command("list")
def runs_list(limit: int = typer.Option(20, "--limit", min=1, help="How many, newest first.")
              ) -> None:
    """The latest runs."""
    from rich.table import Table as RichTable

    table = RichTable("target", "status", "started", "seconds", "tokens", "thread")
    table.add_column("id", no_wrap=True, min_width=20)  # whole, to copy into ponder runs show
    for run in _recorded("list", limit):
        usage = json.loads(run["usage"] or "{}")
        tokens = sum(u["input_tokens"] + u["output_tokens"] for u in usage.values())
        took = f"{run['ended_at'] - run['created_at']:.2f}" if run["ended_at"] else "-"
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(run["created_at"]))
        table.add_row(run["target"], run["status"], started, took, str(tokens),
                      run["thread_id"] or "-", run["id"])
    console.print(table)


@runs_app.command("show")
def runs_show(run_id: str = typer.Argument(..., help="A run id from ponder runs list.")) -> None:
    """One run: its record, and the tree of its steps with latency and tokens."""
    from rich.tree import Tree

    found = _recorded("get", run_id)
    if found is None:
        raise NotFoundError(f"no run has the id {run_id!r}: see ponder runs list")
    run, steps = found
    console.print(f"[bold]{run['id']}[/] {escape(run['target'])} [bold]{run['status']}[/] "
                  f"thread {run['thread_id'] or '-'}")
    if run["error"]:
        console.print(f"[red]{escape(run['error'])}[/]")
    for model, usage in json.loads(run["usage"] or "{}").items():
        console.print(f"  {escape(model)}: {usage['calls']} calls, {usage['input_tokens']} in, "
                      f"{usage['output_tokens']} out")
    tree = Tree("steps")
    branches = {}
    for step in steps:
        tokens = (f", {step['input_tokens']}+{step['output_tokens']} tokens"
                  if step["input_tokens"] is not None else "")
        label = (f"{step['kind']} [bold]{escape(step['name'])}[/] "
                 f"{(step['latency_s'] or 0) * 1000:.1f} ms{tokens}"
                 + (f" [red]{escape(step['error'])}[/]" if step["error"] else ""))
        branches[step["seq"]] = branches.get(step["parent"], tree).add(label)
    console.print(tree)


schedule_app = typer.Typer(help="Scheduled runs: cron, interval or once, run by ponder worker.",
                           no_args_is_help=True)
app.add_typer(schedule_app, name="schedule")


def _scheduler(method: str, *args: Any, **kwargs: Any) -> Any:
    from ponder.graphs.scheduler import Scheduler

    return _stored(Scheduler, method, *args, **kwargs)


def _when(timestamp: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(timestamp)) if timestamp else "-"


@schedule_app.command("add")
def schedule_add(
    name: str = typer.Argument(..., help="A name for the schedule."),
    target: str = typer.Option(..., "--target", help=TARGET_HELP),
    cron: str | None = typer.Option(None, "--cron", help="A cron expression: '0 9 * * 1-5'."),
    tz: str = typer.Option("UTC", "--tz", help="The time zone of --cron or --at."),
    every: str | None = typer.Option(None, "--every", help="An interval: 30s, 5m, 2h, 1d."),
    at: str | None = typer.Option(None, "--at", help="One time, ISO 8601: 2026-12-24T18:00."),
    input: str | None = typer.Option(None, "--input", help="The input, as JSON."),
    thread: str = typer.Option("new", "--thread",
                               help="'new' thread per fire, or one 'persistent' thread."),
    misfire_grace: float | None = typer.Option(
        60.0, "--misfire-grace", help="Seconds a fire may be late and still run."),
    coalesce: bool = typer.Option(True, "--coalesce/--no-coalesce",
                                  help="Run missed fires once, not once each."),
    max_instances: int = typer.Option(1, "--max-instances", min=1,
                                      help="Runs of this schedule at once, at most."),
) -> None:
    """Add a schedule: exactly one of --cron, --every or --at."""
    from ponder.graphs.scheduler import ScheduleError, Trigger, describe

    if sum(option is not None for option in (cron, every, at)) != 1:
        raise ScheduleError("give exactly one of --cron EXPR, --every DURATION or --at TIME")
    trigger = (Trigger.cron(cron, tz) if cron is not None
               else Trigger.every(every) if every is not None else Trigger.at(at, tz))
    try:
        value = json.loads(input) if input is not None else None
    except json.JSONDecodeError as exc:
        raise ScheduleError(f"--input is not JSON ({exc.msg} at character {exc.pos}): quote a "
                            "text as '\"hello\"', or pass an object like '{\"q\": 1}'") from None
    schedule = _scheduler("add", name, target, trigger, input=value, thread=thread,
                          misfire_grace_s=misfire_grace, coalesce=coalesce,
                          max_instances=max_instances)
    console.print(f"added [bold]{escape(name)}[/]: {escape(describe(trigger))}, next "
                  f"{_when(schedule.next_fire_at)}")


@schedule_app.command("list")
def schedule_list() -> None:
    """The schedules, with their next fire times."""
    from rich.table import Table as RichTable

    from ponder.graphs.scheduler import describe

    table = RichTable("name", "target", "when", "next fire", "state", "fires", "skipped")
    for schedule in _scheduler("schedules"):
        table.add_row(schedule.name, schedule.target, describe(schedule.trigger),
                      _when(schedule.next_fire_at), "paused" if schedule.paused else "active",
                      str(schedule.fires), str(schedule.skipped))
    console.print(table)


@schedule_app.command("pause")
def schedule_pause(name: str = typer.Argument(..., help="The schedule.")) -> None:
    """Stop firing (until resume)."""
    _scheduler("pause", name)
    console.print(f"paused {escape(name)}")


@schedule_app.command("resume")
def schedule_resume(name: str = typer.Argument(..., help="The schedule.")) -> None:
    """Fire again, from the next fire time after now."""
    schedule = _scheduler("resume", name)
    console.print(f"resumed {escape(name)}: next {_when(schedule.next_fire_at)}")


@schedule_app.command("remove")
def schedule_remove(name: str = typer.Argument(..., help="The schedule.")) -> None:
    """Delete a schedule (its past runs stay recorded)."""
    _scheduler("remove", name)
    console.print(f"removed {escape(name)}")


@schedule_app.command("run-now")
def schedule_run_now(name: str = typer.Argument(..., help="The schedule.")) -> None:
    """Fire once now, besides the schedule; a worker runs it."""
    fire = _scheduler("run_now", name)
    console.print(f"queued {fire.run_id} on thread {fire.thread_id}")


@app.command()
def worker(
    queue: bool = typer.Option(False, "--queue", help="Take runs from the procrastinate queue "
                               "(Postgres; run as many workers as you like)."),
    concurrency: int = typer.Option(8, "--concurrency", min=1, help="Runs at once."),
    stale: float = typer.Option(10.0, "--stale", help="Seconds without a heartbeat before "
                                "another worker takes a run over."),
) -> None:
    """Fire due schedules and execute background runs until stopped (SIGINT or SIGTERM:
    current runs finish, or are handed back checkpointed)."""
    import signal

    from ponder.graphs.workers import Worker

    async def work() -> None:
        runner = Worker(queue=queue, concurrency=concurrency, stale_s=stale,
                        heartbeat_s=min(1.0, stale / 3))
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, runner.stop)
        errors.print(f"[dim]worker {runner.id} ({'queue' if queue else 'embedded'}) on "
                     f"{runner.url}[/]")
        await runner.run()

    asyncio.run(work())


keys_app = typer.Typer(help="API keys for ponder serve (stored hashed in the database).",
                       no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@keys_app.command("create")
def keys_create(
    name: str = typer.Argument(..., help="What the key is for, e.g. mobile-app."),
    rpm: int | None = typer.Option(None, "--rpm", min=1, help="Requests per minute."),
    tpm: int | None = typer.Option(None, "--tpm", min=1, help="Tokens per minute."),
) -> None:
    """Make a key. It is printed once: store it now."""
    from ponder.server.keys import KeyStore

    key, secret = _stored(KeyStore, "create", name, requests_per_minute=rpm,
                          tokens_per_minute=tpm)
    console.print(f"{key.id}  {escape(key.name)}")
    print(secret)
    errors.print("[dim]shown once: the database keeps only its hash[/]")


@keys_app.command("list")
def keys_list() -> None:
    """The keys, with their limits; revoked ones marked."""
    from rich.table import Table as RichTable

    from ponder.server.keys import KeyStore

    table = RichTable("id", "name", "created", "limits", "status")
    for key in _stored(KeyStore, "list"):
        limits = ", ".join(f"{v} {k}" for k, v in (("rpm", key.requests_per_minute),
                                                   ("tpm", key.tokens_per_minute)) if v)
        created = time.strftime("%Y-%m-%d %H:%M", time.localtime(key.created_at))
        table.add_row(key.id, key.name, created, limits or "-",
                      "revoked" if key.revoked_at else "active")
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: str = typer.Argument(..., help="The id from ponder keys list.")) -> None:
    """Revoke a key: it stops working within seconds."""
    from ponder.server.keys import KeyStore

    _stored(KeyStore, "revoke", key_id)
    console.print(f"revoked {key_id}")


eval_app = typer.Typer(help="Measure reasoning methods on standard data sets.",
                       no_args_is_help=True)
app.add_typer(eval_app, name="eval")


def _print_report(report, as_json: bool, model: str | None) -> None:
    data = {**report.as_dict(), "model": model or Settings.from_env().model}
    if as_json:
        print(json.dumps(data))
        return
    console.print(f"{data['task']} / {data['method']}: accuracy {data['accuracy']:.1%} "
                  f"({data['correct']}/{data['n']}), {data['calls']} calls, "
                  f"{data['total_tokens']} tokens, {data['wall_s']} s")
    for error in data["errors"][:5]:
        errors.print(f"[yellow]{escape(error)}[/]")


@eval_app.command("game24")
def eval_game24(
    model: str | None = typer.Option(None, "--model", help="provider:name (default PONDER_MODEL)"),
    method: str = typer.Option("tot", "--method", help="io, cot, sc or tot"),
    limit: int = typer.Option(10, "--limit", min=1, help="How many puzzles."),
    start: int = typer.Option(900, "--start", min=0, help="First row (the ToT paper: 900)."),
    data: str = typer.Option("game24.csv", "--data", help="The Game of 24 CSV."),
    k: int = typer.Option(5, "--k", min=1, help="Samples for sc."),
    breadth: int = typer.Option(5, "--breadth", min=1, help="ToT breadth b."),
    concurrency: int = typer.Option(8, "--concurrency", min=1, help="Puzzles at once."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Game of 24: accuracy of io, cot, sc or tot (exact arithmetic checks the answers)."""
    from ponder.agents.planning.evaluation import evaluate_game24, load_game24

    puzzles = load_game24(data, start, limit)
    report = asyncio.run(evaluate_game24(chat_model(model), method, puzzles, k=k,
                                         breadth=breadth, concurrency=concurrency))
    _print_report(report, as_json, model)


@eval_app.command("gsm8k")
def eval_gsm8k(
    model: str | None = typer.Option(None, "--model", help="provider:name (default PONDER_MODEL)"),
    method: str = typer.Option("cot", "--method", help="cot, zero-shot-cot or sc"),
    limit: int = typer.Option(50, "--limit", min=1, help="How many problems."),
    start: int = typer.Option(0, "--start", min=0, help="First problem."),
    data: str = typer.Option("gsm8k_test.jsonl", "--data", help="The GSM8K test JSONL."),
    k: int = typer.Option(5, "--k", min=1, help="Paths for sc."),
    concurrency: int = typer.Option(8, "--concurrency", min=1, help="Problems at once."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """GSM8K: accuracy of cot (8-shot), zero-shot-cot or sc against the gold answers."""
    from ponder.agents.planning.evaluation import evaluate_gsm8k, load_gsm8k

    items = load_gsm8k(data, start, limit)
    report = asyncio.run(evaluate_gsm8k(chat_model(model), method, items, k=k,
                                        concurrency=concurrency))
    _print_report(report, as_json, model)


@eval_app.command("sql")
def eval_sql(
    db: str = typer.Option(..., "--db", help="Database URL, e.g. sqlite:///chinook.sqlite"),
    questions: str = typer.Option(..., "--questions", help="JSONL of question and gold sql."),
    model: str | None = typer.Option(None, "--model", help="provider:name (default PONDER_MODEL)"),
    candidates: int = typer.Option(5, "--candidates", min=1, help="SQL samples per question."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Text-to-SQL execution accuracy on your own question/gold-SQL pairs."""
    from ponder.tools.sql.evaluation import evaluate_sql, load_questions

    items = load_questions(questions)
    report = asyncio.run(evaluate_sql(db, items, chat_model(model), candidates=candidates))
    if as_json:
        print(json.dumps(report))
        return
    console.print(f"execution accuracy {report['execution_accuracy']:.1%} "
                  f"({report['correct']}/{report['n']}), {report['calls']} calls, "
                  f"{report['wall_s']} s")


@eval_app.command("retrieval")
def eval_retrieval(
    dataset: str = typer.Option(..., "--dataset", help="A BEIR folder: corpus.jsonl, "
                                "queries.jsonl, qrels/<split>.tsv."),
    split: str = typer.Option("test", "--split", help="The qrels split, e.g. train or test."),
    mode: str = typer.Option("hybrid", "--mode", help="sparse, dense or hybrid"),
    embeddings: str | None = typer.Option(None, "--embeddings", help="provider:model, or local "
                                          "(the bundled all-MiniLM-L6-v2); default "
                                          "PONDER_EMBEDDINGS"),
    database: str | None = typer.Option(None, "--database", help="Keep the index in this "
                                        "database URL (a second run re-embeds nothing); "
                                        "default: a throwaway SQLite file."),
    fusion: str = typer.Option("weighted", "--fusion", help="Hybrid fusion: weighted or rrf."),
    weights: str | None = typer.Option(None, "--weights", help="Hybrid weights "
                                       "SPARSE,DENSE (default 1,0.7)"),
    chunk_size: int = typer.Option(512, "--chunk-size", min=16, help="Tokens per chunk."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Retrieval quality and speed on a BEIR data set: nDCG@10, MRR@10, Recall@100, query
    latency (without query embedding) and ingestion throughput (without embedding)."""
    from ponder.memory.knowledge.evaluation import run_beir
    from ponder.models import embeddings as make_embeddings

    _check_mode(mode)
    if fusion not in ("weighted", "rrf"):
        raise ConfigurationError(f"--fusion {fusion!r}: use weighted or rrf")
    options: dict[str, Any] = {"fusion": fusion}
    if weights:
        options["weights"] = _weights(weights)
    spec = embeddings or Settings.from_env().embeddings
    model = make_embeddings(spec or "local") if spec or mode != "sparse" else None
    report = asyncio.run(run_beir(dataset, split, mode, embeddings=model, url=database,
                                  chunk_size=chunk_size, **options))
    if as_json:
        print(json.dumps(report))
        return
    console.print(f"{report['dataset']} {report['split']} / {mode}: nDCG@10 {report['ndcg@10']}"
                  f", MRR@10 {report['mrr@10']}, Recall@100 {report['recall@100']} over "
                  f"{report['queries']} queries; latency p50 {report['latency_p50_ms']} ms, p99 "
                  f"{report['latency_p99_ms']} ms; ingestion {report['ingest_chunks_per_s']} "
                  f"chunks/s")
    for language, figures in report.get("by_language", {}).items():
        console.print(f"  {language}: nDCG@10 {figures['ndcg@10']}, MRR@10 {figures['mrr@10']}, "
                      f"Recall@100 {figures['recall@100']} over {figures['queries']} queries")
    if report["documents_skipped"]:
        errors.print(f"[yellow]{report['documents_skipped']} of {report['documents']} documents "
                     f"skipped (empty or unreadable), e.g. {escape(report['skipped'][0])}[/]")


def _check_mode(mode: str) -> None:
    if mode not in ("sparse", "dense", "hybrid"):
        raise ConfigurationError(f"--mode {mode!r}: use sparse, dense or hybrid")


def _weights(text: str) -> tuple[float, float]:
    try:
        sparse, dense = (float(w) for w in text.split(","))
    except ValueError:
        raise ConfigurationError(f"--weights {text!r}: write two numbers, e.g. 1,0.7") from None
    return sparse, dense


kb_app = typer.Typer(help="The knowledge base: documents agents recall from (RAG).",
                     no_args_is_help=True)
app.add_typer(kb_app, name="kb")
KB_NAME = typer.Option("default", "--name", help="Which knowledge base in the database.")
KB_EMBEDDINGS = typer.Option(None, "--embeddings", help="provider:model or local; default "
                             "PONDER_EMBEDDINGS, else the model the knowledge base was built "
                             "with, else none (word search only).")


def _knowledge_base(name: str, embeddings: str | None, **options: Any):
    """The knowledge base ``name``, embedding with the model it was built with by default."""
    from ponder.memory.knowledge import KnowledgeBase
    from ponder.memory.knowledge.base import open_store

    spec = embeddings or Settings.from_env().embeddings
    if spec is None:
        async def stored_model():
            store = open_store(Settings.from_env().database_url, name)
            try:
                return await store.embedding_model()
            finally:
                await store.aclose()

        found = asyncio.run(stored_model())
        spec = found[0] if found and ":" in found[0] else None
    return KnowledgeBase(name=name, embeddings=spec, **options)


def _on_knowledge_base(kb, work) -> Any:
    async def call():
        try:
            return await work(kb)
        finally:
            await kb.aclose()

    return asyncio.run(call())


def _filter(text: str | None) -> dict | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigurationError(f"--filter is not JSON ({exc.msg}): write e.g. "
                                 f"'{{\"topic\": \"billing\"}}'") from None
    if not isinstance(value, dict):
        raise ConfigurationError("--filter must be a JSON object, e.g. '{\"year\": 2024}'")
    return value


@kb_app.command("add")
def kb_add(
    paths: list[str] = typer.Argument(..., help="Files or folders (.txt .md .html .pdf)."),
    name: str = KB_NAME,
    embeddings: str | None = KB_EMBEDDINGS,
    meta: list[str] = typer.Option([], "--meta", help="KEY=VALUE metadata for every document "
                                   "(repeatable); filter on it in search."),
    chunk_size: int = typer.Option(256, "--chunk-size", min=16, help="Tokens per chunk."),
    overlap: int = typer.Option(32, "--overlap", min=0, help="Tokens shared by neighbours."),
    skip_errors: bool = typer.Option(False, "--skip-errors", help="Report unreadable or empty "
                                     "files and go on, instead of stopping."),
) -> None:
    """Ingest documents; unchanged ones are skipped, changed ones replaced."""
    from rich.progress import Progress

    from ponder.memory.knowledge import Chunker

    metadata = {}
    for item in meta:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigurationError(f"--meta {item!r}: write KEY=VALUE, e.g. --meta team=support")
        metadata[key] = value
    if overlap >= chunk_size:
        raise ConfigurationError(f"--overlap {overlap} must be smaller than --chunk-size "
                                 f"{chunk_size}")
    kb = _knowledge_base(name, embeddings, chunker=Chunker(chunk_size, overlap))
    with Progress(console=errors, transient=True) as progress:
        task = progress.add_task("ingesting", total=None)
        report = _on_knowledge_base(kb, lambda kb: kb.add(
            paths, metadata=metadata, skip_errors=skip_errors,
            progress=lambda done, total: progress.update(task, completed=done, total=total)))
    for error in report.errors:
        errors.print(f"[yellow]skipped:[/] {escape(error)}", highlight=False)
    console.print(f"{report.added} added, {report.updated} updated, {report.unchanged} unchanged"
                  f"; {report.chunks} chunks in {report.seconds:.2f} s")


@kb_app.command("search")
def kb_search(
    query: str = typer.Argument(..., help="What to look for."),
    k: int = typer.Option(5, "-k", "--k", min=1, help="How many results."),
    mode: str | None = typer.Option(None, "--mode", help="sparse, dense or hybrid (default: "
                                    "hybrid with embeddings, else sparse)"),
    filter: str | None = typer.Option(None, "--filter", help='Metadata filter as JSON, e.g. '
                                      '\'{"team": "support"}\''),
    name: str = KB_NAME,
    embeddings: str | None = KB_EMBEDDINGS,
    as_json: bool = typer.Option(False, "--json", help="Print JSON lines."),
) -> None:
    """The best chunks for a query."""
    if mode:
        _check_mode(mode)
    where = _filter(filter)
    kb = _knowledge_base(name, embeddings)
    hits = _on_knowledge_base(kb, lambda kb: kb.search(query, k, mode=mode, filter=where))
    for rank, hit in enumerate(hits, 1):
        chunk = hit.chunk
        if as_json:
            print(json.dumps({"rank": rank, "score": hit.score, "source": chunk.source,
                              "title": chunk.title, "position": chunk.position,
                              "text": chunk.text, "metadata": chunk.metadata}))
        else:
            console.print(f"[bold]{rank}.[/] {escape(chunk.title or chunk.source)} "
                          f"[dim]({escape(chunk.source)} #{chunk.position}, score "
                          f"{hit.score:.3f})[/]\n   {escape(chunk.text[:300])}")
    if not hits and not as_json:
        console.print("no results")


@kb_app.command("delete")
def kb_delete(
    source: list[str] = typer.Option([], "--source", help="A source (file path or id) to "
                                     "remove; repeatable."),
    filter: str | None = typer.Option(None, "--filter", help="Remove every source with a "
                                      "chunk matching this metadata filter (JSON)."),
    name: str = KB_NAME,
) -> None:
    """Remove sources and their chunks."""
    where = _filter(filter)
    if not source and where is None:
        raise ConfigurationError("say what to delete: --source PATH or --filter JSON")
    kb = _knowledge_base(name, None)
    deleted = _on_knowledge_base(kb, lambda kb: kb.delete(source=source, filter=where))
    console.print(f"deleted {deleted} source{'s' if deleted != 1 else ''}")


@kb_app.command("stats")
def kb_stats(name: str = KB_NAME,
             as_json: bool = typer.Option(False, "--json", help="Print one JSON object.")
             ) -> None:
    """Sources, chunks and the embedding model of a knowledge base."""
    from ponder.memory.knowledge import KnowledgeBase

    stats = _on_knowledge_base(KnowledgeBase(name=name), lambda kb: kb.stats())
    if as_json:
        print(json.dumps(stats))
        return
    model = (f"{stats['embedding_model']} ({stats['dimensions']} dimensions)"
             if stats["embedding_model"] else "none (word search only)")
    console.print(f"knowledge base {stats['name']} ({stats['backend']}): {stats['sources']} "
                  f"sources, {stats['chunks']} chunks; embeddings: {model}; metadata fields: "
                  f"{', '.join(stats['fields']) or 'none'}")


memory_app = typer.Typer(help="Long-term memories agents keep about users.",
                         no_args_is_help=True)
app.add_typer(memory_app, name="memory")
USER = typer.Option(..., "--user", help="Whose memories.")
MEMORY_NAME = typer.Option("default", "--name", help="The long-term memory's name.")
MEMORY_EMBEDDINGS = typer.Option(None, "--embeddings", help="provider:model or local (default "
                                 "PONDER_EMBEDDINGS): the model the memories were stored with.")


def _on_memory(name: str, embeddings: str | None, work) -> Any:
    from ponder.memory.longterm import LongTermMemory

    async def call():
        memory = LongTermMemory(name=name, embeddings=embeddings)
        try:
            return await work(memory)
        finally:
            await memory.aclose()

    return asyncio.run(call())


def _print_memories(memories, as_json: bool) -> None:
    for m in memories:
        if as_json:
            print(json.dumps({"key": m.key, **m.value(), "score": m.score}))
        else:
            score = f", score {m.score:.2f}" if m.score is not None else ""
            state = "" if m.status == "active" else f", {m.status} {m.valid_to}"
            console.print(f"[bold]{m.key}[/] [dim]({m.kind}, importance {m.importance:g}"
                          f"{score}{state})[/]\n   {escape(m.text)}")
    if not memories and not as_json:
        console.print("no memories")


@memory_app.command("list")
def memory_list(user: str = USER, name: str = MEMORY_NAME,
                embeddings: str | None = MEMORY_EMBEDDINGS,
                everything: bool = typer.Option(False, "--all", help="Superseded versions too."),
                as_json: bool = typer.Option(False, "--json", help="Print JSON lines.")) -> None:
    """A user's memories, oldest first."""
    memories = _on_memory(name, embeddings, lambda m: m.list(user, include_superseded=everything))
    _print_memories(memories, as_json)


@memory_app.command("search")
def memory_search(query: str = typer.Argument(..., help="What to look for."),
                  user: str = USER, k: int = typer.Option(5, "-k", "--k", min=1),
                  name: str = MEMORY_NAME, embeddings: str | None = MEMORY_EMBEDDINGS,
                  as_json: bool = typer.Option(False, "--json", help="Print JSON lines.")
                  ) -> None:
    """A user's best memories for a query (recency + importance + relevance)."""
    _print_memories(_on_memory(name, embeddings, lambda m: m.search(user, query, k)), as_json)


@memory_app.command("delete")
def memory_delete(key: str = typer.Argument(..., help="A key from ponder memory list."),
                  user: str = USER, name: str = MEMORY_NAME,
                  embeddings: str | None = MEMORY_EMBEDDINGS) -> None:
    """Forget one memory of a user for good."""
    _on_memory(name, embeddings, lambda m: m.delete(user, key))
    console.print(f"deleted {key}")


@app.command()
def demo() -> None:
    """Run the example agent end to end: profile, knowledge, a tool, a persisted thread."""
    from ponder.demo import QUESTIONS, demo_agent

    settings = Settings.from_env()
    if settings.model:
        console.print(f"Using the configured model {settings.model} (PONDER_MODEL).")
        agent = demo_agent(chat_model(settings.model))
    else:
        console.print("No model is configured (PONDER_MODEL is not set): running on the offline "
                      "scripted model. Set PONDER_MODEL=openai:gpt-4o-mini to use a real one.")
        agent = demo_agent()
    thread_id = f"demo-{uuid.uuid4().hex[:8]}"
    console.print(f"Agent [bold]{agent.name}[/]: {escape(agent.profile.role)}; knowledge: the "
                  f"shop handbook; tools: calculator; thread {thread_id} in "
                  f"{settings.database_url}\n")
    asyncio.run(_demo(agent, QUESTIONS, thread_id))


async def _demo(agent: Agent, questions: tuple[str, ...], thread_id: str) -> None:
    try:
        with track_usage() as usage:
            for question in questions:
                console.print(f"[bold cyan]you ›[/] {escape(question)}")
                async for update in agent.astream(question, thread_id=thread_id):
                    for node, change in update.items():
                        _show_step(node, change or {})
                console.print()
        snapshot = await agent.aget_state(thread_id)
        console.print(f"[dim]The thread holds {len(snapshot.values['messages'])} messages, "
                      f"persisted; {usage.calls} model calls, {usage.total_tokens} tokens. "
                      f"Continue it: ponder chat ponder.demo:demo_agent --thread {thread_id}[/]")
    finally:
        await agent.aclose()


def _show_step(node: str, change: dict[str, Any]) -> None:
    if node == "recall":
        found = (change.get("context") or "nothing").split("\n")[0]
        console.print(f"  [dim]recall  ↳ {escape(found[:90])}…[/]")
    for message in change.get("messages", []):
        if isinstance(message, AIMessage) and message.tool_calls:
            for call in message.tool_calls:
                args = escape(json.dumps(call["args"]))
                console.print(f"  [dim]act     → {call['name']}({args})[/]")
        elif isinstance(message, ToolMessage):
            console.print(f"  [dim]tools   ↳ {escape(str(message.content))}[/]")
        elif isinstance(message, AIMessage):
            console.print(f"[bold green]agent ›[/] {escape(message.text)}")


def main() -> None:
    try:
        app()  # standalone: typer reports usage errors and exits by itself
    except PonderError as exc:  # user mistakes and failures outside our control
        _fail(str(exc))
    except ModuleNotFoundError as exc:
        # Wherever ponder (or a library it calls) imports a module of an optional extra.
        if (message := missing_extra(exc)) is None:
            raise  # not an optional extra: a broken install, or a target's own import
        _fail(message)


def _fail(message: str) -> None:
    errors.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    sys.exit(2)


if __name__ == "__main__":
    main()
