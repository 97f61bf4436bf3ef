"""The resilience policy of one model, and the shared quotas (requests and tokens per minute,
concurrency) of each provider and model in the process."""

from __future__ import annotations

import asyncio
import weakref
from dataclasses import dataclass

from aiolimiter import AsyncLimiter

from ponder.config import ConfigurationError, Settings


@dataclass(frozen=True)
class ResiliencePolicy:
    """How every call to one model behaves under load and failure."""

    max_attempts: int = 4
    timeout_s: float = 60.0
    max_concurrency: int = 16
    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    max_retry_after_s: float = 120.0
    # The window the per-minute limits refer to. Only tests shorten it, to keep them fast.
    period_s: float = 60.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ConfigurationError(f"max_attempts must be at least 1, got {self.max_attempts}")
        if self.max_concurrency < 1:
            raise ConfigurationError(
                f"max_concurrency must be at least 1, got {self.max_concurrency}"
            )
        for name in ("timeout_s", "requests_per_minute", "tokens_per_minute", "period_s"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigurationError(f"{name} must be greater than zero, got {value}")

    @classmethod
    def from_settings(cls, s: Settings) -> ResiliencePolicy:
        """The policy the ``PONDER_*`` settings describe."""
        return cls(
            max_attempts=s.max_attempts,
            timeout_s=s.timeout_s,
            max_concurrency=s.max_concurrency,
            requests_per_minute=s.requests_per_minute,
            tokens_per_minute=s.tokens_per_minute,
        )


class _Quota:
    """The limits one provider+model shares across every model object in one event loop."""

    def __init__(self, policy: ResiliencePolicy) -> None:
        # Requests are paced evenly (a bucket of one), so no window of period_s ever holds more
        # than the limit; providers reject bursts even when the per-minute total is fine.
        rpm = policy.requests_per_minute
        self.requests = AsyncLimiter(1, policy.period_s / rpm) if rpm else None
        # Tokens use a bucket of one period's budget that refills continuously, the same model
        # providers use for tokens per minute. A call is charged its estimate up front and any
        # excess (known once usage comes back) is charged to the next call.
        tpm = policy.tokens_per_minute
        self.tokens = AsyncLimiter(tpm, policy.period_s) if tpm else None
        self.token_debt = 0
        self.slots = asyncio.Semaphore(policy.max_concurrency)

    async def admit(self, estimated_tokens: int) -> None:
        if self.requests is not None:
            await self.requests.acquire()
        if self.tokens is not None:
            amount = estimated_tokens + self.token_debt
            self.token_debt = 0
            # A charge larger than the bucket could never be admitted: split it.
            while amount > 0:
                part = min(amount, self.tokens.max_rate)
                await self.tokens.acquire(part)
                amount -= part

    def settle(self, estimated_tokens: int, actual_tokens: int) -> None:
        if self.tokens is not None and actual_tokens > estimated_tokens:
            self.token_debt += actual_tokens - estimated_tokens


# Keyed by event loop: asyncio primitives belong to one loop, and one process normally runs one.
_quotas: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple, _Quota]] = (
    weakref.WeakKeyDictionary()
)


def quota_for(key: tuple, policy: ResiliencePolicy) -> _Quota:
    """The quota shared by every call to ``key`` (provider, model, endpoint) under ``policy``,
    in this event loop."""
    per_loop = _quotas.setdefault(asyncio.get_running_loop(), {})
    full_key = (*key, policy.requests_per_minute, policy.tokens_per_minute,
                policy.max_concurrency, policy.period_s)
    if full_key not in per_loop:
        per_loop[full_key] = _Quota(policy)
    return per_loop[full_key]
