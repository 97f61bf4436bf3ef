"""`ponder runs`: recorded runs, their steps, timings and tokens."""

from __future__ import annotations

import time
from typing import Any

import typer
from rich.markup import escape

from ponder.cli.common import (
    app,
    console,
    stored,
)
from ponder.errors import NotFoundError

runs_app = typer.Typer(help="Recorded runs: status, timings, tokens and a trace of steps.",
                       no_args_is_help=True)
app.add_typer(runs_app, name="runs")


def _recorded(method: str, *args: Any) -> Any:
    from ponder.graphs.runs import RunRecorder

    return stored(RunRecorder, method, *args)


@runs_app.command("list")
def runs_list(limit: int = typer.Option(20, "--limit", min=1, help="How many, newest first.")
              ) -> None:
    """The latest runs."""
    from rich.table import Table as RichTable

    table = RichTable("target", "status", "started", "seconds", "tokens", "thread")
    table.add_column("id", no_wrap=True, min_width=20)  # whole, to copy into ponder runs show
    for run in _recorded("list", limit):
        tokens = sum(u["input_tokens"] + u["output_tokens"] for u in run.usage.values())
        took = f"{run.ended_at - run.created_at:.2f}" if run.ended_at else "-"
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(run.created_at))
        table.add_row(run.target, run.status, started, took, str(tokens),
                      run.thread_id or "-", run.id)
    console.print(table)


@runs_app.command("show")
def runs_show(run_id: str = typer.Argument(..., help="A run id from ponder runs list.")) -> None:
    """One run: its record, and the tree of its steps with latency and tokens."""
    from rich.tree import Tree

    found = _recorded("get", run_id)
    if found is None:
        raise NotFoundError(f"no run has the id {run_id!r}: see ponder runs list")
    run, steps = found
    console.print(f"[bold]{run.id}[/] {escape(run.target)} [bold]{run.status}[/] "
                  f"thread {run.thread_id or '-'}")
    if run.error:
        console.print(f"[red]{escape(run.error)}[/]")
    for model, usage in run.usage.items():
        cost = f", ${usage['cost_usd']:.6f}" if usage.get("cost_usd") is not None else ""
        console.print(f"  {escape(model)}: {usage['calls']} calls, {usage['input_tokens']} in, "
                      f"{usage['output_tokens']} out{cost}")
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
