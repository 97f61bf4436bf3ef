"""Budgets: limits in US dollars, tokens and calls on what model calls may spend.

``Budget(usd=0.50, tokens=200_000, calls=100)`` goes on an agent (``Agent(budget=...)``), a
background run (``submit(..., budget=...)``), a schedule (all its runs together) or an API key
(dollars per UTC day). Each is kept in a ledger: in the process for an agent's (``LocalLedger``),
in the database for the shared ones (``models.budget_store``).

A run's ledgers are active in a context (``spending``, a contextvar, like ``track_usage``), and
every model call made in it is charged (``charged``, which the runner wraps around each call,
so every model of a fallback chain is charged for its own call): before the call, its
maximum cost is reserved in every active ledger, and if one of them would go over its limit,
the call is not made and ``BudgetExceeded`` says which budget and what was spent. After the call,
the reservation is settled to the actual cost (a failed call costs nothing; a stream abandoned
once the provider began answering, all it held).

The maximum cost of a call is its input (estimated at four characters a token) at the input
price plus ``max_tokens`` (the call's or the model's; ``DEFAULT_OUTPUT_TOKENS`` when neither
sets one) at the output price. A call without ``max_tokens`` can end up costing more than it
reserved: settled to what it really cost, the ledger then goes over its limit by the difference,
and the next call is refused.

Budgets apply to ponder's models (``ResilientChatModel``, which ``chat_model`` makes): another
LangChain model's calls are counted by ``track_usage`` but not held against a budget.

A dollar budget needs prices: a call of a model that genai-prices does not price, under a dollar
budget, is refused with ``UnpricedModel`` (a ConfigurationError) rather than counted as free.
"""

from __future__ import annotations

import asyncio
import math
import threading
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from ponder.errors import ConfigurationError, PonderError
from ponder.models.prices import load_price

# Output tokens reserved for a call that sets no max_tokens (settled to the real count after).
DEFAULT_OUTPUT_TOKENS = 1024
NANO = 1_000_000_000  # ledgers count nano-dollars, as integers: sums stay exact in any database


@dataclass(frozen=True)
class Budget:
    """Limits on model calls: ``usd`` (US dollars, priced by genai-prices), ``tokens`` (input
    plus output) and ``calls``. None: no limit of that kind; at least one must be set.

    Raises ConfigurationError (a ValueError) for a negative, non-finite or non-numeric limit.
    """

    usd: float | None = None
    tokens: int | None = None
    calls: int | None = None

    def __post_init__(self) -> None:
        if self.usd is None and self.tokens is None and self.calls is None:
            raise ConfigurationError("a budget needs a limit: Budget(usd=0.5), Budget(tokens="
                                     "100_000) or Budget(calls=20), or several")
        if self.usd is not None:
            if (isinstance(self.usd, bool) or not isinstance(self.usd, int | float)
                    or not math.isfinite(self.usd) or self.usd < 0):
                raise ConfigurationError(f"a budget's usd must be a number of dollars, 0 or "
                                         f"more, not {self.usd!r}")
            object.__setattr__(self, "usd", float(self.usd))
        for name in ("tokens", "calls"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < 0):
                raise ConfigurationError(f"a budget's {name} must be a whole number, 0 or more, "
                                         f"not {value!r}")

    @property
    def nano_usd(self) -> int | None:
        """The dollar limit in nano-dollars (None: no dollar limit)."""
        return None if self.usd is None else round(self.usd * NANO)

    def as_dict(self) -> dict[str, Any]:
        """The limits that are set, as JSON-ready data (``from_dict`` reads it back)."""
        return {k: v for k, v in (("usd", self.usd), ("tokens", self.tokens),
                                  ("calls", self.calls)) if v is not None}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Budget | None:
        """The budget ``as_dict`` wrote; None for None or an empty dict."""
        return cls(**data) if data else None

    def __str__(self) -> str:
        parts = [usd(self.nano_usd)] if self.usd is not None else []
        parts += [f"{self.tokens:,} tokens"] if self.tokens is not None else []
        parts += [f"{self.calls:,} calls"] if self.calls is not None else []
        return ", ".join(parts)


