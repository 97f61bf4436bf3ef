"""Budgets shared across processes, in the one database: an API key's dollars per day, a
schedule's total, a background run's (``ponder_budgets``, a row per budget and period).

A hold is one conditional UPDATE (``spent + reserved + amount <= limit``), so processes charging
one budget at once never take it over its limit, on SQLite and on Postgres alike. Amounts are
integers (nano-dollars, tokens, calls). A process killed during a call leaves that call's hold
counted (the budget errs on the safe side, by at most the call's maximum cost).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import BigInteger, Column, Float, MetaData, String, Table, select, update
from sqlalchemy.dialects import postgresql, sqlite

from ponder.db.tables import Tables
from ponder.models.budgets import Amount, Budget, BudgetExceeded, Ledger

metadata = MetaData()
budgets_table = Table(
    "ponder_budgets", metadata,
    Column("scope", String(200), primary_key=True),   # whose: "key:ID", "schedule:NAME", ...
    Column("period", String(20), primary_key=True),   # "total", or a UTC day "2026-11-30"
    Column("spent_nano_usd", BigInteger, nullable=False, default=0),
    Column("reserved_nano_usd", BigInteger, nullable=False, default=0),
    Column("spent_tokens", BigInteger, nullable=False, default=0),
    Column("reserved_tokens", BigInteger, nullable=False, default=0),
    Column("spent_calls", BigInteger, nullable=False, default=0),
    Column("reserved_calls", BigInteger, nullable=False, default=0),
    Column("updated_at", Float, nullable=True),
)


def today() -> str:
    """The current period of a per-day budget: the UTC date, "2026-11-30"."""
    return datetime.now(UTC).date().isoformat()


class BudgetStore(Tables):
    """The shared budgets' spending in the database at ``url`` (default
    ``PONDER_DATABASE_URL``): holds, settlements and what was spent."""

    metadata = metadata

    async def reserve(self, scope: str, period: str, budget: Budget, amount: Amount) -> bool:
        """Hold ``amount`` in ``scope``'s ``period`` if it fits ``budget`` with what is spent
        and held there (atomically); whether it did."""
        table = budgets_table
        engine = await self.engine()
        insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
        fits = [table.c.scope == scope, table.c.period == period]
        for kind, limit in (("nano_usd", budget.nano_usd), ("tokens", budget.tokens),
                            ("calls", budget.calls)):
            if limit is not None:
                fits.append(table.c[f"spent_{kind}"] + table.c[f"reserved_{kind}"]
                            + getattr(amount, kind) <= limit)
        async with engine.begin() as conn:
            await conn.execute(insert(table).values(
                scope=scope, period=period, spent_nano_usd=0, reserved_nano_usd=0,
                spent_tokens=0, reserved_tokens=0, spent_calls=0, reserved_calls=0,
                updated_at=time.time()).on_conflict_do_nothing())
            held = await conn.execute(update(table).where(*fits).values(
                reserved_nano_usd=table.c.reserved_nano_usd + amount.nano_usd,
                reserved_tokens=table.c.reserved_tokens + amount.tokens,
                reserved_calls=table.c.reserved_calls + amount.calls,
                updated_at=time.time()))
            return held.rowcount == 1

    async def settle(self, scope: str, period: str, held: Amount, actual: Amount) -> None:
        """Release ``held`` in ``scope``'s ``period`` and add ``actual`` to what is spent."""
        table = budgets_table
        engine = await self.engine()
        async with engine.begin() as conn:
            await conn.execute(update(table).where(
                table.c.scope == scope, table.c.period == period).values(
                reserved_nano_usd=table.c.reserved_nano_usd - held.nano_usd,
                reserved_tokens=table.c.reserved_tokens - held.tokens,
                reserved_calls=table.c.reserved_calls - held.calls,
                spent_nano_usd=table.c.spent_nano_usd + actual.nano_usd,
                spent_tokens=table.c.spent_tokens + actual.tokens,
                spent_calls=table.c.spent_calls + actual.calls,
                updated_at=time.time()))

    async def spending(self, scope: str, period: str) -> tuple[Amount, Amount]:
        """What ``scope`` spent in ``period``, and what calls in flight hold there."""
        engine = await self.engine()
        async with engine.connect() as conn:
            row = (await conn.execute(select(budgets_table).where(
                budgets_table.c.scope == scope, budgets_table.c.period == period))).first()
        if row is None:
            return Amount(), Amount()
        return (Amount(row.spent_nano_usd, row.spent_tokens, row.spent_calls),
                Amount(row.reserved_nano_usd, row.reserved_tokens, row.reserved_calls))

    async def forget(self, scope: str) -> None:
        """Delete what ``scope`` spent, in every period (a schedule made anew starts at 0)."""
        engine = await self.engine()
        async with engine.begin() as conn:
            await conn.execute(budgets_table.delete().where(budgets_table.c.scope == scope))

    def ledger(self, scope: str, budget: Budget, name: str, *, daily: bool = False
               ) -> SharedLedger:
        """The ledger of ``scope`` under ``budget`` (per UTC day when ``daily``), named
        ``name`` in messages, for ``models.budgets.spending``."""
        return SharedLedger(self, scope, budget, name, daily)


class SharedLedger(Ledger):
    """A budget kept in the database (see ``BudgetStore``): ``scope`` names whose it is;
    ``daily`` budgets start again each UTC day."""

    def __init__(self, store: BudgetStore, scope: str, budget: Budget, name: str,
                 daily: bool = False) -> None:
        self.store, self.scope, self.budget, self.name = store, scope, budget, name
        self.daily = daily

    def period(self) -> str:
        """The period spending is counted in now: a UTC day, or "total"."""
        return today() if self.daily else "total"

    async def reserve(self, amount: Amount, model: str) -> str:
        """Hold ``amount`` (see Ledger.reserve); the period it is held in, for ``settle``
        (a call across midnight settles in the day it began)."""
        period = self.period()
        if not await self.store.reserve(self.scope, period, self.budget, amount):
            spent, reserved = await self.store.spending(self.scope, period)
            kind = (spent + reserved + amount).over(self.budget) or "usd"
            raise BudgetExceeded(self.name, self.budget, spent, reserved, amount, kind, model)
        return period

    async def settle(self, hold: Any, amount: Amount, actual: Amount) -> None:
        """Replace the hold with ``actual`` (see Ledger.settle)."""
        await self.store.settle(self.scope, hold, amount, actual)

    async def spent(self) -> Amount:
        """What was spent in the current period."""
        return (await self.store.spending(self.scope, self.period()))[0]
