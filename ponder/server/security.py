"""Who may call, how often, and how much: API keys, per-key limits, and a body-size limit.

When at least one key exists, every route but ``/health`` needs ``Authorization: Bearer <key>``.
Each key's requests and tokens per minute are counted in a sliding window: over the limit, the
answer is 429 with the seconds to wait in ``Retry-After``. A key's dollars per UTC day are a
budget shared by every server process (``models.budget_store``): each model call of its
requests is charged to it, and once it is spent the answer is 429 until the next UTC day.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Request

from ponder.models import charge_request
from ponder.models.budget_store import BudgetStore
from ponder.models.budgets import usd
from ponder.server.errors import APIError, error_response
from ponder.server.keys import APIKey, KeyStore

_CACHE_S = 5.0  # a revoked key stops working within this long


class SlidingWindow:
    """Amounts spent in the last ``period_s``; says how long to wait before more fits."""

    def __init__(self, limit: int, period_s: float = 60.0) -> None:
        self.limit, self.period_s = limit, period_s
        self.events: deque[tuple[float, int]] = deque()
        self.used = 0

    def _expire(self, now: float) -> None:
        while self.events and self.events[0][0] <= now - self.period_s:
            self.used -= self.events.popleft()[1]

    def wait_s(self, amount: int = 1, now: float | None = None) -> float:
        """0 when ``amount`` fits now; else the seconds until it does."""
        now = time.monotonic() if now is None else now
        self._expire(now)
        excess = self.used + amount - self.limit
        if excess <= 0:
            return 0.0
        freed = 0
        for at, spent in self.events:
            freed += spent
            if freed >= excess:
                return at + self.period_s - now
        return self.period_s

    def add(self, amount: int, now: float | None = None) -> None:
        """Count ``amount`` spent at ``now`` (monotonic seconds; default: now)."""
        now = time.monotonic() if now is None else now
        self.events.append((now, amount))
        self.used += amount


class Guard:
    """Authentication and per-key rate limits for the server, over the keys of ``store``.

    Whether keys are required, and each key's verification, are cached for 5 seconds. Keys'
    daily dollar budgets are kept in ``budgets`` (default: the keys' database).
    """
    def __init__(self, store: KeyStore, budgets: BudgetStore | None = None) -> None:
        self.store = store
        self.budgets = budgets or BudgetStore(store.url)
        self._required: tuple[float, bool] | None = None
        self._verified: dict[str, tuple[float, APIKey | None]] = {}
        self._requests: dict[str, SlidingWindow] = {}
        self._tokens: dict[str, SlidingWindow] = {}

    async def keys_required(self) -> bool:
        """Whether any key is active (cached for 5 seconds), so requests need one."""
        now = time.monotonic()
        if self._required is None or now - self._required[0] > _CACHE_S:
            self._required = (now, await self.store.active())
        return self._required[1]

    async def _key(self, secret: str) -> APIKey | None:
        now = time.monotonic()
        cached = self._verified.get(secret)
        if cached is None or now - cached[0] > _CACHE_S:
            cached = (now, await self.store.verify(secret))
            self._verified[secret] = cached
        return cached[1]

    async def authenticate(self, request: Request) -> None:
        """A FastAPI dependency: checks the key, its request limit and its daily budget, and
        charges the request's model calls to that budget."""
        request.state.api_key_id = None
        charge_request()  # set in this request's own context (so, no other request's key)
        if not await self.keys_required():
            return
        header = request.headers.get("authorization", "")
        secret = (header.removeprefix("Bearer ").strip() if header.startswith("Bearer ")
                  else request.headers.get("x-api-key", "").strip())  # LangGraph clients
        key = await self._key(secret) if secret else None
        if key is None:
            raise APIError(401, "Incorrect API key provided: pass Authorization: Bearer <key> "
                                "or x-api-key: <key> (make one with: ponder keys create NAME)",
                           code="invalid_api_key")
        request.state.api_key_id = key.id
        request.state.api_key = key
        if key.requests_per_minute:
            window = self._requests.setdefault(key.id, SlidingWindow(key.requests_per_minute))
            self._refuse_if_waiting(window.wait_s(1), "requests")
            window.add(1)
        if key.tokens_per_minute:
            window = self._tokens.setdefault(key.id, SlidingWindow(key.tokens_per_minute))
            self._refuse_if_waiting(window.wait_s(1), "tokens")
        await self._charge_budget(key)

    async def _charge_budget(self, key: APIKey) -> None:
        """Refuse a key whose daily budget is spent (429); else charge the request to it."""
        budget = key.budget()
        if budget is None:
            return
        ledger = self.budgets.ledger(f"key:{key.id}", budget,
                                     f"API key {key.id} ({key.name}, per UTC day)", daily=True)
        spent = await ledger.spent()
        if spent.nano_usd >= (budget.nano_usd or 0):
            # The official clients retry a 429 unless told not to: waiting cannot help today.
            raise APIError(429, f"The daily budget of this API key is spent: "
                                f"{usd(spent.nano_usd)} of {usd(budget.nano_usd or 0)} per day "
                                "(UTC); it starts again at 00:00 UTC",
                           code="budget_exceeded", headers={"x-should-retry": "false"})
        charge_request(ledger)

    def charge_tokens(self, request: Request, tokens: int) -> None:
        """Count ``tokens`` against the request's key's tokens-per-minute window (no key:
        nothing)."""
        key: APIKey | None = getattr(request.state, "api_key", None)
        if key is not None and key.tokens_per_minute and tokens > 0:
            self._tokens.setdefault(key.id, SlidingWindow(key.tokens_per_minute)).add(tokens)

    @staticmethod
    def _refuse_if_waiting(wait_s: float, what: str) -> None:
        if wait_s > 0:
            seconds = max(1, math.ceil(wait_s))
            raise APIError(429, f"Rate limit reached for {what} per minute on this key: "
                                f"retry in {seconds} s", code="rate_limit_exceeded",
                           headers={"Retry-After": str(seconds)})


class BodySizeLimit:
    """ASGI middleware: a request body over ``max_bytes`` gets 413 before it is read whole."""

    def __init__(self, app: Callable[..., Awaitable[Any]], max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send) -> None:
        """Answer 413 for a body over ``max_bytes``: at once by its Content-Length, else while it
        is read."""
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self._too_large(scope, receive, send)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise APIError(413, self._message())
            return message

        await self.app(scope, counted, send)

    def _message(self) -> str:
        return f"The request body is larger than {self.max_bytes} bytes."

    async def _too_large(self, scope, receive, send) -> None:
        response = error_response(413, self._message())
        await response(scope, receive, send)