@dataclass(frozen=True)
class Amount:
    """What calls cost or may cost, in a ledger's units: nano-dollars, tokens, calls."""

    nano_usd: int = 0
    tokens: int = 0
    calls: int = 0

    def __add__(self, other: Amount) -> Amount:
        return Amount(self.nano_usd + other.nano_usd, self.tokens + other.tokens,
                      self.calls + other.calls)

    def __sub__(self, other: Amount) -> Amount:
        return Amount(self.nano_usd - other.nano_usd, self.tokens - other.tokens,
                      self.calls - other.calls)

    def over(self, budget: Budget) -> str | None:
        """The first limit of ``budget`` this amount is over ("usd", "tokens", "calls"), or
        None when it fits."""
        for kind, have, limit in (("usd", self.nano_usd, budget.nano_usd),
                                  ("tokens", self.tokens, budget.tokens),
                                  ("calls", self.calls, budget.calls)):
            if limit is not None and have > limit:
                return kind
        return None


def usd(nano: int) -> str:
    """Nano-dollars as dollars for people, exactly: "$0.00000855", "$12.5"."""
    return "$" + f"{nano / NANO:,.9f}".rstrip("0").rstrip(".")


class BudgetExceeded(PonderError):
    """A model call was not made: it could have taken a budget over its limit.

    ``budget`` names whose budget (e.g. "agent 'support'", "API key key_ab12 (per day)"),
    ``limits`` is its Budget, ``spent`` and ``reserved`` (by calls in flight) are Amounts,
    ``kind`` the limit it would break ("usd", "tokens" or "calls"). Nothing was lost: what ran
    before stays (a run's checkpoints too).
    """

    def __init__(self, budget: str, limits: Budget, spent: Amount, reserved: Amount,
                 needed: Amount, kind: str, model: str) -> None:
        self.budget, self.limits, self.kind = budget, limits, kind
        self.spent, self.reserved, self.needed = spent, reserved, needed
        if kind == "usd":
            numbers = (f"{usd(spent.nano_usd)} spent of {usd(limits.nano_usd or 0)}"
                       + (f", {usd(reserved.nano_usd)} held by calls in flight"
                          if reserved.nano_usd else "")
                       + f"; the next call of {model} may cost up to {usd(needed.nano_usd)}")
        else:
            limit = limits.tokens if kind == "tokens" else limits.calls
            numbers = (f"{getattr(spent, kind):,} {kind} spent of {limit:,}"
                       + (f", {getattr(reserved, kind):,} held by calls in flight"
                          if getattr(reserved, kind) else "")
                       + f"; the next call of {model} needs up to {getattr(needed, kind):,}")
        super().__init__(f"the budget of {budget} is used up: {numbers}. Raise the budget, or "
                         "wait for a new period (a key's budget is per UTC day)")


class UnpricedModel(ConfigurationError):
    """A dollar budget applies, and the model called has no price in genai-prices."""


class Ledger(ABC):
    """Where one budget's spending is kept. ``name`` says whose budget it is (for messages);
    ``budget`` is its limits. ``reserve`` holds an amount or raises BudgetExceeded; ``settle``
    replaces a hold with what the call really cost."""

    name: str
    budget: Budget

    @abstractmethod
    async def reserve(self, amount: Amount, model: str) -> Any:
        """Hold ``amount`` for a call of ``model`` if it fits the budget with what is spent and
        held; a token for ``settle``. Raises BudgetExceeded when it does not fit."""

    @abstractmethod
    async def settle(self, hold: Any, amount: Amount, actual: Amount) -> None:
        """Release the hold of ``amount`` and add ``actual`` to what is spent."""


class LocalLedger(Ledger):
    """A budget kept in this process (an agent's): ``spent`` and ``reserved`` are Amounts.
    Thread-safe (sync callers run model calls on another thread's loop)."""

    def __init__(self, budget: Budget, name: str) -> None:
        self.budget, self.name = budget, name
        self.spent, self.reserved = Amount(), Amount()
        self._lock = threading.Lock()

    async def reserve(self, amount: Amount, model: str) -> None:
        """Hold ``amount`` (see Ledger.reserve)."""
        with self._lock:
            kind = (self.spent + self.reserved + amount).over(self.budget)
            if kind is not None:
                raise BudgetExceeded(self.name, self.budget, self.spent, self.reserved, amount,
                                     kind, model)
            self.reserved += amount

    async def settle(self, hold: Any, amount: Amount, actual: Amount) -> None:
        """Replace the hold of ``amount`` with ``actual`` (see Ledger.settle)."""
        with self._lock:
            self.reserved -= amount
            self.spent += actual


