"""`ponder schedule`: cron, interval and one-time schedules."""

from __future__ import annotations

import json
import time
from typing import Any

import typer
from rich.markup import escape

from ponder.cli.common import (
    TARGET_HELP,
    app,
    console,
    stored,
)

schedule_app = typer.Typer(help="Scheduled runs: cron, interval or once, run by ponder worker.",
                           no_args_is_help=True)
app.add_typer(schedule_app, name="schedule")


def _scheduler(method: str, *args: Any, **kwargs: Any) -> Any:
    from ponder.graphs.scheduler import Scheduler

    return stored(Scheduler, method, *args, **kwargs)


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
    budget_usd: float | None = typer.Option(
        None, "--budget-usd", help="US dollars all its runs together may spend on model calls "
                                   "(priced by genai-prices); a run that would go over ends "
                                   "with an error."),
) -> None:
    """Add a schedule: exactly one of --cron, --every or --at."""
    from ponder.graphs.scheduler import ScheduleError, Trigger, describe
    from ponder.models import Budget

    budget = None
    if budget_usd is not None:
        try:
            budget = Budget(usd=budget_usd)
        except ValueError:
            raise ScheduleError(f"--budget-usd must be a number of dollars, 0 or more, not "
                                f"{budget_usd:g}") from None
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
                          max_instances=max_instances, budget=budget)
    console.print(f"added [bold]{escape(name)}[/]: {escape(describe(trigger))}, next "
                  f"{_when(schedule.next_fire_at)}"
                  + (f", budget {escape(str(budget))}" if budget else ""))


@schedule_app.command("list")
def schedule_list() -> None:
    """The schedules, with their next fire times."""
    from rich.table import Table as RichTable

    from ponder.graphs.scheduler import describe

    table = RichTable("name", "target", "when", "next fire", "state", "fires", "skipped",
                      "budget")
    for schedule in _scheduler("schedules"):
        table.add_row(schedule.name, schedule.target, describe(schedule.trigger),
                      _when(schedule.next_fire_at), "paused" if schedule.paused else "active",
                      str(schedule.fires), str(schedule.skipped),
                      str(schedule.budget) if schedule.budget else "-")
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
