"""Schedules, stored in the one database: when a target runs, with what input, on which thread.

A schedule's trigger is a cron expression in a time zone, an interval, or one moment. Workers
(``ponder.graphs.workers``) call ``Scheduler.claim_due`` a few times a second; it turns the fires
that have come due into pending runs. A fire is claimed by moving the schedule's
``next_fire_at`` with a compare-and-swap in the same transaction that writes its runs, and a
unique key on (schedule, fire time) backs it up, so however many workers poll, each fire runs
once.

- **misfire grace**: a fire found more than ``misfire_grace_s`` late (the workers were down) is
  dropped rather than run late;
- **coalesce**: of several missed fires, only the latest runs;
- **max instances**: a fire is skipped while the schedule has that many runs pending or running.

Cron follows cron's rules across daylight-saving changes (cronsim): a time that does not exist
(the skipped hour) fires at the first minute after the change; a time that exists twice fires
once, unless the expression names every hour.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import Boolean, Column, Float, Integer, String, Table, Text, func, select, update

from ponder.agents.agent import Agent
from ponder.config import ConfigurationError
from ponder.db.tables import Tables
from ponder.errors import NotFoundError
from ponder.graphs.runs import RunRecorder, metadata, runs_table
from ponder.graphs.targets import load_target
from ponder.models import Budget
from ponder.models.budget_store import BudgetStore

log = logging.getLogger("ponder.scheduler")

schedules_table = Table(
    "ponder_schedules", metadata,
    Column("name", String(200), primary_key=True),
    Column("target", String(500), nullable=False),
    Column("kind", String(10), nullable=False),        # cron, interval, once
    Column("expr", String(200), nullable=False),       # the expression, seconds, or ISO time
    Column("tz", String(64), nullable=False),
    Column("start_at", Float, nullable=True),          # an interval's first fire
    Column("input", Text, nullable=True),              # JSON
    Column("thread", String(20), nullable=False),      # "new" per fire, or "persistent"
    Column("on_thread", String(200), nullable=True),   # every fire on this thread, when set
    Column("misfire_grace_s", Float, nullable=True),   # None: any lateness is fine
    Column("coalesce", Boolean, nullable=False),
    Column("max_instances", Integer, nullable=False),
    Column("paused", Boolean, nullable=False),
    Column("next_fire_at", Float, nullable=True, index=True),  # None: no more fires
    Column("created_at", Float, nullable=False),
    Column("fires", Integer, nullable=False, default=0),
    Column("skipped", Integer, nullable=False, default=0),     # misfired or over max_instances
    # JSON: a Budget for all the schedule's runs together (ponder_budgets, "schedule:NAME")
    Column("budget", Text, nullable=True),
)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}$")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d)$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_MAX_CATCH_UP = 10_000  # missed fires counted before the rest are simply dropped


class ScheduleError(ConfigurationError):
    """A schedule that cannot be stored as given (what was wrong, and what to do)."""


def parse_duration(text: str) -> float:
    """``90s``, ``5m``, ``1.5h``, ``2d``, ``250ms`` -> seconds."""
    match = _DURATION.match(text.strip().lower())
    if not match or float(match.group(1)) <= 0:
        raise ScheduleError(f"{text!r} is not a duration: write a positive number with a unit, "
                            "e.g. 30s, 5m, 2h or 1d")
    return float(match.group(1)) * _UNITS[match.group(2)]


def _zone(tz: str) -> ZoneInfo:
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(f"{tz!r} is not a time zone: use an IANA name such as UTC, "
                            "Europe/Berlin or America/New_York") from None


@dataclass(frozen=True)
class Trigger:
    """When a schedule fires: ``kind`` cron (``expr`` in ``tz``), interval (``expr`` seconds
    from ``start``) or once (``expr`` an ISO time)."""

    kind: str
    expr: str
    tz: str = "UTC"
    start: float = 0.0

    @classmethod
    def cron(cls, expr: str, tz: str = "UTC") -> Trigger:
        """A cron trigger: five fields, read in the time zone ``tz``.

        Raises ScheduleError for an invalid expression or an unknown time zone.
        """
        from cronsim import CronSim, CronSimError

        _zone(tz)
        try:
            CronSim(expr, datetime.now(UTC))
        except CronSimError as exc:
            raise ScheduleError(f"{expr!r} is not a cron expression ({exc}): use five fields, "
                                "minute hour day-of-month month day-of-week, e.g. '0 9 * * 1-5'"
                                ) from None
        return cls("cron", expr, tz)

    @classmethod
    def every(cls, duration: str | float, start: float | None = None) -> Trigger:
        """Every ``duration``, the first fire at ``start`` (default: one interval from now)."""
        seconds = parse_duration(duration) if isinstance(duration, str) else float(duration)
        if not seconds > 0:
            raise ScheduleError(f"an interval must be positive, not {duration!r}")
        return cls("interval", repr(seconds), start=time.time() + seconds if start is None
                   else start)

    @classmethod
    def at(cls, moment: str | datetime, tz: str = "UTC") -> Trigger:
        """A one-time trigger at ``moment`` (a datetime or ISO 8601 text; naive times are in
        ``tz``).

        Raises ScheduleError for text that is not a time or an unknown time zone.
        """
        zone = _zone(tz)
        if isinstance(moment, str):
            try:
                moment = datetime.fromisoformat(moment)
            except ValueError:
                raise ScheduleError(f"{moment!r} is not a time: use ISO 8601, e.g. "
                                    "2026-12-24T18:00 or 2026-12-24T18:00+01:00") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=zone)
        return cls("once", moment.astimezone(UTC).isoformat(), tz)

    def next_after(self, after: float) -> float | None:
        """The first fire time strictly after ``after`` (epoch seconds), or None."""
        if self.kind == "once":
            moment = datetime.fromisoformat(self.expr).timestamp()
            return moment if moment > after else None
        if self.kind == "interval":  # start, start + every, ...: no drift from late fires
            every = float(self.expr)
            if after < self.start:
                return self.start
            return self.start + (math.floor((after - self.start) / every) + 1) * every
        from cronsim import CronSim

        zone = _zone(self.tz)
        return next(CronSim(self.expr, datetime.fromtimestamp(after, zone))).timestamp()


@dataclass
class Schedule:
    """A stored schedule: the target it runs with ``input``, its trigger, and its state.

    ``thread`` is "new" (a thread per fire) or "persistent" (one thread); a fire more than
    ``misfire_grace_s`` seconds late is skipped (None: never); with ``coalesce`` only the latest
    of several missed fires runs; a fire is skipped while ``max_instances`` runs are pending or
    running. ``next_fire_at`` is epoch seconds (None: no more fires); ``fires`` and ``skipped``
    count runs started and fires skipped. ``budget`` limits what all its runs together spend
    (shared by every worker through the database; it starts again when the schedule is
    added anew).
    """
    name: str
    target: str
    trigger: Trigger
    input: Any = None
    thread: str = "new"
    misfire_grace_s: float | None = 60.0
    coalesce: bool = True
    max_instances: int = 1
    paused: bool = False
    next_fire_at: float | None = None
    fires: int = 0
    skipped: int = 0
    on_thread: str | None = None
    budget: Budget | None = None

    @classmethod
    def from_row(cls, row: Any) -> Schedule:
        """The schedule in a row of the schedules table."""
        return cls(row.name, row.target,
                   Trigger(row.kind, row.expr, row.tz, row.start_at or 0.0),
                   json.loads(row.input) if row.input else None, row.thread,
                   row.misfire_grace_s, row.coalesce, row.max_instances, row.paused,
                   row.next_fire_at, row.fires, row.skipped, row.on_thread,
                   Budget.from_dict(json.loads(row.budget)) if row.budget else None)

    def as_dict(self) -> dict[str, Any]:
        """The schedule as JSON-ready data, its trigger as {"kind", "expr", "tz"}."""
        data = asdict(self)
        data["trigger"] = {"kind": self.trigger.kind, "expr": self.trigger.expr,
                           "tz": self.trigger.tz}
        data["budget"] = self.budget.as_dict() if self.budget else None
        return data

    @property
    def scope(self) -> str:
        """Where the schedule's spending is kept in ``ponder_budgets``."""
        return f"schedule:{self.name}"

    def thread_id(self) -> str:
        """The thread of a fire: ``on_thread`` when set, "schedule:NAME" when persistent, else
        a new "schedule:NAME:xxxx" id."""
        if self.on_thread:
            return self.on_thread
        return (f"schedule:{self.name}" if self.thread == "persistent"
                else f"schedule:{self.name}:{uuid.uuid4().hex[:12]}")