_active: ContextVar[tuple[Ledger, ...]] = ContextVar("ponder_budgets", default=())
# The ledgers of the request being served (an API key's), set once per request.
_request: ContextVar[tuple[Ledger, ...]] = ContextVar("ponder_request_budgets", default=())


@contextmanager
def spending(*ledgers: Ledger | None) -> Iterator[tuple[Ledger, ...]]:
    """Charge every model call made in this context, and in the tasks it starts, to
    ``ledgers`` (None entries are skipped) as well as to the ledgers already active."""
    added = tuple(ledger for ledger in ledgers if ledger is not None)
    token = _active.set((*_active.get(), *added))
    try:
        yield _active.get()
    finally:
        try:
            _active.reset(token)
        except ValueError:
            # An abandoned stream closed by the event loop, in another context: that context
            # never had these ledgers set, so there is nothing to undo.
            pass


def charge_request(*ledgers: Ledger | None) -> None:
    """Charge the model calls of the request being served (in this context and the tasks it
    starts) to ``ledgers``, in place of the last request's: a server sets it for each request
    it authenticates, in the request's own context."""
    _request.set(tuple(ledger for ledger in ledgers if ledger is not None))


def active_ledgers() -> tuple[Ledger, ...]:
    """The ledgers every model call made here is charged to, each once (an agent run inside
    another run of itself is charged once)."""
    return tuple(dict.fromkeys((*_request.get(), *_active.get())))


class Charge:
    """One model call's charge: the runner tells it the call's actual cost (``record``), or
    that the provider had begun answering (``begun``: a stream's first chunk came) for a stream
    that may be abandoned before its usage arrives."""

    def __init__(self) -> None:
        self.actual: Amount | None = None
        self.begun = False

    def record(self, cost_usd: float | None, total_tokens: int) -> None:
        """The call was made: it cost ``cost_usd`` (None: unknown) and ``total_tokens``."""
        self.actual = Amount(round((cost_usd or 0.0) * NANO), total_tokens, 1)

    def owed(self, held: Amount) -> Amount:
        """What the call is charged: its recorded cost; all it held when the provider had begun
        answering but the usage never came (an abandoned stream: paid for, at most that much);
        nothing when it failed before any answer."""
        if self.actual is not None:
            return self.actual
        return held if self.begun else Amount()


@asynccontextmanager
async def charged(provider: str, model: str, input_tokens: int,
                  max_output_tokens: int | None) -> AsyncIterator[Charge]:
    """Charge one call of ``provider:model`` to the active ledgers: its maximum cost (see the
    module's docstring) is held before the block, and settled to what ``Charge.record`` was told
    after it (nothing, when the block raised). Raises BudgetExceeded, before the block runs,
    when a ledger has no room; UnpricedModel when a dollar budget applies to an unpriced
    model."""
    ledgers = active_ledgers()
    charge = Charge()
    if not ledgers:
        yield charge
        return
    spec = f"{provider}:{model}"
    price = await load_price(provider, model)
    if price is None and any(ledger.budget.usd is not None for ledger in ledgers):
        dollars = next(ledger.name for ledger in ledgers if ledger.budget.usd is not None)
        raise UnpricedModel(
            f"the budget of {dollars} limits dollars, but {spec} has no price in genai-prices, "
            "so its calls cannot be counted: give that budget a tokens or calls limit instead, "
            "or use a priced model")
    output = max_output_tokens or DEFAULT_OUTPUT_TOKENS
    amount = Amount(math.ceil(price.cost_usd(input_tokens, output) * NANO) if price else 0,
                    input_tokens + output, 1)
    holds: list[tuple[Ledger, Any]] = []
    try:
        for ledger in ledgers:
            holds.append((ledger, await ledger.reserve(amount, spec)))
    except BaseException:
        await asyncio.shield(_settle(holds, amount, Amount()))
        raise
    try:
        yield charge
    finally:
        # Shielded: a cancelled call still gives its hold back, and a finished one is paid.
        await asyncio.shield(_settle(holds, amount, charge.owed(amount)))


async def _settle(holds: list[tuple[Ledger, Any]], amount: Amount, actual: Amount) -> None:
    for ledger, hold in holds:
        await ledger.settle(hold, amount, actual)
