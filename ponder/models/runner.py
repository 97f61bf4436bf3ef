"""The runner every model call goes through: budgets, quota, timeout, retries with backoff,
usage and cost."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

from langchain_core.outputs import ChatGenerationChunk
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from ponder.models.budgets import BudgetExceeded, UnpricedModel, charged
from ponder.models.prices import cost_usd, load_price
from ponder.models.quotas import ResiliencePolicy, quota_for
from ponder.models.retries import (
    BrokenStream,
    ModelCallError,
    describe,
    is_quota_exhausted,
    is_transient,
    retry_after_s,
    status_of,
)
from ponder.models.usage import ModelCall, UsageLog, add_usage, record_call


class PolicyRunner:
    """Runs calls to one provider+model through the active budgets (``models.budgets``), its
    quota, timeout and retries; logs usage and cost."""

    def __init__(self, provider: str, model_name: str, policy: ResiliencePolicy, endpoint: str,
                 usage: UsageLog) -> None:
        self.provider, self.model_name, self.policy = provider, model_name, policy
        self.usage = usage
        # The same provider and model behind another URL is another quota.
        self.quota = quota_for((provider, model_name, endpoint), policy)

    def retrying(self) -> AsyncRetrying:
        """Tenacity's retry loop under the policy: transient errors only, exponential backoff
        with jitter, ``Retry-After`` honoured up to ``max_retry_after_s``."""
        backoff = wait_random_exponential(
            multiplier=self.policy.backoff_initial_s, max=self.policy.backoff_max_s
        )

        def wait(state: RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            retry_after = retry_after_s(exc) if exc else None
            if retry_after is not None:
                return min(retry_after, self.policy.max_retry_after_s)
            return backoff(state)

        return AsyncRetrying(
            stop=stop_after_attempt(self.policy.max_attempts),
            wait=wait,
            retry=retry_if_exception(is_transient),
            reraise=True,
        )

    def final_error(self, exc: BaseException, attempts: int) -> ModelCallError:
        """The error a call that failed for good raises, saying why and after how many tries."""
        tried = f"after {attempts} attempt{'s' if attempts != 1 else ''}"
        if is_quota_exhausted(exc):
            message = (
                f"{self.provider}:{self.model_name} refused the call: the provider account's "
                "quota or credit is used up, so retrying cannot help; check the plan and billing "
                f"of the account behind the API key ({describe(exc)})"
            )
        else:
            message = (f"{self.provider}:{self.model_name} failed {tried}; "
                       f"last error: {describe(exc)}")
        return ModelCallError(
            message,
            status=status_of(exc),
            attempts=attempts,
        )

    def finish(self, started: float, attempts: int, usage: dict | None, estimate: int
               ) -> ModelCall:
        """Settle the quota's token estimate with the usage reported, and record the call
        (priced, when its price is known); the call's record."""
        usage = usage or {}
        input_tokens = int(usage.get("input_tokens", 0))
        output_tokens = int(usage.get("output_tokens", 0))
        total = int(usage.get("total_tokens", input_tokens + output_tokens))
        self.quota.settle(estimate, total)
        call = ModelCall(self.provider, self.model_name, input_tokens, output_tokens, total,
                         time.perf_counter() - started, attempts,
                         cost_usd(self.provider, self.model_name, input_tokens, output_tokens))
        record_call(call, self.usage)
        return call

    def _charged(self, estimate: int, max_tokens: int | None):
        """The budgets' charge of one call (``models.budgets.charged``): ``estimate`` tokens
        in all, ``max_tokens`` of them output."""
        return charged(self.provider, self.model_name, max(0, estimate - (max_tokens or 0)),
                       max_tokens)

    async def call(self, make: Callable[[], Awaitable[Any]], estimate: int,
                   usage_of: Callable[[Any], dict | None], max_tokens: int | None = None
                   ) -> Any:
        """``make()`` under the policy and the budgets; its result. ``usage_of`` reads the
        usage from it; ``estimate`` is its tokens in all, ``max_tokens`` of them output (the
        call's limit, if it has one). Each attempt is charged to the active budgets once it
        holds a concurrency slot (so a call waiting its turn holds no money): BudgetExceeded,
        before anything is sent, when one has no room for it."""
        await load_price(self.provider, self.model_name)  # loaded off the loop, then cached
        started, attempts = time.perf_counter(), 0
        try:
            async for attempt in self.retrying():
                with attempt:
                    attempts += 1
                    await self.quota.admit(estimate)
                    async with self.quota.slots, self._charged(estimate, max_tokens) as charge:
                        async with asyncio.timeout(self.policy.timeout_s):
                            result = await make()
                        call = self.finish(started, attempts, usage_of(result), estimate)
                        charge.record(call.cost_usd, call.total_tokens)
        except (BudgetExceeded, UnpricedModel):
            raise  # not the provider's failure: nothing was sent
        except Exception as exc:
            raise self.final_error(exc, attempts) from exc
        return result

    async def stream(self, make: Callable[[], AsyncIterator[ChatGenerationChunk]],
                     estimate: int, max_tokens: int | None = None
                     ) -> AsyncIterator[ChatGenerationChunk]:
        """The chunks of ``make()`` under the policy and the budgets: retried only until
        output has started (see ``call``)."""
        await load_price(self.provider, self.model_name)
        started, attempts, usage = time.perf_counter(), 0, None
        try:
            async for attempt in self.retrying():
                with attempt:
                    attempts += 1
                    produced = False
                    await self.quota.admit(estimate)
                    async with self.quota.slots, self._charged(estimate, max_tokens) as charge:
                        stream = aiter(make())
                        try:
                            while True:
                                # The timeout bounds the wait for each chunk: a stalled stream
                                # fails; a long but live one does not.
                                try:
                                    async with asyncio.timeout(self.policy.timeout_s):
                                        chunk = await anext(stream)
                                except StopAsyncIteration:
                                    break
                                except Exception as exc:
                                    if produced:
                                        raise BrokenStream(
                                            "the stream broke after output had started "
                                            f"(not retried): {describe(exc)}"
                                        ) from exc
                                    raise
                                charge.begun = True  # the provider is answering: billed
                                # Only output the caller can see makes a retry unsafe.
                                message = chunk.message
                                produced = produced or bool(
                                    message.content or getattr(message, "tool_call_chunks", None))
                                if chunk.message.usage_metadata:
                                    usage = add_usage(usage, chunk.message.usage_metadata)
                                yield chunk
                        finally:
                            await aclose_stream(stream)
                        call = self.finish(started, attempts, usage, estimate)
                        charge.record(call.cost_usd, call.total_tokens)
        except (BudgetExceeded, UnpricedModel):
            raise
        except Exception as exc:
            raise self.final_error(exc, attempts) from exc


def estimate_tokens(texts: Iterable[str], max_tokens: int | None = None) -> int:
    """Tokens a call may use, reserved from the quota before it: its input at about four
    characters a token, plus ``max_tokens`` of output."""
    # About four characters a token keeps tokenizers off the hot path; the real count settles
    # the difference once the provider reports usage.
    return max(1, sum(len(t) for t in texts) // 4) + int(max_tokens or 0)


async def aclose_stream(stream: Any) -> None:
    """Close an async generator a provider streamed from, if it can be closed."""
    close = getattr(stream, "aclose", None)
    if close is not None:
        await close()
