"""`ponder run` and `ponder chat`: one turn, or a conversation, with an agent or graph; interrupts
answered by id."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import typer
from langchain_core.messages import AIMessage, AIMessageChunk, ToolMessage
from langgraph.types import Command, Interrupt
from rich.markup import escape

from ponder.agents import approval
from ponder.agents.agent import final_text, resume_command, turn_usage
from ponder.agents.reply import STREAM_MODES
from ponder.cli.common import (
    TARGET_HELP,
    app,
    console,
    errors,
)
from ponder.config import ConfigurationError
from ponder.graphs.targets import Target, load_target
from ponder.models import track_usage


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
    """Run one turn of TARGET and print the reply (a typed answer as JSON). When tools interrupt
    to ask something, each question is shown with its id and its answer asked for in turn (not
    with --json)."""
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
            await runnable.aclose()
        if usage.calls:  # every LangChain model call of the turn, planners' included
            return state, usage.as_dict(), pending
        # A graph whose nodes write messages without LangChain model calls: their metadata.
        return state, turn_usage(state.get("messages", [])), pending

    state, usage, pending = asyncio.run(turn())
    interrupts = [{"id": i.id, "value": i.value} for i in pending]
    typed = state.get("structured_response")  # an agent's typed answer, as JSON
    if as_json:
        print(json.dumps({"thread_id": thread_id,
                          "output": final_text(state) if typed is None else typed,
                          "interrupts": interrupts, "usage": usage}, default=str))
        return
    if pending:
        errors.print(f"[yellow]{len(pending)} question(s) wait for an answer:[/] ponder run "
                     f"{escape(target)} --thread {thread_id} --resume "
                     f"'{escape(json.dumps({i.id: '...' for i in pending}))}'")
    elif typed is not None:
        print(json.dumps(typed, indent=2, ensure_ascii=False, default=str))
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


async def _pending(runnable: Target, thread_id: str,
                   state: dict[str, Any] | None = None) -> list[Interrupt]:
    """The interrupts ``thread_id`` waits on, in the order of the calls that raised them
    (none when ``state``, the result of the last run, was not interrupted)."""
    if state is not None and not state.get("__interrupt__"):
        return []
    return await runnable.ainterrupts(thread_id)


def _question(value: Any) -> str:
    """What an interrupt asks, on one line."""
    if approval.is_request(value):
        asked = (f"approve {value['tool']}({json.dumps(value['args'], default=str)})? "
                 f"{value['description'].splitlines()[0] if value['description'] else ''}")
        return f"{asked} ({value['error']})" if value.get("error") else asked
    return value if isinstance(value, str) else json.dumps(value, default=str)


_CHOICES = {"y": "approve", "yes": "approve", "approve": "approve", "a": "always",
            "always": "always", "e": "edit", "edit": "edit", "n": "reject", "no": "reject",
            "r": "reject", "reject": "reject"}


async def _decide(n: int) -> dict[str, Any]:
    """A person's decision on the ``n``th question, a tool approval request, asked until it is
    one (EOFError when the input ends)."""
    prompt = f"[bold yellow]answer {n} ›[/] [dim]y(es) / a(lways) / e(dit) / n(o)[/] "
    while (choice := _CHOICES.get(
            (await asyncio.to_thread(console.input, prompt)).strip().lower())) is None:
        console.print("  [yellow]answer y to approve the call, a to approve it and every call "
                      "of this tool in this thread, e to change its arguments, n to reject it[/]")
    if choice == "always":
        return {"decision": "approve", "always": True}
    if choice == "reject":
        message = (await asyncio.to_thread(
            console.input, "  [yellow]why (for the model; empty: no reason) ›[/] ")).strip()
        return {"decision": "reject", **({"message": message} if message else {})}
    if choice == "approve":
        return {"decision": "approve"}
    while True:
        text = await asyncio.to_thread(console.input, "  [yellow]arguments (JSON) ›[/] ")
        try:
            args = json.loads(text)
        except ValueError as exc:
            console.print(f"  [yellow]that is not JSON ({escape(str(exc))}): try again[/]")
            continue
        if isinstance(args, dict):
            return {"decision": "edit", "args": args}
        console.print("  [yellow]the arguments are a JSON object, {\"name\": value, ...}[/]")


async def _ask(pending: list[Interrupt]) -> dict[str, Any] | None:
    """Show every pending interrupt with its id, then ask for each one's answer in turn (a
    tool approval request: approve, always, edit or reject): the answers by interrupt id, or
    None when the input ends first."""
    console.print(f"[yellow]{len(pending)} question(s) wait for an answer:[/]")
    for n, interrupt in enumerate(pending, 1):
        console.print(f"  [yellow]{n}.[/] {escape(_question(interrupt.value))} "
                      f"[dim](id {interrupt.id})[/]")
    answers = {}
    for n, interrupt in enumerate(pending, 1):
        try:
            if approval.is_request(interrupt.value):
                answers[interrupt.id] = await _decide(n)
                continue
            answers[interrupt.id] = await asyncio.to_thread(
                console.input, f"[bold yellow]answer {n} ›[/] ")
        except EOFError:
            console.print()
            return None
    return answers


async def _invoke(runnable: Target, input: str | Command, thread_id: str,
                  user: str | None) -> dict[str, Any]:
    """One recorded turn (ponder runs list / show): a message, or answers to interrupts."""
    from ponder.graphs.runs import RunRecorder

    recorder = RunRecorder()
    try:
        return await recorder.run(runnable.name or "graph", runnable, input,
                                  thread_id=thread_id, user_id=user)
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


async def _chat(runnable: Target, name: str, thread_id: str, user: str | None) -> None:
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
        await runnable.aclose()


async def _stream_turn(runnable: Target, input: str | Command, thread_id: str,
                       user: str | None, trace: Any) -> str:
    """Print the reply as it streams, and each tool call and result on a line of its own; the
    text of the reply (text a model wrote before calling a tool is not part of it). ``input``
    is a message, or answers to interrupts."""
    events = runnable.astream(input, thread_id=thread_id, user_id=user,
                              stream_mode=STREAM_MODES, config={"callbacks": [trace]})
    reply, stream = [], runnable.reply_stream()

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