@dataclass(frozen=True)
class Fire:
    """A run a schedule's fire created."""

    run_id: str
    schedule: str
    target: str
    scheduled_for: float
    thread_id: str


class Scheduler(Tables):
    """The schedules in the database at ``url`` (default ``PONDER_DATABASE_URL``), and
    ``runs``, the RunRecorder of their runs (on the same engine: a fire and its runs are
    written in one transaction)."""

    metadata = metadata

    def __init__(self, url: str | None = None) -> None:
        super().__init__(url)
        self.runs = RunRecorder(share=self)
        self.budgets = BudgetStore(self.url)  # what schedules and runs spent

    async def aclose(self) -> None:
        """Close the engines (they reopen when used again)."""
        await self.budgets.aclose()
        await super().aclose()

    async def add(self, name: str, target: str, trigger: Trigger, *, input: Any = None,
                  thread: str = "new", misfire_grace_s: float | None = 60.0,
                  coalesce: bool = True, max_instances: int = 1, replace: bool = False,
                  check: bool = True, on_thread: str | None = None,
                  budget: Budget | None = None) -> Schedule:
        """Store a schedule; everything is checked before anything is written. ``check`` loads
        the target once to prove it exists. ``on_thread`` runs every fire on that thread.
        ``budget`` limits all its runs together (spending starts at 0)."""
        if budget is not None and not isinstance(budget, Budget):
            raise ScheduleError(f"budget must be a ponder.Budget, e.g. Budget(usd=1.0), not "
                                f"{budget!r}")
        if not isinstance(name, str) or not _NAME.match(name):
            raise ScheduleError(f"schedule name {name!r} is not valid: use 1-200 letters, "
                                "digits, '_', '-', '.' or ':', starting with a letter or digit")
        if thread not in ("new", "persistent"):
            raise ScheduleError(f"thread must be 'new' (a new thread per fire) or 'persistent' "
                                f"(one thread for every fire), not {thread!r}")
        if max_instances < 1:
            raise ScheduleError(f"max_instances must be at least 1, not {max_instances}")
        if misfire_grace_s is not None and misfire_grace_s < 0:
            raise ScheduleError(f"misfire_grace_s must be positive, not {misfire_grace_s}")
        try:
            encoded = json.dumps(input)
        except (TypeError, ValueError) as exc:
            raise ScheduleError(f"the input of a schedule must be JSON: {exc}") from None
        if check:
            loaded = load_target(target)  # an unknown target fails here, before any write
            if input is None and isinstance(loaded, Agent):
                raise ScheduleError(f"{target!r} is an agent: give the schedule an input, the "
                                    "message each run sends it (e.g. --input '\"Daily report\"')")
        now = time.time()
        first = trigger.next_after(now)
        if first is None:
            raise ScheduleError(f"{trigger.expr} is in the past: a one-off schedule needs a "
                                "time to come")
        row = dict(name=name, target=target, kind=trigger.kind, expr=trigger.expr,
                   tz=trigger.tz, start_at=trigger.start or None, input=encoded, thread=thread,
                   misfire_grace_s=misfire_grace_s, coalesce=coalesce,
                   max_instances=max_instances, paused=False, next_fire_at=first,
                   created_at=now, fires=0, skipped=0, on_thread=on_thread,
                   budget=json.dumps(budget.as_dict()) if budget else None)
        engine = await self.engine()
        async with engine.begin() as conn:
            exists = (await conn.execute(select(schedules_table.c.name).where(
                schedules_table.c.name == name))).first()
            if exists and not replace:
                raise ScheduleError(f"a schedule named {name!r} exists: remove it first, or "
                                    "choose another name")
            if exists:
                await conn.execute(schedules_table.delete().where(
                    schedules_table.c.name == name))
            await conn.execute(schedules_table.insert().values(**row))
        await self.budgets.forget(f"schedule:{name}")  # a schedule made anew starts at 0
        return await self.get(name)

    async def get(self, name: str) -> Schedule | None:
        """The schedule called ``name``; None when there is none."""
        engine = await self.engine()
        async with engine.connect() as conn:
            row = (await conn.execute(select(schedules_table).where(
                schedules_table.c.name == name))).first()
        return Schedule.from_row(row) if row else None

    async def _existing(self, name: str) -> Schedule:
        schedule = await self.get(name)
        if schedule is None:
            raise NotFoundError(f"no schedule is named {name!r}: see ponder schedule list")
        return schedule

    async def schedules(self) -> list[Schedule]:
        """Every schedule, by name."""
        engine = await self.engine()
        async with engine.connect() as conn:
            rows = await conn.execute(select(schedules_table).order_by(schedules_table.c.name))
            return [Schedule.from_row(r) for r in rows]

    async def pause(self, name: str) -> Schedule:
        """Pause the schedule: it does not fire until resumed. Raises NotFoundError for an
        unknown name."""
        return await self._set(name, paused=True)

    async def resume(self, name: str) -> Schedule:
        """Unpause; fires missed while paused are not run: the next one is after now."""
        schedule = await self._existing(name)
        return await self._set(name, paused=False,
                               next_fire_at=schedule.trigger.next_after(time.time()))

    async def remove(self, name: str) -> None:
        """Delete the schedule (its runs stay). Raises NotFoundError for an unknown name."""
        await self._existing(name)
        engine = await self.engine()
        async with engine.begin() as conn:
            await conn.execute(schedules_table.delete().where(schedules_table.c.name == name))
        await self.budgets.forget(f"schedule:{name}")

    async def run_now(self, name: str) -> Fire:
        """A fire now, besides the scheduled ones (max_instances is not applied)."""
        schedule = await self._existing(name)
        now = time.time()
        fire = Fire(f"run_{uuid.uuid4().hex[:16]}", name, schedule.target, now,
                    schedule.thread_id())
        engine = await self.engine()
        async with engine.begin() as conn:
            await self._insert_fire(conn, fire, schedule.input, now)
        return fire

    async def next_fires(self, name: str, count: int = 5) -> list[float]:
        """The next ``count`` fire times (epoch seconds), from the stored next one; fewer when
        the trigger ends. Raises NotFoundError for an unknown name."""
        schedule = await self._existing(name)
        times, at = [], schedule.next_fire_at
        while at is not None and len(times) < count:
            times.append(at)
            at = schedule.trigger.next_after(at)
        return times

    async def _set(self, name: str, **values: Any) -> Schedule:
        await self._existing(name)
        engine = await self.engine()
        async with engine.begin() as conn:
            await conn.execute(update(schedules_table).where(
                schedules_table.c.name == name).values(**values))
        return await self.get(name)

    # -- firing ------------------------------------------------------------------------------

    async def claim_due(self, now: float | None = None, limit: int = 200) -> list[Fire]:
        """Turn the fires due by ``now`` into pending runs and return them. Safe to call from
        any number of workers at once: each fire is claimed by exactly one."""
        now = time.time() if now is None else now
        engine = await self.engine()
        async with engine.connect() as conn:
            due = (await conn.execute(select(schedules_table).where(
                schedules_table.c.paused.is_(False),
                schedules_table.c.next_fire_at <= now,
            ).order_by(schedules_table.c.next_fire_at).limit(limit))).all()
        fires: list[Fire] = []
        for row in due:
            fires += await self._fire(engine, Schedule.from_row(row), row.next_fire_at, now)
        return fires

    async def _fire(self, engine, schedule: Schedule, claimed: float, now: float) -> list[Fire]:
        times, at = [], claimed
        while at is not None and at <= now and len(times) < _MAX_CATCH_UP:
            times.append(at)
            at = schedule.trigger.next_after(at)
        following = schedule.trigger.next_after(now) if at is not None and at <= now else at
        missed = len(times)
        if schedule.misfire_grace_s is not None:
            times = [t for t in times if now - t <= schedule.misfire_grace_s]
        if schedule.coalesce:
            times = times[-1:]
        async with engine.begin() as conn:
            if times:
                active = (await conn.execute(select(func.count()).select_from(runs_table).where(
                    runs_table.c.schedule == schedule.name,
                    runs_table.c.status.in_(("pending", "running"))))).scalar_one()
                times = times[:max(0, schedule.max_instances - active)]
            # The claim: only one worker moves next_fire_at from the value it read.
            claimed_rows = await conn.execute(update(schedules_table).where(
                schedules_table.c.name == schedule.name,
                schedules_table.c.next_fire_at == claimed,
            ).values(next_fire_at=following, fires=schedules_table.c.fires + len(times),
                     skipped=schedules_table.c.skipped + missed - len(times)))
            if claimed_rows.rowcount != 1:
                return []  # another worker claimed it
            fires = [Fire(f"run_{uuid.uuid4().hex[:16]}", schedule.name, schedule.target, t,
                          schedule.thread_id()) for t in times]
            for fire in fires:
                await self._insert_fire(conn, fire, schedule.input, now)
        if missed > len(fires):
            log.warning("schedule %r: %d of %d due fires skipped (misfire grace, coalescing "
                        "or max instances)", schedule.name, missed - len(fires), missed)
        return fires

    async def _insert_fire(self, conn, fire: Fire, input: Any, now: float) -> None:
        await conn.execute(runs_table.insert().values(
            id=fire.run_id, target=fire.target, input=json.dumps(input),
            thread_id=fire.thread_id, status="pending", created_at=now,
            schedule=fire.schedule, scheduled_for=fire.scheduled_for, attempts=0))


def describe(trigger: Trigger) -> str:
    """A trigger in words: "cron EXPR (TZ)", "every H:MM:SS" or "once at ISO-TIME"."""
    if trigger.kind == "cron":
        return f"cron {trigger.expr} ({trigger.tz})"
    if trigger.kind == "interval":
        return f"every {timedelta(seconds=float(trigger.expr))}"
    return f"once at {trigger.expr}"
